//! Launcher of cuda/decode.cu: a beam-search step's candidates selected on the device (each row's
//! log-sum-exp and its `n` largest permitted logits), read back in one download.
//! `src/decode/candidates.rs` is the caller and, on the host, the reference.

use super::{check_buf, to_i32};
use crate::cuda::abi::{RowTopParams, AUTOMOE_ALLOW_EOS_ONLY, AUTOMOE_ALLOW_TOKENS, AUTOMOE_ALLOW_TOKENS_AND_EOS, AUTOMOE_DECODE_MAX_TOP};
use crate::cuda::gpu::{GBuf, Gpu};
use crate::cuda::moe_exec::Exec;
use crate::cuda::moe_ops::{Geometry, KernelFloat};
use crate::data::tokenizer::{BOS_ID, EOS_ID, PAD_ID};
use crate::{Error, Result};

/// Threads per block (cuda/decode.cu: `kThreads`).
const THREADS: u32 = 128;

/// What [`row_top`] read back, each row's entries `n` apart.
#[derive(Clone, Debug, PartialEq)]
pub struct RowTopLogits {
    /// `[rows, n]`: token ids, largest logit first (equal logits: lower id first); -1 past the
    /// row's last permitted finite logit.
    pub tokens: Vec<i32>,
    /// `[rows, n]`: the logits of `tokens` (-inf where the token is -1).
    pub logits: Vec<f32>,
    /// `[rows]`: `log sum_j exp(x_j)` over the whole row.
    pub lse: Vec<f32>,
}

/// Each row's log-sum-exp and `n` (1..=64) largest finite logits among the tokens `allowed[r]`
/// permits (`AUTOMOE_ALLOW_*` codes), for `logits: [rows, v]`. One kernel and one download (the
/// three outputs share one buffer), whatever the vocabulary.
pub fn row_top<T: KernelFloat>(gpu: &Gpu, logits: &GBuf<T>, rows: usize, v: usize, n: usize, allowed: &[i32]) -> Result<RowTopLogits> {
    const OP: &str = "row_top";
    if n == 0 || n > AUTOMOE_DECODE_MAX_TOP as usize {
        return Err(Error::invalid(OP, format!("n = {n}: the kernel selects 1..={AUTOMOE_DECODE_MAX_TOP} candidates per row")));
    }
    if v == 0 {
        return Err(Error::invalid(OP, "v = 0: a row needs at least one token"));
    }
    if allowed.len() != rows {
        return Err(Error::invalid(OP, format!("{} permitted-token codes for {rows} rows", allowed.len())));
    }
    let codes = [AUTOMOE_ALLOW_TOKENS, AUTOMOE_ALLOW_TOKENS_AND_EOS, AUTOMOE_ALLOW_EOS_ONLY].map(|c| c as i32);
    if let Some((r, a)) = allowed.iter().enumerate().find(|(_, a)| !codes.contains(a)) {
        return Err(Error::invalid(OP, format!("row {r}: permitted-token code {a} is none of AUTOMOE_ALLOW_* (0, 1, 2)")));
    }
    let (rows_i, v_i, n_i) = (to_i32(OP, "rows", rows)?, to_i32(OP, "v", v)?, to_i32(OP, "n", n)?);
    let elems = rows.checked_mul(v).ok_or_else(|| Error::invalid(OP, format!("rows * v = {rows} * {v} overflows")))?;
    check_buf(OP, "logits", logits, elems)?;
    if rows == 0 {
        return Ok(RowTopLogits { tokens: Vec::new(), logits: Vec::new(), lse: Vec::new() });
    }
    let slots = rows * n; // <= rows * 64, and rows fits an i32
    let allowed_buf = gpu.upload(allowed)?;
    // tokens | value bits | lse bits, as i32: one download brings all three.
    let mut out = gpu.uninit::<i32>(2 * slots + rows, i32::MIN)?;
    let base = gpu.addr_mut(&mut out);
    let p = RowTopParams {
        logits: gpu.addr(logits),
        allowed: gpu.addr(&allowed_buf),
        tokens: base,
        values: base + 4 * slots as u64,
        lse: base + 8 * slots as u64,
        rows: rows_i,
        v: v_i,
        n: n_i,
        pad_id: PAD_ID as i32,
        bos_id: BOS_ID as i32,
        eos_id: EOS_ID as i32,
    };
    let g = Geometry { grid: rows.clamp(1, 65_535) as u32, block: THREADS, smem_bytes: 0 };
    // SAFETY: logits holds rows * v elements (checked), allowed rows i32 codes in 0..=2, and `out`
    // 2 * rows * n + rows i32: tokens at its start, values (f32, 4 bytes each) rows * n elements
    // later, lse 2 * rows * n later; 1 <= n <= AUTOMOE_DECODE_MAX_TOP; all belong to `gpu`.
    unsafe { gpu.enqueue("decode.cu", &format!("row_top_{}", T::SUFFIX), g, &p)? };
    let all = gpu.download(&out)?;
    let bits = |s: &[i32]| s.iter().map(|&b| f32::from_bits(b as u32)).collect::<Vec<f32>>();
    Ok(RowTopLogits { tokens: all[..slots].to_vec(), logits: bits(&all[slots..2 * slots]), lse: bits(&all[2 * slots..]) })
}

#[cfg(test)]
mod tests {
    use half::bf16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::test_util::backends;
    use super::*;
    use crate::cpu::rowmath::RowMath;

    /// The plain reference: every permitted finite logit of the row, sorted (larger first, then
    /// lower token), the first n, padded with -1; the log-sum-exp in f64.
    fn reference(x: &[f32], v: usize, n: usize, allowed: &[i32]) -> (Vec<i32>, Vec<f32>, Vec<f64>) {
        let (mut toks, mut vals, mut lse) = (Vec::new(), Vec::new(), Vec::new());
        for (row, &a) in x.chunks(v).zip(allowed) {
            let ok = |j: u32| match a {
                2 => j == EOS_ID,
                _ => j != PAD_ID && j != BOS_ID && (a == 1 || j != EOS_ID),
            };
            let mut c: Vec<(f32, i32)> =
                (0..v as u32).filter(|&j| ok(j) && row[j as usize].is_finite()).map(|j| (row[j as usize], j as i32)).collect();
            c.sort_by(|p, q| q.0.total_cmp(&p.0).then(p.1.cmp(&q.1)));
            c.resize(n, (f32::NEG_INFINITY, -1));
            toks.extend(c.iter().map(|p| p.1));
            vals.extend(c.iter().map(|p| p.0));
            let m = f32::row_max(row);
            lse.push(m as f64 + f32::exp_shifted_sum(row, m).ln());
        }
        (toks, vals, lse)
    }

    fn check<T: KernelFloat>(gpu: &Gpu, x: &[f32], rows: usize, v: usize, n: usize, allowed: &[i32], what: &str) {
        // The reference reads the values the kernel reads (bf16-rounded for bf16).
        let xt: Vec<T> = x.iter().map(|&a| T::from_f32(a)).collect();
        let xr: Vec<f32> = xt.iter().map(|a| a.to_f32()).collect();
        let (want_t, want_v, want_lse) = reference(&xr, v, n, allowed);
        let got = row_top::<T>(gpu, &gpu.upload(&xt).unwrap(), rows, v, n, allowed).unwrap();
        assert_eq!(got.tokens, want_t, "{what}: tokens");
        assert_eq!(got.logits, want_v, "{what}: values");
        for (r, (&g, &w)) in got.lse.iter().zip(&want_lse).enumerate() {
            let ok = if w.is_finite() { (g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0) } else { !g.is_finite() };
            assert!(ok, "{what}: row {r} lse {g} against {w}");
        }
    }

    /// Fresh random rows on every backend: ties (values on a coarse grid), -inf and NaN entries,
    /// rows with fewer permitted tokens than n, every permission code, vocabularies below, at and
    /// above the block size.
    #[test]
    fn row_top_matches_the_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for gpu in backends() {
            random_cases(&gpu, &mut rng, 40);
            // Every logit -inf: no candidates, a non-finite lse (the host drops the row).
            check::<f32>(&gpu, &[f32::NEG_INFINITY; 12], 2, 6, 3, &[1, 1], "all -inf");
        }
    }

    /// The kernel's block-wide arg-max passes values between warps through shared memory between
    /// two barriers (cuda/decode.cu); the default emulator runs fibers in a fixed order, so only
    /// reshuffled schedules can show a missing one.
    #[test]
    fn row_top_matches_the_reference_under_shuffled_schedules() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for seed in 1..=3 {
            random_cases(&Gpu::Emu(crate::cuda::Emu { seed }), &mut rng, 16);
        }
    }

    /// `cases` fresh random inputs through [`check`], in f32 and bf16.
    fn random_cases(gpu: &Gpu, rng: &mut ChaCha8Rng, cases: usize) {
        for case in 0..cases {
            let v = [1, 3, 5, 127, 128, 129, 1000, 3001][case % 8];
            let rows = [1, 2, 5, 9][rng.random_range(0..4)];
            let n = [1, 2, 4, 10, 33, 64][rng.random_range(0..6)];
            let mut x: Vec<f32> = (0..rows * v).map(|_| rng.random_range(-12..12) as f32 * 0.5).collect();
            for _ in 0..rng.random_range(0..3) {
                x[rng.random_range(0..rows * v)] = f32::NEG_INFINITY;
            }
            if rng.random_bool(0.1) {
                x[rng.random_range(0..rows * v)] = f32::NAN;
            }
            let allowed: Vec<i32> = (0..rows).map(|_| rng.random_range(0..3)).collect();
            let what = format!("{} case {case}: rows={rows} v={v} n={n}", gpu.backend_name());
            check::<f32>(gpu, &x, rows, v, n, &allowed, &format!("{what} f32"));
            check::<bf16>(gpu, &x, rows, v, n, &allowed, &format!("{what} bf16"));
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let gpu = Gpu::of(crate::Device::Emu).unwrap();
        let x = gpu.upload(&[0.0f32; 8]).unwrap();
        let err = |r: Result<RowTopLogits>| r.unwrap_err().to_string();
        assert!(err(row_top::<f32>(&gpu, &x, 2, 4, 0, &[0, 0])).contains("n = 0"));
        assert!(err(row_top::<f32>(&gpu, &x, 2, 4, 65, &[0, 0])).contains("n = 65"));
        assert!(err(row_top::<f32>(&gpu, &x, 2, 4, 2, &[0])).contains("1 permitted-token codes for 2 rows"));
        assert!(err(row_top::<f32>(&gpu, &x, 2, 4, 2, &[0, 7])).contains("row 1: permitted-token code 7"));
        assert!(err(row_top::<f32>(&gpu, &x, 3, 4, 2, &[0, 0, 0])).contains("logits holds 8 elements, needs 12"));
        assert!(row_top::<f32>(&gpu, &x, 0, 4, 2, &[]).unwrap().lse.is_empty());
    }
}
