//! Softmax over the last dimension with optional causal and key-padding masks (attention).

use rayon::prelude::*;

use crate::tensor::{Float, MaskSpec};

/// Whether key `j` is hidden from row `r` of a `[batch, heads.., tq, tk]` score tensor.
#[inline]
fn masked(mask: &MaskSpec, r: usize, j: usize, tq: usize, tk: usize, rows_per_batch: usize) -> bool {
    if mask.causal {
        // Query i sits at absolute position i + (tk - tq) (incremental decoding sees tq < tk).
        let i = r % tq;
        if j > i + tk.saturating_sub(tq) {
            return true;
        }
    }
    if let Some(pad) = &mask.key_padding {
        let b = r / rows_per_batch;
        if pad[b * tk + j] {
            return true;
        }
    }
    false
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
            let keep = |j: usize| !any_mask || !masked(mask, r, j, tq, tk, rows_per_batch);
            let mut mx = f64::NEG_INFINITY;
            for j in 0..tk {
                if keep(j) {
                    mx = mx.max(xr[j].as_f64());
                }
            }
            if mx == f64::NEG_INFINITY {
                yr.fill(T::zero());
                continue;
            }
            // exp in the element type (f32's expf is several times cheaper than f64's exp), sums in f64.
            let (mx, mut sum) = (T::of_f64(mx), 0f64);
            for j in 0..tk {
                let e = if keep(j) { (xr[j] - mx).exp() } else { T::zero() };
                yr[j] = e;
                sum += e.as_f64();
            }
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
            let dot: f64 = yr.iter().zip(gr).map(|(a, b)| a.as_f64() * b.as_f64()).sum();
            for j in 0..tk {
                dr[j] = T::of_f64(yr[j].as_f64() * (gr[j].as_f64() - dot));
            }
        }
    });
    dx
}
