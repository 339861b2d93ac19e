// Label-smoothed cross-entropy over rows of logits (src/cpu/loss.rs is the reference): the target
// distribution is q_j = (1 - eps) [j == t] + eps / v, rows whose target is the ignored id give 0.
// One block per row (grid-strided over rows); each thread walks a strided share of the row in
// order and a fixed tree combines the threads, so the same inputs give the same bits on every run.
#include "common.cuh"

namespace automoe {
namespace loss {

constexpr int kThreads = 256;  // launches must use this block size

struct RowStats {
    float max;      // max_j x_j
    float sum_exp;  // sum_j exp(x_j - max)
};

// Max and sum of exponentials of one row of v logits (every thread of the block gets them).
template <class T>
__device__ __forceinline__ RowStats row_stats(const T* x, int v) {
    float m = neg_inf();
    for (int j = threadIdx.x; j < v; j += kThreads) m = fmaxf(m, to_f32(x[j]));
    m = block_max<kThreads>(m);
    float s = 0.0f;
    for (int j = threadIdx.x; j < v; j += kThreads) s += expf(to_f32(x[j]) - m);
    s = block_sum<kThreads>(s);
    return RowStats{m, s};
}

// loss[r] = (1 - eps) nll + eps (lse - mean_j x_j), nll[r] = lse - x_t; both 0 for ignored rows.
template <class T>
__device__ void fwd(const CrossEntropyParams& p) {
    const T* logits = ptr<const T>(p.logits);  // [rows, v]
    const int* targets = ptr<const int>(p.targets);  // [rows]
    float* loss = ptr<float>(p.loss);  // [rows]
    float* nll = ptr<float>(p.nll);    // [rows]
    if (blockDim.x != kThreads) return;  // outputs stay poisoned; the tests catch it
    for (int r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const int t = targets[r];
        if (t == p.ignore || t < 0 || t >= p.v) {  // the host rejects out-of-range targets
            if (threadIdx.x == 0) {
                loss[r] = 0.0f;
                nll[r] = 0.0f;
            }
            continue;
        }
        const T* x = logits + (long long)r * p.v;
        const RowStats st = row_stats(x, p.v);
        // sum_j (x_j - max): lse - mean_j x_j = log(sum_exp) - mean_j (x_j - max), without the
        // cancellation of subtracting two large numbers.
        float c = 0.0f;
        for (int j = threadIdx.x; j < p.v; j += kThreads) c += to_f32(x[j]) - st.max;
        c = block_sum<kThreads>(c);
        if (threadIdx.x == 0) {
            const float log_s = logf(st.sum_exp);
            const float n = log_s - (to_f32(x[t]) - st.max);
            const float mean_neg_logp = log_s - c / (float)p.v;
            loss[r] = (1.0f - p.eps) * n + p.eps * mean_neg_logp;
            nll[r] = n;
        }
    }
}

// dlogits[r, j] = scale (softmax_j - q_j); zero rows for ignored targets.
template <class T>
__device__ void bwd(const CrossEntropyParams& p) {
    const T* logits = ptr<const T>(p.logits);  // [rows, v]
    const int* targets = ptr<const int>(p.targets);  // [rows]
    T* dlogits = ptr<T>(p.dlogits);  // [rows, v]
    if (blockDim.x != kThreads) return;
    const float smooth = p.eps / (float)p.v;
    const float hit = 1.0f - p.eps;
    for (int r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const int t = targets[r];
        const T* x = logits + (long long)r * p.v;
        T* d = dlogits + (long long)r * p.v;
        if (t == p.ignore || t < 0 || t >= p.v) {
            for (int j = threadIdx.x; j < p.v; j += kThreads) d[j] = from_f32<T>(0.0f);
            continue;
        }
        const RowStats st = row_stats(x, p.v);
        const float inv = 1.0f / st.sum_exp;
        for (int j = threadIdx.x; j < p.v; j += kThreads) {
            const float prob = expf(to_f32(x[j]) - st.max) * inv;
            const float q = j == t ? hit + smooth : smooth;
            d[j] = from_f32<T>(p.scale * (prob - q));
        }
    }
}

}  // namespace loss
}  // namespace automoe

extern "C" __global__ void cross_entropy_fwd_f32(CrossEntropyParams p) { automoe::loss::fwd<float>(p); }
extern "C" __global__ void cross_entropy_fwd_bf16(CrossEntropyParams p) { automoe::loss::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void cross_entropy_bwd_f32(CrossEntropyParams p) { automoe::loss::bwd<float>(p); }
extern "C" __global__ void cross_entropy_bwd_bf16(CrossEntropyParams p) { automoe::loss::bwd<__nv_bfloat16>(p); }
