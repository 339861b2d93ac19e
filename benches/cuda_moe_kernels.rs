//! Bandwidth and latency of the routing kernels on a CUDA device (harness = false; prints a table,
//! asserts nothing). Throughput is compared against a device-to-device copy measured in the same
//! run, the practical ceiling for these memory-bound kernels; decode sizes (T <= 8) report µs.
//! Without a device it prints why it skipped and exits 0.
//!
//!     cargo bench --bench cuda_moe_kernels

use std::time::Instant;

use automoe::cuda::abi::*;
use automoe::cuda::moe_exec::{enqueue_dispatch, Elem, Exec, KernelParams};
use automoe::cuda::moe_ops::{dispatch_params, dispatch_scratch_len, gating_geometry, gating_kernel, warp_per_item, Geometry};
use automoe::cuda::CudaExec;
use automoe::moe::reference as r;
use automoe::Result;
use half::bf16;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mean µs per call of `f` after warm-up, synchronising once around the timed loop.
fn time_us(x: &CudaExec, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    x.stream().synchronize().map_err(|e| automoe::Error::Cuda(e.to_string()))?;
    let t0 = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    x.stream().synchronize().map_err(|e| automoe::Error::Cuda(e.to_string()))?;
    Ok(t0.elapsed().as_secs_f64() * 1e6 / iters as f64)
}

/// Device-to-device copy bandwidth (bytes read + written per second), 256 MiB buffers.
fn copy_bandwidth(x: &CudaExec) -> Result<f64> {
    let n = 64 << 20; // f32 elements
    let src = x.stream().alloc_zeros::<f32>(n).map_err(|e| automoe::Error::Cuda(e.to_string()))?;
    let mut dst = x.stream().alloc_zeros::<f32>(n).map_err(|e| automoe::Error::Cuda(e.to_string()))?;
    let us = time_us(x, 20, || x.stream().memcpy_dtod(&src, &mut dst).map_err(|e| automoe::Error::Cuda(e.to_string())))?;
    Ok(2.0 * (n * 4) as f64 / (us * 1e-6))
}

struct Row {
    kernel: String,
    shape: String,
    us: f64,
    bytes: f64,
}

fn bench<P: KernelParams>(
    x: &CudaExec,
    (file, name): (&str, &str),
    g: Geometry,
    p: &P,
    bytes: f64,
    shape: &str,
    rows: &mut Vec<Row>,
) -> Result<()> {
    // SAFETY: every address in `p` comes from live buffers of `x` sized for the shapes in `p`.
    let us = time_us(x, 50, || unsafe { x.launch_async(file, name, g, p) })?;
    rows.push(Row { kernel: name.into(), shape: shape.into(), us, bytes });
    Ok(())
}

fn up<T: Elem>(x: &CudaExec, v: &[T]) -> Result<<CudaExec as Exec>::Buf<T>> {
    x.upload(v)
}

fn run_size<T: Elem + automoe::cuda::moe_ops::KernelFloat>(
    x: &CudaExec,
    t: usize,
    e: usize,
    k: usize,
    d: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let sz = std::mem::size_of::<T>() as f64;
    let shape = format!("T={t} E={e} k={k} d={d}");
    let (ti, ei, ki, di) = (t as i32, e as i32, k as i32, d as i32);
    let logits: Vec<T> = (0..t * e).map(|_| T::from_f32(rng.random_range(-3.0..3.0))).collect();
    let lb = up(x, &logits)?;
    let mut probs = up(x, &vec![0f32; t * e])?;
    let mut idx_b = up(x, &vec![0i32; t * k])?;
    let mut w_b = up(x, &vec![0f32; t * k])?;
    let p = TopkGatingFwdParams {
        logits: x.addr(&lb),
        probs: x.addr_mut(&mut probs),
        topk_idx: x.addr_mut(&mut idx_b),
        topk_w: x.addr_mut(&mut w_b),
        tokens: ti,
        experts: ei,
        k: ki,
        renorm: 1,
    };
    let gname = gating_kernel::<T>("fwd", e);
    bench(x, ("gating.cu", &gname), gating_geometry(t, e), &p, (t * e) as f64 * (sz + 4.0) + (t * k * 8) as f64, &shape, rows)?;

    let mut pool: Vec<i32> = (0..e as i32).collect();
    let idx: Vec<i32> = (0..t)
        .flat_map(|_| {
            pool.shuffle(&mut rng);
            pool[..k].to_vec()
        })
        .collect();
    let disp = r::dispatch(&idx, t, k, e, 1)?;
    let ib = up(x, &idx)?;
    let mut dp = dispatch_params(t, k, e, 1)?;
    let mut counts = up(x, &vec![0i32; e])?;
    let mut offs = up(x, &vec![0i32; e + 1])?;
    let mut pos_out = up(x, &vec![0i32; t * k])?;
    let mut src_out = up(x, &vec![0i32; dp.rows_cap as usize])?;
    let mut scratch = up(x, &vec![0i32; dispatch_scratch_len(&dp)])?;
    dp.topk_idx = x.addr(&ib);
    dp.counts = x.addr_mut(&mut counts);
    dp.offsets = x.addr_mut(&mut offs);
    dp.pos = x.addr_mut(&mut pos_out);
    dp.src_row = x.addr_mut(&mut src_out);
    dp.block_rows = x.addr_mut(&mut scratch);
    // SAFETY: buffers allocated with the sizes dispatch_params and dispatch_scratch_len give.
    let us = time_us(x, 50, || unsafe { enqueue_dispatch(x, &dp) })?;
    rows.push(Row { kernel: "permute_dispatch (3 kernels)".into(), shape: shape.clone(), us, bytes: (t * k * 12) as f64 });

    let nrows = disp.src_row.len();
    let xs: Vec<T> = (0..t * d).map(|_| T::from_f32(rng.random_range(-1.0..1.0))).collect();
    let xb = up(x, &xs)?;
    let sb = up(x, &disp.src_row)?;
    let pb = up(x, &disp.pos)?;
    let wv: Vec<f32> = (0..t * k).map(|_| rng.random_range(0.0..1.0)).collect();
    let wb = up(x, &wv)?;
    let mut xp = up(x, &vec![T::from_f32(0.0); nrows * d])?;
    let pf = PermuteFwdParams { x: x.addr(&xb), src_row: x.addr(&sb), xp: x.addr_mut(&mut xp), rows: nrows as i32, d: di };
    let row_bytes = (nrows * d) as f64 * sz;
    bench(x, ("permute.cu", &format!("permute_fwd_{}", T::SUFFIX)), warp_per_item(nrows), &pf, 2.0 * row_bytes, &shape, rows)?;
    let mut dx = up(x, &vec![T::from_f32(0.0); t * d])?;
    let pbw = PermuteBwdParams { dxp: x.addr(&xp), pos: x.addr(&pb), dx: x.addr_mut(&mut dx), tokens: ti, k: ki, d: di, reserved: 0 };
    let tok_bytes = (t * d) as f64 * sz;
    bench(x, ("permute.cu", &format!("permute_bwd_{}", T::SUFFIX)), warp_per_item(t), &pbw, row_bytes + tok_bytes, &shape, rows)?;
    let mut y = up(x, &vec![T::from_f32(0.0); t * d])?;
    let cf = CombineFwdParams {
        yp: x.addr(&xp),
        pos: x.addr(&pb),
        w: x.addr(&wb),
        y: x.addr_mut(&mut y),
        tokens: ti,
        k: ki,
        d: di,
        reserved: 0,
    };
    bench(x, ("permute.cu", &format!("combine_fwd_{}", T::SUFFIX)), warp_per_item(t), &cf, row_bytes + tok_bytes, &shape, rows)?;
    let mut dyp = up(x, &vec![T::from_f32(0.0); nrows * d])?;
    let mut dw = up(x, &vec![0f32; t * k])?;
    let cb = CombineBwdParams {
        dy: x.addr(&y),
        yp: x.addr(&xp),
        pos: x.addr(&pb),
        w: x.addr(&wb),
        src_row: x.addr(&sb),
        dyp: x.addr_mut(&mut dyp),
        dw: x.addr_mut(&mut dw),
        tokens: ti,
        k: ki,
        d: di,
        rows: nrows as i32,
    };
    bench(
        x,
        ("permute.cu", &format!("combine_bwd_{}", T::SUFFIX)),
        warp_per_item(t.max(nrows)),
        &cb,
        2.0 * row_bytes + tok_bytes,
        &shape,
        rows,
    )?;
    Ok(())
}

fn main() {
    let x = match CudaExec::new(0) {
        Ok(x) => x,
        Err(e) => {
            println!("cuda_moe_kernels: skipped: {e}");
            return;
        }
    };
    if let Err(e) = run(&x) {
        eprintln!("cuda_moe_kernels: {e}");
        std::process::exit(1);
    }
}

fn run(x: &CudaExec) -> Result<()> {
    let copy = copy_bandwidth(x)?;
    println!("device {} — device-to-device copy: {:.0} GB/s (read + write)", x.backend_name(), copy / 1e9);
    let mut rows = Vec::new();
    run_size::<f32>(x, 16384, 64, 2, 1024, &mut rows)?;
    run_size::<bf16>(x, 16384, 64, 2, 1024, &mut rows)?;
    run_size::<bf16>(x, 16384, 6, 1, 640, &mut rows)?;
    for t in [1, 5, 8] {
        run_size::<bf16>(x, t, 6, 1, 640, &mut rows)?;
    }
    println!("{:<24} {:<26} {:>10} {:>10} {:>8}", "kernel", "shape", "µs", "GB/s", "% copy");
    for r in rows {
        let gbs = r.bytes / (r.us * 1e-6) / 1e9;
        println!("{:<24} {:<26} {:>10.2} {:>10.1} {:>7.1}%", r.kernel, r.shape, r.us, gbs, 100.0 * gbs * 1e9 / copy);
    }
    Ok(())
}
