//! Label-smoothed cross-entropy over rows of logits, with an ignored (padding) target index.
//!
//! The target distribution is PyTorch's: `q_j = (1 - eps) [j == t] + eps / V`. Rows whose target is
//! the ignored index contribute nothing and are not counted.

use rayon::prelude::*;

use crate::tensor::Float;

/// Totals of one forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CeTotals {
    /// Sum over counted rows of `-sum_j q_j log p_j`.
    pub loss_sum: f64,
    /// Sum over counted rows of `-log p_t` (the unsmoothed NLL, for perplexity).
    pub nll_sum: f64,
    /// Rows whose target is not the ignored index.
    pub count: usize,
}

/// Log-sum-exp of a row; exp in the element type (vectorised for f32, `cpu::rowmath`), the sum in
/// f64.
fn log_sum_exp<T: Float>(row: &[T]) -> f64 {
    let mx = T::row_max(row);
    mx.as_f64() + T::exp_shifted_sum(row, mx).ln()
}

/// Forward totals for `logits: [rows, v]` and `targets: [rows]`.
pub fn cross_entropy_fwd<T: Float>(logits: &[T], targets: &[u32], v: usize, eps: f64, ignore: Option<u32>) -> CeTotals {
    let per_row: Vec<(f64, f64, usize)> = logits
        .par_chunks(v)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            if Some(t) == ignore {
                return (0.0, 0.0, 0);
            }
            let lse = log_sum_exp(row);
            let nll = lse - row[t as usize].as_f64();
            let mean_neg_logp = lse - T::row_sum(row) / v as f64;
            ((1.0 - eps) * nll + eps * mean_neg_logp, nll, 1)
        })
        .collect();
    // Summed in row order so the total does not depend on the thread count.
    let mut t = CeTotals { loss_sum: 0.0, nll_sum: 0.0, count: 0 };
    for (l, n, c) in per_row {
        t.loss_sum += l;
        t.nll_sum += n;
        t.count += c;
    }
    t
}

/// `dlogits = scale * (softmax(logits) - q)` for counted rows, zero for ignored rows.
pub fn cross_entropy_bwd<T: Float>(logits: &[T], targets: &[u32], v: usize, eps: f64, ignore: Option<u32>, scale: f64) -> Vec<T> {
    let mut d = vec![T::zero(); logits.len()];
    d.par_chunks_mut(v).zip(logits.par_chunks(v).zip(targets.par_iter())).for_each(|(dr, (row, &t))| {
        if Some(t) == ignore {
            return;
        }
        // One exp pass: the row's exps go into dr, then dr becomes scale * (exp / sum - smooth).
        let sum = T::exp_shifted(row, T::row_max(row), dr);
        let (inv, scale, smooth) = (T::of_f64(1.0 / sum), T::of_f64(scale), T::of_f64(eps / v as f64));
        for d in dr.iter_mut() {
            *d = scale * (*d * inv - smooth);
        }
        let t = t as usize;
        dr[t] = dr[t] - scale * T::of_f64(1.0 - eps);
    });
    d
}
