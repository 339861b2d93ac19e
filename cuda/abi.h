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

/* emutest_*: the emulator's self-test kernels (cuda/emu/tests.cu); not built by NVRTC. */
typedef struct EmuTestParams {
    automoe_dptr in;  /* kernel-specific, see cuda/emu/tests.cu */
    automoe_dptr out; /* kernel-specific */
    int n;
    int flag;
} EmuTestParams;

#endif /* AUTOMOE_ABI_H */
