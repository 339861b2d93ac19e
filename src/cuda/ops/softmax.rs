//! Launchers of cuda/softmax.cu: row-wise softmax over the last dimension `tk` of `[rows, tk]` with
//! the attention masks of `src/cpu/softmax.rs` (causal, key padding; a fully hidden row is zeros),
//! and its backward `dx = y * (dy - sum(dy * y))`.

use super::{check_buf, to_i32};
use crate::cuda::abi::SoftmaxParams;
use crate::cuda::gpu::{GBuf, Gpu};
use crate::cuda::moe_exec::Exec;
use crate::cuda::moe_ops::{Geometry, KernelFloat, WARPS_PER_BLOCK};
use crate::{Error, Result};

const FILE: &str = "softmax.cu";

/// One warp per row, `WARPS_PER_BLOCK` rows per block; the kernels stride over rows past the
/// capped grid.
fn warp_per_row(rows: usize) -> Geometry {
    Geometry { grid: rows.div_ceil(WARPS_PER_BLOCK as usize).clamp(1, 65_535) as u32, block: WARPS_PER_BLOCK * 32, smem_bytes: 0 }
}

fn elems(op: &'static str, rows: usize, tk: usize) -> Result<usize> {
    rows.checked_mul(tk).ok_or_else(|| Error::invalid(op, format!("rows * tk = {rows} * {tk} overflows")))
}

/// Softmax of each row of `x` `[rows, tk]`. Row `r` is query `r % tq` of batch `r / rows_per_batch`
/// (e.g. `[batch, heads, tq, tk]` scores: `rows_per_batch = heads * tq`). `causal` hides the keys
/// after the query's absolute position `r % tq + max(tk - tq, 0)` (needs `tq >= 1`); `key_padding`
/// `[batch, tk]` (1 = padding, needs `rows_per_batch >= 1`) hides padded keys of the row's batch.
#[allow(clippy::too_many_arguments)]
pub fn softmax_fwd<T: KernelFloat>(
    gpu: &Gpu,
    x: &GBuf<T>,
    rows: usize,
    tk: usize,
    tq: usize,
    rows_per_batch: usize,
    causal: bool,
    key_padding: Option<&GBuf<u8>>,
) -> Result<GBuf<T>> {
    const OP: &str = "softmax_fwd";
    let n = elems(OP, rows, tk)?;
    let (ri, tki, tqi, rpbi) =
        (to_i32(OP, "rows", rows)?, to_i32(OP, "tk", tk)?, to_i32(OP, "tq", tq)?, to_i32(OP, "rows_per_batch", rows_per_batch)?);
    check_buf(OP, "x", x, n)?;
    if causal && tq == 0 {
        return Err(Error::invalid(OP, "a causal mask needs tq >= 1 (row r is query r % tq)"));
    }
    if let Some(kp) = key_padding {
        if rows_per_batch == 0 {
            return Err(Error::invalid(OP, "a key-padding mask needs rows_per_batch >= 1 (row r is in batch r / rows_per_batch)"));
        }
        check_buf(OP, "key_padding", kp, elems(OP, rows.div_ceil(rows_per_batch), tk)?)?;
    }
    let mut y = gpu.uninit(n, T::poison())?;
    if n == 0 {
        return Ok(y);
    }
    let p = SoftmaxParams {
        x: gpu.addr(x),
        y: gpu.addr_mut(&mut y),
        key_padding: key_padding.map_or(0, |kp| gpu.addr(kp)),
        rows: ri,
        tk: tki,
        tq: tqi,
        rows_per_batch: rpbi,
        causal: causal as i32,
        ..Default::default()
    };
    // SAFETY: x holds at least rows * tk elements and key_padding (when given) ceil(rows /
    // rows_per_batch) * tk, the most the kernel reads (checked above); y was allocated with rows * tk
    // elements; all belong to `gpu`. tq >= 1 when causal and rows_per_batch >= 1 with key padding.
    unsafe { gpu.enqueue(FILE, &format!("softmax_fwd_{}", T::SUFFIX), warp_per_row(rows), &p)? };
    Ok(y)
}

/// Backward of [`softmax_fwd`]: `dx = y * (dy - sum(dy * y))` per row of `[rows, tk]` (masked
/// entries have `y = 0` and get no gradient).
pub fn softmax_bwd<T: KernelFloat>(gpu: &Gpu, y: &GBuf<T>, dy: &GBuf<T>, rows: usize, tk: usize) -> Result<GBuf<T>> {
    const OP: &str = "softmax_bwd";
    let n = elems(OP, rows, tk)?;
    let (ri, tki) = (to_i32(OP, "rows", rows)?, to_i32(OP, "tk", tk)?);
    check_buf(OP, "y", y, n)?;
    check_buf(OP, "dy", dy, n)?;
    let mut dx = gpu.uninit(n, T::poison())?;
    if n == 0 {
        return Ok(dx);
    }
    let p = SoftmaxParams { y: gpu.addr(y), dy: gpu.addr(dy), dx: gpu.addr_mut(&mut dx), rows: ri, tk: tki, ..Default::default() };
    // SAFETY: y and dy hold at least rows * tk elements (checked above) and dx was allocated with
    // rows * tk; all belong to `gpu`.
    unsafe { gpu.enqueue(FILE, &format!("softmax_bwd_{}", T::SUFFIX), warp_per_row(rows), &p)? };
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use half::bf16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::test_util::{backends, rel_err};
    use super::*;
    use crate::cpu::softmax as cpu;
    use crate::tensor::MaskSpec;

    fn of<T: KernelFloat>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&x| T::from_f32(x as f32)).collect()
    }

    fn f64s<T: KernelFloat>(v: &[T]) -> Vec<f64> {
        v.iter().map(|x| x.to_f32() as f64).collect()
    }

    /// A softmax problem: `rows` rows of `tk` keys, located by `tq` and `rows_per_batch`.
    struct Case {
        rows: usize,
        tk: usize,
        tq: usize,
        rows_per_batch: usize,
        causal: bool,
        /// `[batch, tk]`, true = padding.
        pad: Option<Vec<bool>>,
    }

    impl Case {
        fn plain(rows: usize, tk: usize) -> Case {
            Case { rows, tk, tq: rows, rows_per_batch: rows, causal: false, pad: None }
        }
    }

    /// Forward and backward on every backend against the f64 CPU kernels (run on the inputs as
    /// rounded to `T`). Returns the reference output (for the callers' own checks).
    fn check<T: KernelFloat>(c: &Case, tol: f64, seed: u64) -> Vec<f64> {
        let n = c.rows * c.tk;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<T> = of(&(0..n).map(|_| rng.random_range(-4.0..4.0)).collect::<Vec<f64>>());
        let dy: Vec<T> = of(&(0..n).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f64>>());
        let mask = MaskSpec { causal: c.causal, key_padding: c.pad.clone().map(Arc::new) };
        let (xf, dyf) = (f64s(&x), f64s(&dy));
        let y_ref = cpu::softmax_fwd(&xf, c.tk, c.tq, c.rows_per_batch, &mask);
        let pad_u8: Option<Vec<u8>> = c.pad.as_ref().map(|p| p.iter().map(|&b| b as u8).collect());
        for gpu in backends() {
            let what = format!(
                "{} {} rows={} tk={} tq={} causal={} pad={}",
                gpu.backend_name(),
                T::SUFFIX,
                c.rows,
                c.tk,
                c.tq,
                c.causal,
                c.pad.is_some()
            );
            let xb = gpu.upload(&x).unwrap();
            let kp = pad_u8.as_ref().map(|p| gpu.upload(p).unwrap());
            let yb = softmax_fwd(&gpu, &xb, c.rows, c.tk, c.tq, c.rows_per_batch, c.causal, kp.as_ref()).unwrap();
            let y: Vec<T> = gpu.download(&yb).unwrap();
            let e = rel_err(&f64s(&y), &y_ref);
            assert!(e < tol, "{what}: fwd error {e}");

            // The backward from this backend's own y (as the tape runs it).
            let dx_ref = cpu::softmax_bwd(&f64s(&y), &dyf, c.tk);
            let dyb = gpu.upload(&dy).unwrap();
            let dx = f64s(&gpu.download(&softmax_bwd(&gpu, &yb, &dyb, c.rows, c.tk).unwrap()).unwrap());
            let e = rel_err(&dx, &dx_ref);
            assert!(e < tol, "{what}: bwd error {e}");
        }
        y_ref
    }

    fn both(c: &Case, seed: u64) -> Vec<f64> {
        check::<bf16>(c, 2e-2, seed);
        check::<f32>(c, 1e-5, seed)
    }

    #[test]
    fn softmax_unmasked_matches_cpu() {
        for (i, &tk) in [1usize, 7, 32, 33, 100, 1000].iter().enumerate() {
            both(&Case::plain(5, tk), 30 + i as u64);
        }
        both(&Case::plain(13, 40), 3);
    }

    #[test]
    fn softmax_causal_matches_cpu() {
        // [batch 2, heads 3, tq 5, tk 5] scores.
        both(&Case { rows: 30, tk: 5, tq: 5, rows_per_batch: 15, causal: true, pad: None }, 40);
        // Incremental decoding: 2 new queries over 37 keys (query i sits at 35 + i).
        both(&Case { rows: 8, tk: 37, tq: 2, rows_per_batch: 4, causal: true, pad: None }, 41);
        // More queries than keys: query i sees keys 0..=i.
        both(&Case { rows: 6, tk: 3, tq: 6, rows_per_batch: 6, causal: true, pad: None }, 42);
    }

    #[test]
    fn softmax_key_padding_matches_cpu() {
        // [batch 3, heads 2, tq 3, tk 37]; batch 0 pads its last 10 keys, batch 1 none, batch 2
        // every key (fully hidden rows: zeros).
        let (batch, heads, tq, tk) = (3, 2, 3, 37);
        let mut pad = vec![false; batch * tk];
        pad[tk - 10..tk].fill(true);
        pad[2 * tk..].fill(true);
        let c = Case { rows: batch * heads * tq, tk, tq, rows_per_batch: heads * tq, causal: false, pad: Some(pad) };
        let y = both(&c, 50);
        let rows_of_batch2 = &y[2 * heads * tq * tk..];
        assert!(rows_of_batch2.iter().all(|&v| v == 0.0), "a fully hidden row is zeros");
        assert!(y[..tk].iter().any(|&v| v != 0.0));
    }

    #[test]
    fn softmax_causal_and_padding_matches_cpu() {
        // [batch 2, heads 2, tq 4, tk 4]; batch 1 pads key 0, so its query 0 sees no key at all.
        let (batch, heads, tq, tk) = (2, 2, 4, 4);
        let mut pad = vec![false; batch * tk];
        pad[tk] = true;
        pad[tk - 1] = true;
        let c = Case { rows: batch * heads * tq, tk, tq, rows_per_batch: heads * tq, causal: true, pad: Some(pad) };
        let y = both(&c, 60);
        let first_row_of_batch1 = &y[heads * tq * tk..heads * tq * tk + tk];
        assert_eq!(first_row_of_batch1, &[0.0; 4], "fully masked row");
    }

    /// The same bits on a repeat and under reshuffled emulator schedules: the default (seed 0)
    /// emulator is deterministic by construction, so only other seeds can show a missing barrier
    /// in the row reductions. A device is compared with itself.
    #[test]
    fn softmax_is_deterministic() {
        let (rows, tk) = (6, 77);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x: Vec<f32> = (0..rows * tk).map(|_| rng.random_range(-3.0..3.0)).collect();
        let shuffled = (1..=3).map(|seed| Gpu::Emu(crate::cuda::Emu { seed }));
        let base = backends().into_iter().next().expect("the emulator");
        for gpu in backends().into_iter().chain(shuffled) {
            let run = |gpu: &Gpu| {
                let xb = gpu.upload(&x).unwrap();
                let y = softmax_fwd(gpu, &xb, rows, tk, rows, rows, true, None).unwrap();
                let dx = softmax_bwd(gpu, &y, &xb, rows, tk).unwrap();
                [gpu.download(&y).unwrap(), gpu.download(&dx).unwrap()].map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            };
            let want = if matches!(gpu, Gpu::Emu(_)) { run(&base) } else { run(&gpu) };
            assert!(run(&gpu) == want, "{}", gpu.backend_name());
        }
    }

    #[test]
    fn softmax_empty_and_bad_sizes() {
        for gpu in backends() {
            let (rows, tk) = (4, 9);
            let x = gpu.upload(&vec![0.5f32; rows * tk]).unwrap();
            let short = gpu.upload(&vec![0.5f32; rows * tk - 1]).unwrap();
            let pad = gpu.upload(&vec![0u8; 2 * tk - 1]).unwrap();
            let bad = |r: Result<GBuf<f32>>, op: &str| matches!(r, Err(Error::InvalidArgument { op: o, .. }) if o == op);
            assert!(bad(softmax_fwd(&gpu, &short, rows, tk, rows, rows, false, None), "softmax_fwd"), "short x");
            // Two batches of two rows need 2 * tk padding flags.
            assert!(bad(softmax_fwd(&gpu, &x, rows, tk, 2, 2, false, Some(&pad)), "softmax_fwd"), "short key_padding");
            assert!(bad(softmax_fwd(&gpu, &x, rows, tk, 0, rows, true, None), "softmax_fwd"), "causal with tq = 0");
            assert!(bad(softmax_bwd(&gpu, &x, &short, rows, tk), "softmax_bwd"), "short dy");

            let y = softmax_fwd(&gpu, &x, 0, tk, 1, 1, true, None).unwrap();
            assert!(gpu.download(&y).unwrap().is_empty());
            assert!(gpu.download(&softmax_bwd(&gpu, &x, &x, 0, tk).unwrap()).unwrap().is_empty());
        }
    }
}
