//! Top-k gating on the CPU: pick each token's k most probable experts from the router's softmax.
//!
//! Ties go to the lower expert index; the chosen experts are listed by descending probability.
//! The gate of a chosen expert is its probability (AutoMoE, k = 1), or with `renormalize` its
//! probability divided by the sum over the chosen k.

use rayon::prelude::*;

use crate::tensor::Float;

/// `(idx [T * k], weights [T * k])` from `probs: [T, E]`.
pub fn topk_fwd<T: Float>(probs: &[T], experts: usize, k: usize, renormalize: bool) -> (Vec<u32>, Vec<T>) {
    let tokens = probs.len() / experts.max(1);
    let mut idx = vec![0u32; tokens * k];
    let mut w = vec![T::zero(); tokens * k];
    let chunk = crate::cpu::rows_per_task(experts);
    idx.par_chunks_mut(k * chunk).zip(w.par_chunks_mut(k * chunk)).zip(probs.par_chunks(experts * chunk)).for_each(|((ib, wb), pb)| {
        let mut order: Vec<usize> = Vec::with_capacity(experts);
        for ((ir, wr), pr) in ib.chunks_mut(k).zip(wb.chunks_mut(k)).zip(pb.chunks(experts)) {
            order.clear();
            order.extend(0..experts);
            // Descending probability, then ascending index: a total order, so ties are deterministic.
            order.sort_by(|&a, &b| pr[b].partial_cmp(&pr[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
            let sum: f64 = order[..k].iter().map(|&e| pr[e].as_f64()).sum();
            for s in 0..k {
                let e = order[s];
                ir[s] = e as u32;
                wr[s] = if renormalize { T::of_f64(pr[e].as_f64() / sum) } else { pr[e] };
            }
        }
    });
    (idx, w)
}

/// Gradient with respect to `probs: [T, E]` from the gradient `dw: [T * k]` of the gates.
/// Without renormalisation the gate is the probability itself; with it, `w_s = p_s / S`, so
/// `dp_j = (dw_j - sum_s dw_s w_s) / S` for each chosen j.
pub fn topk_bwd<T: Float>(probs: &[T], idx: &[u32], w: &[T], dw: &[T], experts: usize, k: usize, renormalize: bool) -> Vec<T> {
    let mut dp = vec![T::zero(); probs.len()];
    dp.par_chunks_mut(experts).enumerate().for_each(|(t, row)| {
        let (ir, wr, gr) = (&idx[t * k..(t + 1) * k], &w[t * k..(t + 1) * k], &dw[t * k..(t + 1) * k]);
        if renormalize {
            let sum: f64 = ir.iter().map(|&e| probs[t * experts + e as usize].as_f64()).sum();
            let dot: f64 = gr.iter().zip(wr).map(|(g, w)| g.as_f64() * w.as_f64()).sum();
            for s in 0..k {
                row[ir[s] as usize] = T::of_f64((gr[s].as_f64() - dot) / sum);
            }
        } else {
            for s in 0..k {
                row[ir[s] as usize] = gr[s];
            }
        }
    });
    dp
}
