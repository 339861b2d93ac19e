#pragma once
// Grouped variable-width GEMMs (the kernels' code; the entry points are in grouped_gemm.cu and
// grouped_gemm_variants.cu): every expert's matmul of an MoE layer in one launch, although each
// expert has its own token count M_e and its own width. The problem list (GemmGroupParams, one per
// expert) lives on the device and is built there from the permutation's segment offsets by
// grouped_gemm_plan_i32, so no step needs the counts on the host (no device->host sync, capturable
// in a CUDA graph). Storage conventions are in cuda/abi.h.
//
// Scheduling: the plan gives each group its tile count and an exclusive prefix sum of them; a fixed
// grid of persistent blocks walks the global tile index (tile += gridDim.x) and finds its group by
// binary search over the prefix sums, so empty groups (M_e = 0) own no tiles and cost nothing, and
// a heterogeneous layer keeps every block busy without a host-side schedule.
//
// Determinism: each output element belongs to exactly one tile of one block and sums its K range in
// a fixed order; weight gradients (wgrad, K = tokens) are never split across blocks, so there are no
// float atomics anywhere, and repeated runs are bit-identical.
//
// Two compute paths: f32 on CUDA cores (register-tiled FFMA over shared-memory tiles) and bf16 on
// tensor cores (mma.sync m16n8k16 with f32 accumulators, ldmatrix, a multi-stage cp.async
// pipeline), through the inline-PTX helpers of common.cuh.
#include "common.cuh"

namespace automoe {
namespace ggemm {

constexpr int kThreads = AUTOMOE_GEMM_THREADS;
constexpr int kMaxGroups = 512;

enum Stage { kFwd = 0, kDgrad = 1, kWgrad = 2 };

// Operand orientation per stage (cuda/abi.h): only wgrad reads A as [K, M]; only fwd reads B as [N, K].
template <int S>
struct Layout {
    static constexpr bool a_km = S == kWgrad;
    static constexpr bool b_nk = S == kFwd;
};

// ---- Plan ------------------------------------------------------------------------------------------

// One block. Pass 1: each thread completes its groups (segment rows into m or k, token operands
// advanced to their segment, tile count). Pass 2: thread 0 scans the <= 512 tile counts serially
// (cheaper than a block scan's barriers at this size). Pass 3: each thread stores its prefix sums.
__device__ __forceinline__ void plan(const GroupedGemmPlanParams& p) {
    const GemmGroupParams* templ = ptr<const GemmGroupParams>(p.templ);  // [G]
    const int* offsets = ptr<const int>(p.offsets);                     // [G+1] or null
    GemmGroupParams* groups = ptr<GemmGroupParams>(p.groups);           // [G]
    __shared__ int tiles[kMaxGroups + 1];
    const int G = p.num_groups;
    for (int g = threadIdx.x; g < G; g += blockDim.x) {
        GemmGroupParams q = templ[g];
        if (offsets != nullptr) {
            const int row0 = offsets[g], rows = offsets[g + 1] - offsets[g];
            if (p.count_dim == 0)
                q.m = rows;
            else
                q.k = rows;
            // 64-bit byte offsets: row0 * ld * elem_bytes exceeds 32 bits for large layers.
            const unsigned long long r = (unsigned long long)row0 * (unsigned long long)p.elem_bytes;
            if (p.shift_mask & AUTOMOE_GEMM_SHIFT_A) q.a += r * (unsigned long long)q.lda;
            if (p.shift_mask & AUTOMOE_GEMM_SHIFT_B) q.b += r * (unsigned long long)q.ldb;
            if (p.shift_mask & AUTOMOE_GEMM_SHIFT_C) q.c += r * (unsigned long long)q.ldc;
            if ((p.shift_mask & AUTOMOE_GEMM_SHIFT_AUX) && q.aux != 0) q.aux += r * (unsigned long long)q.ldc;
        }
        const bool empty = q.m <= 0 || q.n <= 0 || (q.k <= 0 && p.accumulate);
        q.tiles = empty ? 0 : ((q.m + p.tile_m - 1) / p.tile_m) * ((q.n + p.tile_n - 1) / p.tile_n);
        if (q.k < 0) q.k = 0;
        tiles[g] = q.tiles;
        groups[g] = q;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int run = 0;
        for (int g = 0; g < G; ++g) {
            const int t = tiles[g];
            tiles[g] = run;
            run += t;
        }
    }
    __syncthreads();
    for (int g = threadIdx.x; g < G; g += blockDim.x) groups[g].tile_start = tiles[g];
}

// The group owning global tile `tile`: the last group whose tile_start <= tile (any later group
// starts past it, and an empty group just before it shares its start but has a lower index).
__device__ __forceinline__ int find_group(const GemmGroupParams* groups, int G, int tile) {
    int lo = 0, hi = G - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (groups[mid].tile_start <= tile)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

// Tiles of every group together: the persistent blocks' loop bound.
__device__ __forceinline__ int total_tiles(const GemmGroupParams* groups, int G) { return groups[G - 1].tile_start + groups[G - 1].tiles; }

// Global tile `tile` of a BM x BN tiling: its group's problem and the tile's first row and column
// (tiles run along n first within a group).
struct TileAt {
    GemmGroupParams q;
    int m0, n0;
};
template <int BM, int BN>
__device__ __forceinline__ TileAt tile_at(const GemmGroupParams* groups, int G, int tile) {
    const GemmGroupParams q = groups[find_group(groups, G, tile)];
    const int local = tile - q.tile_start, tiles_n = (q.n + BN - 1) / BN;
    return TileAt{q, (local / tiles_n) * BM, (local % tiles_n) * BN};
}

// Epilogue of one element: bias, ReLU, ReLU mask, accumulate. Out-of-range elements are skipped.
template <class T, class TC>
__device__ __forceinline__ void store(const GemmGroupParams& q, int flags, int row, int col, float v) {
    if (row >= q.m || col >= q.n) return;
    if (q.bias != 0) v += ptr<const float>(q.bias)[col];  // [N]
    if (flags & AUTOMOE_GEMM_RELU) v = fmaxf(v, 0.0f);
    const size_t idx = (size_t)row * (size_t)q.ldc + (size_t)col;
    // The mask reads the ReLU output a: relu'(z) = [z > 0] = [a > 0].
    if ((flags & AUTOMOE_GEMM_RELU_MASK) && q.aux != 0 && !(to_f32(ptr<const T>(q.aux)[idx]) > 0.0f)) v = 0.0f;
    TC* c = ptr<TC>(q.c);  // [M, ldc]
    if (flags & AUTOMOE_GEMM_ACCUMULATE) v += to_f32(c[idx]);
    c[idx] = from_f32<TC>(v);
}

// Whether an operand of elements T can be moved 16 bytes at a time (float4 loads, 16-byte
// cp.async): a 16-byte aligned base and rows of whole 16-byte chunks (else the scalar path, e.g. a
// width-3 expert).
template <class T>
__device__ __forceinline__ bool vec16_ok(automoe_dptr base, int ld) {
    return (base & 15) == 0 && ld % (int)(16 / sizeof(T)) == 0;
}

// Whether C and aux (elements T, read alongside) can be written two columns at a time: an even ldc
// and bases aligned to a pair (4 bytes for bf16, 8 for f32).
template <class T, class TC>
__device__ __forceinline__ bool pairs_ok(const GemmGroupParams& q) {
    return q.ldc % 2 == 0 && q.c % (2 * sizeof(TC)) == 0 && q.aux % (2 * sizeof(T)) == 0;
}

// Epilogue of two adjacent columns (col even) of one row: one 4- or 8-byte store when the pair is
// in range and C (and aux) are aligned for it, else element by element.
template <class T, class TC>
__device__ __forceinline__ void store_pair(const GemmGroupParams& q, int flags, bool paired, int row, int col, float v0, float v1) {
    if (!paired || col + 1 >= q.n) {
        store<T, TC>(q, flags, row, col, v0);
        store<T, TC>(q, flags, row, col + 1, v1);
        return;
    }
    if (row >= q.m) return;
    if (q.bias != 0) {
        const float* bias = ptr<const float>(q.bias);  // [N]
        v0 += bias[col];
        v1 += bias[col + 1];
    }
    if (flags & AUTOMOE_GEMM_RELU) {
        v0 = fmaxf(v0, 0.0f);
        v1 = fmaxf(v1, 0.0f);
    }
    const size_t idx = (size_t)row * (size_t)q.ldc + (size_t)col;
    if ((flags & AUTOMOE_GEMM_RELU_MASK) && q.aux != 0) {
        const T* aux = ptr<const T>(q.aux);
        if (!(to_f32(aux[idx]) > 0.0f)) v0 = 0.0f;
        if (!(to_f32(aux[idx + 1]) > 0.0f)) v1 = 0.0f;
    }
    TC* c = ptr<TC>(q.c);  // [M, ldc]
    if (flags & AUTOMOE_GEMM_ACCUMULATE) {
        v0 += to_f32(c[idx]);
        v1 += to_f32(c[idx + 1]);
    }
    store2(c + idx, v0, v1);
}

// A thread's share of a tile's epilogue is a grid: kRows rows (row0 + row_of(i)) by kPairs pairs of
// adjacent columns (col0 + pair_col(j), col0 even; row_of and pair_col compile-time offsets once
// unrolled, pair_col's even), the pair's values frag(i, j, 0) and frag(i, j, 1). store_pair, called
// per pair, re-tests every flag, the bias pointer and both bounds and forms a 64-bit index, and the
// compiler cannot hoist any of it past the stores (C may alias the bias): about 40 SASS
// instructions per pair, for the 64 pairs of a wgmma tile ~70 % of what the whole main loop issues
// at K = 1024 (docs/BENCHMARKS.md, "Epilogue"). So for the common cases the
// flags are tested once per tile and the pairs take store_grid_fast: per row one bound and one
// 64-bit row address, per pair a column compare, one 8-byte bias load and a store at an immediate
// offset from the row. (Row by row, so only one row address is live: a grid of row addresses
// spilled in the kernels capped at 128 registers.) The arithmetic order is store()'s, so results
// are bit-identical.
template <class T, class TC, int kRows, int kPairs, bool kBias, bool kRelu, bool kMask, bool kAcc, class RowOf, class PairCol, class Frag>
__device__ __forceinline__ void store_grid_fast(const GemmGroupParams& q, int row0, RowOf row_of, int col0, PairCol pair_col, Frag frag) {
    const int cols_left = q.n - col0;  // pair j is inside N when pair_col(j) < cols_left: an immediate compare
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
        const int row = row0 + row_of(i);
        if (row >= q.m) continue;
        const size_t off = (size_t)row * (size_t)q.ldc + (size_t)col0;
        TC* c = ptr<TC>(q.c) + off;  // [M, ldc]
#pragma unroll
        for (int j = 0; j < kPairs; ++j) {
            const int dc = pair_col(j);
            // N is even here, so an even column inside N has its pair partner inside too.
            if (dc >= cols_left) continue;
            float v0 = frag(i, j, 0), v1 = frag(i, j, 1);
            if (kBias) {
                float b0, b1;
                load2(ptr<const float>(q.bias) + col0 + dc, b0, b1);  // [N], 8-byte aligned
                v0 += b0, v1 += b1;
            }
            if (kRelu) v0 = fmaxf(v0, 0.0f), v1 = fmaxf(v1, 0.0f);
            if (kMask) {
                float a0, a1;
                load2(ptr<const T>(q.aux) + off + dc, a0, a1);  // [M, ldc]
                if (!(a0 > 0.0f)) v0 = 0.0f;
                if (!(a1 > 0.0f)) v1 = 0.0f;
            }
            if (kAcc) {
                float c0, c1;
                load2(c + dc, c0, c1);
                v0 += c0, v1 += c1;
            }
            store2(c + dc, v0, v1);
        }
    }
}

// The epilogue of a thread's grid (above): the flag combinations the MoE layer uses (bias and
// ReLU in the forward, the ReLU mask in dgrad, accumulation in dgrad and wgrad) on pair-aligned C,
// aux and bias with an even N take store_grid_fast; anything else goes pair by pair through
// store_pair.
template <class T, class TC, int kRows, int kPairs, class RowOf, class PairCol, class Frag>
__device__ __forceinline__ void store_grid(const GemmGroupParams& q, int flags, int row0, RowOf row_of, int col0, PairCol pair_col, Frag frag) {
    const bool paired = pairs_ok<T, TC>(q);
    if (paired && q.n % 2 == 0) {
        // A mask without aux is no mask (store() skips it the same way).
        int f = (q.aux != 0 ? flags : flags & ~AUTOMOE_GEMM_RELU_MASK);
        const bool bias = q.bias != 0;
        if (bias && q.bias % 8 != 0) f = -1;  // the pair's bias is one 8-byte load
        if (f == 0 && bias)
            return store_grid_fast<T, TC, kRows, kPairs, true, false, false, false>(q, row0, row_of, col0, pair_col, frag);
        if (f == 0)
            return store_grid_fast<T, TC, kRows, kPairs, false, false, false, false>(q, row0, row_of, col0, pair_col, frag);
        if (f == AUTOMOE_GEMM_RELU && bias)
            return store_grid_fast<T, TC, kRows, kPairs, true, true, false, false>(q, row0, row_of, col0, pair_col, frag);
        if (f == AUTOMOE_GEMM_RELU)
            return store_grid_fast<T, TC, kRows, kPairs, false, true, false, false>(q, row0, row_of, col0, pair_col, frag);
        if (f == AUTOMOE_GEMM_RELU_MASK && !bias)
            return store_grid_fast<T, TC, kRows, kPairs, false, false, true, false>(q, row0, row_of, col0, pair_col, frag);
        if (f == AUTOMOE_GEMM_ACCUMULATE && !bias)
            return store_grid_fast<T, TC, kRows, kPairs, false, false, false, true>(q, row0, row_of, col0, pair_col, frag);
    }
#pragma unroll
    for (int i = 0; i < kRows; ++i)
#pragma unroll
        for (int j = 0; j < kPairs; ++j) store_pair<T, TC>(q, flags, paired, row0 + row_of(i), col0 + pair_col(j), frag(i, j, 0), frag(i, j, 1));
}

// ---- f32 on CUDA cores -------------------------------------------------------------------------
// 128x128 block tile, K in steps of 8, 256 threads as 16 x 16. Thread (tx, ty) owns an 8x8
// register tile: rows 4 ty + {0..3} and 64 + 4 ty + {0..3}, columns 4 tx + {0..3} and
// 64 + 4 tx + {0..3}. Per k a thread reads its 8 A and 8 B values as four float4 shared loads and
// does 64 FFMA (the 4x4 tile of the first version did 16 FFMA for 8 scalar loads, so shared-memory
// issue bounded it at ~1/4 of the FP32 rate); the halves 64 apart make a warp's B loads 8 lanes of
// consecutive float4 per phase (conflict-free) and its A loads two broadcasts.
//
// Shared tiles are k-major (As[k][m], Bs[k][n], rows padded by 4 floats) and double-buffered: the
// next k-tile's global loads are issued into registers before the current k-tile is multiplied and
// stored to the other buffer after it, one barrier per k-tile. Global loads, 4 elements per thread
// and operand (float4 when the operand's base and leading dimension allow, else scalar, zero
// outside the valid region):
//   operand stored with contiguous k (fwd A and B, dgrad A): thread t reads row t / 2, k (t % 2) 4,
//     and stores the 4 values down 4 k-rows of the tile (lanes t, t + 1 write k-rows 4 apart, i.e.
//     16 banks apart with the 132-float row stride: no conflict);
//   operand stored with contiguous m or n (dgrad B, wgrad A and B): thread t reads k-row t / 32,
//     columns (t % 32) 4, and stores them as one float4.

constexpr int kF32M = AUTOMOE_GEMM_F32_TILE_M, kF32N = AUTOMOE_GEMM_F32_TILE_N, kF32K = 8, kF32Row = 128 + 4;
static_assert(kF32M == 128 && kF32N == 128 && kThreads == 256, "16 x 16 threads of 8x8 outputs");

// This thread's run of 4 elements of one operand's 128 x 8 (kKContig: rows mn, contiguous k) or
// 8 x 128 (rows k, contiguous mn) slice per k-tile, walked along K: only a pointer, a k and fixed
// bounds stay live through the main loop (the group's parameters are reloaded for the epilogue).
template <bool kKContig>
struct F32Run {
    const float* p;  // the run's first element at the current k-tile (read only when in range)
    int step;        // elements between consecutive k-tiles (8 ld < 2^31: ld is an int row pitch)
    int k, klim;     // the run's (first) k at the current k-tile; the operand's K
    int mn_valid;    // elements of the run inside the operand's M or N: 4 or 0 (kKContig), 0..4
    bool vec;        // float4 loads allowed: an aligned operand and the whole run inside M or N

    // Operand src (row-major, leading dimension ld) of extent mlim along m or n, the block's
    // slice starting at mn0.
    __device__ __forceinline__ F32Run(const float* src, int ld, int mn0, int mlim, int klim_, bool vec_) {
        const int t = (int)threadIdx.x;
        const int mn = kKContig ? mn0 + t / 2 : mn0 + (t % 32) * 4;
        k = kKContig ? (t % 2) * 4 : t / 32;
        klim = klim_;
        mn_valid = kKContig ? (mn < mlim ? 4 : 0) : min(max(mlim - mn, 0), 4);
        vec = vec_ && mn_valid == 4;
        p = kKContig ? src + (size_t)mn * ld + k : src + (size_t)k * ld + mn;
        step = kKContig ? kF32K : kF32K * ld;
    }

    // The run at the current k-tile (zero outside the valid region); then advances to the next.
    __device__ __forceinline__ void fetch(float v[4]) {
        if (vec && (kKContig ? k + 4 <= klim : k < klim)) {
            const float4 x = load_vec<float4>(p);
            v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
        } else {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const bool in = kKContig ? mn_valid == 4 && k + j < klim : j < mn_valid && k < klim;
                v[j] = in ? p[j] : 0.0f;
            }
        }
        p += step;
        k += kF32K;
    }
};

// Stores a run into the k-major tile dst[8][kF32Row].
template <bool kKContig>
__device__ __forceinline__ void f32_stash(float* dst, const float v[4]) {
    const int t = (int)threadIdx.x;
    if (kKContig) {
#pragma unroll
        for (int j = 0; j < 4; ++j) dst[((t % 2) * 4 + j) * kF32Row + t / 2] = v[j];
    } else {
        store_vec<float4>(dst + (t / 32) * kF32Row + (t % 32) * 4, make_float4(v[0], v[1], v[2], v[3]));
    }
}

template <int S>
__device__ __forceinline__ void simt_f32(const GroupedGemmParams& p) {
    using L = Layout<S>;
    const GemmGroupParams* groups = ptr<const GemmGroupParams>(p.groups);  // [G]
    __shared__ __align__(16) float As[2][kF32K * kF32Row];  // [buffer][k][m]
    __shared__ __align__(16) float Bs[2][kF32K * kF32Row];  // [buffer][k][n]
    const int G = p.num_groups;
    const int total = total_tiles(groups, G);
    const int tx = (int)threadIdx.x % 16, ty = (int)threadIdx.x / 16;
    for (int tile = blockIdx.x; tile < total; tile += gridDim.x) {
        const auto [g, m0, n0] = tile_at<kF32M, kF32N>(groups, G, tile);
        const int nk = (g.k + kF32K - 1) / kF32K;
        // A: [M, lda] or, wgrad, [K, lda]; B: [N, ldb] (fwd) or [K, ldb].
        F32Run<!L::a_km> ra_run(ptr<const float>(g.a), g.lda, m0, g.m, g.k, vec16_ok<float>(g.a, g.lda));
        F32Run<L::b_nk> rb_run(ptr<const float>(g.b), g.ldb, n0, g.n, g.k, vec16_ok<float>(g.b, g.ldb));
        float acc[8][8];
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
        float ra[4], rb[4];
        ra_run.fetch(ra);
        rb_run.fetch(rb);
        f32_stash<!L::a_km>(As[0], ra);
        f32_stash<L::b_nk>(Bs[0], rb);
        __syncthreads();
        for (int kt = 0; kt < nk; ++kt) {
            const int cur = kt & 1;
            const bool next = kt + 1 < nk;
            if (next) {
                ra_run.fetch(ra);
                rb_run.fetch(rb);
            }
#pragma unroll
            for (int kk = 0; kk < kF32K; ++kk) {
                const float* as = As[cur] + kk * kF32Row;
                const float* bs = Bs[cur] + kk * kF32Row;
                float a[8], b[8];
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float4 av = load_vec<float4>(as + 64 * h + 4 * ty);
                    const float4 bv = load_vec<float4>(bs + 64 * h + 4 * tx);
                    a[4 * h] = av.x, a[4 * h + 1] = av.y, a[4 * h + 2] = av.z, a[4 * h + 3] = av.w;
                    b[4 * h] = bv.x, b[4 * h + 1] = bv.y, b[4 * h + 2] = bv.z, b[4 * h + 3] = bv.w;
                }
#pragma unroll
                for (int i = 0; i < 8; ++i)
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
            // The other buffer was last read in k-tile kt - 1, which every thread finished before
            // the barrier that ended it; this k-tile's buffer is refilled only after the next one.
            if (next) {
                f32_stash<!L::a_km>(As[cur ^ 1], ra);
                f32_stash<L::b_nk>(Bs[cur ^ 1], rb);
            }
            __syncthreads();
        }
        // The group's parameters again (a few cached loads), rather than kept live through the loop.
        const GemmGroupParams q = groups[find_group(groups, G, tile)];
        // Rows 4 ty + {0..3} and 64 + ..., column pairs 4 tx + {0, 2} and 64 + ...: acc[i][2 j + e].
        store_grid<float, float, 8, 4>(
            q, p.flags, m0 + 4 * ty, [](int i) { return 64 * (i / 4) + i % 4; }, n0 + 4 * tx,
            [](int j) { return 64 * (j / 2) + 2 * (j % 2); }, [&](int i, int j, int e) { return acc[i][2 * j + e]; });
    }
}

// ---- bf16 on tensor cores ----------------------------------------------------------------------
// 128x128 block tile, K in steps of 32. A configuration (Tc below) sets the warps per block and the
// depth of the cp.async pipeline: kStages shared-memory stages, kStages - 1 k-tiles in flight while
// one is multiplied, one barrier per k-tile. Each warp owns a (128 / kWarpsM) x (128 / kWarpsN)
// warp tile of mma.m16n8k16 fragments with f32 accumulators. Why this shape: on sm_80/sm_90 a
// k-tile's global loads take longer than multiplying one 128x128x32 tile, so two stages (one load
// in flight) leave the tensor cores waiting; and a 64x64 warp tile reads 4 KiB of shared memory per
// 32 mma where 64x32 reads 3 KiB per 16, so it leaves ldmatrix bandwidth to spare.
//
// Operand tiles are stored in their global orientation (rows padded by 8 elements = 16 bytes, so
// the 8 row addresses of an ldmatrix hit different banks) and the fragment orientation comes from
// ldmatrix vs ldmatrix.trans:
//   A [M,K] rows m  -> ldmatrix          A [K,M] rows k -> ldmatrix.trans
//   B [N,K] rows n  -> ldmatrix          B [K,N] rows k -> ldmatrix.trans
// A group whose operand base is not 16-byte aligned or whose ld is not a multiple of 8 elements
// (e.g. a width-3 expert) takes a scalar load path for that operand; the rest is identical.

using bf16 = __nv_bfloat16;
constexpr int kBM = AUTOMOE_GEMM_BF16_TILE_M, kBN = AUTOMOE_GEMM_BF16_TILE_N, kBK = AUTOMOE_GEMM_BF16_TILE_K, kPad = 8;
static_assert(kBM == kBN, "the operand tile buffers assume square block tiles");
constexpr int kRowK = kBK + kPad;             // row length of a tile whose rows are m or n
constexpr int kRowMN = kBM + kPad;            // row length of a tile whose rows are k
constexpr int kTileElems = kBM * kRowK > kBK * kRowMN ? kBM * kRowK : kBK * kRowMN;
static_assert(2 * kTileElems * 2 == AUTOMOE_GEMM_BF16_STAGE_BYTES, "abi.h's stage size is the A and B tiles");

template <int kWarpsM_, int kWarpsN_, int kStages_>
struct Tc {
    static constexpr int kWarpsM = kWarpsM_, kWarpsN = kWarpsN_, kStages = kStages_;
    static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
    static constexpr int kFragsM = kBM / kWarpsM / 16;  // m16 fragments per warp tile
    static constexpr int kFragsN = kBN / kWarpsN / 8;   // n8 fragments per warp tile
    static_assert(kBM % (16 * kWarpsM) == 0 && kBN % (16 * kWarpsN) == 0, "warp tiles of whole x4 ldmatrix loads");
    static_assert(kStages >= 2, "at least one k-tile in flight");
};

// Elements (gr, gc .. gc+7) of the row-major matrix src (leading dimension ld, valid region
// rlim x clim) into the 16 bytes at d, zero outside the valid region, by plain loads and stores:
// the path of an operand whose base or leading dimension is not 16-byte aligned.
__device__ __forceinline__ void copy_chunk_scalar(bf16* d, const bf16* src, int ld, int gr, int gc, int rlim, int clim) {
#pragma unroll
    for (int j = 0; j < 8; ++j) d[j] = gr < rlim && gc + j < clim ? src[(size_t)gr * ld + gc + j] : from_f32<bf16>(0.0f);
}

// One thread's chunks of a tile copy: global rows gr, gr + kRowStep, ... (kIters of them) of the
// 16-byte column gc of src (leading dimension ld, valid region rlim x clim), into dst,
// dst + kSmemStep, ... bytes, zero outside the valid region; vec: 16-byte cp.async (zero-filled past
// the edge; src and ld 16-byte aligned), otherwise copy_chunk_scalar. Both tile layouts below hand
// each thread such a column (its slots t, t + T, t + 2T, ... of a T-thread copy), so the index
// arithmetic is done once per call: an interior tile's chunk costs an address add and the cp.async,
// an edge tile's a row compare and the zero-fill size too. (A loop over the slots that recomputed
// all of it per chunk cost ~45 SASS instructions per 16 bytes: docs/BENCHMARKS.md, "Tile copies".)
template <int kIters, int kRowStep, int kSmemStep>
__device__ __forceinline__ void copy_rows(unsigned char* dst, const bf16* src, int ld, int gr, int gc, int rlim, int clim, bool vec) {
    if (vec) {
        // Element offsets, not pointers: a row past the end is never formed into an address.
        const size_t base = (size_t)gr * (size_t)ld + (size_t)gc;
        if (gc + 8 <= clim && gr + (kIters - 1) * kRowStep < rlim) {
            // Every chunk whole (all but the edge tiles): no bounds, no zero-fill.
#pragma unroll
            for (int j = 0; j < kIters; ++j) cp_async_16_full(dst + j * kSmemStep, src + (base + (size_t)(j * kRowStep) * (size_t)ld));
        } else {
            const int bytes = gc < clim ? 2 * min(clim - gc, 8) : 0;
#pragma unroll
            for (int j = 0; j < kIters; ++j) {
                const bool ok = bytes > 0 && gr + j * kRowStep < rlim;
                // With no source bytes the address is never read; pass a valid one anyway.
                cp_async_16(dst + j * kSmemStep, src + (ok ? base + (size_t)(j * kRowStep) * (size_t)ld : 0), ok ? bytes : 0);
            }
        }
    } else {
        for (int j = 0; j < kIters; ++j) copy_chunk_scalar(reinterpret_cast<bf16*>(dst + j * kSmemStep), src, ld, gr + j * kRowStep, gc, rlim, clim);
    }
}

// Rows [r0, r0+R) x columns [c0, c0+C) of the row-major matrix src (leading dimension ld, valid
// region rlim x clim) into dst[R][C + kPad], zero outside the valid region. vec: 16-byte cp.async
// chunks (zero-filled past the edge); otherwise plain loads and stores.
//
// Which thread copies which chunk is chosen for shared-memory banks: the 8 lanes of each phase of a
// 16-byte cp.async must hit 8 different bank quads (16-byte columns mod 128 bytes). Rows of >= 8
// chunks: the lanes run along a row (8 consecutive chunks). Short rows (the 32-deep k-tile: 4 chunks
// of a padded 80-byte row): along a row, a phase would span two rows, and the second row's last
// chunk lands on the first row's first quad (80 + 48 = 128); so the lanes run down 8 rows of one
// chunk column instead, whose quads differ because the row stride (5 quads) is odd. Either way a
// warp reads whole 32-byte sectors of global memory. tests/smem_banks.rs counts both.
// Slot i's row grows by kLoaders / kChunksPerRow from slot i to slot i + kLoaders, its column stays:
// copy_rows.
template <int R, int C, int kLoaders>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int ld, int r0, int c0, int rlim, int clim, bool vec) {
    constexpr int kChunksPerRow = C / 8;
    constexpr bool kDown = kChunksPerRow < 8;
    static_assert(!kDown || (R % 8 == 0 && ((C + kPad) / 8) % 2 == 1), "8-row bands with an odd row stride in quads");
    constexpr int kSlots = R * kChunksPerRow, kBandSlots = kDown ? 8 * kChunksPerRow : kChunksPerRow;
    static_assert(kSlots % kLoaders == 0 && kLoaders % kBandSlots == 0, "every thread copies whole chunks of one column");
    constexpr int kRowStep = kLoaders / kChunksPerRow;
    const int i = threadIdx.x;
    const int r = kDown ? (i / kBandSlots) * 8 + i % 8 : i / kChunksPerRow;
    const int c = kDown ? ((i / 8) % kChunksPerRow) * 8 : (i % kChunksPerRow) * 8;
    copy_rows<kSlots / kLoaders, kRowStep, 2 * kRowStep * (C + kPad)>(reinterpret_cast<unsigned char*>(dst + r * (C + kPad) + c), src, ld,
                                                                      r0 + r, c0 + c, rlim, clim, vec);
}

template <int S, class Cfg>
__device__ __forceinline__ void load_stage(bf16* As, bf16* Bs, const GemmGroupParams& q, int m0, int n0, int k0, bool va, bool vb) {
    using L = Layout<S>;
    const bf16* A = ptr<const bf16>(q.a);  // [M, lda] or [K, lda]
    const bf16* B = ptr<const bf16>(q.b);  // [N, ldb] or [K, ldb]
    if (L::a_km)
        load_tile<kBK, kBM, Cfg::kThreads>(As, A, q.lda, k0, m0, q.k, q.m, va);
    else
        load_tile<kBM, kBK, Cfg::kThreads>(As, A, q.lda, m0, k0, q.m, q.k, va);
    if (L::b_nk)
        load_tile<kBN, kBK, Cfg::kThreads>(Bs, B, q.ldb, n0, k0, q.n, q.k, vb);
    else
        load_tile<kBK, kBN, Cfg::kThreads>(Bs, B, q.ldb, k0, n0, q.k, q.n, vb);
}

// One k-tile (two k16 steps) of this warp's tile at (wm, wn).
template <int S, class Cfg>
__device__ __forceinline__ void mma_stage(const bf16* As, const bf16* Bs, int wm, int wn, float acc[Cfg::kFragsM][Cfg::kFragsN][4]) {
    using L = Layout<S>;
    const int lane = (int)lane_id(), j = lane & 7, mi = lane >> 3;  // lane 8mi + j: row j of matrix mi
#pragma unroll
    for (int ks = 0; ks < kBK; ks += 16) {
        unsigned af[Cfg::kFragsM][4], bfr[Cfg::kFragsN][2];
#pragma unroll
        for (int im = 0; im < Cfg::kFragsM; ++im) {
            // Matrices of the A fragment: (m +0, k +0), (m +8, k +0), (m +0, k +8), (m +8, k +8).
            const int m = wm + 16 * im + 8 * (mi & 1), k = ks + 8 * (mi >> 1);
            if (L::a_km)
                ldmatrix_x4_trans(af[im], &As[(k + j) * kRowMN + m]);
            else
                ldmatrix_x4(af[im], &As[(m + j) * kRowK + k]);
        }
#pragma unroll
        for (int in2 = 0; in2 < Cfg::kFragsN / 2; ++in2) {
            // Two n8 tiles per x4: (n +0, k +0), (n +0, k +8), (n +8, k +0), (n +8, k +8).
            const int n = wn + 16 * in2 + 8 * (mi >> 1), k = ks + 8 * (mi & 1);
            unsigned r[4];
            if (L::b_nk)
                ldmatrix_x4(r, &Bs[(n + j) * kRowK + k]);
            else
                ldmatrix_x4_trans(r, &Bs[(k + j) * kRowMN + n]);
            bfr[2 * in2][0] = r[0];
            bfr[2 * in2][1] = r[1];
            bfr[2 * in2 + 1][0] = r[2];
            bfr[2 * in2 + 1][1] = r[3];
        }
#pragma unroll
        for (int im = 0; im < Cfg::kFragsM; ++im)
#pragma unroll
            for (int in = 0; in < Cfg::kFragsN; ++in) mma_m16n8k16_bf16(acc[im][in], af[im], bfr[in], acc[im][in]);
    }
}

template <int S, class TC, class Cfg>
__device__ __forceinline__ void mma_bf16(const GroupedGemmParams& p) {
    const GemmGroupParams* groups = ptr<const GemmGroupParams>(p.groups);  // [G]
    AUTOMOE_DYN_SMEM(bf16, smem);  // [kStages][A, B][kTileElems]: kStages * AUTOMOE_GEMM_BF16_STAGE_BYTES
    const int G = p.num_groups;
    const int total = total_tiles(groups, G);
    const int warp = threadIdx.x / 32, lane = (int)lane_id();
    const int wm = (warp / Cfg::kWarpsN) * (16 * Cfg::kFragsM), wn = (warp % Cfg::kWarpsN) * (8 * Cfg::kFragsN);
    // Prologue of a tile: k-tiles 0 .. kStages-2 in flight, one commit group each (empty past the
    // last k-tile), so that below "all but the newest kStages-2 groups are complete" always means
    // "k-tile kt has landed".
    auto prologue = [&](const TileAt& t) {
        const bool va = vec16_ok<bf16>(t.q.a, t.q.lda), vb = vec16_ok<bf16>(t.q.b, t.q.ldb);
        const int nk = (t.q.k + kBK - 1) / kBK;
#pragma unroll
        for (int s = 0; s < Cfg::kStages - 1; ++s) {
            if (s < nk) load_stage<S, Cfg>(smem + (2 * s) * kTileElems, smem + (2 * s + 1) * kTileElems, t.q, t.m0, t.n0, s * kBK, va, vb);
            cp_async_commit();
        }
    };
    int tile = blockIdx.x;
    if (tile >= total) return;
    TileAt cur = tile_at<kBM, kBN>(groups, G, tile);
    prologue(cur);
    for (;;) {
        const GemmGroupParams& q = cur.q;
        const int m0 = cur.m0, n0 = cur.n0;
        const bool va = vec16_ok<bf16>(q.a, q.lda), vb = vec16_ok<bf16>(q.b, q.ldb);
        float acc[Cfg::kFragsM][Cfg::kFragsN][4];
#pragma unroll
        for (int im = 0; im < Cfg::kFragsM; ++im)
#pragma unroll
            for (int in = 0; in < Cfg::kFragsN; ++in)
#pragma unroll
                for (int i = 0; i < 4; ++i) acc[im][in][i] = 0.0f;
        const int nk = (q.k + kBK - 1) / kBK;
        for (int kt = 0; kt < nk; ++kt) {
            cp_async_wait<Cfg::kStages - 2>();
            // k-tile kt is visible to every thread, and every warp has finished k-tile kt-1, whose
            // slot the prefetch below refills.
            __syncthreads();
            const int pf = kt + Cfg::kStages - 1, ps = pf % Cfg::kStages;
            if (pf < nk) load_stage<S, Cfg>(smem + (2 * ps) * kTileElems, smem + (2 * ps + 1) * kTileElems, q, m0, n0, pf * kBK, va, vb);
            cp_async_commit();
            const int cs = kt % Cfg::kStages;
            mma_stage<S, Cfg>(smem + (2 * cs) * kTileElems, smem + (2 * cs + 1) * kTileElems, wm, wn, acc);
        }
        cp_async_wait<0>();
        // The next tile's prologue is issued before this tile's epilogue, so that its first loads
        // are in flight while the accumulators are stored; it refills slots that slower warps may
        // still be reading, hence the barrier.
        __syncthreads();
        const int next = tile + (int)gridDim.x;
        const TileAt nxt = next < total ? tile_at<kBM, kBN>(groups, G, next) : cur;
        if (next < total) prologue(nxt);
        // C fragment: acc[im][in][2h], acc[im][in][2h+1] are row 16 im + g + 8h, columns 8 in + 2 tq
        // and 8 in + 2 tq + 1 of the warp's tile.
        const int g = lane >> 2, tq = lane & 3;
        store_grid<bf16, TC, 2 * Cfg::kFragsM, Cfg::kFragsN>(
            q, p.flags, m0 + wm + g, [](int i) { return 16 * (i / 2) + 8 * (i % 2); }, n0 + wn + 2 * tq,
            [](int j) { return 8 * j; }, [&](int i, int j, int e) { return acc[i / 2][j][2 * (i % 2) + e]; });
        if (next >= total) break;
        tile = next;
        cur = nxt;
    }
}

// ---- bf16 on Hopper tensor cores (sm_90a) --------------------------------------------------------
// WGS warpgroups (128 threads each) per block, warpgroup w owning rows [128w, 128w + 128) of a
// (128 WGS) x 128 block tile and issuing wgmma.m64n128k16 from shared memory for them: two m64
// halves, 2 x 64 f32 accumulators per thread. With two warpgroups the B tile (the weights, in the
// forward) is loaded once for both. K in 64-deep k-tiles through STAGES cp.async stages; wgmma runs
// asynchronously, one group per k-tile, and the wait for the previous group (wgmma_wait<1>) is what
// frees its stage for the next prefetch, once every warp has passed it: a wait covers only the
// waiting warp's part of the group (the PTX ISA promises a thread the groups it committed; the
// emulator's seeded runs complete each warp's part at its own wait), so a barrier follows it.
//
// Shared memory holds each operand tile in wgmma's no-swizzle canonical layout, in 8x8 "core
// matrices" of 128 contiguous bytes (8 rows of 16 bytes), which a 16-byte cp.async fills directly:
//   K-major tile (global rows m or n, contiguous k: fwd A and B, dgrad A): [E rows][64 k],
//     core matrix = 8 rows x 8 k; k groups adjacent (LBO = 128 B), row groups SBO = 1024 B.
//   MN-major tile (global rows k, contiguous m or n: dgrad B, wgrad A and B): [64 k][E mn],
//     core matrix = 8 k x 8 mn; mn groups adjacent (SBO = 128 B), k groups LBO = 16 E B
//     (2048 B for E = 128).
// E is the tile's extent along m or n (128 WGS for A, 128 for B). (The LBO/SBO roles follow the
// PTX ISA's canonical layouts; the emulator twin reads operands by the same formulas,
// cuda/emu/ptx.h.) Bank conflicts: wgmma reads whole core matrices.

constexpr int kWgBK = AUTOMOE_GEMM_WGMMA_TILE_K, kWgBN = 128;
static_assert(kBN == kWgBN, "the wgmma block tile has the mma.sync tile's width");

template <int WGS, int STAGES>
struct Wg {
    static constexpr int kThreads = 128 * WGS;
    static constexpr int kBM = 128 * WGS;                     // block tile rows
    static constexpr int kATileBytes = kBM * kWgBK * 2;       // A tile of one stage
    static constexpr int kBTileBytes = kWgBN * kWgBK * 2;     // B tile of one stage: 16 KiB
    static constexpr int kStageBytes = kATileBytes + kBTileBytes;
    static_assert(kStageBytes == (WGS + 1) * AUTOMOE_GEMM_WGMMA_STAGE_BYTES / 2, "abi.h's stage size is the A and B tiles");
    static_assert(STAGES >= 2, "at least one k-tile in flight");
};

// Rows [r0, r0+R) x columns [c0, c0+C) of row-major src (ld, valid region rlim x clim) into a tile
// of m or n extent E in the layout above, zero outside the valid region; vec: 16-byte cp.async,
// else plain loads. All kThreadsUsed threads of the block take part.
//
// Thread i fills the tile's i-th 16-byte slot, so the 8 lanes of each cp.async phase write one
// whole core matrix (128 contiguous bytes: 8 bank quads, no conflict; tests/smem_banks.rs). Slot i
// is row i % 8 of core matrix i / 8; inverting the layout above, that is (global orientation)
//   K-major  [E rows][64 k]: row 8 (i / 64) + i % 8, k chunk (i / 8) % 8;
//   MN-major [64 k][E mn]:   k   8 (i / E)  + i % 8, mn chunk (i / 8) % (E / 8).
// A warp reads 64 contiguous bytes of each of 8 global rows (whole 32-byte sectors). Running the
// lanes along a global row instead would put a phase's 8 chunks 128 bytes apart in shared memory:
// all on one bank quad, an 8-way conflict.
// Slot i + kThreadsUsed is kThreadsUsed / kChunksPerBand rows below slot i in the same column:
// copy_rows.
template <bool kMnMajor, int E, int kThreadsUsed>
__device__ __forceinline__ void wg_load_tile(unsigned char* dst, const bf16* src, int ld, int r0, int c0, int rlim, int clim, bool vec) {
    static_assert(E % 8 == 0 && kWgBK == 64, "whole core matrices; K-major rows of 8 chunks (the 1024-byte SBO)");
    constexpr int kSlots = kWgBK * E / 8, kChunksPerBand = kMnMajor ? E / 8 : kWgBK / 8;  // per 8 rows
    static_assert(kSlots % kThreadsUsed == 0 && kThreadsUsed % (8 * kChunksPerBand) == 0, "every thread copies whole chunks of one column");
    const int i = threadIdx.x;
    const int r = (i / (8 * kChunksPerBand)) * 8 + i % 8, c = ((i / 8) % kChunksPerBand) * 8;
    copy_rows<kSlots / kThreadsUsed, kThreadsUsed / kChunksPerBand, 16 * kThreadsUsed>(dst + 16 * i, src, ld, r0 + r, c0 + c, rlim, clim, vec);
}

template <int S, class W>
__device__ __forceinline__ void wg_load_stage(unsigned char* stage, const GemmGroupParams& q, int m0, int n0, int k0, bool va, bool vb) {
    using L = Layout<S>;
    const bf16* A = ptr<const bf16>(q.a);  // [M, lda] or [K, lda]
    const bf16* B = ptr<const bf16>(q.b);  // [N, ldb] or [K, ldb]
    if (L::a_km)
        wg_load_tile<true, W::kBM, W::kThreads>(stage, A, q.lda, k0, m0, q.k, q.m, va);
    else
        wg_load_tile<false, W::kBM, W::kThreads>(stage, A, q.lda, m0, k0, q.m, q.k, va);
    if (L::b_nk)
        wg_load_tile<false, kWgBN, W::kThreads>(stage + W::kATileBytes, B, q.ldb, n0, k0, q.n, q.k, vb);
    else
        wg_load_tile<true, kWgBN, W::kThreads>(stage + W::kATileBytes, B, q.ldb, k0, n0, q.k, q.n, vb);
}

// Descriptor of a tile of m or n extent E in the layout above, at its first element; the 64x16 (A
// rows mn0.., E = 128 WGS) or 128x16 (B, E = 128) operand of k16 step ks starts wg_offset bytes
// further (wgmma_desc_add).
template <bool kMnMajor, int E>
__device__ __forceinline__ unsigned long long wg_desc(const unsigned char* tile) {
    return kMnMajor ? wgmma_desc(tile, 16 * E, 128) : wgmma_desc(tile, 128, 1024);
}
template <bool kMnMajor, int E>
__device__ __forceinline__ constexpr unsigned wg_offset(int ks, int mn0) {
    return kMnMajor ? ks * 2 * (16 * E) + (mn0 / 8) * 128 : (mn0 / 8) * 1024 + ks * 2 * 128;
}

#if defined(AUTOMOE_EMU) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <int S, class TC, int WGS, int STAGES>
__device__ __forceinline__ void wgmma_bf16(const GroupedGemmParams& p) {
    using L = Layout<S>;
    using W = Wg<WGS, STAGES>;
    const GemmGroupParams* groups = ptr<const GemmGroupParams>(p.groups);  // [G]
    AUTOMOE_DYN_SMEM(unsigned char, smem);  // [STAGES][A tile, B tile]
    const int G = p.num_groups;
    const int total = total_tiles(groups, G);
    // wg through warp_uniform: the descriptors below derive from it, and wgmma takes them from
    // uniform registers (without it, each k-tile copied 16 of them over with R2UR).
    const int wg = WGS == 1 ? 0 : warp_uniform((int)threadIdx.x / 128), warp = (threadIdx.x / 32) % 4, lane = (int)lane_id();
    // Stage 0's tiles, at their first elements; every operand of the main loop is one of these
    // advanced by a stage and a wg_offset (a 32-bit add), not a descriptor formed from an address.
    const unsigned long long da0 = wg_desc<L::a_km, W::kBM>(smem), db0 = wg_desc<!L::b_nk, kWgBN>(smem + W::kATileBytes);
    // A tile's first STAGES - 1 k-tiles, one commit group each (empty past the last k-tile), so that
    // in the main loop "all but the newest STAGES - 2 groups are complete" means "k-tile kt has
    // landed".
    auto prologue = [&](const TileAt& t) {
        const bool va = vec16_ok<bf16>(t.q.a, t.q.lda), vb = vec16_ok<bf16>(t.q.b, t.q.ldb);
        const int nk = (t.q.k + kWgBK - 1) / kWgBK;
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < nk) wg_load_stage<S, W>(smem + s * W::kStageBytes, t.q, t.m0, t.n0, s * kWgBK, va, vb);
            cp_async_commit();
        }
    };
    int tile = blockIdx.x;
    if (tile >= total) return;
    TileAt cur = tile_at<W::kBM, kWgBN>(groups, G, tile);
    prologue(cur);
    for (;;) {
        const GemmGroupParams& q = cur.q;
        const int m0 = cur.m0, n0 = cur.n0;
        const bool va = vec16_ok<bf16>(q.a, q.lda), vb = vec16_ok<bf16>(q.b, q.ldb);
        float acc[2][64];
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int i = 0; i < 64; ++i) acc[h][i] = 0.0f;
        const int nk = (q.k + kWgBK - 1) / kWgBK;
        for (int kt = 0; kt < nk; ++kt) {
            cp_async_wait<STAGES - 2>();
            fence_proxy_async_shared();  // this thread's copies, visible to wgmma's reads
            __syncthreads();             // ... and everyone else's
            const unsigned st = (unsigned)(kt % STAGES) * W::kStageBytes;
#pragma unroll
            for (int h = 0; h < 2; ++h) wgmma_fence_operands(acc[h]);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < kWgBK / 16; ++ks) {
                const unsigned long long db = wgmma_desc_add(db0, st + wg_offset<!L::b_nk, kWgBN>(ks, 0));
#pragma unroll
                for (int h = 0; h < 2; ++h)
                    wgmma_m64n128k16_bf16<L::a_km, !L::b_nk>(acc[h], wgmma_desc_add(da0, st + wg_offset<L::a_km, W::kBM>(ks, 128 * wg + 64 * h)), db);
            }
            wgmma_commit();
            // This warp's part of k-tile kt-1's group is done; once every warp's is (the barrier:
            // the PTX ISA promises a thread only the groups it committed, and each warp of a
            // warpgroup runs its part on its own SM quadrant), its stage, which the prefetch below
            // refills, is free.
            wgmma_wait<1>();
#pragma unroll
            for (int h = 0; h < 2; ++h) wgmma_fence_operands(acc[h]);
            __syncthreads();
            const int pf = kt + STAGES - 1;
            if (pf < nk) wg_load_stage<S, W>(smem + (pf % STAGES) * W::kStageBytes, q, m0, n0, pf * kWgBK, va, vb);
            cp_async_commit();
        }
        wgmma_wait<0>();
#pragma unroll
        for (int h = 0; h < 2; ++h) wgmma_fence_operands(acc[h]);
        cp_async_wait<0>();
        // The next tile's prologue is issued before this tile's epilogue, so that its first loads
        // are in flight while the accumulators are stored. It refills stages that other warps'
        // parts of the last groups may still be reading until they have waited too: the barrier.
        __syncthreads();
        const int next = tile + (int)gridDim.x;
        const TileAt nxt = next < total ? tile_at<W::kBM, kWgBN>(groups, G, next) : cur;
        if (next < total) prologue(nxt);
        // Accumulator fragment: acc[h][4j + 2r + e] is row 64h + 16 warp + g + 8r of this
        // warpgroup's rows, column 8j + 2tq + e.
        const int g = lane >> 2, tq = lane & 3;
        store_grid<bf16, TC, 4, 16>(
            q, p.flags, m0 + 128 * wg + 16 * warp + g, [](int i) { return 64 * (i / 2) + 8 * (i % 2); }, n0 + 2 * tq,
            [](int j) { return 8 * j; }, [&](int i, int j, int e) { return acc[i / 2][4 * j + 2 * (i % 2) + e]; });
        if (next >= total) break;
        tile = next;
        cur = nxt;
    }
}
#else
// Compiled for an architecture without wgmma: the entry points exist (one module for every
// architecture) but are never launched there (src/cuda/grouped_gemm.rs checks the device).
template <int S, class TC, int WGS, int STAGES>
__device__ __forceinline__ void wgmma_bf16(const GroupedGemmParams&) {}
#endif

// ---- Bias gradients: deterministic column sums -------------------------------------------------
// Block b handles 32 columns of group b / chunks; its 8 warps take rows r0 + w, r0 + w + 8, ...
// (a warp reads 32 consecutive columns of a row: coalesced), then warp 0 adds the 8 partial sums
// in warp order. Fixed order throughout, no atomics.
template <class T>
__device__ __forceinline__ void colsum(const GroupedColSumParams& p) {
    const T* x = ptr<const T>(p.x);                    // [R, ld]
    const int* offsets = ptr<const int>(p.offsets);    // [G+1]
    const int* widths = ptr<const int>(p.widths);      // [G]
    float* out = ptr<float>(p.out);                    // [G, out_stride]
    __shared__ float part[kThreads / 32][32];
    const int chunks = (p.max_width + 31) / 32;
    const int g = blockIdx.x / chunks;
    if (g >= p.num_groups) return;  // whole blocks only, so the barrier below stays uniform
    const int lane = (int)lane_id(), w = threadIdx.x / 32;
    const int col = (blockIdx.x % chunks) * 32 + lane;
    const int r0 = offsets[g], r1 = offsets[g + 1], width = widths[g];
    float s = 0.0f;
    if (col < width)
        for (int r = r0 + w; r < r1; r += kThreads / 32) s += to_f32(x[(size_t)r * p.ld + col]);
    part[w][lane] = s;
    __syncthreads();
    if (w == 0 && col < width) {
        float t = 0.0f;
        for (int i = 0; i < kThreads / 32; ++i) t += part[i][lane];
        out[(size_t)g * p.out_stride + col] += t;
    }
}

}  // namespace ggemm
}  // namespace automoe

using automoe::ggemm::kDgrad;
using automoe::ggemm::kFwd;
using automoe::ggemm::kWgrad;


// The three entry points of one mma.sync bf16 configuration (src/cuda/grouped_gemm.rs lists them).
// Weight gradients accumulate in f32 whatever the operand type. The launch bounds state the blocks
// per SM that Bf16Kernel::blocks_per_sm launches (two: every configuration's stages fit twice), so
// ptxas keeps the registers within them (256-thread configurations: 128).
#define AUTOMOE_GEMM_BF16_ENTRIES(suffix, WARPS_M, WARPS_N, STAGES)                                                                \
    extern "C" __global__ void __launch_bounds__(32 * WARPS_M * WARPS_N, 2) grouped_gemm_fwd_bf16##suffix(GroupedGemmParams p) {   \
        automoe::ggemm::mma_bf16<kFwd, __nv_bfloat16, automoe::ggemm::Tc<WARPS_M, WARPS_N, STAGES>>(p);                            \
    }                                                                                                                              \
    extern "C" __global__ void __launch_bounds__(32 * WARPS_M * WARPS_N, 2) grouped_gemm_dgrad_bf16##suffix(GroupedGemmParams p) { \
        automoe::ggemm::mma_bf16<kDgrad, __nv_bfloat16, automoe::ggemm::Tc<WARPS_M, WARPS_N, STAGES>>(p);                          \
    }                                                                                                                              \
    extern "C" __global__ void __launch_bounds__(32 * WARPS_M * WARPS_N, 2) grouped_gemm_wgrad_bf16##suffix(GroupedGemmParams p) { \
        automoe::ggemm::mma_bf16<kWgrad, float, automoe::ggemm::Tc<WARPS_M, WARPS_N, STAGES>>(p);                                  \
    }

// The three entry points of one wgmma configuration (sm_90a), with the blocks per SM of
// Bf16Kernel::blocks_per_sm in their launch bounds: two for one warpgroup (96 KiB of stages), one
// for two (192 KiB).
#define AUTOMOE_GEMM_WGMMA_ENTRIES(suffix, WGS, STAGES)                                                                            \
    extern "C" __global__ void __launch_bounds__(128 * WGS, 3 - WGS) grouped_gemm_fwd_bf16##suffix(GroupedGemmParams p) {          \
        automoe::ggemm::wgmma_bf16<kFwd, __nv_bfloat16, WGS, STAGES>(p);                                                           \
    }                                                                                                                              \
    extern "C" __global__ void __launch_bounds__(128 * WGS, 3 - WGS) grouped_gemm_dgrad_bf16##suffix(GroupedGemmParams p) {        \
        automoe::ggemm::wgmma_bf16<kDgrad, __nv_bfloat16, WGS, STAGES>(p);                                                         \
    }                                                                                                                              \
    extern "C" __global__ void __launch_bounds__(128 * WGS, 3 - WGS) grouped_gemm_wgrad_bf16##suffix(GroupedGemmParams p) {        \
        automoe::ggemm::wgmma_bf16<kWgrad, float, WGS, STAGES>(p);                                                                 \
    }
