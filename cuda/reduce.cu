// Reductions of the tape: sum_to (the backward of every broadcast, bias gradients) and the squared
// sums behind gradient norms. Fixed summation orders and no float atomics: the same inputs give the
// same bits on every run.
#include "common.cuh"

namespace automoe {
namespace reduce {

constexpr int kThreads = 256;  // launches must use this block size

// One block per output element (grid-strided over outputs); each thread sums a strided share of
// the reduced elements in order, then a fixed tree combines the threads.
template <class T>
__device__ void sum_to(const SumToParams& p) {
    const T* x = ptr<const T>(p.x);
    T* out = ptr<T>(p.out);
    if (blockDim.x != kThreads) return;  // outputs stay poisoned; the tests catch it
    for (long long o = blockIdx.x; o < p.out_n; o += gridDim.x) {
        const long long base = p.x_offset + strided_offset(o, p.out_rank, p.out_shape, p.out_stride);
        float acc = 0.0f;
        for (long long r = threadIdx.x; r < p.red_n; r += kThreads) acc += to_f32(x[base + strided_offset(r, p.red_rank, p.red_shape, p.red_stride)]);
        acc = block_sum<kThreads>(acc);
        if (threadIdx.x == 0) out[o] = from_f32<T>(acc);
    }
}

template <class T>
__device__ void sumsq_partial(const SumSquaresParams& p) {
    const T* x = ptr<const T>(p.x);
    float* partial = ptr<float>(p.partial);
    if (blockDim.x != kThreads) return;
    float acc = 0.0f;
    for (long long i = (long long)blockIdx.x * kThreads + threadIdx.x; i < p.n; i += (long long)p.blocks * kThreads) {
        float v = to_f32(x[i]);
        acc += v * v;
    }
    acc = block_sum<kThreads>(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

}  // namespace reduce
}  // namespace automoe

extern "C" __global__ void sum_to_f32(SumToParams p) { automoe::reduce::sum_to<float>(p); }
extern "C" __global__ void sum_to_bf16(SumToParams p) { automoe::reduce::sum_to<__nv_bfloat16>(p); }
extern "C" __global__ void sumsq_partial_f32(SumSquaresParams p) { automoe::reduce::sumsq_partial<float>(p); }
extern "C" __global__ void sumsq_partial_bf16(SumSquaresParams p) { automoe::reduce::sumsq_partial<__nv_bfloat16>(p); }
