/* Parameter structs shared by the kernels in cuda/ and Rust (src/cuda/abi.rs, generated from this
 * file by scripts/gen-abi.sh and diffed in CI). Rules that keep both sides identical and `Pod`:
 *  - plain C, no headers (NVRTC compiles it without a toolkit's include directory);
 *  - device pointers travel as `automoe_dptr` (a 64-bit address), cast to the typed pointer in the
 *    kernel, because raw pointers are not `bytemuck::Pod` on the Rust side;
 *  - 64-bit fields first, then an even number of 32-bit ones: no padding anywhere.
 * Shapes below: T tokens, E experts, k experts per token, d row width, R rows of the permuted
 * buffer (T*k, or more with per-expert padding). */
#ifndef AUTOMOE_ABI_H
#define AUTOMOE_ABI_H

typedef unsigned long long automoe_dptr;

/* topk_gating_fwd_{f32,bf16}: fused softmax + top-k, one warp per token. */
typedef struct TopkGatingFwdParams {
    automoe_dptr logits;   /* [T, E] f32|bf16, router logits */
    automoe_dptr probs;    /* [T, E] f32 out, softmax (saved for backward) */
    automoe_dptr topk_idx; /* [T, k] i32 out, chosen experts by descending probability */
    automoe_dptr topk_w;   /* [T, k] f32 out, gate weights */
    int tokens;            /* T */
    int experts;           /* E, 1..=512 */
    int k;                 /* 1..=min(8, E) */
    int renorm;            /* nonzero: w = p / (sum of the chosen p) */
} TopkGatingFwdParams;

/* topk_gating_bwd_{f32,bf16}: dlogits from the gate-weight gradient. */
typedef struct TopkGatingBwdParams {
    automoe_dptr probs;    /* [T, E] f32, from the forward */
    automoe_dptr topk_idx; /* [T, k] i32, from the forward */
    automoe_dptr topk_w;   /* [T, k] f32, from the forward */
    automoe_dptr dw;       /* [T, k] f32, gradient of topk_w */
    automoe_dptr dlogits;  /* [T, E] f32|bf16 out */
    int tokens;
    int experts;
    int k;
    int renorm;
} TopkGatingBwdParams;

/* permute_dispatch_i32: counts, (padded) offsets, stable positions, one block. */
typedef struct DispatchParams {
    automoe_dptr topk_idx; /* [T*k] i32, pair p = t*k + s -> expert */
    automoe_dptr counts;   /* [E] i32 out, pairs per expert */
    automoe_dptr offsets;  /* [E+1] i32 out, exclusive scan of counts rounded up to pad_to */
    automoe_dptr pos;      /* [T*k] i32 out, row of pair p in the permuted buffer */
    automoe_dptr src_row;  /* [rows_cap] i32 out, token of each permuted row, -1 for padding/unused */
    int pairs;             /* T*k */
    int experts;           /* E, 1..=512 */
    int k;                 /* pairs per token (src_row = pair / k) */
    int pad_to;            /* >= 1; segment sizes are rounded up to a multiple of it */
    int rows_cap;          /* length of src_row, >= offsets[E] (host bound: T*k + E*(pad_to-1)) */
    int reserved;          /* keeps the struct free of padding; must be 0 */
} DispatchParams;

/* permute_fwd_{f32,bf16}: xp[r] = x[src_row[r]] (zero row when src_row[r] < 0). */
typedef struct PermuteFwdParams {
    automoe_dptr x;       /* [T, d] */
    automoe_dptr src_row; /* [R] i32 */
    automoe_dptr xp;      /* [R, d] out */
    int rows;             /* R */
    int d;
} PermuteFwdParams;

/* permute_bwd_{f32,bf16}: dx[t] = sum_s dxp[pos[t*k+s]], f32 accumulation. */
typedef struct PermuteBwdParams {
    automoe_dptr dxp; /* [R, d] */
    automoe_dptr pos; /* [T*k] i32 */
    automoe_dptr dx;  /* [T, d] out */
    int tokens;
    int k;
    int d;
    int reserved; /* must be 0 */
} PermuteBwdParams;

/* combine_fwd_{f32,bf16}: y[t] = sum_s w[t,s] * yp[pos[t*k+s]], f32 accumulation. */
typedef struct CombineFwdParams {
    automoe_dptr yp;  /* [R, d] */
    automoe_dptr pos; /* [T*k] i32 */
    automoe_dptr w;   /* [T, k] f32 */
    automoe_dptr y;   /* [T, d] out */
    int tokens;
    int k;
    int d;
    int reserved; /* must be 0 */
} CombineFwdParams;

/* combine_bwd_{f32,bf16}: dyp[pos[t*k+s]] = w[t,s] * dy[t] (padding rows zeroed) and
 * dw[t,s] = <dy[t], yp[pos[t*k+s]]>, both in one kernel. */
typedef struct CombineBwdParams {
    automoe_dptr dy;      /* [T, d] */
    automoe_dptr yp;      /* [R, d] */
    automoe_dptr pos;     /* [T*k] i32 */
    automoe_dptr w;       /* [T, k] f32 */
    automoe_dptr src_row; /* [R] i32, -1 marks rows to zero */
    automoe_dptr dyp;     /* [R, d] out */
    automoe_dptr dw;      /* [T, k] f32 out */
    int tokens;
    int k;
    int d;
    int rows; /* R */
} CombineBwdParams;

/* ---- Grouped GEMM (cuda/grouped_gemm.cu) ------------------------------------------------------
 * One launch computes G independent row-major products C_g = op(A_g) op(B_g) (+ epilogue), each
 * with its own M, N, K and leading dimensions, so a weight can be the front slice W[:n, :k] of a
 * larger parent read with the parent's row length. Operand storage per kernel stage:
 *   fwd:   A [M, lda] (x),          B [N, ldb] (W, "nk"),  C [M, ldc] = A B^T
 *   dgrad: A [M, lda] (dy),         B [K, ldb] (W, "kn"),  C [M, ldc] = A B
 *   wgrad: A [K, lda] (dy, "km"),   B [K, ldb] (x, "kn"),  C [M, ldc] f32 = A^T B (K = tokens)
 * Element type: T (f32 or bf16 per entry point) for A, B, aux, and C of fwd/dgrad; wgrad's C and
 * every bias are f32. Block tiles are AUTOMOE_GEMM_{F32,BF16}_TILE_{M,N}; a launch of the bf16
 * kernels needs AUTOMOE_GEMM_THREADS threads, as does the f32 one. */
#define AUTOMOE_GEMM_THREADS 256
#define AUTOMOE_GEMM_F32_TILE_M 64
#define AUTOMOE_GEMM_F32_TILE_N 64
#define AUTOMOE_GEMM_BF16_TILE_M 128
#define AUTOMOE_GEMM_BF16_TILE_N 128
/* GroupedGemmParams.flags */
#define AUTOMOE_GEMM_RELU 1       /* C = max(C, 0) after the bias */
#define AUTOMOE_GEMM_ACCUMULATE 2 /* C += result (C read first); otherwise C = result */
#define AUTOMOE_GEMM_RELU_MASK 4  /* result = 0 where aux <= 0 (backward of a fused ReLU) */
/* GroupedGemmPlanParams.shift_mask: operands advanced by offsets[g] rows of their own ld */
#define AUTOMOE_GEMM_SHIFT_A 1
#define AUTOMOE_GEMM_SHIFT_B 2
#define AUTOMOE_GEMM_SHIFT_C 4
#define AUTOMOE_GEMM_SHIFT_AUX 8

/* One problem of a grouped launch (an element of a device array). */
typedef struct GemmGroupParams {
    automoe_dptr a;    /* see the storage table above */
    automoe_dptr b;    /* see the storage table above */
    automoe_dptr c;    /* [M, ldc] out (in/out with AUTOMOE_GEMM_ACCUMULATE) */
    automoe_dptr bias; /* [N] f32 added in the epilogue, or 0 */
    automoe_dptr aux;  /* [M, ldc] T, the ReLU output whose sign masks the result, or 0 */
    int m;
    int n;
    int k;
    int lda;
    int ldb;
    int ldc;
    int tiles;      /* written by the plan: ceil(m/tile_m) * ceil(n/tile_n), 0 for an empty group */
    int tile_start; /* written by the plan: tiles of all earlier groups (exclusive prefix sum) */
} GemmGroupParams;

/* grouped_gemm_plan_i32: one block; turns G template groups plus the permutation's segment offsets
 * into the launch's problem list, on the device (no host round trip, graph-capturable). */
typedef struct GroupedGemmPlanParams {
    automoe_dptr templ;   /* [G] GemmGroupParams: token operands point at row 0 of the whole buffer */
    automoe_dptr offsets; /* [G+1] i32 segment starts (permute_dispatch_i32), or 0: keep templ's m/k */
    automoe_dptr groups;  /* [G] GemmGroupParams out */
    int num_groups;       /* G, 1..=512 */
    int count_dim;        /* 0: m = segment rows (fwd, dgrad); 1: k = segment rows (wgrad) */
    int shift_mask;       /* AUTOMOE_GEMM_SHIFT_* */
    int elem_bytes;       /* size of T (the shifted operands' element) */
    int tile_m;
    int tile_n;
    int accumulate;   /* nonzero: a group with k = 0 changes nothing and gets no tiles */
    int reserved;     /* must be 0 */
} GroupedGemmPlanParams;

/* grouped_gemm_{fwd,dgrad,wgrad}_{f32,bf16}: persistent blocks loop over every group's tiles. */
typedef struct GroupedGemmParams {
    automoe_dptr groups; /* [G] GemmGroupParams from grouped_gemm_plan_i32 */
    int num_groups;      /* G */
    int flags;           /* AUTOMOE_GEMM_* flags */
} GroupedGemmParams;

/* grouped_gemm_dbias_{f32,bf16}: out[g, :width_g] += column sums of rows offsets[g]..offsets[g+1]
 * of x; fixed summation order (deterministic, no atomics). Grid: G * ceil(max_width / 32) blocks
 * of AUTOMOE_GEMM_THREADS threads. */
typedef struct GroupedColSumParams {
    automoe_dptr x;       /* [R, ld] T */
    automoe_dptr offsets; /* [G+1] i32 */
    automoe_dptr widths;  /* [G] i32, columns of group g (<= ld and <= out_stride) */
    automoe_dptr out;     /* [G, out_stride] f32, accumulated */
    int num_groups;
    int ld;
    int out_stride;
    int max_width; /* >= every width; sets the grid */
} GroupedColSumParams;

/* emutest_*: the emulator's self-test kernels (cuda/emu/tests.cu); not built by NVRTC. */
typedef struct EmuTestParams {
    automoe_dptr in;  /* kernel-specific, see cuda/emu/tests.cu */
    automoe_dptr out; /* kernel-specific */
    int n;
    int flag;
} EmuTestParams;

#endif /* AUTOMOE_ABI_H */
