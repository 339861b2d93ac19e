// MoE dispatch: token/slot pairs -> expert-contiguous rows (permute), and back (combine).
// Everything is a gather by destination, so no kernel here uses float atomics: each output element
// is written by exactly one thread, and sums run in a fixed order (deterministic by construction).
#include "common.cuh"

namespace automoe {

// Most slots per token the gather kernels keep in registers (k <= 8, as in gating).
constexpr int kMaxSlots = 8;

// Whether rows of d elements at these two bases can move 16 bytes per lane.
template <class T>
__device__ __forceinline__ bool vec16(int d, automoe_dptr a, automoe_dptr b) {
    return ((size_t)d * sizeof(T)) % 16 == 0 && a % 16 == 0 && b % 16 == 0;
}

// acc[i] += scale * src[i] for the 16 / sizeof(T) elements at src (16-byte aligned).
template <class T>
__device__ __forceinline__ void add16(float* acc, const T* src, float scale) {
    __align__(16) T v[16 / sizeof(T)];
    *reinterpret_cast<uint4*>(v) = *reinterpret_cast<const uint4*>(src);
#pragma unroll
    for (int i = 0; i < (int)(16 / sizeof(T)); ++i) acc[i] += scale * to_f32(v[i]);
}

// dst[i] = acc[i] for 16 bytes of T at dst (16-byte aligned).
template <class T>
__device__ __forceinline__ void store16(T* dst, const float* acc) {
    __align__(16) T v[16 / sizeof(T)];
#pragma unroll
    for (int i = 0; i < (int)(16 / sizeof(T)); ++i) v[i] = from_f32<T>(acc[i]);
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
}

namespace permute {

constexpr int kDispatchWarps = 16;  // permute_dispatch_i32 must be launched with 1 block of 512 threads
constexpr int kMaxExperts = 512;

// For this lane's expert e among the warp's 32 pairs: how many lower lanes have the same e (its
// stable rank inside the group) and whether it is the highest lane with e (the one that publishes
// the group's count). The lanes sharing e are found bit by bit with ballots: 10 ballots cover ids
// below 512 and -1 (bit 9 set only by -1), where comparing against every lane took 32 shuffles.
__device__ __forceinline__ void group_rank(int e, int lane, int* rank, bool* last) {
    const unsigned ue = (unsigned)e;
    unsigned same = 0xffffffffu;
#pragma unroll
    for (int b = 0; b < 10; ++b) {
        const unsigned bit = (ue >> b) & 1u;
        const unsigned bal = __ballot_sync(0xffffffffu, bit);
        same &= bit ? bal : ~bal;
    }
    *rank = __popc(same & ((1u << lane) - 1u));
    *last = (same >> lane) == 1u;
}

// Single block: each warp owns a contiguous range of pairs. Pass 1 counts per (warp, expert); a scan
// over experts (with padding) and over warps gives each warp its first row per expert; pass 2 walks
// the same range again and assigns rows in order. Pairs whose expert is out of range get pos = -1.
__device__ __forceinline__ void dispatch(const DispatchParams& p) {
    const int* topk_idx = ptr<const int>(p.topk_idx);  // [T*k]
    int* counts = ptr<int>(p.counts);                  // [E]
    int* offsets = ptr<int>(p.offsets);                // [E+1]
    int* pos = ptr<int>(p.pos);                        // [T*k]
    int* src_row = ptr<int>(p.src_row);                // [rows_cap]
    __shared__ int whist[kDispatchWarps][kMaxExperts];
    __shared__ int soff[kMaxExperts + 1];
    // The segmenting below assumes exactly kDispatchWarps warps; any other block leaves the outputs
    // untouched (poisoned by the host), which the tests would catch.
    if (blockDim.x != kDispatchWarps * 32) return;
    const int E = p.experts;
    const int tid = threadIdx.x;
    const int lane = tid & 31, w = tid >> 5;
    const int seg = (p.pairs + kDispatchWarps - 1) / kDispatchWarps;
    const int begin = min(w * seg, p.pairs), end = min(begin + seg, p.pairs);

    for (int i = tid; i < kDispatchWarps * kMaxExperts; i += blockDim.x) whist[i / kMaxExperts][i % kMaxExperts] = 0;
    for (int i = tid; i < p.rows_cap; i += blockDim.x) src_row[i] = -1;
    __syncthreads();

    for (int base = begin; base < end; base += 32) {
        int i = base + lane;
        int e = i < end ? topk_idx[i] : -1;
        if (e >= E) e = -1;
        int r;
        bool last;
        group_rank(e, lane, &r, &last);
        if (e >= 0 && last) whist[w][e] += r + 1;
    }
    __syncthreads();

    for (int e = tid; e < E; e += blockDim.x) {
        int run = 0;
        for (int v = 0; v < kDispatchWarps; ++v) {
            int c = whist[v][e];
            whist[v][e] = run;  // becomes this warp's first row relative to the expert's segment
            run += c;
        }
        counts[e] = run;
        soff[e + 1] = (run + p.pad_to - 1) / p.pad_to * p.pad_to;
    }
    __syncthreads();
    if (tid == 0) {
        // E <= 512 serial adds: cheaper than a block scan's barriers at these sizes.
        soff[0] = 0;
        for (int e = 0; e < E; ++e) soff[e + 1] += soff[e];
    }
    __syncthreads();
    for (int e = tid; e <= E; e += blockDim.x) offsets[e] = soff[e];
    for (int e = tid; e < E; e += blockDim.x)
        for (int v = 0; v < kDispatchWarps; ++v) whist[v][e] += soff[e];
    __syncthreads();

    for (int base = begin; base < end; base += 32) {
        int i = base + lane;
        int e = i < end ? topk_idx[i] : -1;
        if (e >= E) e = -1;
        int r;
        bool last;
        group_rank(e, lane, &r, &last);
        int row = e >= 0 ? whist[w][e] + r : -1;
        __syncwarp();  // all lanes have read their expert's running row before the last one moves it
        if (e >= 0 && last) whist[w][e] += r + 1;
        __syncwarp();
        if (i < end) {
            pos[i] = row;
            if (row >= 0 && row < p.rows_cap) src_row[row] = i / p.k;
        }
    }
}

// One warp per permuted row; 16-byte vector copies when the row size and both bases allow it.
template <class T>
__device__ __forceinline__ void fwd(const PermuteFwdParams& p) {
    const T* x = ptr<const T>(p.x);                  // [T, d]
    const int* src_row = ptr<const int>(p.src_row);  // [R]
    T* xp = ptr<T>(p.xp);                            // [R, d]
    const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= p.rows) return;
    const int lane = (int)lane_id();
    const int t = src_row[r];
    const size_t row_bytes = (size_t)p.d * sizeof(T);
    const bool vec = row_bytes % 16 == 0 && p.x % 16 == 0 && p.xp % 16 == 0;
    if (vec) {
        const uint4* src = reinterpret_cast<const uint4*>(x + (size_t)(t < 0 ? 0 : t) * p.d);
        uint4* dst = reinterpret_cast<uint4*>(xp + (size_t)r * p.d);
        const int n = (int)(row_bytes / 16);
        for (int c = lane; c < n; c += 32) dst[c] = t >= 0 ? src[c] : make_uint4(0, 0, 0, 0);
    } else {
        for (int c = lane; c < p.d; c += 32) xp[(size_t)r * p.d + c] = t >= 0 ? x[(size_t)t * p.d + c] : from_f32<T>(0.0f);
    }
}

// One warp per token: dx[t] = sum over its k slots, in slot order. The slots' rows are read once
// into registers; columns go 16 bytes per lane when the row size and bases allow it.
template <class T>
__device__ __forceinline__ void bwd(const PermuteBwdParams& p) {
    const T* dxp = ptr<const T>(p.dxp);      // [R, d]
    const int* pos = ptr<const int>(p.pos);  // [T*k]
    T* dx = ptr<T>(p.dx);                    // [T, d]
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (t >= p.tokens) return;
    int rows[kMaxSlots];
    const int k = p.k < kMaxSlots ? p.k : kMaxSlots;
    for (int s = 0; s < k; ++s) rows[s] = pos[(size_t)t * p.k + s];
    const int lane = (int)lane_id();
    if (vec16<T>(p.d, p.dxp, p.dx)) {
        constexpr int N = 16 / sizeof(T);
        for (int c = lane * N; c < p.d; c += 32 * N) {
            float acc[N] = {};
            for (int s = 0; s < k; ++s)
                if (rows[s] >= 0) add16<T>(acc, dxp + (size_t)rows[s] * p.d + c, 1.0f);
            store16<T>(dx + (size_t)t * p.d + c, acc);
        }
        return;
    }
    for (int c = lane; c < p.d; c += 32) {
        float acc = 0.0f;
        for (int s = 0; s < k; ++s)
            if (rows[s] >= 0) acc += to_f32(dxp[(size_t)rows[s] * p.d + c]);
        dx[(size_t)t * p.d + c] = from_f32<T>(acc);
    }
}

}  // namespace permute

namespace combine {

// One warp per token: y[t] = sum_s w[t,s] yp[pos[t,s]], in slot order, f32 accumulation; the
// slots' rows and weights are read once, columns 16 bytes per lane when aligned.
template <class T>
__device__ __forceinline__ void fwd(const CombineFwdParams& p) {
    const T* yp = ptr<const T>(p.yp);        // [R, d]
    const int* pos = ptr<const int>(p.pos);  // [T*k]
    const float* w = ptr<const float>(p.w);  // [T, k]
    T* y = ptr<T>(p.y);                      // [T, d]
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (t >= p.tokens) return;
    int rows[kMaxSlots];
    float ws[kMaxSlots];
    const int k = p.k < kMaxSlots ? p.k : kMaxSlots;
    for (int s = 0; s < k; ++s) {
        rows[s] = pos[(size_t)t * p.k + s];
        ws[s] = w[(size_t)t * p.k + s];
    }
    const int lane = (int)lane_id();
    if (vec16<T>(p.d, p.yp, p.y)) {
        constexpr int N = 16 / sizeof(T);
        for (int c = lane * N; c < p.d; c += 32 * N) {
            float acc[N] = {};
            for (int s = 0; s < k; ++s)
                if (rows[s] >= 0) add16<T>(acc, yp + (size_t)rows[s] * p.d + c, ws[s]);
            store16<T>(y + (size_t)t * p.d + c, acc);
        }
        return;
    }
    for (int c = lane; c < p.d; c += 32) {
        float acc = 0.0f;
        for (int s = 0; s < k; ++s)
            if (rows[s] >= 0) acc += ws[s] * to_f32(yp[(size_t)rows[s] * p.d + c]);
        y[(size_t)t * p.d + c] = from_f32<T>(acc);
    }
}

// Warp g handles token g (scatter of w*dy into its k rows, plus the k dot products for dw) and, if
// row g of the permuted buffer is padding (src_row < 0), zeroes it: every dyp row is written once.
template <class T>
__device__ __forceinline__ void bwd(const CombineBwdParams& p) {
    const T* dy = ptr<const T>(p.dy);                // [T, d]
    const T* yp = ptr<const T>(p.yp);                // [R, d]
    const int* pos = ptr<const int>(p.pos);          // [T*k]
    const float* w = ptr<const float>(p.w);          // [T, k]
    const int* src_row = ptr<const int>(p.src_row);  // [R]
    T* dyp = ptr<T>(p.dyp);                          // [R, d]
    float* dw = ptr<float>(p.dw);                    // [T, k]
    const int g = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = (int)lane_id();
    if (g < p.tokens) {
        const bool vec = vec16<T>(p.d, p.dy, p.yp) && p.dyp % 16 == 0;
        for (int s = 0; s < p.k; ++s) {
            const int r = pos[(size_t)g * p.k + s];
            const float ws = w[(size_t)g * p.k + s];
            float dot = 0.0f;
            if (r >= 0 && vec) {
                constexpr int N = 16 / sizeof(T);
                for (int c = lane * N; c < p.d; c += 32 * N) {
                    float v[N] = {}, yv[N] = {}, out[N];
                    add16<T>(v, dy + (size_t)g * p.d + c, 1.0f);
                    add16<T>(yv, yp + (size_t)r * p.d + c, 1.0f);
#pragma unroll
                    for (int i = 0; i < N; ++i) {
                        out[i] = ws * v[i];
                        dot += v[i] * yv[i];
                    }
                    store16<T>(dyp + (size_t)r * p.d + c, out);
                }
            } else if (r >= 0) {
                for (int c = lane; c < p.d; c += 32) {
                    float v = to_f32(dy[(size_t)g * p.d + c]);
                    dyp[(size_t)r * p.d + c] = from_f32<T>(ws * v);
                    dot += v * to_f32(yp[(size_t)r * p.d + c]);
                }
            }
            dot = warp_sum(dot);
            if (lane == 0) dw[(size_t)g * p.k + s] = dot;
        }
    }
    if (g < p.rows && src_row[g] < 0) {
        for (int c = lane; c < p.d; c += 32) dyp[(size_t)g * p.d + c] = from_f32<T>(0.0f);
    }
}

}  // namespace combine
}  // namespace automoe

extern "C" __global__ void permute_dispatch_i32(DispatchParams p) { automoe::permute::dispatch(p); }
extern "C" __global__ void permute_fwd_f32(PermuteFwdParams p) { automoe::permute::fwd<float>(p); }
extern "C" __global__ void permute_fwd_bf16(PermuteFwdParams p) { automoe::permute::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void permute_bwd_f32(PermuteBwdParams p) { automoe::permute::bwd<float>(p); }
extern "C" __global__ void permute_bwd_bf16(PermuteBwdParams p) { automoe::permute::bwd<__nv_bfloat16>(p); }
extern "C" __global__ void combine_fwd_f32(CombineFwdParams p) { automoe::combine::fwd<float>(p); }
extern "C" __global__ void combine_fwd_bf16(CombineFwdParams p) { automoe::combine::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void combine_bwd_f32(CombineBwdParams p) { automoe::combine::bwd<float>(p); }
extern "C" __global__ void combine_bwd_bf16(CombineBwdParams p) { automoe::combine::bwd<__nv_bfloat16>(p); }
