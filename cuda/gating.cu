// Top-k gating (the MoE router's softmax + expert choice), forward and backward.
// Forward: a group of G lanes per token (G = 1 for E <= 8 up to a whole warp for E > 128), each lane
// holding P consecutive logits of the row in registers, loaded 16 bytes at a time when the row size
// allows. Softmax and the k arg-max rounds are register scans plus log2(G) shuffle steps inside the
// group: no shared memory, no atomics (deterministic by construction). At E = 64 a warp serves 4
// tokens with 3-step reductions, where one warp per token spent 5 steps per reduction on 2 logits
// per lane. Ranking compares logits, not probabilities, so ties and near-ties resolve the same way on
// every backend regardless of how expf rounds; ties go to the lower expert index.
#include "common.cuh"

namespace automoe {
namespace gating {

constexpr int kMaxExperts = 512;
constexpr int kMaxK = 8;

// (value, index) arg-max step: take (ov, oi) if it ranks before (bv, bi) (larger, or equal with a
// lower index).
__device__ __forceinline__ void take_better(float ov, int oi, float* bv, int* bi) {
    if (ov > *bv || (ov == *bv && oi < *bi)) {
        *bv = ov;
        *bi = oi;
    }
}

// Arg-max over the G lanes of a group (aligned G-lane slices of the warp); every lane ends with it.
template <int G>
__device__ __forceinline__ void group_argmax(float* bv, int* bi) {
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, *bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, *bi, o);
        take_better(ov, oi, bv, bi);
    }
}

template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// x[i] = row[e0 + i] for the P logits from e0 (-inf past E); 16-byte loads when `vec` (rows and base
// 16-byte aligned) and the whole run is inside the row.
template <class T, int P>
__device__ __forceinline__ void load_run(const T* row, int e0, int E, bool vec, float x[P]) {
    constexpr int V = 16 / sizeof(T);
    static_assert(P % V == 0, "a lane's run is whole 16-byte vectors");
    if (vec && e0 + P <= E) {
#pragma unroll
        for (int c = 0; c < P; c += V) {
            __align__(16) T v[V];
            *reinterpret_cast<uint4*>(v) = load_vec<uint4>(row + e0 + c);
#pragma unroll
            for (int i = 0; i < V; ++i) x[c + i] = to_f32(v[i]);
        }
    } else {
#pragma unroll
        for (int i = 0; i < P; ++i) x[i] = e0 + i < E ? to_f32(row[e0 + i]) : neg_inf();
    }
}

// row[e0 + i] = v[i] for the run's experts below E; 16-byte stores when `vec`.
template <class T, int P>
__device__ __forceinline__ void store_run(T* row, int e0, int E, bool vec, const float v[P]) {
    constexpr int V = 16 / sizeof(T);
    static_assert(P % V == 0, "a lane's run is whole 16-byte vectors");
    if (vec && e0 + P <= E) {
#pragma unroll
        for (int c = 0; c < P; c += V) {
            __align__(16) T w[V];
#pragma unroll
            for (int i = 0; i < V; ++i) w[i] = from_f32<T>(v[c + i]);
            store_vec<uint4>(row + e0 + c, *reinterpret_cast<const uint4*>(w));
        }
    } else {
#pragma unroll
        for (int i = 0; i < P; ++i)
            if (e0 + i < E) row[e0 + i] = from_f32<T>(v[i]);
    }
}

// The forward for E <= G * P with G lanes per token, lane g of a group holding experts [g P, g P + P).
template <class T, int G, int P>
__device__ __forceinline__ void fwd_group(const TopkGatingFwdParams& p) {
    static_assert(G >= 1 && G <= 32 && (G & (G - 1)) == 0, "groups tile the warp");
    const T* logits = ptr<const T>(p.logits);  // [T, E]
    float* probs = ptr<float>(p.probs);        // [T, E]
    int* topk_idx = ptr<int>(p.topk_idx);      // [T, k]
    float* topk_w = ptr<float>(p.topk_w);      // [T, k]
    const int E = p.experts, k = p.k;
    const int tid = (int)threadIdx.x, per_block = (int)blockDim.x / G;
    const int g = tid % G;
    const int t = (int)blockIdx.x * per_block + tid / G;
    // Warps wholly past the end leave together; a warp with some groups past the end keeps every
    // lane for the shuffles, and those groups skip their loads and stores.
    if ((int)blockIdx.x * per_block + (tid & ~31) / G >= p.tokens) return;
    const bool valid = t < p.tokens;
    const size_t row = (size_t)(valid ? t : 0) * (size_t)E;
    const int e0 = g * P;

    float x[P];
    const bool vec_in = ((size_t)E * sizeof(T)) % 16 == 0 && p.logits % 16 == 0;
    if (valid)
        load_run<T, P>(logits + row, e0, E, vec_in, x);
    else
#pragma unroll
        for (int i = 0; i < P; ++i) x[i] = neg_inf();

    // Round 0 of the top-k is the softmax's max: one (value, index) reduction serves both.
    float bv = neg_inf();
    int bi = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < P; ++i)
        if (e0 + i < E) take_better(x[i], e0 + i, &bv, &bi);
    group_argmax<G>(&bv, &bi);
    const float m = bv;

    // exp(x - m) once per logit, kept for the probabilities (the logits stay live for the ranking
    // rounds either way, and this needs fewer registers than recomputing them did: 48 against 60
    // on sm_90a).
    float pr[P];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < P; ++i) {
        pr[i] = e0 + i < E ? expf(x[i] - m) : 0.0f;
        s += pr[i];
    }
    s = group_sum<G>(s);
    // One reciprocal per token: an IEEE division is ~20 SASS instructions with a slow-path call,
    // and P + k of them per lane were a quarter of the kernel's instructions (docs/BENCHMARKS.md,
    // "Routing kernels"); the product is within 1.5 ulp of the quotient, and the ranking reads
    // logits, not probabilities, so no routing decision depends on it.
    const float inv_s = 1.0f / s;
#pragma unroll
    for (int i = 0; i < P; ++i) pr[i] *= inv_s;
    if (valid) store_run<float, P>(probs + row, e0, E, ((size_t)E * 4) % 16 == 0 && p.probs % 16 == 0, pr);

    // Rounds 1..k-1: the best expert ranking after the previous winner (pv, pi) in the order
    // (logit descending, index ascending), so no "taken" mask is needed.
    int sel_idx[kMaxK];
    float sel_p[kMaxK];
    sel_idx[0] = bi;
    sel_p[0] = expf(bv - m) * inv_s;
    float sum_sel = sel_p[0];
#pragma unroll
    for (int j = 1; j < kMaxK; ++j) {
        if (j >= k) continue;  // k is uniform over the grid
        const float pv = bv;
        const int pi = bi;
        bv = neg_inf();
        bi = 0x7fffffff;
#pragma unroll
        for (int i = 0; i < P; ++i) {
            const int e = e0 + i;
            const bool after = x[i] < pv || (x[i] == pv && e > pi);
            if (e < E && after) take_better(x[i], e, &bv, &bi);
        }
        group_argmax<G>(&bv, &bi);
        sel_idx[j] = bi;
        sel_p[j] = expf(bv - m) * inv_s;
        sum_sel += sel_p[j];
    }
    if (!valid) return;
    // The group's lanes share the k stores.
#pragma unroll
    for (int j = 0; j < kMaxK; ++j) {
        if (j < k && j % G == g) {
            topk_idx[(size_t)t * k + j] = sel_idx[j];
            topk_w[(size_t)t * k + j] = p.renorm ? sel_p[j] / sum_sel : sel_p[j];
        }
    }
}

// Lanes per token for E experts; gating_lanes_per_token in src/cuda/moe_ops.rs is the same rule.
__device__ __forceinline__ int lanes_per_token(int E) {
    return E <= 8 ? 1 : E <= 16 ? 2 : E <= 32 ? 4 : E <= 64 ? 8 : E <= 128 ? 16 : 32;
}

// Experts per token of the plain entry points; above it the `_wide` ones (16 logits per lane) take
// over. Separate entry points because a kernel's register count is that of its widest branch: the
// 16-logit body alone needs ~63 registers (sm_90a), the 8-logit bodies ~48 (8 blocks of 128 threads
// per SM either way since 2026-12-07, when both fell; before, 75-93 against 60).
constexpr int kMaxNarrowExperts = AUTOMOE_GATING_MAX_NARROW_EXPERTS;

// Whether a launch's expert count and k are ones its entry point handles (else it writes nothing).
template <class P>
__device__ __forceinline__ bool handles(const P& p, int max_experts) {
    return p.experts >= 1 && p.experts <= max_experts && p.k >= 1 && p.k <= kMaxK;
}

// Body::run<G>(p) with G = lanes_per_token(E): one branch per launch (E is uniform over the grid),
// so warps never diverge on it.
template <class Body, class P>
__device__ __forceinline__ void with_lanes_per_token(const P& p) {
    switch (lanes_per_token(p.experts)) {
        case 1: Body::template run<1>(p); break;
        case 2: Body::template run<2>(p); break;
        case 4: Body::template run<4>(p); break;
        case 8: Body::template run<8>(p); break;
        case 16: Body::template run<16>(p); break;
        default: Body::template run<32>(p);
    }
}

template <class T>
struct FwdGroup {
    template <int G>
    __device__ __forceinline__ static void run(const TopkGatingFwdParams& p) {
        fwd_group<T, G, 8>(p);
    }
};

template <class T>
__device__ __forceinline__ void fwd(const TopkGatingFwdParams& p) {
    if (handles(p, kMaxNarrowExperts)) with_lanes_per_token<FwdGroup<T>>(p);
}

// E up to 512: a warp per token, 16 logits per lane (the host launches it for E > 256).
template <class T>
__device__ __forceinline__ void fwd_wide(const TopkGatingFwdParams& p) {
    if (!handles(p, kMaxExperts)) return;
    fwd_group<T, 32, 16>(p);
}

// dlogits = p * (g - <p, g>), where g (nonzero only at the chosen experts) is dL/dp:
//   plain:  g_j = dw_j
//   renorm: g_j = (dw_j - sum_i dw_i w_i) / S,  S = sum of the chosen p.
// The forward's lane groups: lane g of a token's group reads and writes experts [g P, g P + P) with
// 16-byte accesses when the row size allows; every lane computes the k scalars redundantly from
// broadcast loads (k <= 8, so this beats shuffles, and the gathered probabilities are in the rows
// the group is reading anyway). No shuffles, so groups past the end simply leave.
template <class T, int G, int P>
__device__ __forceinline__ void bwd_group(const TopkGatingBwdParams& p) {
    const float* probs = ptr<const float>(p.probs);   // [T, E]
    const int* topk_idx = ptr<const int>(p.topk_idx);  // [T, k]
    const float* topk_w = ptr<const float>(p.topk_w);  // [T, k]
    const float* dw = ptr<const float>(p.dw);          // [T, k]
    T* dlogits = ptr<T>(p.dlogits);                    // [T, E]
    const int E = p.experts, k = p.k;
    const int tid = (int)threadIdx.x, per_block = (int)blockDim.x / G;
    const int t = (int)blockIdx.x * per_block + tid / G;
    if (t >= p.tokens) return;
    const int e0 = (tid % G) * P;
    const size_t row = (size_t)t * (size_t)E;

    float pr[P];
    load_run<float, P>(probs + row, e0, E, ((size_t)E * 4) % 16 == 0 && p.probs % 16 == 0, pr);
    int idx[kMaxK];
    float g[kMaxK];
    float S = 0.0f, sdw = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxK; ++j) {
        idx[j] = -1;
        g[j] = 0.0f;
        if (j < k) {
            idx[j] = topk_idx[(size_t)t * k + j];
            g[j] = dw[(size_t)t * k + j];
            S += probs[row + idx[j]];
            sdw += g[j] * topk_w[(size_t)t * k + j];
        }
    }
    float dot = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxK; ++j) {
        if (j < k) {
            if (p.renorm) g[j] = (g[j] - sdw) / S;
            dot += probs[row + idx[j]] * g[j];
        }
    }
    float out[P];
#pragma unroll
    for (int i = 0; i < P; ++i) {
        float ge = 0.0f;
#pragma unroll
        for (int j = 0; j < kMaxK; ++j)
            if (j < k && idx[j] == e0 + i) ge = g[j];
        out[i] = pr[i] * (ge - dot);
    }
    store_run<T, P>(dlogits + row, e0, E, ((size_t)E * sizeof(T)) % 16 == 0 && p.dlogits % 16 == 0, out);
}

template <class T>
struct BwdGroup {
    template <int G>
    __device__ __forceinline__ static void run(const TopkGatingBwdParams& p) {
        bwd_group<T, G, 8>(p);
    }
};

template <class T>
__device__ __forceinline__ void bwd(const TopkGatingBwdParams& p) {
    if (handles(p, kMaxNarrowExperts)) with_lanes_per_token<BwdGroup<T>>(p);
}

template <class T>
__device__ __forceinline__ void bwd_wide(const TopkGatingBwdParams& p) {
    if (!handles(p, kMaxExperts)) return;
    bwd_group<T, 32, 16>(p);
}

// ---- Top-k of given probabilities: the tape's device routing ----------------------------------
// The tape computes the router softmax as its own node (its output feeds the balance loss too), so
// its top-k starts from probabilities: one thread per token scanning its row k times. E is small
// in practice and this is a sliver of an MoE layer's work; what matters is that the routing never
// leaves the device. Exclusion goes by the chosen list (not "ranks after the previous winner"), so
// even NaN probabilities yield k distinct experts in range, which the dispatch kernels index by;
// with finite ones the choice, order and gate arithmetic are those of the CPU's moe::gating.
template <class T>
__device__ __forceinline__ void select_fwd(const TopkSelectParams& p) {
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= p.tokens || !handles(p, kMaxExperts)) return;
    const int E = p.experts, k = p.k;
    const T* row = ptr<const T>(p.probs) + (size_t)t * E;
    int* idx = ptr<int>(p.topk_idx) + (size_t)t * k;
    T* gates = ptr<T>(p.gates) + (size_t)t * k;
    int sel[kMaxK];
    float val[kMaxK];
    double sum = 0.0;
    for (int s = 0; s < k; ++s) {
        int bi = -1;
        float bv = 0.0f;
        for (int e = 0; e < E; ++e) {
            bool taken = false;
            for (int j = 0; j < s; ++j) taken |= sel[j] == e;
            if (taken) continue;
            const float v = to_f32(row[e]);
            // Ascending e with a strict comparison: ties go to the lower index.
            if (bi < 0 || v > bv) {
                bi = e;
                bv = v;
            }
        }
        sel[s] = bi;
        val[s] = bv;
        sum += (double)bv;
    }
    for (int s = 0; s < k; ++s) {
        idx[s] = sel[s];
        // Renormalised gates are computed in double and rounded once to f32 (then to T), as on the CPU.
        gates[s] = p.renorm ? from_f32<T>((float)((double)val[s] / sum)) : row[sel[s]];
    }
}

// dprobs = 0 except at the chosen experts: dgates there (plain), or with renormalisation
// (dgates_j - sum_s dgates_s gates_s) / S, S the sum of the chosen probabilities (moe::gating::topk_bwd).
template <class T>
__device__ __forceinline__ void select_bwd(const TopkSelectParams& p) {
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= p.tokens || !handles(p, kMaxExperts)) return;
    const int E = p.experts, k = p.k;
    const T* row = ptr<const T>(p.probs) + (size_t)t * E;
    const int* idx = ptr<const int>(p.topk_idx) + (size_t)t * k;
    const T* w = ptr<const T>(p.gates) + (size_t)t * k;
    const T* g = ptr<const T>(p.dgates) + (size_t)t * k;
    T* dp = ptr<T>(p.dprobs) + (size_t)t * E;
    for (int e = 0; e < E; ++e) dp[e] = from_f32<T>(0.0f);
    double sum = 0.0, dot = 0.0;
    if (p.renorm) {
        for (int s = 0; s < k; ++s) {
            const int e = idx[s];
            if (e >= 0 && e < E) sum += (double)to_f32(row[e]);
            dot += (double)to_f32(g[s]) * (double)to_f32(w[s]);
        }
    }
    for (int s = 0; s < k; ++s) {
        const int e = idx[s];
        if (e < 0 || e >= E) continue;  // never from select_fwd; no write outside the row regardless
        dp[e] = p.renorm ? from_f32<T>((float)(((double)to_f32(g[s]) - dot) / sum)) : g[s];
    }
}

}  // namespace gating
}  // namespace automoe

extern "C" __global__ void topk_gating_fwd_f32(TopkGatingFwdParams p) { automoe::gating::fwd<float>(p); }
extern "C" __global__ void topk_gating_fwd_bf16(TopkGatingFwdParams p) { automoe::gating::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void topk_gating_fwd_wide_f32(TopkGatingFwdParams p) { automoe::gating::fwd_wide<float>(p); }
extern "C" __global__ void topk_gating_fwd_wide_bf16(TopkGatingFwdParams p) { automoe::gating::fwd_wide<__nv_bfloat16>(p); }
extern "C" __global__ void topk_gating_bwd_f32(TopkGatingBwdParams p) { automoe::gating::bwd<float>(p); }
extern "C" __global__ void topk_gating_bwd_bf16(TopkGatingBwdParams p) { automoe::gating::bwd<__nv_bfloat16>(p); }
extern "C" __global__ void topk_gating_bwd_wide_f32(TopkGatingBwdParams p) { automoe::gating::bwd_wide<float>(p); }
extern "C" __global__ void topk_gating_bwd_wide_bf16(TopkGatingBwdParams p) { automoe::gating::bwd_wide<__nv_bfloat16>(p); }
extern "C" __global__ void topk_select_fwd_f32(TopkSelectParams p) { automoe::gating::select_fwd<float>(p); }
extern "C" __global__ void topk_select_fwd_bf16(TopkSelectParams p) { automoe::gating::select_fwd<__nv_bfloat16>(p); }
extern "C" __global__ void topk_select_bwd_f32(TopkSelectParams p) { automoe::gating::select_bwd<float>(p); }
extern "C" __global__ void topk_select_bwd_bf16(TopkSelectParams p) { automoe::gating::select_bwd<__nv_bfloat16>(p); }
