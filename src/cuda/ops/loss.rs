//! Launchers of cuda/loss.cu: label-smoothed cross-entropy per row (forward: the smoothed loss and
//! the plain NLL of each row; backward: `scale * (softmax - q)`), as src/cpu/loss.rs computes them.

use super::{check_buf, to_i32};
use crate::cuda::abi::CrossEntropyParams;
use crate::cuda::gpu::{GBuf, Gpu};
use crate::cuda::moe_exec::Exec;
use crate::cuda::moe_ops::{Geometry, KernelFloat};
use crate::{Error, Result};

/// Threads per block of the cross-entropy kernels (cuda/loss.cu: `kThreads`).
const THREADS: u32 = 256;

/// Per-row outputs of [`cross_entropy_fwd`], both `[rows]` f32; ignored rows hold 0.
pub struct CeRows {
    /// `-sum_j q_j log p_j` with `q = (1 - eps) one_hot(t) + eps / v`.
    pub loss: GBuf<f32>,
    /// `-log p_t` (the unsmoothed NLL, for perplexity).
    pub nll: GBuf<f32>,
}

/// Checked kernel parameters shared by the forward and the backward: targets uploaded as i32.
struct Prepared {
    targets: GBuf<i32>,
    rows: i32,
    v: i32,
    ignore: i32,
}

fn prepare<T: KernelFloat>(
    op: &'static str,
    gpu: &Gpu,
    logits: &GBuf<T>,
    targets: &[u32],
    rows: usize,
    v: usize,
    ignore: Option<u32>,
) -> Result<Prepared> {
    if targets.len() != rows {
        return Err(Error::invalid(op, format!("{} targets for {rows} rows", targets.len())));
    }
    if rows > 0 && v == 0 {
        return Err(Error::invalid(op, "v = 0: a row needs at least one class"));
    }
    let rows_i = to_i32(op, "rows", rows)?;
    let v_i = to_i32(op, "v", v)?;
    let n = rows.checked_mul(v).ok_or_else(|| Error::invalid(op, format!("rows * v = {rows} * {v} overflows")))?;
    check_buf(op, "logits", logits, n)?;
    // An ignore id past i32::MAX can match no target (every target is < v <= i32::MAX).
    let ignore_i = match ignore {
        Some(i) => i32::try_from(i).unwrap_or(-1),
        None => -1,
    };
    let mut t = Vec::with_capacity(rows);
    for &x in targets {
        if Some(x) == ignore {
            t.push(ignore_i);
        } else if (x as usize) < v {
            t.push(x as i32);
        } else {
            return Err(Error::IndexOutOfRange { op, index: x as usize, limit: v });
        }
    }
    Ok(Prepared { targets: gpu.upload(&t)?, rows: rows_i, v: v_i, ignore: ignore_i })
}

fn geometry(rows: usize) -> Geometry {
    Geometry { grid: rows.clamp(1, 65_535) as u32, block: THREADS, smem_bytes: 0 }
}

/// Per-row label-smoothed loss and NLL of `logits: [rows, v]` for `targets: [rows]`; rows whose
/// target equals `ignore` give 0 (an ignore id outside `0..v` is allowed).
pub fn cross_entropy_fwd<T: KernelFloat>(
    gpu: &Gpu,
    logits: &GBuf<T>,
    targets: &[u32],
    rows: usize,
    v: usize,
    eps: f32,
    ignore: Option<u32>,
) -> Result<CeRows> {
    const OP: &str = "cross_entropy_fwd";
    let pr = prepare(OP, gpu, logits, targets, rows, v, ignore)?;
    let mut loss = gpu.uninit(rows, f32::NAN)?;
    let mut nll = gpu.uninit(rows, f32::NAN)?;
    if rows == 0 {
        return Ok(CeRows { loss, nll });
    }
    let p = CrossEntropyParams {
        logits: gpu.addr(logits),
        targets: gpu.addr(&pr.targets),
        loss: gpu.addr_mut(&mut loss),
        nll: gpu.addr_mut(&mut nll),
        dlogits: 0,
        rows: pr.rows,
        v: pr.v,
        ignore: pr.ignore,
        eps,
        scale: 0.0,
        reserved: 0,
    };
    // SAFETY: logits was checked to hold rows * v elements, targets holds rows i32 (each in 0..v or
    // the ignore id), loss and nll were allocated with rows elements; all come from `gpu`.
    unsafe { gpu.enqueue("loss.cu", &format!("cross_entropy_fwd_{}", T::SUFFIX), geometry(rows), &p)? };
    Ok(CeRows { loss, nll })
}

/// `dlogits = scale * (softmax(logits) - q)`, `[rows, v]`, zero rows for ignored targets.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_bwd<T: KernelFloat>(
    gpu: &Gpu,
    logits: &GBuf<T>,
    targets: &[u32],
    rows: usize,
    v: usize,
    eps: f32,
    ignore: Option<u32>,
    scale: f32,
) -> Result<GBuf<T>> {
    const OP: &str = "cross_entropy_bwd";
    let pr = prepare(OP, gpu, logits, targets, rows, v, ignore)?;
    let mut d = gpu.uninit(rows * v, T::poison())?;
    if rows == 0 {
        return Ok(d);
    }
    let p = CrossEntropyParams {
        logits: gpu.addr(logits),
        targets: gpu.addr(&pr.targets),
        loss: 0,
        nll: 0,
        dlogits: gpu.addr_mut(&mut d),
        rows: pr.rows,
        v: pr.v,
        ignore: pr.ignore,
        eps,
        scale,
        reserved: 0,
    };
    // SAFETY: logits was checked to hold rows * v elements, targets holds rows i32 (each in 0..v or
    // the ignore id), dlogits was allocated with rows * v elements; all come from `gpu`.
    unsafe { gpu.enqueue("loss.cu", &format!("cross_entropy_bwd_{}", T::SUFFIX), geometry(rows), &p)? };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use half::bf16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::test_util::{backends, rel_err};
    use super::*;
    use crate::cpu::loss as cpu;

    /// Random logits in [-4, 4] (never 0) and targets in 0..v, every third row set to `ignore`.
    fn inputs(seed: u64, rows: usize, v: usize, ignore: Option<u32>) -> (Vec<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let logits = (0..rows * v)
            .map(|_| {
                let x: f32 = rng.random_range(0.05..4.0);
                if rng.random_bool(0.5) {
                    x
                } else {
                    -x
                }
            })
            .collect();
        let targets = (0..rows)
            .map(|r| match ignore {
                Some(i) if r % 3 == 1 => i,
                _ => rng.random_range(0..v as u32),
            })
            .collect();
        (logits, targets)
    }

    fn tol<T: KernelFloat>() -> f64 {
        if T::SUFFIX == "f32" {
            1e-5
        } else {
            2e-2
        }
    }

    /// (rows, v, eps, ignore): v not a multiple of 256, ignore ids inside and outside the vocabulary.
    const CASES: &[(usize, usize, f32, Option<u32>)] =
        &[(3, 5, 0.0, None), (4, 300, 0.1, Some(7)), (5, 300, 0.0, Some(300)), (4, 1000, 0.1, Some(u32::MAX)), (2, 257, 0.1, None)];

    fn check_fwd<T: KernelFloat>(seed: u64) {
        for gpu in backends() {
            for (c, &(rows, v, eps, ignore)) in CASES.iter().enumerate() {
                let (l, targets) = inputs(seed + c as u64, rows, v, ignore);
                let lt: Vec<T> = l.iter().map(|&x| T::from_f32(x)).collect();
                let l64: Vec<f64> = lt.iter().map(|x| x.to_f32() as f64).collect();
                let out = cross_entropy_fwd(&gpu, &gpu.upload(&lt).unwrap(), &targets, rows, v, eps, ignore).unwrap();
                let loss: Vec<f64> = gpu.download(&out.loss).unwrap().iter().map(|&x| x as f64).collect();
                let nll: Vec<f64> = gpu.download(&out.nll).unwrap().iter().map(|&x| x as f64).collect();
                // Per row: the CPU kernel on that row alone.
                let (mut want_loss, mut want_nll) = (vec![], vec![]);
                for r in 0..rows {
                    let t = cpu::cross_entropy_fwd(&l64[r * v..(r + 1) * v], &targets[r..r + 1], v, eps as f64, ignore);
                    want_loss.push(t.loss_sum);
                    want_nll.push(t.nll_sum);
                    if Some(targets[r]) == ignore {
                        assert_eq!((loss[r], nll[r]), (0.0, 0.0), "{gpu:?} case {c}: ignored row {r} must be 0");
                    }
                }
                let (el, en) = (rel_err(&loss, &want_loss), rel_err(&nll, &want_nll));
                assert!(el < tol::<T>() && en < tol::<T>(), "{gpu:?} {} case {c}: loss err {el:e}, nll err {en:e}", T::SUFFIX);
                // Totals, as the tape uses them.
                let tot = cpu::cross_entropy_fwd(&l64, &targets, v, eps as f64, ignore);
                let (sl, sn) = (loss.iter().sum::<f64>(), nll.iter().sum::<f64>());
                let et =
                    ((sl - tot.loss_sum).abs() / tot.loss_sum.abs().max(1e-6)).max((sn - tot.nll_sum).abs() / tot.nll_sum.abs().max(1e-6));
                assert!(et < tol::<T>(), "{gpu:?} {} case {c}: totals err {et:e}", T::SUFFIX);
            }
        }
    }

    fn check_bwd<T: KernelFloat>(seed: u64) {
        for gpu in backends() {
            for (c, &(rows, v, eps, ignore)) in CASES.iter().enumerate() {
                let (l, targets) = inputs(seed + c as u64, rows, v, ignore);
                let lt: Vec<T> = l.iter().map(|&x| T::from_f32(x)).collect();
                let l64: Vec<f64> = lt.iter().map(|x| x.to_f32() as f64).collect();
                let scale = 0.37f32;
                let d = cross_entropy_bwd(&gpu, &gpu.upload(&lt).unwrap(), &targets, rows, v, eps, ignore, scale).unwrap();
                let got: Vec<f64> = gpu.download(&d).unwrap().iter().map(|x| x.to_f32() as f64).collect();
                let want = cpu::cross_entropy_bwd(&l64, &targets, v, eps as f64, ignore, scale as f64);
                for r in 0..rows {
                    if Some(targets[r]) == ignore {
                        assert!(got[r * v..(r + 1) * v].iter().all(|&x| x == 0.0), "{gpu:?} case {c}: ignored row {r} must be 0");
                    }
                }
                let e = rel_err(&got, &want);
                assert!(e < tol::<T>(), "{gpu:?} {} case {c}: dlogits err {e:e}", T::SUFFIX);
            }
        }
    }

    #[test]
    fn fwd_matches_cpu_f32() {
        check_fwd::<f32>(10);
    }

    #[test]
    fn fwd_matches_cpu_bf16() {
        check_fwd::<bf16>(20);
    }

    #[test]
    fn bwd_matches_cpu_f32() {
        check_bwd::<f32>(30);
    }

    #[test]
    fn bwd_matches_cpu_bf16() {
        check_bwd::<bf16>(40);
    }

    /// Block reductions under reshuffled fiber schedules: the same bits every time (a missing
    /// barrier would show up as a difference).
    #[test]
    fn shuffled_schedules_give_the_same_bits() {
        let (rows, v, eps, ignore) = (4, 300, 0.1, Some(7));
        let (l, targets) = inputs(50, rows, v, ignore);
        let run = |seed: u32| {
            let gpu = Gpu::Emu(crate::cuda::Emu { seed });
            let lb = gpu.upload(&l).unwrap();
            let f = cross_entropy_fwd(&gpu, &lb, &targets, rows, v, eps, ignore).unwrap();
            let d = cross_entropy_bwd(&gpu, &lb, &targets, rows, v, eps, ignore, 0.5).unwrap();
            let bits = |x: Vec<f32>| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (bits(gpu.download(&f.loss).unwrap()), bits(gpu.download(&f.nll).unwrap()), bits(gpu.download(&d).unwrap()))
        };
        let base = run(0);
        for seed in [1, 2, 3] {
            assert!(run(seed) == base, "seed {seed} changed the result");
        }
    }

    #[test]
    fn out_of_range_target_is_an_error() {
        for gpu in backends() {
            let l = gpu.upload(&[0.5f32; 2 * 5]).unwrap();
            for ignore in [None, Some(1)] {
                let e = cross_entropy_fwd(&gpu, &l, &[1, 5], 2, 5, 0.1, ignore).err().expect("target 5 of v = 5 must fail");
                assert!(matches!(e, Error::IndexOutOfRange { index: 5, limit: 5, .. }), "{e}");
                let e = cross_entropy_bwd(&gpu, &l, &[7, 0], 2, 5, 0.1, ignore, 1.0).err().expect("target 7 of v = 5 must fail");
                assert!(matches!(e, Error::IndexOutOfRange { index: 7, limit: 5, .. }), "{e}");
            }
            let short = cross_entropy_fwd(&gpu, &l, &[0, 1, 2], 3, 5, 0.1, None).err().expect("logits too short");
            assert!(matches!(short, Error::InvalidArgument { .. }), "{short}");
        }
    }

    #[test]
    fn zero_rows_give_empty_outputs() {
        for gpu in backends() {
            let l = gpu.upload::<f32>(&[]).unwrap();
            let out = cross_entropy_fwd(&gpu, &l, &[], 0, 300, 0.1, None).unwrap();
            assert!(gpu.download(&out.loss).unwrap().is_empty() && gpu.download(&out.nll).unwrap().is_empty());
            assert!(gpu.download(&cross_entropy_bwd(&gpu, &l, &[], 0, 300, 0.1, None, 1.0).unwrap()).unwrap().is_empty());
        }
    }
}
