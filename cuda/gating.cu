// Top-k gating (the MoE router's softmax + expert choice), forward and backward.
// One warp per token: E <= 512 logits live in registers, up to 16 per lane, so softmax and the k rounds of
// arg-max are warp shuffles with no shared memory and no atomics (deterministic by construction).
// Ranking compares logits, not probabilities, so ties and near-ties resolve the same way on every
// backend regardless of how expf rounds; ties go to the lower expert index.
#include "common.cuh"

namespace automoe {
namespace gating {

constexpr int kMaxExperts = 512;
constexpr int kPerLane = kMaxExperts / 32;
constexpr int kMaxK = 8;

// The forward for E <= 32 * kPer: each lane holds kPer logits. Specialised by size because every
// slot costs instructions (and an expf) whether or not it holds an expert: a 16-slot body for
// E = 64 spent most of its time on empty slots.
template <class T, int kPer>
__device__ __forceinline__ void fwd_n(const TopkGatingFwdParams& p) {
    const T* logits = ptr<const T>(p.logits);  // [T, E]
    float* probs = ptr<float>(p.probs);        // [T, E]
    int* topk_idx = ptr<int>(p.topk_idx);      // [T, k]
    float* topk_w = ptr<float>(p.topk_w);      // [T, k]
    const int E = p.experts;
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (t >= p.tokens) return;  // whole warps exit together, so later shuffles stay convergent
    const int lane = (int)lane_id();
    const size_t row = (size_t)t * (size_t)E;

    float x[kPer];
    float m = neg_inf();
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
        int e = lane + 32 * i;
        x[i] = e < E ? to_f32(logits[row + e]) : neg_inf();
        m = fmaxf(m, x[i]);
    }
    m = warp_max(m);
    float ex[kPer];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
        int e = lane + 32 * i;
        ex[i] = e < E ? expf(x[i] - m) : 0.0f;
        s += ex[i];
    }
    s = warp_sum(s);
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
        int e = lane + 32 * i;
        if (e < E) probs[row + e] = ex[i] / s;
    }

    // k rounds of a warp arg-max over the not-yet-taken experts; every lane ends with the winner.
    unsigned taken = 0;  // bit i: this lane's expert lane + 32 i is already chosen
    int sel_idx[kMaxK];
    float sel_p[kMaxK];
    float sum_sel = 0.0f;
    for (int j = 0; j < p.k; ++j) {
        float bv = neg_inf();
        int bi = 0x7fffffff;
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
            int e = lane + 32 * i;
            bool free = e < E && !((taken >> i) & 1u);
            if (free && (x[i] > bv || (x[i] == bv && e < bi))) {
                bv = x[i];
                bi = e;
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) {
                bv = ov;
                bi = oi;
            }
        }
        if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
        sel_idx[j] = bi;
        sel_p[j] = expf(bv - m) / s;
        sum_sel += sel_p[j];
    }
    if (lane == 0) {
        for (int j = 0; j < p.k; ++j) {
            topk_idx[(size_t)t * p.k + j] = sel_idx[j];
            topk_w[(size_t)t * p.k + j] = p.renorm ? sel_p[j] / sum_sel : sel_p[j];
        }
    }
}

// One branch per launch (E is uniform over the grid), so warps never diverge on it.
template <class T>
__device__ __forceinline__ void fwd(const TopkGatingFwdParams& p) {
    const int per = (p.experts + 31) / 32;
    if (per <= 1)
        fwd_n<T, 1>(p);
    else if (per <= 2)
        fwd_n<T, 2>(p);
    else if (per <= 4)
        fwd_n<T, 4>(p);
    else if (per <= 8)
        fwd_n<T, 8>(p);
    else
        fwd_n<T, kPerLane>(p);
}

// dlogits = p * (g - <p, g>), where g (nonzero only at the chosen experts) is dL/dp:
//   plain:  g_j = dw_j
//   renorm: g_j = (dw_j - sum_i dw_i w_i) / S,  S = sum of the chosen p.
// Every lane computes the k scalars redundantly from broadcast loads: k <= 8, so this beats shuffles.
template <class T>
__device__ __forceinline__ void bwd(const TopkGatingBwdParams& p) {
    const float* probs = ptr<const float>(p.probs);   // [T, E]
    const int* topk_idx = ptr<const int>(p.topk_idx);  // [T, k]
    const float* topk_w = ptr<const float>(p.topk_w);  // [T, k]
    const float* dw = ptr<const float>(p.dw);          // [T, k]
    T* dlogits = ptr<T>(p.dlogits);                    // [T, E]
    const int E = p.experts;
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (t >= p.tokens) return;
    const int lane = (int)lane_id();
    const size_t row = (size_t)t * (size_t)E;

    int idx[kMaxK];
    float g[kMaxK];
    float S = 0.0f, sdw = 0.0f;
    for (int j = 0; j < p.k; ++j) {
        idx[j] = topk_idx[(size_t)t * p.k + j];
        g[j] = dw[(size_t)t * p.k + j];
        S += probs[row + idx[j]];
        sdw += g[j] * topk_w[(size_t)t * p.k + j];
    }
    float dot = 0.0f;
    for (int j = 0; j < p.k; ++j) {
        if (p.renorm) g[j] = (g[j] - sdw) / S;
        dot += probs[row + idx[j]] * g[j];
    }
    for (int e = lane; e < E; e += 32) {
        float ge = 0.0f;
        for (int j = 0; j < p.k; ++j)
            if (idx[j] == e) ge = g[j];
        dlogits[row + e] = from_f32<T>(probs[row + e] * (ge - dot));
    }
}

}  // namespace gating
}  // namespace automoe

extern "C" __global__ void topk_gating_fwd_f32(TopkGatingFwdParams p) { automoe::gating::fwd<float>(p); }
extern "C" __global__ void topk_gating_fwd_bf16(TopkGatingFwdParams p) { automoe::gating::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void topk_gating_bwd_f32(TopkGatingBwdParams p) { automoe::gating::bwd<float>(p); }
extern "C" __global__ void topk_gating_bwd_bf16(TopkGatingBwdParams p) { automoe::gating::bwd<__nv_bfloat16>(p); }
