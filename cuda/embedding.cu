// Embedding lookup (a row gather) and its backward, a deterministic scatter-add: the host sorts
// positions by id (stably) into order/starts, and each vocabulary row is summed by one warp in that
// order, so no float atomics and the same bits on every run (src/cpu/embedding.rs is the reference).
#include "common.cuh"

namespace automoe {
namespace embedding {

// out[i, j] = table[ids[i] * ld + j], one element per thread, grid-strided.
template <class T>
__device__ void fwd(const EmbeddingParams& p) {
    const T* table = ptr<const T>(p.table);  // [vocab, ld], row r at r * ld
    const int* ids = ptr<const int>(p.ids);  // [n]
    T* out = ptr<T>(p.out);                  // [n, d]
    const long long total = (long long)p.n * p.d;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const long long i = e / p.d;
        const long long j = e - i * p.d;
        const int id = ids[i];
        if (id < 0 || id >= p.vocab) continue;  // the host rejects these; never read out of bounds
        out[e] = table[(long long)id * p.ld + j];
    }
}

// One warp per vocabulary row (grid-strided over rows; the block size is a multiple of 32):
// dtable[v, j] = sum over k in starts[v]..starts[v+1] (in order) of dy[order[k], j]; 0 if empty.
template <class T>
__device__ void bwd(const EmbeddingParams& p) {
    const T* dy = ptr<const T>(p.dy);              // [n, d]
    const int* order = ptr<const int>(p.order);    // [n]
    const int* starts = ptr<const int>(p.starts);  // [vocab + 1]
    T* dtable = ptr<T>(p.dtable);                  // [vocab, d]
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    for (int v = blockIdx.x * warps + warp; v < p.vocab; v += gridDim.x * warps) {
        const int b = starts[v];
        const int e = starts[v + 1];
        T* out = dtable + (long long)v * p.d;
        for (int j = lane_id(); j < p.d; j += 32) {
            float acc = 0.0f;
            for (int k = b; k < e; ++k) acc += to_f32(dy[(long long)order[k] * p.d + j]);
            out[j] = from_f32<T>(acc);
        }
    }
}

}  // namespace embedding
}  // namespace automoe

extern "C" __global__ void embedding_fwd_f32(EmbeddingParams p) { automoe::embedding::fwd<float>(p); }
extern "C" __global__ void embedding_fwd_bf16(EmbeddingParams p) { automoe::embedding::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void embedding_bwd_f32(EmbeddingParams p) { automoe::embedding::bwd<float>(p); }
extern "C" __global__ void embedding_bwd_bf16(EmbeddingParams p) { automoe::embedding::bwd<__nv_bfloat16>(p); }

