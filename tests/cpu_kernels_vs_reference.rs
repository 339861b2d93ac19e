//! The CPU row kernels (masked softmax, layer norm, cross-entropy, embedding), forward and backward,
//! against the plain references in `automoe::cpu::reference` on shapes large enough that the rows
//! are split over several rayon tasks (`cpu::rows_per_task`), where a row index or a partial sum
//! computed per task could go wrong without the small-shape tests noticing.

use automoe::cpu::{reference, rows_per_task};
use automoe::rng::seeded;
use automoe::tensor::MaskSpec;
use automoe::{DType, Tensor};
use rand::Rng;
use std::sync::Arc;

fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

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
                assert!(max_rel_err(&yv, &want) < tol(dtype), "{what}: forward");
                assert!(yv[tq * h * tk..2 * tq * h * tk].iter().all(|&v| v == 0.0), "{what}: the padded batch");

                let dy = rand(&[b, h, tq, tk], dtype, 60 + case as u64);
                let dx = Tensor::softmax_backward(&y, &dy).unwrap().to_f64_vec().unwrap();
                let want = reference::softmax_backward(&yv, &dy.to_f64_vec().unwrap(), tk);
                assert!(max_rel_err(&dx, &want) < tol(dtype), "{what}: backward");
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
            assert!(max_rel_err(&y.to_f64_vec().unwrap(), &want) < tol(dtype), "{what}: forward");

            let dy = rand(&[rows, d], dtype, seed + 3);
            let (dx, dgamma, dbeta) = Tensor::layer_norm_backward(&x, &gamma, &mean, &rstd, &dy).unwrap();
            let (wdx, wdg, wdb) = reference::layer_norm_backward(&xv, &gv, &dy.to_f64_vec().unwrap(), d, 1e-5);
            assert!(max_rel_err(&dx.to_f64_vec().unwrap(), &wdx) < tol(dtype), "{what}: dx");
            // dgamma and dbeta are summed over rows, partly within tasks and then across them.
            assert!(max_rel_err(&dgamma.to_f64_vec().unwrap(), &wdg) < tol(dtype), "{what}: dgamma");
            assert!(max_rel_err(&dbeta.to_f64_vec().unwrap(), &wdb) < tol(dtype), "{what}: dbeta");
        }
    }
}
