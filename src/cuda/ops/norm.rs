//! Launchers of cuda/norm.cu: layer normalisation over the last dimension `d` of `[rows, d]`,
//! forward (`y`, and the per-row `mean` and `rstd` in f32 for the backward) and backward (`dx` one
//! warp per row, then `dgamma`/`dbeta` one thread per column summing the rows in order), with the
//! formulas of `src/cpu/norm.rs`.

use super::{check_buf, grid_for, to_i32, BLOCK};
use crate::cuda::abi::LayerNormParams;
use crate::cuda::gpu::{GBuf, Gpu};
use crate::cuda::moe_exec::Exec;
use crate::cuda::moe_ops::{Geometry, KernelFloat, WARPS_PER_BLOCK};
use crate::{Error, Result};

const FILE: &str = "norm.cu";

/// One warp per row, `WARPS_PER_BLOCK` rows per block; the kernels stride over rows past the
/// capped grid.
fn warp_per_row(rows: usize) -> Geometry {
    Geometry { grid: rows.div_ceil(WARPS_PER_BLOCK as usize).clamp(1, 65_535) as u32, block: WARPS_PER_BLOCK * 32, smem_bytes: 0 }
}

/// Checks `rows` and `d` and returns them as the kernels' ints with `rows * d`.
fn check_shape(op: &'static str, rows: usize, d: usize) -> Result<(i32, i32, usize)> {
    if d == 0 {
        return Err(Error::invalid(op, "d = 0: a layer norm needs at least one column"));
    }
    let n = rows.checked_mul(d).ok_or_else(|| Error::invalid(op, format!("rows * d = {rows} * {d} overflows")))?;
    Ok((to_i32(op, "rows", rows)?, to_i32(op, "d", d)?, n))
}

/// Forward outputs: `y` `[rows, d]`, and `mean`, `rstd` `[rows]` (f32) for the backward.
pub struct LayerNormFwd<T> {
    pub y: GBuf<T>,
    pub mean: GBuf<f32>,
    pub rstd: GBuf<f32>,
}

/// `y = (x - mean) * rstd * gamma + beta` per row of `x` `[rows, d]`, with `rstd = 1 / sqrt(var +
/// eps)` (biased variance); `gamma`, `beta` are `[d]`.
pub fn layer_norm_fwd<T: KernelFloat>(
    gpu: &Gpu,
    x: &GBuf<T>,
    gamma: &GBuf<T>,
    beta: &GBuf<T>,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<LayerNormFwd<T>> {
    const OP: &str = "layer_norm_fwd";
    let (ri, di, n) = check_shape(OP, rows, d)?;
    check_buf(OP, "x", x, n)?;
    check_buf(OP, "gamma", gamma, d)?;
    check_buf(OP, "beta", beta, d)?;
    let mut y = gpu.uninit(n, T::poison())?;
    let mut mean = gpu.uninit(rows, f32::NAN)?;
    let mut rstd = gpu.uninit(rows, f32::NAN)?;
    if rows == 0 {
        return Ok(LayerNormFwd { y, mean, rstd });
    }
    let p = LayerNormParams {
        x: gpu.addr(x),
        gamma: gpu.addr(gamma),
        beta: gpu.addr(beta),
        y: gpu.addr_mut(&mut y),
        mean: gpu.addr_mut(&mut mean),
        rstd: gpu.addr_mut(&mut rstd),
        rows: ri,
        d: di,
        eps,
        ..Default::default()
    };
    // SAFETY: x holds at least rows * d elements and gamma, beta at least d (checked above); y,
    // mean and rstd were allocated with rows * d, rows and rows elements; all belong to `gpu`.
    unsafe { gpu.enqueue(FILE, &format!("layer_norm_fwd_{}", T::SUFFIX), warp_per_row(rows), &p)? };
    Ok(LayerNormFwd { y, mean, rstd })
}

/// Backward outputs: `dx` `[rows, d]`, `dgamma` and `dbeta` `[d]`.
pub struct LayerNormBwd<T> {
    pub dx: GBuf<T>,
    pub dgamma: GBuf<T>,
    pub dbeta: GBuf<T>,
}

/// Gradients of [`layer_norm_fwd`] from `dy` `[rows, d]`, given the forward's input `x`, `gamma`
/// and its saved `mean`, `rstd`. With `rows == 0`, `dx` is empty and `dgamma`, `dbeta` are zeros.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_bwd<T: KernelFloat>(
    gpu: &Gpu,
    x: &GBuf<T>,
    gamma: &GBuf<T>,
    mean: &GBuf<f32>,
    rstd: &GBuf<f32>,
    dy: &GBuf<T>,
    rows: usize,
    d: usize,
) -> Result<LayerNormBwd<T>> {
    const OP: &str = "layer_norm_bwd";
    let (ri, di, n) = check_shape(OP, rows, d)?;
    check_buf(OP, "x", x, n)?;
    check_buf(OP, "gamma", gamma, d)?;
    check_buf(OP, "mean", mean, rows)?;
    check_buf(OP, "rstd", rstd, rows)?;
    check_buf(OP, "dy", dy, n)?;
    if rows == 0 {
        // Sums over no rows.
        return Ok(LayerNormBwd { dx: gpu.uninit(0, T::poison())?, dgamma: gpu.zeros(d)?, dbeta: gpu.zeros(d)? });
    }
    let mut dx = gpu.uninit(n, T::poison())?;
    let mut dgamma = gpu.uninit(d, T::poison())?;
    let mut dbeta = gpu.uninit(d, T::poison())?;
    let p = LayerNormParams {
        x: gpu.addr(x),
        gamma: gpu.addr(gamma),
        mean: gpu.addr(mean),
        rstd: gpu.addr(rstd),
        dy: gpu.addr(dy),
        dx: gpu.addr_mut(&mut dx),
        dgamma: gpu.addr_mut(&mut dgamma),
        dbeta: gpu.addr_mut(&mut dbeta),
        rows: ri,
        d: di,
        ..Default::default()
    };
    // SAFETY: x and dy hold at least rows * d elements, gamma d, mean and rstd rows (checked above);
    // dx, dgamma and dbeta were allocated with rows * d, d and d elements; all belong to `gpu`. The
    // two kernels only read the inputs and write disjoint outputs.
    unsafe {
        gpu.enqueue(FILE, &format!("layer_norm_bwd_{}", T::SUFFIX), warp_per_row(rows), &p)?;
        gpu.enqueue(FILE, &format!("layer_norm_dparams_{}", T::SUFFIX), Geometry { grid: grid_for(d), block: BLOCK, smem_bytes: 0 }, &p)?;
    }
    Ok(LayerNormBwd { dx, dgamma, dbeta })
}

#[cfg(test)]
mod tests {
    use half::bf16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::test_util::{backends, rel_err};
    use super::*;
    use crate::cpu::norm as cpu;

    fn random(rng: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    }

    fn of<T: KernelFloat>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&x| T::from_f32(x as f32)).collect()
    }

    fn f64s<T: KernelFloat>(v: &[T]) -> Vec<f64> {
        v.iter().map(|x| x.to_f32() as f64).collect()
    }

    /// Forward and backward on every backend against the f64 CPU kernels (run on the inputs as
    /// rounded to `T`).
    fn check<T: KernelFloat>(rows: usize, d: usize, tol: f64, seed: u64) {
        let eps = 1e-5f32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // An offset mean and unit-ish spread, gamma away from zero.
        let x: Vec<T> = of(&random(&mut rng, rows * d, -1.5, 2.5));
        let gamma: Vec<T> = of(&random(&mut rng, d, 0.5, 1.5));
        let beta: Vec<T> = of(&random(&mut rng, d, -0.5, 0.5));
        let dy: Vec<T> = of(&random(&mut rng, rows * d, -1.0, 1.0));
        let (xf, gf, bf, dyf) = (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&dy));
        let (y_ref, stats) = cpu::layer_norm_fwd(&xf, &gf, &bf, d, eps as f64);
        let (dx_ref, dg_ref, db_ref) = cpu::layer_norm_bwd(&xf, &gf, &stats, &dyf, d);
        for gpu in backends() {
            let what = format!("{} {} rows={rows} d={d}", gpu.backend_name(), T::SUFFIX);
            let (xb, gb, bb, dyb) =
                (gpu.upload(&x).unwrap(), gpu.upload(&gamma).unwrap(), gpu.upload(&beta).unwrap(), gpu.upload(&dy).unwrap());
            let f = layer_norm_fwd(&gpu, &xb, &gb, &bb, rows, d, eps).unwrap();
            let y = f64s(&gpu.download(&f.y).unwrap());
            let mean: Vec<f64> = gpu.download(&f.mean).unwrap().iter().map(|&v| v as f64).collect();
            let rstd: Vec<f64> = gpu.download(&f.rstd).unwrap().iter().map(|&v| v as f64).collect();
            let e = [rel_err(&y, &y_ref), rel_err(&mean, &stats.mean), rel_err(&rstd, &stats.rstd)];
            // mean and rstd are f32 for both element types, from the same (rounded) inputs.
            assert!(e[0] < tol && e[1] < 1e-5 && e[2] < 1e-5, "{what}: fwd errors (y, mean, rstd) {e:?}");

            let b = layer_norm_bwd(&gpu, &xb, &gb, &f.mean, &f.rstd, &dyb, rows, d).unwrap();
            let dx = f64s(&gpu.download(&b.dx).unwrap());
            let dg = f64s(&gpu.download(&b.dgamma).unwrap());
            let db = f64s(&gpu.download(&b.dbeta).unwrap());
            let e = [rel_err(&dx, &dx_ref), rel_err(&dg, &dg_ref), rel_err(&db, &db_ref)];
            assert!(e.iter().all(|&v| v < tol), "{what}: bwd errors (dx, dgamma, dbeta) {e:?}");
        }
    }

    const DS: [usize; 7] = [1, 7, 32, 33, 100, 512, 1000];

    #[test]
    fn layer_norm_f32_matches_cpu() {
        for (i, &d) in DS.iter().enumerate() {
            check::<f32>(5, d, 1e-5, 10 + i as u64);
        }
        // More rows than one block's warps and a partial last block.
        check::<f32>(13, 40, 1e-5, 3);
    }

    #[test]
    fn layer_norm_bf16_matches_cpu() {
        for (i, &d) in DS.iter().enumerate() {
            check::<bf16>(5, d, 2e-2, 20 + i as u64);
        }
        check::<bf16>(13, 40, 2e-2, 4);
    }

    /// The same bits on a repeat and under reshuffled emulator schedules: the default (seed 0)
    /// emulator is deterministic by construction, so only other seeds can show a missing barrier
    /// in the block reductions. A device is compared with itself.
    #[test]
    fn layer_norm_is_deterministic() {
        let (rows, d) = (6, 77);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x: Vec<f32> = of(&random(&mut rng, rows * d, -1.0, 1.0));
        let g: Vec<f32> = of(&random(&mut rng, d, 0.5, 1.5));
        let dy: Vec<f32> = of(&random(&mut rng, rows * d, -1.0, 1.0));
        let shuffled = (1..=3).map(|seed| Gpu::Emu(crate::cuda::Emu { seed }));
        let base = backends().into_iter().next().expect("the emulator");
        for gpu in backends().into_iter().chain(shuffled) {
            let run = |gpu: &Gpu| {
                let (xb, gb, dyb) = (gpu.upload(&x).unwrap(), gpu.upload(&g).unwrap(), gpu.upload(&dy).unwrap());
                let f = layer_norm_fwd(gpu, &xb, &gb, &gb, rows, d, 1e-5).unwrap();
                let b = layer_norm_bwd(gpu, &xb, &gb, &f.mean, &f.rstd, &dyb, rows, d).unwrap();
                let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                [
                    gpu.download(&f.y).unwrap(),
                    gpu.download(&b.dx).unwrap(),
                    gpu.download(&b.dgamma).unwrap(),
                    gpu.download(&b.dbeta).unwrap(),
                ]
                .map(bits)
            };
            let want = if matches!(gpu, Gpu::Emu(_)) { run(&base) } else { run(&gpu) };
            assert!(run(&gpu) == want, "{}", gpu.backend_name());
        }
    }

    #[test]
    fn layer_norm_empty_and_bad_sizes() {
        for gpu in backends() {
            let (rows, d) = (3, 10);
            let x = gpu.upload(&vec![1.0f32; rows * d]).unwrap();
            let g = gpu.upload(&vec![1.0f32; d]).unwrap();
            let short = gpu.upload(&vec![1.0f32; d - 1]).unwrap();
            let stats = gpu.upload(&vec![1.0f32; rows]).unwrap();
            let err = |r: Result<LayerNormFwd<f32>>| matches!(r, Err(Error::InvalidArgument { op: "layer_norm_fwd", .. }));
            assert!(err(layer_norm_fwd(&gpu, &x, &g, &short, rows, d, 1e-5)), "short beta");
            assert!(err(layer_norm_fwd(&gpu, &x, &g, &g, rows + 1, d, 1e-5)), "short x");
            assert!(err(layer_norm_fwd(&gpu, &x, &g, &g, rows, 0, 1e-5)), "d = 0");
            let r = layer_norm_bwd(&gpu, &x, &g, &stats, &stats, &short, rows, d);
            assert!(matches!(r, Err(Error::InvalidArgument { op: "layer_norm_bwd", .. })), "short dy");

            let f = layer_norm_fwd(&gpu, &x, &g, &g, 0, d, 1e-5).unwrap();
            assert!(gpu.download(&f.y).unwrap().is_empty() && gpu.download(&f.mean).unwrap().is_empty());
            let b = layer_norm_bwd(&gpu, &x, &g, &stats, &stats, &x, 0, d).unwrap();
            assert!(gpu.download(&b.dx).unwrap().is_empty());
            assert_eq!(gpu.download(&b.dgamma).unwrap(), vec![0.0; d]);
        }
    }
}
