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
    *reinterpret_cast<uint4*>(v) = load_vec<uint4>(src);
#pragma unroll
    for (int i = 0; i < (int)(16 / sizeof(T)); ++i) acc[i] += scale * to_f32(v[i]);
}

// dst[i] = acc[i] for 16 bytes of T at dst (16-byte aligned).
template <class T>
__device__ __forceinline__ void store16(T* dst, const float* acc) {
    __align__(16) T v[16 / sizeof(T)];
#pragma unroll
    for (int i = 0; i < (int)(16 / sizeof(T)); ++i) v[i] = from_f32<T>(acc[i]);
    store_vec<uint4>(dst, *reinterpret_cast<const uint4*>(v));
}

namespace permute {

constexpr int kDispatchThreads = AUTOMOE_DISPATCH_THREADS;
constexpr int kDispatchWarps = kDispatchThreads / 32;
constexpr int kDispatchChunk = AUTOMOE_DISPATCH_CHUNK;             // pairs per block
constexpr int kPairsPerLane = kDispatchChunk / kDispatchThreads;  // held in registers
constexpr int kMaxExperts = 512;
static_assert(kDispatchChunk % kDispatchThreads == 0, "a block's chunk splits evenly over its lanes");
static_assert(2 * kDispatchThreads >= kMaxExperts, "the assign kernel scans two experts per thread");

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

// Exclusive prefix sum of one int per thread over the block (blockDim.x a multiple of 32); *total
// gets the sum of all. `warp_tot` is 32 ints of shared scratch. Has barriers: every thread calls it.
__device__ __forceinline__ int block_exclusive_scan(int v, int* warp_tot, int* total) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int x = v;
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) warp_tot[w] = x;
    __syncthreads();
    if (w == 0) {
        int s = lane < nw ? warp_tot[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, s, o);
            if (lane >= o) s += y;
        }
        warp_tot[lane] = s;  // inclusive over warps
    }
    __syncthreads();
    const int before = w > 0 ? warp_tot[w - 1] : 0;
    *total = warp_tot[nw - 1];
    __syncthreads();  // the scratch may be reused after return
    return before + x - v;
}

// The block's pairs: warp w owns kPairsPerLane * 32 consecutive pairs of the block's chunk, lane l
// holds pairs base + l + 32 j. Experts out of range read as -1 (never counted, pos = -1).
__device__ __forceinline__ void load_pairs(const DispatchParams& p, int e_of[kPairsPerLane], int* base) {
    const int* topk_idx = ptr<const int>(p.topk_idx);  // [T*k]
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    *base = blockIdx.x * kDispatchChunk + w * (kPairsPerLane * 32);
#pragma unroll
    for (int j = 0; j < kPairsPerLane; ++j) {
        const int i = *base + 32 * j + lane;
        const int e = i < p.pairs ? topk_idx[i] : -1;
        e_of[j] = e >= 0 && e < p.experts ? e : -1;
    }
}

// Adds the warp's pairs to its own histogram row (lanes sharing an expert publish once).
__device__ __forceinline__ void warp_count(const int e_of[kPairsPerLane], int* hist_row) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < kPairsPerLane; ++j) {
        int r;
        bool last;
        group_rank(e_of[j], lane, &r, &last);
        if (e_of[j] >= 0 && last) hist_row[e_of[j]] += r + 1;
        __syncwarp();  // the next batch's update of the same entry may come from another lane
    }
}

__device__ __forceinline__ bool dispatch_block_ok(const DispatchParams& p) {
    // The pair layout assumes exactly kDispatchThreads threads and at most kMaxExperts experts; any
    // other launch leaves the outputs untouched (poisoned by the host), which the tests would catch.
    return blockDim.x == kDispatchThreads && p.experts >= 1 && p.experts <= kMaxExperts;
}

// Kernel 1 of 3: block b's pair count per expert -> block_rows[b, :]; src_row = -1 everywhere
// (the assign kernel, queued after, overwrites the rows that hold a pair).
__device__ __forceinline__ void dispatch_count(const DispatchParams& p) {
    int* src_row = ptr<int>(p.src_row);        // [rows_cap]
    int* block_rows = ptr<int>(p.block_rows);  // [blocks, E]
    __shared__ int whist[kDispatchWarps][kMaxExperts];
    if (!dispatch_block_ok(p)) return;
    const int E = p.experts, tid = threadIdx.x, w = tid >> 5;
    for (long long i = (long long)blockIdx.x * blockDim.x + tid; i < p.rows_cap; i += (long long)gridDim.x * blockDim.x)
        src_row[i] = -1;
    for (int i = tid; i < kDispatchWarps * E; i += blockDim.x) whist[i / E][i % E] = 0;
    int e_of[kPairsPerLane], base;
    load_pairs(p, e_of, &base);
    __syncthreads();
    warp_count(e_of, whist[w]);
    __syncthreads();
    for (int e = tid; e < E; e += blockDim.x) {
        int c = 0;
        for (int v = 0; v < kDispatchWarps; ++v) c += whist[v][e];
        block_rows[(size_t)blockIdx.x * E + e] = c;
    }
}

__device__ __forceinline__ int dispatch_blocks(const DispatchParams& p) {
    return p.pairs > 0 ? (p.pairs + kDispatchChunk - 1) / kDispatchChunk : 1;
}

// Kernel 2 of 3, block e: expert e's total, and each count block's first row inside the expert's
// segment (an exclusive scan over blocks, in place). Thread i takes a contiguous run of blocks.
__device__ __forceinline__ void dispatch_scan(const DispatchParams& p) {
    int* counts = ptr<int>(p.counts);          // [E]
    int* block_rows = ptr<int>(p.block_rows);  // [blocks, E]
    __shared__ int warp_tot[32];
    if (!dispatch_block_ok(p)) return;
    const int E = p.experts, e = blockIdx.x;
    if (e >= E) return;  // uniform over the block
    const int nb = dispatch_blocks(p);
    const int per = (nb + blockDim.x - 1) / blockDim.x;
    const int b0 = min((int)threadIdx.x * per, nb), b1 = min(b0 + per, nb);
    int sum = 0;
    for (int b = b0; b < b1; ++b) sum += block_rows[(size_t)b * E + e];
    int total;
    int run = block_exclusive_scan(sum, warp_tot, &total);
    for (int b = b0; b < b1; ++b) {
        const int c = block_rows[(size_t)b * E + e];
        block_rows[(size_t)b * E + e] = run;
        run += c;
    }
    if (threadIdx.x == 0) counts[e] = total;
}

// Kernel 3 of 3: the padded segment starts (every block scans the E counts itself; block 0 also
// publishes them), then each warp's first row per expert = segment start + the block's first row
// (from the scan) + the counts of the block's earlier warps; then rows in pair order.
__device__ __forceinline__ void dispatch_assign(const DispatchParams& p) {
    const int* counts = ptr<const int>(p.counts);          // [E]
    int* offsets = ptr<int>(p.offsets);                    // [E+1]
    const int* block_rows = ptr<const int>(p.block_rows);  // [blocks, E]
    int* pos = ptr<int>(p.pos);                            // [T*k]
    int* src_row = ptr<int>(p.src_row);                    // [rows_cap]
    __shared__ int whist[kDispatchWarps][kMaxExperts];
    __shared__ int soff[kMaxExperts + 1];
    __shared__ int warp_tot[32];
    if (!dispatch_block_ok(p)) return;
    const int E = p.experts, tid = threadIdx.x, lane = tid & 31, w = tid >> 5;

    // Segment starts: thread i owns experts 2i and 2i + 1.
    const int e0 = 2 * tid, e1 = 2 * tid + 1;
    const int pad = p.pad_to;
    const int s0 = e0 < E ? (counts[e0] + pad - 1) / pad * pad : 0;
    const int s1 = e1 < E ? (counts[e1] + pad - 1) / pad * pad : 0;
    int total;
    const int start = block_exclusive_scan(s0 + s1, warp_tot, &total);
    if (e0 < E) soff[e0] = start;
    if (e1 < E) soff[e1] = start + s0;
    if (tid == 0) soff[E] = total;
    for (int i = tid; i < kDispatchWarps * E; i += blockDim.x) whist[i / E][i % E] = 0;
    int e_of[kPairsPerLane], base;
    load_pairs(p, e_of, &base);
    __syncthreads();
    if (blockIdx.x == 0)
        for (int e = tid; e <= E; e += blockDim.x) offsets[e] = soff[e];
    warp_count(e_of, whist[w]);
    __syncthreads();
    for (int e = tid; e < E; e += blockDim.x) {
        int run = soff[e] + block_rows[(size_t)blockIdx.x * E + e];
        for (int v = 0; v < kDispatchWarps; ++v) {
            const int c = whist[v][e];
            whist[v][e] = run;  // this warp's first row for expert e
            run += c;
        }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kPairsPerLane; ++j) {
        const int e = e_of[j];
        int r;
        bool last;
        group_rank(e, lane, &r, &last);
        const int row = e >= 0 ? whist[w][e] + r : -1;
        __syncwarp();  // all lanes have read their expert's running row before the last one moves it
        if (e >= 0 && last) whist[w][e] += r + 1;
        __syncwarp();
        const int i = base + 32 * j + lane;
        if (i < p.pairs) {
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
        const unsigned char* src = reinterpret_cast<const unsigned char*>(x + (size_t)(t < 0 ? 0 : t) * p.d);
        unsigned char* dst = reinterpret_cast<unsigned char*>(xp + (size_t)r * p.d);
        const int n = (int)(row_bytes / 16);
        for (int c = lane; c < n; c += 32) store_vec<uint4>(dst + 16 * c, t >= 0 ? load_vec<uint4>(src + 16 * c) : make_uint4(0, 0, 0, 0));
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

extern "C" __global__ void permute_dispatch_count_i32(DispatchParams p) { automoe::permute::dispatch_count(p); }
extern "C" __global__ void permute_dispatch_scan_i32(DispatchParams p) { automoe::permute::dispatch_scan(p); }
extern "C" __global__ void permute_dispatch_assign_i32(DispatchParams p) { automoe::permute::dispatch_assign(p); }
extern "C" __global__ void dispatch_fractions_f32(DispatchFractionsParams p) {
    const int* counts = automoe::ptr<const int>(p.counts);
    float* frac = automoe::ptr<float>(p.frac);
    const double pairs = (double)(p.pairs > 0 ? p.pairs : 1);
    for (int e = (int)threadIdx.x; e < p.experts; e += (int)blockDim.x) frac[e] = (float)((double)counts[e] / pairs);
}
extern "C" __global__ void permute_fwd_f32(PermuteFwdParams p) { automoe::permute::fwd<float>(p); }
extern "C" __global__ void permute_fwd_bf16(PermuteFwdParams p) { automoe::permute::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void permute_bwd_f32(PermuteBwdParams p) { automoe::permute::bwd<float>(p); }
extern "C" __global__ void permute_bwd_bf16(PermuteBwdParams p) { automoe::permute::bwd<__nv_bfloat16>(p); }
extern "C" __global__ void combine_fwd_f32(CombineFwdParams p) { automoe::combine::fwd<float>(p); }
extern "C" __global__ void combine_fwd_bf16(CombineFwdParams p) { automoe::combine::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void combine_bwd_f32(CombineBwdParams p) { automoe::combine::bwd<float>(p); }
extern "C" __global__ void combine_bwd_bf16(CombineBwdParams p) { automoe::combine::bwd<__nv_bfloat16>(p); }
