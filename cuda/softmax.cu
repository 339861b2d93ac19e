// Row-wise softmax over the last dimension tk with the attention masks of src/cpu/softmax.rs,
// forward and backward. One warp per row (grid-strided over rows), any tk >= 1: each lane walks the
// keys lane, lane + 32, ... in order and a fixed xor butterfly combines the lanes (deterministic).
// Row r belongs to batch r / rows_per_batch and query r % tq; query i sits at absolute position
// i + max(tk - tq, 0), so causal hides keys j > i + max(tk - tq, 0); key_padding[b, j] != 0 hides key
// j of batch b. A row with every key hidden comes out as zeros (not NaN).
#include "common.cuh"

namespace automoe {
namespace softmax {

__device__ __forceinline__ int warps_per_grid() { return (int)(gridDim.x * (blockDim.x >> 5)); }
__device__ __forceinline__ int first_warp() { return (int)(blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)); }

template <class T>
__device__ __forceinline__ void fwd(const SoftmaxParams& p) {
    const T* x = ptr<const T>(p.x);                                  // [rows, tk]
    T* y = ptr<T>(p.y);                                              // [rows, tk]
    const unsigned char* pad = ptr<const unsigned char>(p.key_padding);  // [batch, tk] or null
    const int tk = p.tk;
    const int lane = (int)lane_id();
    if (tk <= 0) return;
    const bool causal = p.causal != 0 && p.tq > 0;
    const bool padded = pad != nullptr && p.rows_per_batch > 0;
    const int shift = p.tk > p.tq ? p.tk - p.tq : 0;
    for (int r = first_warp(); r < p.rows; r += warps_per_grid()) {
        const size_t row = (size_t)r * (size_t)tk;
        // Keys j <= last are visible to the causal mask; pad_row is this row's batch of key_padding.
        const int last = causal ? r % p.tq + shift : tk - 1;
        const unsigned char* pad_row = padded ? pad + (size_t)(r / p.rows_per_batch) * (size_t)tk : nullptr;
        auto keep = [&](int j) { return j <= last && (pad_row == nullptr || pad_row[j] == 0); };
        float m = neg_inf();
        for (int j = lane; j < tk; j += 32)
            if (keep(j)) m = fmaxf(m, to_f32(x[row + j]));
        m = warp_max(m);
        if (m == neg_inf()) {  // every key hidden (uniform across the warp)
            for (int j = lane; j < tk; j += 32) y[row + j] = from_f32<T>(0.0f);
            continue;
        }
        float s = 0.0f;
        for (int j = lane; j < tk; j += 32)
            if (keep(j)) s += expf(to_f32(x[row + j]) - m);
        const float inv = 1.0f / warp_sum(s);
        for (int j = lane; j < tk; j += 32) y[row + j] = from_f32<T>(keep(j) ? expf(to_f32(x[row + j]) - m) * inv : 0.0f);
    }
}

// dx = y * (dy - sum(dy * y)); hidden keys have y = 0 and get no gradient.
template <class T>
__device__ __forceinline__ void bwd(const SoftmaxParams& p) {
    const T* y = ptr<const T>(p.y);    // [rows, tk]
    const T* dy = ptr<const T>(p.dy);  // [rows, tk]
    T* dx = ptr<T>(p.dx);              // [rows, tk]
    const int tk = p.tk;
    const int lane = (int)lane_id();
    if (tk <= 0) return;
    for (int r = first_warp(); r < p.rows; r += warps_per_grid()) {
        const size_t row = (size_t)r * (size_t)tk;
        float s = 0.0f;
        for (int j = lane; j < tk; j += 32) s += to_f32(y[row + j]) * to_f32(dy[row + j]);
        const float dot = warp_sum(s);
        for (int j = lane; j < tk; j += 32) dx[row + j] = from_f32<T>(to_f32(y[row + j]) * (to_f32(dy[row + j]) - dot));
    }
}

}  // namespace softmax
}  // namespace automoe

extern "C" __global__ void softmax_fwd_f32(SoftmaxParams p) { automoe::softmax::fwd<float>(p); }
extern "C" __global__ void softmax_fwd_bf16(SoftmaxParams p) { automoe::softmax::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void softmax_bwd_f32(SoftmaxParams p) { automoe::softmax::bwd<float>(p); }
extern "C" __global__ void softmax_bwd_bf16(SoftmaxParams p) { automoe::softmax::bwd<__nv_bfloat16>(p); }
