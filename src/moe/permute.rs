//! Permute (gather token rows into expert-contiguous order) and combine (gather each token's k
//! expert rows back, weighted), forward and backward. Every output element is written by exactly
//! one task with a fixed summation order: no atomics, deterministic.

use rayon::prelude::*;

use super::dispatch::{Dispatch, DROPPED};
use crate::tensor::Float;

/// `xp[pos] = x[src_row[pos]]`: `x: [T, d]` to `xp: [rows, d]`.
pub fn permute_fwd<T: Float>(x: &[T], d: usize, dis: &Dispatch) -> Vec<T> {
    let mut xp = vec![T::zero(); dis.rows() * d];
    xp.par_chunks_mut(d.max(1)).zip(dis.src_row.par_iter()).for_each(|(o, &t)| {
        let t = t as usize;
        o.copy_from_slice(&x[t * d..(t + 1) * d]);
    });
    xp
}

/// `dx[t] = sum_s dxp[pos[t, s]]` (dropped pairs contribute nothing).
pub fn permute_bwd<T: Float>(dxp: &[T], d: usize, dis: &Dispatch) -> Vec<T> {
    let k = dis.k;
    let mut dx = vec![T::zero(); dis.tokens * d];
    dx.par_chunks_mut(d.max(1)).enumerate().for_each(|(t, o)| {
        for s in 0..k {
            let p = dis.pos[t * k + s];
            if p != DROPPED {
                let p = p as usize;
                for (a, &g) in o.iter_mut().zip(&dxp[p * d..(p + 1) * d]) {
                    *a = *a + g;
                }
            }
        }
    });
    dx
}

/// `y[t] = sum_s w[t, s] * yp[pos[t, s]]`, accumulated in f64 then rounded once.
pub fn combine_fwd<T: Float>(yp: &[T], w: &[T], d: usize, dis: &Dispatch) -> Vec<T> {
    let k = dis.k;
    let mut y = vec![T::zero(); dis.tokens * d];
    y.par_chunks_mut(d.max(1)).enumerate().for_each(|(t, o)| {
        let mut acc = vec![0f64; d];
        for s in 0..k {
            let p = dis.pos[t * k + s];
            if p != DROPPED {
                let (p, ws) = (p as usize, w[t * k + s].as_f64());
                for (a, &v) in acc.iter_mut().zip(&yp[p * d..(p + 1) * d]) {
                    *a += ws * v.as_f64();
                }
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = T::of_f64(a);
        }
    });
    y
}

/// `(dyp, dw)`: `dyp[pos[t, s]] = w[t, s] * dy[t]` and the gate gradient `dw[t, s] = <dy[t], yp[pos[t, s]]>`.
pub fn combine_bwd<T: Float>(yp: &[T], w: &[T], dy: &[T], d: usize, dis: &Dispatch) -> (Vec<T>, Vec<T>) {
    let k = dis.k;
    let mut dyp = vec![T::zero(); yp.len()];
    // Each permuted row belongs to exactly one pair: find it through src_row and the pair's slot.
    let mut pair_of_row = vec![0usize; dis.rows()];
    for (pair, &p) in dis.pos.iter().enumerate() {
        if p != DROPPED {
            pair_of_row[p as usize] = pair;
        }
    }
    dyp.par_chunks_mut(d.max(1)).zip(pair_of_row.par_iter()).for_each(|(o, &pair)| {
        let (t, ws) = (pair / k, w[pair]);
        for (a, &g) in o.iter_mut().zip(&dy[t * d..(t + 1) * d]) {
            *a = ws * g;
        }
    });
    let dw: Vec<T> = (0..dis.tokens * k)
        .into_par_iter()
        .map(|pair| {
            let p = dis.pos[pair];
            if p == DROPPED {
                return T::zero();
            }
            let (p, t) = (p as usize, pair / k);
            T::of_f64(dy[t * d..(t + 1) * d].iter().zip(&yp[p * d..(p + 1) * d]).map(|(a, b)| a.as_f64() * b.as_f64()).sum())
        })
        .collect();
    (dyp, dw)
}
