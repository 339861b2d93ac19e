// One beam-search step's candidates on the device (src/decode/candidates.rs is the reference and
// the caller): per row of [rows, v] logits, its log-sum-exp and its n largest finite permitted
// logits with their token ids, so that rows x n values, not rows x v logits, go to the host.
//
// One block of kThreads per row (grid-strided over rows). Each thread keeps its own sorted list
// of at most n (value, token) pairs over the tokens j = tid, tid + kThreads, ... (ascending, so an
// equal value never displaces an earlier token), then n rounds of a block-wide arg-max over the
// threads' list heads (larger value first, then lower token) merge the lists in order. Everything
// runs in a fixed order: the same inputs give the same bits on every run.
#include "common.cuh"

namespace automoe {
namespace decode {

constexpr int kThreads = 128;  // launches must use this block size
constexpr int kWarps = kThreads / 32;
constexpr int kNoToken = 0x7fffffff;

__device__ __forceinline__ bool finite_f32(float x) { return fabsf(x) <= 3.402823466e+38f; }

__device__ __forceinline__ bool permitted(int j, int allow, const RowTopParams& p) {
    if (allow == AUTOMOE_ALLOW_EOS_ONLY) return j == p.eos_id;
    return j != p.pad_id && j != p.bos_id && (allow == AUTOMOE_ALLOW_TOKENS_AND_EOS || j != p.eos_id);
}

// (a, ia) ranks before (b, ib): larger value, then lower token.
__device__ __forceinline__ bool ranks_before(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

// The best (value, token) over the block: a xor butterfly in each warp, then warp 0 over the warp
// winners. Every thread gets the result; every thread must call it.
__device__ __forceinline__ void block_best(float& v, int& t) {
    __shared__ float s_v[kWarps];
    __shared__ int s_t[kWarps];
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int ot = __shfl_xor_sync(0xffffffffu, t, o);
        if (ranks_before(ov, ot, v, t)) {
            v = ov;
            t = ot;
        }
    }
    if (lane_id() == 0) {
        s_v[threadIdx.x >> 5] = v;
        s_t[threadIdx.x >> 5] = t;
    }
    __syncthreads();
    v = s_v[0];
    t = s_t[0];
    for (int w = 1; w < kWarps; ++w)
        if (ranks_before(s_v[w], s_t[w], v, t)) {
            v = s_v[w];
            t = s_t[w];
        }
    __syncthreads();  // s_v, s_t are reused by the next call
}

template <class T>
__device__ void row_top(const RowTopParams& p) {
    const T* logits = ptr<const T>(p.logits);       // [rows, v]
    const int* allowed = ptr<const int>(p.allowed);  // [rows]
    int* tokens = ptr<int>(p.tokens);                // [rows, n]
    float* values = ptr<float>(p.values);            // [rows, n]
    float* lse = ptr<float>(p.lse);                  // [rows]
    // Outputs stay poisoned on a bad launch; the host never makes one, the tests would catch it.
    if (blockDim.x != kThreads || p.n < 1 || p.n > AUTOMOE_DECODE_MAX_TOP || p.v < 1) return;
    const int n = p.n;
    for (int r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const T* x = logits + (long long)r * p.v;
        float m = neg_inf();
        for (int j = threadIdx.x; j < p.v; j += kThreads) m = fmaxf(m, to_f32(x[j]));
        m = block_max<kThreads>(m);
        float s = 0.0f;
        for (int j = threadIdx.x; j < p.v; j += kThreads) s += expf(to_f32(x[j]) - m);
        s = block_sum<kThreads>(s);

        const int allow = allowed[r];
        float lv[AUTOMOE_DECODE_MAX_TOP];
        int lt[AUTOMOE_DECODE_MAX_TOP];
        int cnt = 0;
        const int lo = allow == AUTOMOE_ALLOW_EOS_ONLY ? p.eos_id : 0;
        const int hi = allow == AUTOMOE_ALLOW_EOS_ONLY ? min(p.eos_id + 1, p.v) : p.v;
        for (int j = lo + (int)threadIdx.x; j < hi; j += kThreads) {
            const float xj = to_f32(x[j]);
            if (!permitted(j, allow, p) || !finite_f32(xj) || (cnt == n && xj <= lv[n - 1])) continue;
            int k = cnt < n ? cnt++ : n - 1;
            for (; k > 0 && lv[k - 1] < xj; --k) {
                lv[k] = lv[k - 1];
                lt[k] = lt[k - 1];
            }
            lv[k] = xj;
            lt[k] = j;
        }

        int head = 0;
        for (int i = 0; i < n; ++i) {
            float bv = head < cnt ? lv[head] : neg_inf();
            int bt = head < cnt ? lt[head] : kNoToken;
            block_best(bv, bt);  // block-uniform result
            if (bt == kNoToken) {  // every list is exhausted
                for (int k = i + (int)threadIdx.x; k < n; k += kThreads) {
                    tokens[(long long)r * n + k] = -1;
                    values[(long long)r * n + k] = neg_inf();
                }
                break;
            }
            if (head < cnt && lt[head] == bt) ++head;  // tokens are unique: only the owner pops
            if (threadIdx.x == 0) {
                tokens[(long long)r * n + i] = bt;
                values[(long long)r * n + i] = bv;
            }
        }
        if (threadIdx.x == 0) lse[r] = m + logf(s);
    }
}

}  // namespace decode
}  // namespace automoe

extern "C" __global__ void row_top_f32(RowTopParams p) { automoe::decode::row_top<float>(p); }
extern "C" __global__ void row_top_bf16(RowTopParams p) { automoe::decode::row_top<__nv_bfloat16>(p); }
