//! Layer normalisation over the last dimension, forward and backward.

use rayon::prelude::*;

use super::rowmath::{lane_sum, lane_sum2, lane_sum3};
use crate::tensor::Float;

/// What the forward saves for the backward: per-row mean and reciprocal standard deviation.
pub struct LayerNormStats<T> {
    pub mean: Vec<T>,
    pub rstd: Vec<T>,
}

/// `y = (x - mean) * rstd * gamma + beta` per row of length `d`.
pub fn layer_norm_fwd<T: Float>(x: &[T], gamma: &[T], beta: &[T], d: usize, eps: f64) -> (Vec<T>, LayerNormStats<T>) {
    let rows = x.len() / d.max(1);
    let mut y = vec![T::zero(); x.len()];
    let mut mean = vec![T::zero(); rows];
    let mut rstd = vec![T::zero(); rows];
    let chunk = super::rows_per_task(d);
    y.par_chunks_mut(d * chunk).zip(x.par_chunks(d * chunk)).zip(mean.par_chunks_mut(chunk).zip(rstd.par_chunks_mut(chunk))).for_each(
        |((yb, xb), (mb, rb))| {
            for (((yr, xr), m), r) in yb.chunks_mut(d).zip(xb.chunks(d)).zip(mb.iter_mut()).zip(rb.iter_mut()) {
                let mu = T::row_sum(xr) / d as f64;
                let var = lane_sum(xr, |v| (v.as_f64() - mu).powi(2)) / d as f64;
                let rs = 1.0 / (var + eps).sqrt();
                for j in 0..d {
                    yr[j] = T::of_f64((xr[j].as_f64() - mu) * rs) * gamma[j] + beta[j];
                }
                *m = T::of_f64(mu);
                *r = T::of_f64(rs);
            }
        },
    );
    (y, LayerNormStats { mean, rstd })
}

/// Gradients `(dx, dgamma, dbeta)` of layer norm.
pub fn layer_norm_bwd<T: Float>(x: &[T], gamma: &[T], stats: &LayerNormStats<T>, dy: &[T], d: usize) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut dx = vec![T::zero(); x.len()];
    let chunk = super::rows_per_task(d);
    // Each task also returns its partial dgamma/dbeta; they are summed in task order (deterministic).
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(d * chunk)
        .enumerate()
        .map(|(t, dxb)| {
            let mut dg = vec![0f64; d];
            let mut db = vec![0f64; d];
            for (i, dxr) in dxb.chunks_mut(d).enumerate() {
                let r = t * chunk + i;
                let (xr, dyr) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
                let (mu, rs) = (stats.mean[r].as_f64(), stats.rstd[r].as_f64());
                let xhat = |v: T| (v.as_f64() - mu) * rs;
                let sum_g = lane_sum2(dyr, gamma, |g, w| g.as_f64() * w.as_f64());
                let sum_gx = lane_sum3(dyr, gamma, xr, |g, w, v| g.as_f64() * w.as_f64() * xhat(v));
                for j in 0..d {
                    dg[j] += dyr[j].as_f64() * xhat(xr[j]);
                    db[j] += dyr[j].as_f64();
                }
                let (mg, mgx) = (sum_g / d as f64, sum_gx / d as f64);
                for j in 0..d {
                    let g = dyr[j].as_f64() * gamma[j].as_f64();
                    dxr[j] = T::of_f64(rs * (g - mg - xhat(xr[j]) * mgx));
                }
            }
            (dg, db)
        })
        .collect();
    let mut dgamma = vec![0f64; d];
    let mut dbeta = vec![0f64; d];
    for (g, b) in &partials {
        for j in 0..d {
            dgamma[j] += g[j];
            dbeta[j] += b[j];
        }
    }
    (dx, dgamma.into_iter().map(T::of_f64).collect(), dbeta.into_iter().map(T::of_f64).collect())
}
