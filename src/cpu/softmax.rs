//! Softmax over the last dimension with optional causal and key-padding masks (attention).

use rayon::prelude::*;

use super::rowmath::lane_sum2;
use crate::tensor::{Float, MaskSpec};

/// Copies row `r` of a `[batch, heads.., tq, tk]` score tensor into `y` with the keys hidden from
/// it set to -inf. The row's causal limit and padding row are found once, not per key (two
/// integer divisions per element cost more than the softmax's arithmetic).
fn masked_row<T: Float>(mask: &MaskSpec, r: usize, x: &[T], y: &mut [T], tq: usize, rows_per_batch: usize) {
    let tk = x.len();
    y.copy_from_slice(x);
    if mask.causal {
        // Query i sits at absolute position i + (tk - tq) (incremental decoding sees tq < tk).
        let last_visible = r % tq + tk.saturating_sub(tq);
        if last_visible + 1 < tk {
            y[last_visible + 1..].fill(T::neg_infinity());
        }
    }
    if let Some(pad) = &mask.key_padding {
        let b = r / rows_per_batch;
        for (v, &p) in y.iter_mut().zip(&pad[b * tk..(b + 1) * tk]) {
            if p {
                *v = T::neg_infinity();
            }
        }
    }
}

/// Row-wise softmax of `x` viewed as `[rows, tk]`; `tq` and `rows_per_batch` locate each row for
/// the masks. A row whose keys are all masked comes out as zeros (not NaN).
pub fn softmax_fwd<T: Float>(x: &[T], tk: usize, tq: usize, rows_per_batch: usize, mask: &MaskSpec) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    let chunk = super::rows_per_task(tk);
    let any_mask = mask.causal || mask.key_padding.is_some();
    y.par_chunks_mut(tk * chunk).zip(x.par_chunks(tk * chunk)).enumerate().for_each(|(t, (yb, xb))| {
        for (i, (yr, xr)) in yb.chunks_mut(tk).zip(xb.chunks(tk)).enumerate() {
            let r = t * chunk + i;
            // Masked keys enter as -inf, whose exponential is exactly 0.
            if any_mask {
                masked_row(mask, r, xr, yr, tq, rows_per_batch);
            } else {
                yr.copy_from_slice(xr);
            }
            let mx = T::row_max(yr);
            if mx == T::neg_infinity() {
                yr.fill(T::zero());
                continue;
            }
            let sum = T::exp_shifted_in_place(yr, mx);
            let inv = T::of_f64(1.0 / sum);
            for v in yr.iter_mut() {
                *v = *v * inv;
            }
        }
    });
    y
}

/// `dx = y * (dy - sum(dy * y))` per row; masked entries have y = 0 and so get no gradient.
pub fn softmax_bwd<T: Float>(y: &[T], dy: &[T], tk: usize) -> Vec<T> {
    let mut dx = vec![T::zero(); y.len()];
    let chunk = super::rows_per_task(tk);
    dx.par_chunks_mut(tk * chunk).zip(y.par_chunks(tk * chunk).zip(dy.par_chunks(tk * chunk))).for_each(|(db, (yb, gb))| {
        for (dr, (yr, gr)) in db.chunks_mut(tk).zip(yb.chunks(tk).zip(gb.chunks(tk))) {
            let dot = lane_sum2(yr, gr, |a, b| a.as_f64() * b.as_f64());
            for j in 0..tk {
                dr[j] = T::of_f64(yr[j].as_f64() * (gr[j].as_f64() - dot));
            }
        }
    });
    dx
}
