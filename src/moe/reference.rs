//! Plain, obviously-correct references for the MoE routing kernels (cuda/gating.cu, cuda/permute.cu).
//! Per-token loops over row-major slices, f64 arithmetic where it matters; the kernels and the CPU
//! MoE layer are tested against these, so the semantics here ARE the specification:
//!
//! Shapes: `t` tokens, `e` experts, `k` experts per token (1..=min(8, e) for the kernels), `d` row
//! width. A pair is (token t, slot s) with flat index `t*k + s`.
//!
//! * [`topk_gating_fwd`]: `probs[t] = softmax(logits[t])`; the k chosen experts are those with the
//!   largest logits (equivalently probabilities), ties to the lower expert index, listed by
//!   descending logit. `w[t,s] = probs[t, idx[t,s]]`, or with `renorm` `w = p / S` where `S` is the
//!   sum of the k chosen probabilities.
//! * [`topk_gating_bwd`]: with `g` = dL/dprobs (zero except at chosen experts): plain `g_j = dw_j`;
//!   renorm `g_j = (dw_j - sum_i dw_i w_i) / S`. Then `dlogits = p * (g - sum_e p_e g_e)`.
//! * [`dispatch`]: `counts[x]` = pairs routed to expert x; `offsets[0] = 0`,
//!   `offsets[x+1] = offsets[x] + round_up(counts[x], pad_to)`; pair `i` gets
//!   `pos[i] = offsets[idx[i]] + #{j < i : idx[j] == idx[i]}` (stable); `src_row[pos[i]] = i / k`,
//!   and `src_row = -1` on padding rows. `src_row.len() == offsets[e]`.
//! * [`permute_fwd`]: `xp[r] = x[src_row[r]]`, a zero row where `src_row[r] < 0`.
//! * [`permute_bwd`]: `dx[t] = sum_s dxp[pos[t*k+s]]`.
//! * [`combine_fwd`]: `y[t] = sum_s w[t,s] * yp[pos[t*k+s]]`.
//! * [`combine_bwd`]: `dyp[pos[t*k+s]] = w[t,s] * dy[t]` (padding rows zero) and
//!   `dw[t,s] = <dy[t], yp[pos[t*k+s]]>`.

use crate::{Error, Result};

/// Result of [`dispatch`]; see the module docs for the exact meaning of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// `[e]` pairs per expert.
    pub counts: Vec<i32>,
    /// `[e + 1]` first row of each expert's (padded) segment; `offsets[e]` is the row count.
    pub offsets: Vec<i32>,
    /// `[t*k]` row of each pair.
    pub pos: Vec<i32>,
    /// `[offsets[e]]` token of each row, `-1` for padding rows.
    pub src_row: Vec<i32>,
}

/// `got == want` or an error naming `what` (shared with the CUDA launchers' host checks).
pub fn check_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::invalid(op, format!("{what} has {got} elements, expected {want}")));
    }
    Ok(())
}

/// Checks that `idx` holds `t*k` experts in `0..e`, each token's k distinct (what the kernels
/// assume, so the CUDA launchers run the same check on the host).
pub fn check_topk_idx(op: &'static str, idx: &[i32], t: usize, e: usize, k: usize) -> Result<()> {
    check_len(op, "topk_idx", idx.len(), t * k)?;
    for (i, &x) in idx.iter().enumerate() {
        if x < 0 || x as usize >= e {
            return Err(Error::IndexOutOfRange { op, index: x.max(0) as usize, limit: e });
        }
        if idx[(i / k) * k..i].contains(&x) {
            return Err(Error::invalid(op, format!("token {} routes to expert {x} twice", i / k)));
        }
    }
    Ok(())
}

/// Softmax + top-k over `logits [t, e]`. Returns `(idx [t,k], w [t,k], probs [t,e])`.
pub fn topk_gating_fwd(logits: &[f32], t: usize, e: usize, k: usize, renorm: bool) -> Result<(Vec<i32>, Vec<f32>, Vec<f32>)> {
    const OP: &str = "topk_gating_fwd";
    check_len(OP, "logits", logits.len(), t * e)?;
    if k == 0 || k > e {
        return Err(Error::invalid(OP, format!("k = {k} must be in 1..={e}")));
    }
    let (mut idx, mut w, mut probs) = (Vec::with_capacity(t * k), Vec::with_capacity(t * k), Vec::with_capacity(t * e));
    for row in logits.chunks_exact(e) {
        if let Some(bad) = row.iter().find(|v| v.is_nan()) {
            return Err(Error::NonFinite(format!("{OP}: logit {bad}")));
        }
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let p: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp() / z).collect();
        let mut order: Vec<usize> = (0..e).collect();
        // Descending logit, ties to the lower index (sort_by is stable, so equal logits keep index order).
        order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap_or(std::cmp::Ordering::Equal));
        let chosen = &order[..k];
        let s: f64 = chosen.iter().map(|&j| p[j]).sum();
        for &j in chosen {
            idx.push(j as i32);
            w.push(if renorm { p[j] / s } else { p[j] } as f32);
        }
        probs.extend(p.iter().map(|&v| v as f32));
    }
    Ok((idx, w, probs))
}

/// Gradient of the router logits from `dw [t,k]` (see the module docs). Returns `dlogits [t,e]`.
#[allow(clippy::too_many_arguments)]
pub fn topk_gating_bwd(probs: &[f32], idx: &[i32], w: &[f32], dw: &[f32], t: usize, e: usize, k: usize, renorm: bool) -> Result<Vec<f32>> {
    const OP: &str = "topk_gating_bwd";
    check_len(OP, "probs", probs.len(), t * e)?;
    check_topk_idx(OP, idx, t, e, k)?;
    check_len(OP, "topk_w", w.len(), t * k)?;
    check_len(OP, "dw", dw.len(), t * k)?;
    let mut out = Vec::with_capacity(t * e);
    for tok in 0..t {
        let p = &probs[tok * e..(tok + 1) * e];
        let (ids, ws, dws) = (&idx[tok * k..(tok + 1) * k], &w[tok * k..(tok + 1) * k], &dw[tok * k..(tok + 1) * k]);
        let mut g = vec![0f64; e];
        if renorm {
            let s: f64 = ids.iter().map(|&j| p[j as usize] as f64).sum();
            let sdw: f64 = dws.iter().zip(ws).map(|(&a, &b)| a as f64 * b as f64).sum();
            for (&j, &d) in ids.iter().zip(dws) {
                g[j as usize] = (d as f64 - sdw) / s;
            }
        } else {
            for (&j, &d) in ids.iter().zip(dws) {
                g[j as usize] = d as f64;
            }
        }
        let dot: f64 = p.iter().zip(&g).map(|(&a, &b)| a as f64 * b).sum();
        out.extend(p.iter().zip(&g).map(|(&a, &b)| (a as f64 * (b - dot)) as f32));
    }
    Ok(out)
}

/// Counting sort of the `t*k` pairs by expert (stable), with segments padded to `pad_to` rows.
pub fn dispatch(idx: &[i32], t: usize, k: usize, e: usize, pad_to: usize) -> Result<Dispatch> {
    const OP: &str = "dispatch";
    check_topk_idx(OP, idx, t, e, k)?;
    if pad_to == 0 {
        return Err(Error::invalid(OP, "pad_to must be at least 1"));
    }
    let mut counts = vec![0i32; e];
    for &x in idx {
        counts[x as usize] += 1;
    }
    let mut offsets = vec![0i32; e + 1];
    for x in 0..e {
        offsets[x + 1] = offsets[x] + (counts[x] as usize).div_ceil(pad_to) as i32 * pad_to as i32;
    }
    let mut seen = vec![0i32; e];
    let mut pos = Vec::with_capacity(idx.len());
    let mut src_row = vec![-1i32; offsets[e] as usize];
    for (i, &x) in idx.iter().enumerate() {
        let r = offsets[x as usize] + seen[x as usize];
        seen[x as usize] += 1;
        pos.push(r);
        src_row[r as usize] = (i / k) as i32;
    }
    Ok(Dispatch { counts, offsets, pos, src_row })
}

fn check_rows(op: &'static str, what: &str, rows: &[i32], limit: usize) -> Result<()> {
    for &r in rows {
        if r >= 0 && r as usize >= limit {
            return Err(Error::IndexOutOfRange { op, index: r as usize, limit });
        }
        if r < 0 && what == "pos" {
            return Err(Error::invalid(op, format!("pos contains {r}")));
        }
    }
    Ok(())
}

/// `xp [src_row.len(), d]` from `x [t, d]`.
pub fn permute_fwd(x: &[f32], src_row: &[i32], t: usize, d: usize) -> Result<Vec<f32>> {
    const OP: &str = "permute_fwd";
    check_len(OP, "x", x.len(), t * d)?;
    check_rows(OP, "src_row", src_row, t)?;
    let mut xp = Vec::with_capacity(src_row.len() * d);
    for &s in src_row {
        if s < 0 {
            xp.extend(std::iter::repeat_n(0.0, d));
        } else {
            xp.extend_from_slice(&x[s as usize * d..(s as usize + 1) * d]);
        }
    }
    Ok(xp)
}

/// `dx [t, d]` from `dxp [rows, d]`.
pub fn permute_bwd(dxp: &[f32], pos: &[i32], t: usize, k: usize, d: usize) -> Result<Vec<f32>> {
    const OP: &str = "permute_bwd";
    check_len(OP, "pos", pos.len(), t * k)?;
    if d == 0 || dxp.len() % d != 0 {
        return Err(Error::invalid(OP, format!("dxp has {} elements, not a multiple of d = {d}", dxp.len())));
    }
    check_rows(OP, "pos", pos, dxp.len() / d)?;
    let mut dx = vec![0f32; t * d];
    for tok in 0..t {
        for c in 0..d {
            let acc: f64 = (0..k).map(|s| dxp[pos[tok * k + s] as usize * d + c] as f64).sum();
            dx[tok * d + c] = acc as f32;
        }
    }
    Ok(dx)
}

/// `y [t, d]` from `yp [rows, d]` and gate weights `w [t, k]`.
pub fn combine_fwd(yp: &[f32], pos: &[i32], w: &[f32], t: usize, k: usize, d: usize) -> Result<Vec<f32>> {
    const OP: &str = "combine_fwd";
    check_len(OP, "pos", pos.len(), t * k)?;
    check_len(OP, "w", w.len(), t * k)?;
    if d == 0 || yp.len() % d != 0 {
        return Err(Error::invalid(OP, format!("yp has {} elements, not a multiple of d = {d}", yp.len())));
    }
    check_rows(OP, "pos", pos, yp.len() / d)?;
    let mut y = vec![0f32; t * d];
    for tok in 0..t {
        for c in 0..d {
            let acc: f64 = (0..k).map(|s| w[tok * k + s] as f64 * yp[pos[tok * k + s] as usize * d + c] as f64).sum();
            y[tok * d + c] = acc as f32;
        }
    }
    Ok(y)
}

/// Returns `(dyp [rows, d], dw [t, k])`, `rows = yp.len() / d`.
pub fn combine_bwd(dy: &[f32], yp: &[f32], pos: &[i32], w: &[f32], t: usize, k: usize, d: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    const OP: &str = "combine_bwd";
    check_len(OP, "dy", dy.len(), t * d)?;
    check_len(OP, "pos", pos.len(), t * k)?;
    check_len(OP, "w", w.len(), t * k)?;
    if d == 0 || yp.len() % d != 0 {
        return Err(Error::invalid(OP, format!("yp has {} elements, not a multiple of d = {d}", yp.len())));
    }
    check_rows(OP, "pos", pos, yp.len() / d)?;
    let mut dyp = vec![0f32; yp.len()];
    let mut dw = vec![0f32; t * k];
    for tok in 0..t {
        for s in 0..k {
            let r = pos[tok * k + s] as usize;
            let ws = w[tok * k + s];
            let mut dot = 0f64;
            for c in 0..d {
                let g = dy[tok * d + c];
                dyp[r * d + c] = ws * g;
                dot += g as f64 * yp[r * d + c] as f64;
            }
            dw[tok * k + s] = dot as f32;
        }
    }
    Ok((dyp, dw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_ties_go_to_lower_index_and_renorm_sums_to_one() {
        let logits = [1.0, 3.0, 3.0, 0.5, 3.0, -1.0];
        let (idx, w, probs) = topk_gating_fwd(&logits, 1, 6, 2, true).unwrap();
        assert_eq!(idx, vec![1, 2]);
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn dispatch_is_stable_and_padded() {
        // t = 3, k = 2: pairs (0,0)->2 (0,1)->0 (1,0)->2 (1,1)->1 (2,0)->0 (2,1)->2; expert 3 empty.
        let d = dispatch(&[2, 0, 2, 1, 0, 2], 3, 2, 4, 4).unwrap();
        assert_eq!(d.counts, vec![2, 1, 3, 0]);
        assert_eq!(d.offsets, vec![0, 4, 8, 12, 12]);
        assert_eq!(d.pos, vec![8, 0, 9, 4, 1, 10]);
        assert_eq!(d.src_row, vec![0, 2, -1, -1, 1, -1, -1, -1, 0, 1, 2, -1]);
    }

    #[test]
    fn gating_bwd_matches_finite_differences() {
        let (t, e, k) = (2, 5, 2);
        let logits: Vec<f32> = (0..t * e).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let dw: Vec<f32> = (0..t * k).map(|i| 0.5 - i as f32 * 0.3).collect();
        for renorm in [false, true] {
            let (idx, w, probs) = topk_gating_fwd(&logits, t, e, k, renorm).unwrap();
            let g = topk_gating_bwd(&probs, &idx, &w, &dw, t, e, k, renorm).unwrap();
            // The loss sum(w * dw) in f64 for the chosen experts (the logits have no ties, and a
            // step of 1e-6 changes no choice), so the differences are exact to ~1e-9 and the
            // tolerance is the f32 backward's rounding, not the f32 forward's.
            let loss = |l: &[f64]| -> f64 {
                (0..t)
                    .map(|r| {
                        let row = &l[r * e..(r + 1) * e];
                        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let z: f64 = row.iter().map(|x| (x - mx).exp()).sum();
                        let p = |j: usize| (row[j] - mx).exp() / z;
                        let chosen = &idx[r * k..(r + 1) * k];
                        let norm = if renorm { chosen.iter().map(|&j| p(j as usize)).sum() } else { 1.0 };
                        chosen.iter().zip(&dw[r * k..(r + 1) * k]).map(|(&j, &d)| p(j as usize) / norm * d as f64).sum::<f64>()
                    })
                    .sum()
            };
            let base: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
            for i in 0..t * e {
                let (mut lp, mut lm) = (base.clone(), base.clone());
                lp[i] += 1e-6;
                lm[i] -= 1e-6;
                let fd = (loss(&lp) - loss(&lm)) / 2e-6;
                assert!((fd - g[i] as f64).abs() < 1e-5 * fd.abs().max(0.1), "renorm {renorm} i {i}: fd {fd} vs {}", g[i]);
            }
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(dispatch(&[0, 5], 2, 1, 3, 1).is_err());
        assert!(topk_gating_fwd(&[1.0; 6], 2, 3, 4, false).is_err());
        assert!(permute_fwd(&[1.0; 4], &[0, 2], 2, 2).is_err());
    }
}
