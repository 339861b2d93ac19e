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

/* Largest expert count of topk_gating_{fwd,bwd}_*; above it (up to 512) the _wide entry points. */
#define AUTOMOE_GATING_MAX_NARROW_EXPERTS 256
/* topk_gating_fwd_{f32,bf16}: fused softmax + top-k, a group of lanes per token (gating_geometry). */
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

/* topk_gating_bwd_{f32,bf16}: dlogits from the gate-weight gradient (the forward's geometry). */
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

/* topk_select_{fwd,bwd}_{f32,bf16}: top-k of probabilities already computed (the tape's softmax
 * output), so that the tape's MoE routing stays on the device. One thread per token,
 * AUTOMOE_SELECT_THREADS per block; the same choice, order and gate arithmetic as the CPU's
 * moe::gating (descending probability, ties to the lower index; renormalised sums in double).
 *   fwd: probs -> topk_idx, gates;
 *   bwd: probs, topk_idx, gates, dgates -> dprobs (zero outside each token's chosen experts). */
#define AUTOMOE_SELECT_THREADS 128
typedef struct TopkSelectParams {
    automoe_dptr probs;    /* [T, E] f32|bf16 */
    automoe_dptr topk_idx; /* [T, k] i32: out (fwd), in (bwd) */
    automoe_dptr gates;    /* [T, k] f32|bf16 (the probabilities' type): out (fwd), in (bwd) */
    automoe_dptr dgates;   /* [T, k] f32|bf16, gradient of gates (bwd) */
    automoe_dptr dprobs;   /* [T, E] f32|bf16 out (bwd) */
    int tokens;            /* T */
    int experts;           /* E, 1..=512 */
    int k;                 /* 1..=min(8, E) */
    int renorm;            /* nonzero: gates = p / (sum of the chosen p) */
} TopkSelectParams;

/* permute_dispatch_{count,scan,assign}_i32: counts, (padded) offsets, stable positions. Three
 * kernels queued back to back on one parameter struct:
 *   count:  blocks = max(1, ceil(pairs / AUTOMOE_DISPATCH_CHUNK)) blocks of AUTOMOE_DISPATCH_THREADS;
 *           each block's pair count per expert into block_rows; fills src_row with -1;
 *   scan:   E blocks of AUTOMOE_DISPATCH_THREADS, one per expert: counts, and each block's first row
 *           inside the expert's segment (in place in block_rows);
 *   assign: the count kernel's grid: padded offsets, stable positions and src_row. */
#define AUTOMOE_DISPATCH_THREADS 256
#define AUTOMOE_DISPATCH_CHUNK 1024
typedef struct DispatchParams {
    automoe_dptr topk_idx;   /* [T*k] i32, pair p = t*k + s -> expert */
    automoe_dptr counts;     /* [E] i32 out, pairs per expert */
    automoe_dptr offsets;    /* [E+1] i32 out, exclusive scan of counts rounded up to pad_to */
    automoe_dptr pos;        /* [T*k] i32 out, row of pair p in the permuted buffer */
    automoe_dptr src_row;    /* [rows_cap] i32 out, token of each permuted row, -1 for padding/unused */
    automoe_dptr block_rows; /* [blocks, E] i32 scratch: per-block counts (count), first rows (scan) */
    int pairs;               /* T*k */
    int experts;             /* E, 1..=512 */
    int k;                   /* pairs per token (src_row = pair / k) */
    int pad_to;              /* >= 1; segment sizes are rounded up to a multiple of it */
    int rows_cap;            /* length of src_row, >= offsets[E] (host bound: T*k + E*(pad_to-1)) */
    int reserved;            /* keeps the struct free of padding; must be 0 */
} DispatchParams;

/* dispatch_fractions_f32: frac[e] = counts[e] / pairs (computed in double, rounded once to f32),
 * the routed fractions of the load-balancing loss, without a trip to the host. One block of
 * AUTOMOE_DISPATCH_THREADS threads. */
typedef struct DispatchFractionsParams {
    automoe_dptr counts; /* [E] i32, the dispatch's counts */
    automoe_dptr frac;   /* [E] f32 out */
    int experts;         /* E */
    int pairs;           /* T*k (a zero count gives 0 / max(pairs, 1)) */
} DispatchFractionsParams;

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
 * every bias are f32. Block tiles are AUTOMOE_GEMM_{F32,BF16}_TILE_{M,N}. A launch of the f32
 * kernels needs AUTOMOE_GEMM_THREADS threads. The bf16 kernels come in configurations (warps per
 * block, cp.async stages; entry-point suffix "" for the default below, others in
 * src/cuda/grouped_gemm.rs): a launch needs 32 * warps_m * warps_n threads and
 * stages * AUTOMOE_GEMM_BF16_STAGE_BYTES bytes of dynamic shared memory. */
#define AUTOMOE_GEMM_THREADS 256
#define AUTOMOE_GEMM_F32_TILE_M 128
#define AUTOMOE_GEMM_F32_TILE_N 128
#define AUTOMOE_GEMM_BF16_TILE_M 128
#define AUTOMOE_GEMM_BF16_TILE_N 128
#define AUTOMOE_GEMM_BF16_TILE_K 32
#define AUTOMOE_GEMM_BF16_STAGE_BYTES 20480 /* A and B tiles of one k-step, rows padded */
#define AUTOMOE_GEMM_BF16_WARPS_M 2         /* default configuration: 2 x 2 warps of 64 x 64, */
#define AUTOMOE_GEMM_BF16_WARPS_N 2
#define AUTOMOE_GEMM_BF16_STAGES 4          /* four k-tiles in flight */
/* The Hopper configurations (sm_90a only) on wgmma, 64-deep k-tiles: "_sm90", one warpgroup of 128
 * threads on the same 128x128 block tile, AUTOMOE_GEMM_WGMMA_STAGES stages of
 * AUTOMOE_GEMM_WGMMA_STAGE_BYTES (the A and B tiles) of dynamic shared memory; "_sm90x2", two
 * warpgroups on a 256x128 block tile (tile_m 256 in the plan), four stages of 1.5 times that. */
#define AUTOMOE_GEMM_WGMMA_TILE_K 64
#define AUTOMOE_GEMM_WGMMA_STAGE_BYTES 32768
#define AUTOMOE_GEMM_WGMMA_STAGES 3
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
    automoe_dptr offsets; /* [G+1] i32 segment starts (the dispatch's offsets), or 0: keep templ's m/k */
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

/* ---- Tensor ops of the tape: cuda/elementwise.cu, reduce.cu, norm.cu, softmax.cu, loss.cu,
 * embedding.cu, optim.cu. Entry points come as _f32 and _bf16 (element type T of the tensors; math
 * and accumulation in f32). n: element count; strides and offsets in elements, not bytes. */
#define AUTOMOE_MAX_RANK 6

/* copy_{f32_f32,bf16_bf16,f32_bf16,bf16_f32} (source_destination): for every index i over `shape`,
 * dst[dst_offset + i.dst_stride] (+)= src[src_offset + i.src_stride]; a cast rounds to nearest
 * even. Makes views contiguous, concatenates, adds a slice's gradient into its parent's. */
typedef struct CopyParams {
    automoe_dptr src;
    automoe_dptr dst;
    long long n; /* product of shape */
    long long shape[AUTOMOE_MAX_RANK];
    long long src_stride[AUTOMOE_MAX_RANK];
    long long dst_stride[AUTOMOE_MAX_RANK];
    long long src_offset;
    long long dst_offset;
    int rank;       /* 0..=AUTOMOE_MAX_RANK */
    int accumulate; /* nonzero: dst += src */
} CopyParams;

/* BinaryParams.op */
#define AUTOMOE_BINARY_ADD 0
#define AUTOMOE_BINARY_SUB 1
#define AUTOMOE_BINARY_MUL 2
#define AUTOMOE_BINARY_DIV 3

/* binary_{f32,bf16}: out[i] = a[i] (op) b[i] over the broadcast output shape; a broadcast
 * dimension has stride 0, so a bias row is read in place. */
typedef struct BinaryParams {
    automoe_dptr a;
    automoe_dptr b;
    automoe_dptr out; /* [n] contiguous over shape */
    long long n;
    long long shape[AUTOMOE_MAX_RANK];
    long long a_stride[AUTOMOE_MAX_RANK];
    long long b_stride[AUTOMOE_MAX_RANK];
    long long a_offset;
    long long b_offset;
    int rank;
    int op; /* AUTOMOE_BINARY_* */
} BinaryParams;

/* UnaryParams.op */
#define AUTOMOE_UNARY_SCALE 0    /* out = alpha * x */
#define AUTOMOE_UNARY_RELU 1     /* out = max(x, 0) */
#define AUTOMOE_UNARY_GELU 2     /* out = gelu(x), tanh approximation as in src/cpu/elementwise.rs */
#define AUTOMOE_UNARY_RELU_BWD 3 /* out = dy * (x > 0) */
#define AUTOMOE_UNARY_GELU_BWD 4 /* out = dy * gelu'(x) */
#define AUTOMOE_UNARY_FILL 5     /* out = alpha (x unused) */

/* unary_{f32,bf16}: contiguous x, dy, out of n elements. */
typedef struct UnaryParams {
    automoe_dptr x;   /* [n] */
    automoe_dptr dy;  /* [n] for the _BWD ops, else 0 */
    automoe_dptr out; /* [n] out */
    long long n;
    float alpha;
    int op; /* AUTOMOE_UNARY_* */
} UnaryParams;

/* dropout_mask_{f32,bf16}: out[i] = (hash64(seed, i) >> 32) >= threshold ? keep_scale : 0, with
 * src/rng.rs's hash64, so every backend draws the same mask from the same seed. */
typedef struct DropoutParams {
    automoe_dptr out; /* [n] out */
    unsigned long long seed;
    unsigned long long threshold; /* p * 2^32 */
    long long n;
    float keep_scale; /* 1 / (1 - p) */
    int reserved;     /* must be 0 */
} DropoutParams;

/* sum_to_{f32,bf16}: one block per output element; out[o] = sum over the reduced index space of
 * x, in a fixed order (deterministic, no atomics). The output is contiguous over out_shape; the
 * input index of (o, r) is x_offset + o.out_stride + r.red_stride. */
typedef struct SumToParams {
    automoe_dptr x;
    automoe_dptr out; /* [out_n] out */
    long long out_n;
    long long red_n;
    long long out_shape[AUTOMOE_MAX_RANK];
    long long out_stride[AUTOMOE_MAX_RANK]; /* x's stride of each kept dimension */
    long long red_shape[AUTOMOE_MAX_RANK];
    long long red_stride[AUTOMOE_MAX_RANK]; /* x's stride of each reduced dimension */
    long long x_offset;
    int out_rank;
    int red_rank;
} SumToParams;

/* sumsq_partial_{f32,bf16}: partial[b] = sum of x[i]^2 over block b's grid-strided share of the
 * n elements, f32, fixed order (the host adds the partials in f64): gradient norms. */
typedef struct SumSquaresParams {
    automoe_dptr x;       /* [n] */
    automoe_dptr partial; /* [blocks] f32 out */
    long long n;
    int blocks; /* the launch's grid */
    int reserved;
} SumSquaresParams;

/* layer_norm_{fwd,bwd,dparams}_{f32,bf16} over the last dimension d of [rows, d]:
 *   fwd:     y = (x - mean) * rstd * gamma + beta, saving mean and rstd (f32)
 *   bwd:     dx from dy, x, gamma, mean, rstd (one row per warp)
 *   dparams: dgamma = sum_rows dy * xhat, dbeta = sum_rows dy (one column per thread, fixed order) */
typedef struct LayerNormParams {
    automoe_dptr x;      /* [rows, d] */
    automoe_dptr gamma;  /* [d] */
    automoe_dptr beta;   /* [d] (fwd) */
    automoe_dptr y;      /* [rows, d] out (fwd) */
    automoe_dptr mean;   /* [rows] f32, out of fwd, in of bwd/dparams */
    automoe_dptr rstd;   /* [rows] f32, out of fwd, in of bwd/dparams */
    automoe_dptr dy;     /* [rows, d] (bwd, dparams) */
    automoe_dptr dx;     /* [rows, d] out (bwd) */
    automoe_dptr dgamma; /* [d] out (dparams) */
    automoe_dptr dbeta;  /* [d] out (dparams) */
    int rows;
    int d;
    float eps;
    int reserved;
} LayerNormParams;

/* softmax_{fwd,bwd}_{f32,bf16} over the last dimension tk, one warp per row, with the masks of
 * src/cpu/softmax.rs: row r belongs to batch r / rows_per_batch and query r % tq; causal hides
 * keys after the query; key_padding hides padded keys; a fully hidden row is all zeros.
 *   fwd: y = softmax(x);  bwd: dx = y * (dy - sum(dy * y)) */
typedef struct SoftmaxParams {
    automoe_dptr x;           /* [rows, tk] (fwd) */
    automoe_dptr y;           /* [rows, tk] out of fwd, in of bwd */
    automoe_dptr dy;          /* [rows, tk] (bwd) */
    automoe_dptr dx;          /* [rows, tk] out (bwd) */
    automoe_dptr key_padding; /* [batch, tk] u8, 1 = padding, or 0 for none */
    int rows;
    int tk;
    int tq;
    int rows_per_batch;
    int causal;
    int reserved;
} SoftmaxParams;

/* cross_entropy_{fwd,bwd}_{f32,bf16}: label-smoothed cross-entropy of [rows, v] logits, one block
 * per row, as src/cpu/loss.rs: q = (1 - eps) one_hot(target) + eps / v.
 *   fwd: loss[r], nll[r] (f32; 0 for an ignored row); the host adds them in f64
 *   bwd: dlogits = scale * (softmax - q), 0 for an ignored row */
typedef struct CrossEntropyParams {
    automoe_dptr logits;  /* [rows, v] */
    automoe_dptr targets; /* [rows] i32 */
    automoe_dptr loss;    /* [rows] f32 out (fwd) */
    automoe_dptr nll;     /* [rows] f32 out (fwd) */
    automoe_dptr dlogits; /* [rows, v] out (bwd) */
    int rows;
    int v;
    int ignore; /* target id to skip, or -1 */
    float eps;
    float scale; /* bwd */
    int reserved;
} CrossEntropyParams;

/* embedding_fwd_{f32,bf16}: out[i] = table[ids[i], :d] (table rows ld apart: a front slice of a
 * wider parent is read in place).
 * embedding_bwd_{f32,bf16}: dtable[v] = sum of dy[order[j]] for j in starts[v]..starts[v+1], in
 * that order (the host sorts positions by id, stably): a deterministic scatter-add. */
typedef struct EmbeddingParams {
    automoe_dptr table;  /* [vocab, ld] (fwd) */
    automoe_dptr ids;    /* [n] i32 (fwd) */
    automoe_dptr out;    /* [n, d] out (fwd) */
    automoe_dptr dy;     /* [n, d] (bwd) */
    automoe_dptr order;  /* [n] i32 (bwd) */
    automoe_dptr starts; /* [vocab + 1] i32 (bwd) */
    automoe_dptr dtable; /* [vocab, d] out (bwd) */
    int n;
    int d;
    int ld;
    int vocab;
} EmbeddingParams;

/* adam_f32: one Adam(W) step in place on f32 master weights, as src/train/optim.rs:
 *   g = grad_scale * grad (+ weight_decay * w unless decoupled)
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   w -= lr (m / bc1) / (sqrt(v / bc2) + eps)  (and lr * weight_decay * w_old if decoupled) */
typedef struct AdamParams {
    automoe_dptr w; /* [n] f32, in place */
    automoe_dptr g; /* [n] f32 */
    automoe_dptr m; /* [n] f32, in place */
    automoe_dptr v; /* [n] f32, in place */
    long long n;
    float lr;
    float beta1;
    float beta2;
    float eps;
    float weight_decay;
    float grad_scale; /* global-norm clipping folded in; 1 otherwise */
    float bc1;        /* 1 - beta1^step */
    float bc2;        /* 1 - beta2^step */
    int decoupled;
    int reserved;
} AdamParams;

/* RowTopParams.allowed[r]: the tokens row r may produce (src/decode/candidates.rs, Allowed). */
#define AUTOMOE_ALLOW_TOKENS 0          /* any but pad, bos and eos */
#define AUTOMOE_ALLOW_TOKENS_AND_EOS 1  /* any but pad and bos */
#define AUTOMOE_ALLOW_EOS_ONLY 2        /* eos only */
/* The longest candidate list row_top selects per row (a beam of 32 takes 64). */
#define AUTOMOE_DECODE_MAX_TOP 64

/* row_top_{f32,bf16} (cuda/decode.cu): one beam-search step's candidates, one block per row of
 * [rows, v] logits: lse[r] = log sum_j exp(x[r, j]) over every token, and the n (<= MAX_TOP)
 * largest finite logits among the permitted tokens, largest first, equal logits to the lower id;
 * tokens[r, i] = -1 (and values[r, i] = -inf) past the last such token. The host turns them into
 * scores base + x - lse and merges a sentence's rows. */
typedef struct RowTopParams {
    automoe_dptr logits;  /* [rows, v] */
    automoe_dptr allowed; /* [rows] i32, AUTOMOE_ALLOW_* */
    automoe_dptr tokens;  /* [rows, n] i32 out */
    automoe_dptr values;  /* [rows, n] f32 out: the logits of tokens */
    automoe_dptr lse;     /* [rows] f32 out */
    int rows;
    int v;
    int n;
    int pad_id;
    int bos_id;
    int eos_id;
} RowTopParams;

/* emutest_*: the emulator's self-test kernels (cuda/emu/tests.cu); not built by NVRTC. */
typedef struct EmuTestParams {
    automoe_dptr in;  /* kernel-specific, see cuda/emu/tests.cu */
    automoe_dptr out; /* kernel-specific */
    int n;
    int flag;
} EmuTestParams;

#endif /* AUTOMOE_ABI_H */
