//! The CPU row kernels (masked softmax, layer norm, cross-entropy, embedding), forward and backward,
//! against the plain references in `automoe::cpu::reference` on shapes large enough that the rows
//! are split over several rayon tasks (`cpu::rows_per_task`), where a row index or a partial sum
//! computed per task could go wrong without the small-shape tests noticing.

mod common;

use automoe::autograd::Tape;
use automoe::cpu::{reference, rows_per_task};
use automoe::rng::seeded;
use automoe::tensor::MaskSpec;
use automoe::{DType, Tensor};
use common::rel_diff;
use rand::Rng;
use std::sync::Arc;

fn rand(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, dtype, &mut seeded(seed))
}

fn tol(dtype: DType) -> f64 {
    if dtype == DType::F32 {
        1e-5
    } else {
        1e-11
    }
}

/// `[batch, heads, tq, tk]` shapes whose rows span several tasks, with task boundaries that do not
/// line up with batches or queries: (3, 2, 10, 900) has 9 rows a task and 20 rows a batch, and its
/// tq < tk is the incremental-decoding case; (2, 2, 100, 100) is square, so the causal mask hides
/// most keys.
const SOFTMAX_SHAPES: [[usize; 4]; 2] = [[3, 2, 10, 900], [2, 2, 100, 100]];

#[test]
fn masked_softmax_over_many_tasks_matches_reference() {
    for (case, &[b, h, tq, tk]) in SOFTMAX_SHAPES.iter().enumerate() {
        assert!(b * h * tq > 3 * rows_per_task(tk), "case {case} must span several tasks");
        let mut rng = seeded(40 + case as u64);
        // Random padding, except batch 1 whose keys are all padded (its rows must come out zero).
        let pad: Vec<bool> = (0..b * tk).map(|i| i / tk == 1 || rng.random_bool(0.3)).collect();
        for causal in [false, true] {
            let mask = MaskSpec { causal, key_padding: Some(Arc::new(pad.clone())) };
            let hidden = |r: usize, j: usize| {
                let (batch, i) = (r / (h * tq), r % tq);
                (causal && j > i + (tk - tq)) || pad[batch * tk + j]
            };
            for dtype in [DType::F32, DType::F64] {
                let what = format!("case {case} causal {causal} {dtype:?}");
                let x = rand(&[b, h, tq, tk], dtype, 50 + case as u64);
                let y = x.softmax(&mask).unwrap();
                let yv = y.to_f64_vec().unwrap();
                let want = reference::softmax(&x.to_f64_vec().unwrap(), tk, hidden);
                assert!(rel_diff(&yv, &want) < tol(dtype), "{what}: forward");
                assert!(yv[tq * h * tk..2 * tq * h * tk].iter().all(|&v| v == 0.0), "{what}: the padded batch");

                let dy = rand(&[b, h, tq, tk], dtype, 60 + case as u64);
                let dx = Tensor::softmax_backward(&y, &dy).unwrap().to_f64_vec().unwrap();
                let want = reference::softmax_backward(&yv, &dy.to_f64_vec().unwrap(), tk);
                assert!(rel_diff(&dx, &want) < tol(dtype), "{what}: backward");
            }
        }
    }
}

#[test]
fn layer_norm_over_many_tasks_matches_reference() {
    // 64 rows of 1000 is 8 tasks of 8 rows; 100 rows of 300 ends with a short task (27 rows each).
    for (case, (rows, d)) in [(64, 1000), (100, 300)].into_iter().enumerate() {
        assert!(rows > 3 * rows_per_task(d), "case {case} must span several tasks");
        for dtype in [DType::F32, DType::F64] {
            let what = format!("rows {rows} d {d} {dtype:?}");
            let seed = 70 + 10 * case as u64;
            let (x, gamma, beta) = (rand(&[rows, d], dtype, seed), rand(&[d], dtype, seed + 1), rand(&[d], dtype, seed + 2));
            let (xv, gv, bv) = (x.to_f64_vec().unwrap(), gamma.to_f64_vec().unwrap(), beta.to_f64_vec().unwrap());
            let (y, mean, rstd) = x.layer_norm(&gamma, &beta, 1e-5).unwrap();
            let want = reference::layer_norm(&xv, &gv, &bv, d, 1e-5);
            assert!(rel_diff(&y.to_f64_vec().unwrap(), &want) < tol(dtype), "{what}: forward");

            let dy = rand(&[rows, d], dtype, seed + 3);
            let (dx, dgamma, dbeta) = Tensor::layer_norm_backward(&x, &gamma, &mean, &rstd, &dy).unwrap();
            let (wdx, wdg, wdb) = reference::layer_norm_backward(&xv, &gv, &dy.to_f64_vec().unwrap(), d, 1e-5);
            assert!(rel_diff(&dx.to_f64_vec().unwrap(), &wdx) < tol(dtype), "{what}: dx");
            // dgamma and dbeta are summed over rows, partly within tasks and then across them.
            assert!(rel_diff(&dgamma.to_f64_vec().unwrap(), &wdg) < tol(dtype), "{what}: dgamma");
            assert!(rel_diff(&dbeta.to_f64_vec().unwrap(), &wdb) < tol(dtype), "{what}: dbeta");
        }
    }
}

#[test]
fn cross_entropy_loss_and_nll_match_reference() {
    let mut rng = seeded(90);
    let (rows, v) = (300, 41);
    let logits = rand(&[rows, v], DType::F64, 91);
    // About one row in five has the ignored target 0.
    let targets: Vec<u32> = (0..rows).map(|_| if rng.random_bool(0.2) { 0 } else { rng.random_range(1..v as u32) }).collect();
    let lv = logits.to_f64_vec().unwrap();
    for eps in [0.0, 0.1, 0.6] {
        let want = reference::cross_entropy(&lv, &targets, v, eps, Some(0));
        let t = logits.cross_entropy_totals(&targets, eps, Some(0)).unwrap();
        assert_eq!(t.count, want.count);
        let n = t.count as f64;
        assert!((t.loss_sum / n - want.loss).abs() < 1e-12 * want.loss, "eps {eps}: loss");
        // The NLL (perplexity) ignores the smoothing.
        assert!((t.nll_sum / n - want.nll).abs() < 1e-12 * want.nll, "eps {eps}: nll");
        // The tape reports the same means.
        let mut tape = Tape::new();
        let x = tape.input(logits.clone());
        let (loss, stats) = tape.cross_entropy(&x, &targets, eps, Some(0)).unwrap();
        assert!((loss.value().to_scalar().unwrap() - want.loss).abs() < 1e-12 * want.loss, "eps {eps}: tape loss");
        assert!((stats.nll - want.nll).abs() < 1e-12 * want.nll, "eps {eps}: tape nll");
        assert_eq!(stats.count, want.count);
    }
    // Without smoothing the loss is the NLL in the reference (the kernel's totals are checked
    // against it above).
    let want = reference::cross_entropy(&lv, &targets, v, 0.0, Some(0));
    assert!((want.loss - want.nll).abs() < 1e-12 * want.nll);
}

#[test]
fn cross_entropy_backward_over_many_tasks_matches_reference() {
    // 300 rows of 41 and 40 rows of 1000 (rows split over rayon's tasks; f32 rows take the
    // vectorised exp of `cpu::rowmath`, whose tail handling a row of 41 exercises); about one row
    // in five is ignored (target 0) and must come out exactly zero.
    for (case, (rows, v)) in [(300, 41), (40, 1000)].into_iter().enumerate() {
        let mut rng = seeded(93 + case as u64);
        let targets: Vec<u32> = (0..rows).map(|_| if rng.random_bool(0.2) { 0 } else { rng.random_range(1..v as u32) }).collect();
        for dtype in [DType::F32, DType::F64] {
            let logits = rand(&[rows, v], dtype, 95 + case as u64);
            let lv = logits.to_f64_vec().unwrap();
            for (eps, scale) in [(0.0, 1.0), (0.1, 0.37), (0.6, -2.5)] {
                let what = format!("rows {rows} v {v} {dtype:?} eps {eps} scale {scale}");
                let got = logits.cross_entropy_backward(&targets, eps, Some(0), scale).unwrap();
                assert_eq!(got.shape(), &[rows, v]);
                let got = got.to_f64_vec().unwrap();
                let want = reference::cross_entropy_backward(&lv, &targets, v, eps, Some(0), scale);
                assert!(rel_diff(&got, &want) < tol(dtype), "{what}: dlogits");
                for (r, &t) in targets.iter().enumerate() {
                    if t == 0 {
                        assert!(got[r * v..(r + 1) * v].iter().all(|&g| g == 0.0), "{what}: ignored row {r}");
                    }
                }
            }
        }
    }
}

#[test]
fn cross_entropy_refuses_label_smoothing_outside_0_1() {
    let logits = rand(&[4, 5], DType::F64, 92);
    for eps in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY] {
        let mut tape = Tape::new();
        let x = tape.input(logits.clone());
        let err = tape.cross_entropy(&x, &[1, 2, 3, 4], eps, None).unwrap_err().to_string();
        assert!(err.contains("label smoothing"), "eps {eps}: {err}");
    }
}

#[test]
fn an_all_ignored_batch_has_zero_loss_and_zero_gradient() {
    let logits = rand(&[6, 7], DType::F64, 93);
    let mut tape = Tape::new();
    let x = tape.input(logits);
    let (loss, stats) = tape.cross_entropy(&x, &[3; 6], 0.1, Some(3)).unwrap();
    assert_eq!(stats.count, 0);
    assert_eq!((loss.value().to_scalar().unwrap(), stats.loss, stats.nll), (0.0, 0.0, 0.0));
    let g = tape.backward(&loss).unwrap();
    let dx = g.wrt(&x).expect("the logits were recorded").to_f64_vec().unwrap();
    assert!(dx.iter().all(|&v| v == 0.0), "{dx:?}");
}

#[test]
fn embedding_forward_and_backward_match_reference_on_random_repeated_ids() {
    let mut rng = seeded(94);
    let (vocab, d, n) = (60, 37, 400);
    // Ids from the first 50 rows only: 400 draws repeat each of them, and rows 50.. get no gradient.
    let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..50)).collect();
    for dtype in [DType::F32, DType::F64] {
        let table = rand(&[vocab, d], dtype, 95);
        let e = table.embedding(&ids).unwrap();
        assert_eq!(e.shape(), &[n, d]);
        // A gather copies: exact in either dtype.
        assert_eq!(e.to_f64_vec().unwrap(), reference::embedding(&table.to_f64_vec().unwrap(), &ids, d), "{dtype:?}");

        let dy = rand(&[n, d], dtype, 96);
        let dw = Tensor::embedding_backward(&dy, &ids, vocab).unwrap();
        assert_eq!(dw.shape(), &[vocab, d]);
        let want = reference::embedding_backward(&dy.to_f64_vec().unwrap(), &ids, vocab, d);
        let got = dw.to_f64_vec().unwrap();
        assert!(rel_diff(&got, &want) < tol(dtype), "{dtype:?}: backward");
        assert!(got[50 * d..].iter().all(|&v| v == 0.0), "{dtype:?}: unused rows");
    }
}
