//! The routing kernels (cuda/gating.cu, cuda/permute.cu) against the plain Rust references in
//! `automoe::moe::reference`, one test body per kernel run on every backend present: the SIMT
//! emulator always, a CUDA device when one exists (skipped with a message otherwise).
//! Inputs are fresh random values; backends poison outputs with NaN before launching.

use automoe::cuda::moe_ops::{KernelFloat, MoeKernels};
use automoe::moe::reference as r;
use half::bf16;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// `max |out - ref| / max(max |ref|, eps)`; NaN anywhere in `out` counts as infinite error.
fn rel_err(out: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(out.len(), reference.len(), "length");
    if out.iter().any(|v| v.is_nan()) {
        return f32::INFINITY;
    }
    let scale = reference.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    out.iter().zip(reference).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn tol<T: KernelFloat>() -> f32 {
    if T::SUFFIX == "f32" {
        1e-5
    } else {
        1e-2
    }
}

fn randn<T: KernelFloat>(rng: &mut ChaCha8Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f32(StandardNormal.sample(rng))).collect()
}

fn f32s<T: KernelFloat>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// `t` tokens each routed to `k` distinct experts drawn from the first `used` of `e` (so experts
/// `used..e` receive no tokens).
fn random_idx(rng: &mut ChaCha8Rng, t: usize, k: usize, e: usize, used: usize) -> Vec<i32> {
    let mut pool: Vec<i32> = (0..used.max(k).min(e) as i32).collect();
    let mut idx = Vec::with_capacity(t * k);
    for _ in 0..t {
        pool.shuffle(rng);
        idx.extend_from_slice(&pool[..k]);
    }
    idx
}

// Expert counts in every lane-group size of the forward (1, 2, 4, 8, 16, 32 lanes per token, and 32
// lanes with 16 logits each above E = 256) and on their edges. Token counts that leave the last
// block partly empty, and a last warp partly past the end (groups that must still join the
// shuffles): 37 tokens at E = 6 is one block of 128 one-lane tokens with 5 in its second warp; 300
// at E = 64 is 19 blocks of 16 tokens; 131 at E = 12 is 3 blocks of 64.
const GATING_SHAPES: &[(usize, usize, usize)] = &[
    (1, 6, 2),
    (5, 12, 3),
    (9, 100, 8),
    (3, 512, 2),
    (4, 1, 1),
    (6, 37, 5),
    (5, 64, 2),
    (3, 200, 4),
    (2, 256, 8),
    (2, 33, 1),
    (37, 6, 2),
    (131, 12, 3),
    (300, 64, 2),
    (41, 100, 4),
    (13, 16, 8),
    (7, 300, 8),
];

fn gating_fwd<B: MoeKernels, T: KernelFloat>(b: &B) {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for &(t, e, k) in GATING_SHAPES {
        for renorm in [false, true] {
            let logits: Vec<T> = randn(&mut rng, t * e);
            let out = b.topk_gating_fwd(&logits, t, e, k, renorm).unwrap();
            let (idx, w, probs) = r::topk_gating_fwd(&f32s(&logits), t, e, k, renorm).unwrap();
            let ctx = format!("{} {} t={t} e={e} k={k} renorm={renorm}", b.backend(), T::SUFFIX);
            assert_eq!(out.idx, idx, "idx {ctx}");
            assert!(rel_err(&out.w, &w) < 1e-5, "w {ctx}: {}", rel_err(&out.w, &w));
            assert!(rel_err(&out.probs, &probs) < 1e-5, "probs {ctx}: {}", rel_err(&out.probs, &probs));
        }
    }
    // Exact ties (logits from a handful of values): the lower expert index must win.
    for &(t, e, k) in &[(8usize, 12usize, 4usize), (4, 100, 8), (40, 6, 3), (20, 64, 8), (3, 512, 8)] {
        let logits: Vec<T> = (0..t * e).map(|_| T::from_f32(rng.random_range(0..3) as f32)).collect();
        let out = b.topk_gating_fwd(&logits, t, e, k, false).unwrap();
        let (idx, _, _) = r::topk_gating_fwd(&f32s(&logits), t, e, k, false).unwrap();
        assert_eq!(out.idx, idx, "ties {} t={t} e={e} k={k}", b.backend());
    }
}

fn gating_bwd<B: MoeKernels, T: KernelFloat>(b: &B) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(t, e, k) in GATING_SHAPES {
        for renorm in [false, true] {
            let logits: Vec<f32> = randn(&mut rng, t * e);
            let (idx, w, probs) = r::topk_gating_fwd(&logits, t, e, k, renorm).unwrap();
            let dw: Vec<f32> = randn(&mut rng, t * k);
            let out: Vec<T> = b.topk_gating_bwd(&probs, &idx, &w, &dw, t, e, k, renorm).unwrap();
            let want = r::topk_gating_bwd(&probs, &idx, &w, &dw, t, e, k, renorm).unwrap();
            let err = rel_err(&f32s(&out), &want);
            assert!(err < tol::<T>(), "{} {} t={t} e={e} k={k} renorm={renorm}: {err}", b.backend(), T::SUFFIX);
        }
    }
}

/// (t, k, e, experts used, pad_to): T = 1, T = 0, empty experts, E not a power of two; then
/// several blocks of the count and assign kernels (1024 pairs each), with experts shared across
/// blocks (the stable order crosses block boundaries), up to more blocks than the scan kernel has
/// threads (each thread then scans a run of blocks).
const DISPATCH_SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 2, 6, 6, 1),
    (0, 2, 6, 6, 4),
    (17, 2, 12, 7, 4),
    (50, 3, 100, 60, 1),
    (300, 1, 6, 4, 8),
    (129, 2, 512, 512, 16),
    (1100, 2, 12, 7, 4),
    (700, 3, 512, 300, 16),
    (3000, 3, 100, 60, 1),
    (2049, 1, 6, 4, 8),
    (270_000, 1, 6, 6, 1),
];

fn dispatch<B: MoeKernels>(b: &B) {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for &(t, k, e, used, pad) in DISPATCH_SHAPES {
        let idx = random_idx(&mut rng, t, k, e, used);
        let got = b.dispatch(&idx, t, k, e, pad).unwrap();
        let want = r::dispatch(&idx, t, k, e, pad).unwrap();
        assert_eq!(got, want, "{} t={t} k={k} e={e} pad={pad}", b.backend());
    }
}

/// (t, k, e, d, pad_to): d = 8 and 64 take the 16-byte path for both dtypes, 13 the scalar path.
const ROW_SHAPES: &[(usize, usize, usize, usize, usize)] = &[(1, 1, 6, 8, 1), (7, 2, 12, 13, 4), (20, 3, 100, 64, 1), (33, 2, 6, 16, 8)];

fn routed(rng: &mut ChaCha8Rng, t: usize, k: usize, e: usize, pad: usize) -> r::Dispatch {
    let idx = random_idx(rng, t, k, e, e.div_ceil(2).max(k));
    r::dispatch(&idx, t, k, e, pad).unwrap()
}

fn permute<B: MoeKernels, T: KernelFloat>(b: &B) {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for &(t, k, e, d, pad) in ROW_SHAPES {
        let disp = routed(&mut rng, t, k, e, pad);
        let rows = disp.src_row.len();
        let ctx = format!("{} {} t={t} k={k} e={e} d={d} pad={pad}", b.backend(), T::SUFFIX);
        let x: Vec<T> = randn(&mut rng, t * d);
        let xp = b.permute_fwd(&x, &disp.src_row, t, d).unwrap();
        let want = r::permute_fwd(&f32s(&x), &disp.src_row, t, d).unwrap();
        assert_eq!(f32s(&xp), want, "permute_fwd {ctx}"); // a copy: exact
        let dxp: Vec<T> = randn(&mut rng, rows * d);
        let dx = b.permute_bwd(&dxp, &disp.pos, t, k, d).unwrap();
        let want = r::permute_bwd(&f32s(&dxp), &disp.pos, t, k, d).unwrap();
        let err = rel_err(&f32s(&dx), &want);
        assert!(err < tol::<T>(), "permute_bwd {ctx}: {err}");
    }
}

fn combine<B: MoeKernels, T: KernelFloat>(b: &B) {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for &(t, k, e, d, pad) in ROW_SHAPES {
        let disp = routed(&mut rng, t, k, e, pad);
        let rows = disp.src_row.len();
        let ctx = format!("{} {} t={t} k={k} e={e} d={d} pad={pad}", b.backend(), T::SUFFIX);
        let yp: Vec<T> = randn(&mut rng, rows * d);
        let w: Vec<f32> = (0..t * k).map(|_| rng.random_range(0.05..1.0)).collect();
        let y = b.combine_fwd(&yp, &disp.pos, &w, t, k, d).unwrap();
        let want = r::combine_fwd(&f32s(&yp), &disp.pos, &w, t, k, d).unwrap();
        let err = rel_err(&f32s(&y), &want);
        assert!(err < tol::<T>(), "combine_fwd {ctx}: {err}");
        let dy: Vec<T> = randn(&mut rng, t * d);
        let (dyp, dw) = b.combine_bwd(&dy, &yp, &disp.pos, &w, &disp.src_row, t, k, d).unwrap();
        let (want_dyp, want_dw) = r::combine_bwd(&f32s(&dy), &f32s(&yp), &disp.pos, &w, t, k, d).unwrap();
        let err = rel_err(&f32s(&dyp), &want_dyp);
        assert!(err < tol::<T>(), "combine_bwd dyp {ctx}: {err}");
        let err = rel_err(&dw, &want_dw);
        assert!(err < tol::<T>(), "combine_bwd dw {ctx}: {err}");
    }
}

fn bad_input_is_an_error<B: MoeKernels>(b: &B) {
    assert!(b.topk_gating_fwd(&[0.5f32; 6], 1, 6, 9, false).is_err(), "k > 8");
    assert!(b.topk_gating_fwd(&[0.5f32; 1026], 1, 1026, 1, false).is_err(), "E > 512");
    assert!(b.topk_gating_fwd(&[0.5f32; 5], 1, 6, 1, false).is_err(), "short logits");
    assert!(b.dispatch(&[0, 7], 2, 1, 6, 1).is_err(), "expert out of range");
    assert!(b.dispatch(&[1, 1], 1, 2, 6, 1).is_err(), "expert twice for one token");
    assert!(b.dispatch(&[1], 1, 1, 6, 0).is_err(), "pad_to 0");
    assert!(b.permute_fwd(&[0.5f32; 4], &[0, 5], 2, 2).is_err(), "src_row out of range");
    assert!(b.combine_fwd(&[0.5f32; 4], &[0, 9], &[1.0, 1.0], 2, 1, 2).is_err(), "pos out of range");
}

#[test]
fn dispatch_params_reject_too_many_pairs() {
    use automoe::cuda::moe_ops::dispatch_params;
    assert!(dispatch_params(i32::MAX as usize - 10, 1, 6, 1).is_err(), "pairs near i32::MAX");
    assert!(dispatch_params(1 << 20, 2, 6, 1).is_ok());
}

/// Instantiates every body for one backend; `$make` yields `Result<backend>` (Err = skip).
macro_rules! backend_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            macro_rules! run {
                ($body:expr) => {
                    match $make {
                        Ok(b) => $body(&b),
                        Err(e) => automoe::cuda::skip_unless_required("AUTOMOE_REQUIRE_CUDA", &format!("{}: {e}", stringify!($module))),
                    }
                };
            }

            #[test]
            fn topk_gating_fwd_f32() {
                run!(gating_fwd::<_, f32>)
            }
            #[test]
            fn topk_gating_fwd_bf16() {
                run!(gating_fwd::<_, bf16>)
            }
            #[test]
            fn topk_gating_bwd_f32() {
                run!(gating_bwd::<_, f32>)
            }
            #[test]
            fn topk_gating_bwd_bf16() {
                run!(gating_bwd::<_, bf16>)
            }
            #[test]
            fn permute_dispatch() {
                run!(dispatch)
            }
            #[test]
            fn permute_f32() {
                run!(permute::<_, f32>)
            }
            #[test]
            fn permute_bf16() {
                run!(permute::<_, bf16>)
            }
            #[test]
            fn combine_f32() {
                run!(combine::<_, f32>)
            }
            #[test]
            fn combine_bf16() {
                run!(combine::<_, bf16>)
            }
            #[test]
            fn rejects_bad_input() {
                run!(bad_input_is_an_error)
            }
        }
    };
}

backend_tests!(emulator, Ok::<_, automoe::Error>(automoe::cuda::Emu::default()));
backend_tests!(emulator_shuffled, Ok::<_, automoe::Error>(automoe::cuda::Emu { seed: 12345 }));
// Runs on the first CUDA device when there is one; otherwise each test prints why it was skipped.
backend_tests!(cuda, automoe::cuda::CudaExec::new(0));
