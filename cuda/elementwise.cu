// Elementwise tensor ops of the tape: strided copy / cast / accumulate, broadcasting binary ops,
// unary activations and their backward, and the counter-based dropout mask. One thread per output
// element (grid-strided), each output written by exactly one thread: deterministic.
#include "common.cuh"

namespace automoe {
namespace elementwise {

__device__ __forceinline__ long long grid_start() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_step() { return (long long)gridDim.x * blockDim.x; }

template <class S, class D>
__device__ void copy(const CopyParams& p) {
    const S* src = ptr<const S>(p.src);
    D* dst = ptr<D>(p.dst);
    for (long long i = grid_start(); i < p.n; i += grid_step()) {
        float v = to_f32(src[p.src_offset + strided_offset(i, p.rank, p.shape, p.src_stride)]);
        D* o = dst + p.dst_offset + strided_offset(i, p.rank, p.shape, p.dst_stride);
        if (p.accumulate) v += to_f32(*o);
        *o = from_f32<D>(v);
    }
}

// Same-type copies move the element as is (no f32 round trip), so a bf16 copy is bit-exact.
template <class T>
__device__ void copy_same(const CopyParams& p) {
    if (p.accumulate) {
        copy<T, T>(p);
        return;
    }
    const T* src = ptr<const T>(p.src);
    T* dst = ptr<T>(p.dst);
    for (long long i = grid_start(); i < p.n; i += grid_step())
        dst[p.dst_offset + strided_offset(i, p.rank, p.shape, p.dst_stride)] = src[p.src_offset + strided_offset(i, p.rank, p.shape, p.src_stride)];
}

template <class T>
__device__ void binary(const BinaryParams& p) {
    const T* a = ptr<const T>(p.a);
    const T* b = ptr<const T>(p.b);
    T* out = ptr<T>(p.out);
    for (long long i = grid_start(); i < p.n; i += grid_step()) {
        float x = to_f32(a[p.a_offset + strided_offset(i, p.rank, p.shape, p.a_stride)]);
        float y = to_f32(b[p.b_offset + strided_offset(i, p.rank, p.shape, p.b_stride)]);
        float r;
        switch (p.op) {
            case AUTOMOE_BINARY_ADD: r = x + y; break;
            case AUTOMOE_BINARY_SUB: r = x - y; break;
            case AUTOMOE_BINARY_MUL: r = x * y; break;
            default: r = x / y; break;
        }
        out[i] = from_f32<T>(r);
    }
}

// The tanh approximation of src/cpu/elementwise.rs.
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)

__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + tanhf(kGeluC * (x + 0.044715f * x * x * x))); }

__device__ __forceinline__ float gelu_grad(float x) {
    float t = tanhf(kGeluC * (x + 0.044715f * x * x * x));
    float du = kGeluC * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

template <class T>
__device__ void unary(const UnaryParams& p) {
    const T* x = ptr<const T>(p.x);
    const T* dy = ptr<const T>(p.dy);
    T* out = ptr<T>(p.out);
    for (long long i = grid_start(); i < p.n; i += grid_step()) {
        float r;
        switch (p.op) {
            case AUTOMOE_UNARY_SCALE: r = p.alpha * to_f32(x[i]); break;
            case AUTOMOE_UNARY_RELU: r = fmaxf(to_f32(x[i]), 0.0f); break;
            case AUTOMOE_UNARY_GELU: r = gelu(to_f32(x[i])); break;
            case AUTOMOE_UNARY_RELU_BWD: r = to_f32(x[i]) > 0.0f ? to_f32(dy[i]) : 0.0f; break;
            case AUTOMOE_UNARY_GELU_BWD: r = gelu_grad(to_f32(x[i])) * to_f32(dy[i]); break;
            default: r = p.alpha; break;
        }
        out[i] = from_f32<T>(r);
    }
}

// src/rng.rs hash64 (a splitmix64 finaliser over seed ^ counter * golden ratio).
__device__ __forceinline__ unsigned long long hash64(unsigned long long seed, unsigned long long counter) {
    unsigned long long z = seed ^ (counter * 0x9E3779B97F4A7C15ull + 0xD1B54A32D192ED03ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <class T>
__device__ void dropout_mask(const DropoutParams& p) {
    T* out = ptr<T>(p.out);
    for (long long i = grid_start(); i < p.n; i += grid_step())
        out[i] = from_f32<T>((hash64(p.seed, (unsigned long long)i) >> 32) >= p.threshold ? p.keep_scale : 0.0f);
}

}  // namespace elementwise
}  // namespace automoe

extern "C" __global__ void copy_f32_f32(CopyParams p) { automoe::elementwise::copy_same<float>(p); }
extern "C" __global__ void copy_bf16_bf16(CopyParams p) { automoe::elementwise::copy_same<__nv_bfloat16>(p); }
extern "C" __global__ void copy_f32_bf16(CopyParams p) { automoe::elementwise::copy<float, __nv_bfloat16>(p); }
extern "C" __global__ void copy_bf16_f32(CopyParams p) { automoe::elementwise::copy<__nv_bfloat16, float>(p); }
extern "C" __global__ void binary_f32(BinaryParams p) { automoe::elementwise::binary<float>(p); }
extern "C" __global__ void binary_bf16(BinaryParams p) { automoe::elementwise::binary<__nv_bfloat16>(p); }
extern "C" __global__ void unary_f32(UnaryParams p) { automoe::elementwise::unary<float>(p); }
extern "C" __global__ void unary_bf16(UnaryParams p) { automoe::elementwise::unary<__nv_bfloat16>(p); }
extern "C" __global__ void dropout_mask_f32(DropoutParams p) { automoe::elementwise::dropout_mask<float>(p); }
extern "C" __global__ void dropout_mask_bf16(DropoutParams p) { automoe::elementwise::dropout_mask<__nv_bfloat16>(p); }
