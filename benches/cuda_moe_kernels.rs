//! Bandwidth and latency of the routing kernels on a CUDA device (harness = false; prints a table,
//! asserts nothing). Throughput is compared against a device-to-device copy measured in the same
//! run, the practical ceiling for these memory-bound kernels; decode sizes (T <= 8) report µs.
//! Without a device it prints why it skipped and exits 0.
//!
//! Two times per kernel: "µs" is the kernel itself, from [`GRAPH_LAUNCHES`] launches captured into
//! one CUDA graph and replayed (so the host's launch rate, ~4-5 µs per launch, is not measured); "µs
//! launch" is the old number, wall clock per launch of back-to-back stream launches, which is what a
//! decode-size call costs a host-driven caller. GB/s and % copy use the graph time.
//!
//!     cargo bench --bench cuda_moe_kernels

use std::time::Instant;

use automoe::cuda::abi::*;
use automoe::cuda::moe_exec::{enqueue_dispatch, Elem, Exec, KernelParams};
use automoe::cuda::moe_ops::{
    dispatch_params, dispatch_scratch_len, gating_geometry, gating_kernel, select_geometry, warp_per_item, Geometry,
};
use automoe::cuda::CudaExec;
use automoe::moe::reference as r;
use automoe::{Error, Result};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use half::bf16;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Launches of one kernel per captured graph (and per timed loop of stream launches).
const GRAPH_LAUNCHES: usize = 50;
/// Graph replays timed.
const GRAPH_REPLAYS: usize = 20;

fn cuda_err(e: cudarc::driver::DriverError) -> Error {
    Error::Cuda(e.to_string())
}

/// Mean µs per call of `f` after warm-up, synchronising once around the timed loop: host wall
/// clock, so for small kernels this is the host's launch rate.
fn time_us(x: &CudaExec, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    x.stream().synchronize().map_err(cuda_err)?;
    let t0 = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    x.stream().synchronize().map_err(cuda_err)?;
    Ok(t0.elapsed().as_secs_f64() * 1e6 / iters as f64)
}

/// Mean µs per call of `f` (which only queues work on the stream) on the device: `f` is captured
/// [`GRAPH_LAUNCHES`] times into one graph, which is replayed after a warm-up. Call `f` at least once
/// before (module loading must not happen during a capture).
fn time_graph_us(x: &CudaExec, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let s = x.stream();
    s.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda_err)?;
    let mut captured = Ok(());
    for _ in 0..GRAPH_LAUNCHES {
        captured = f();
        if captured.is_err() {
            break;
        }
    }
    // End the capture even when a launch failed, so the stream is usable for the error report.
    let graph = s.end_capture(CUgraphInstantiate_flags(0)).map_err(cuda_err)?;
    captured?;
    let graph = graph.ok_or_else(|| Error::Cuda("stream capture produced no graph".into()))?;
    graph.upload().map_err(cuda_err)?;
    for _ in 0..2 {
        graph.launch().map_err(cuda_err)?;
    }
    s.synchronize().map_err(cuda_err)?;
    let t0 = Instant::now();
    for _ in 0..GRAPH_REPLAYS {
        graph.launch().map_err(cuda_err)?;
    }
    s.synchronize().map_err(cuda_err)?;
    Ok(t0.elapsed().as_secs_f64() * 1e6 / (GRAPH_REPLAYS * GRAPH_LAUNCHES) as f64)
}

/// Device-to-device copy bandwidth (bytes read + written per second), 256 MiB buffers.
fn copy_bandwidth(x: &CudaExec) -> Result<f64> {
    let n = 64 << 20; // f32 elements
    let src = x.stream().alloc_zeros::<f32>(n).map_err(cuda_err)?;
    let mut dst = x.stream().alloc_zeros::<f32>(n).map_err(cuda_err)?;
    let us = time_us(x, 20, || x.stream().memcpy_dtod(&src, &mut dst).map_err(cuda_err))?;
    Ok(2.0 * (n * 4) as f64 / (us * 1e-6))
}

struct Row {
    kernel: String,
    shape: String,
    /// Device time per call (graph replay).
    us: f64,
    /// Host wall clock per call of back-to-back stream launches.
    us_launch: f64,
    bytes: f64,
}

/// Times `f` (which queues one call of `kernel` on the stream) both ways and records a row.
fn bench(x: &CudaExec, kernel: &str, shape: &str, bytes: f64, rows: &mut Vec<Row>, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let us_launch = time_us(x, GRAPH_LAUNCHES, &mut f)?;
    // A failed capture (first use of graphs on this driver) costs the row's device time, not the run.
    let us = time_graph_us(x, &mut f).unwrap_or_else(|e| {
        eprintln!("{kernel} {shape}: graph timing failed ({e}); device time not measured");
        f64::NAN
    });
    rows.push(Row { kernel: kernel.into(), shape: shape.into(), us, us_launch, bytes });
    Ok(())
}

/// One kernel launch with `p` as its only argument.
fn bench_kernel<P: KernelParams>(
    x: &CudaExec,
    (file, name): (&str, &str),
    g: Geometry,
    p: &P,
    bytes: f64,
    shape: &str,
    rows: &mut Vec<Row>,
) -> Result<()> {
    // SAFETY: every address in `p` comes from live buffers of `x` sized for the shapes in `p`.
    bench(x, name, shape, bytes, rows, || unsafe { x.launch_async(file, name, g, p) })
}

fn up<T: Elem>(x: &CudaExec, v: &[T]) -> Result<<CudaExec as Exec>::Buf<T>> {
    x.upload(v)
}

/// Rows for one shape: the gating forward and backward and the dispatch always; with `with_rows`, also the
/// permute / combine kernels that move [T*k, d] rows.
fn run_size<T: Elem + automoe::cuda::moe_ops::KernelFloat>(
    x: &CudaExec,
    (t, e, k, d): (usize, usize, usize, usize),
    with_rows: bool,
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
    let gbytes = (t * e) as f64 * (sz + 4.0) + (t * k * 8) as f64;
    bench_kernel(x, ("gating.cu", &gname), gating_geometry(t, e), &p, gbytes, &shape, rows)?;
    // The backward on the forward's outputs: reads probs [T, E] f32 and three [T, k] arrays, writes
    // dlogits [T, E].
    let dw_b = up(x, &(0..t * k).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>())?;
    let mut dlogits = up(x, &vec![T::from_f32(0.0); t * e])?;
    let pb = TopkGatingBwdParams {
        probs: x.addr(&probs),
        topk_idx: x.addr(&idx_b),
        topk_w: x.addr(&w_b),
        dw: x.addr(&dw_b),
        dlogits: x.addr_mut(&mut dlogits),
        tokens: ti,
        experts: ei,
        k: ki,
        renorm: 1,
    };
    let bname = gating_kernel::<T>("bwd", e);
    let bbytes = (t * e) as f64 * (4.0 + sz) + (t * k * 12) as f64;
    bench_kernel(x, ("gating.cu", &bname), gating_geometry(t, e), &pb, bbytes, &shape, rows)?;
    // The tape's top-k from probabilities (one thread per token): reads [T, E] in T, writes ids and
    // gates; its backward writes dprobs [T, E] from three [T, k] arrays.
    let pt = up(x, &(0..t * e).map(|_| T::from_f32(rng.random_range(0.0..1.0))).collect::<Vec<_>>())?;
    let mut gates_t = up(x, &vec![T::from_f32(0.0); t * k])?;
    let dg_t = up(x, &(0..t * k).map(|_| T::from_f32(rng.random_range(-1.0..1.0))).collect::<Vec<_>>())?;
    let mut dprobs_t = up(x, &vec![T::from_f32(0.0); t * e])?;
    let mut sp = TopkSelectParams {
        probs: x.addr(&pt),
        topk_idx: x.addr_mut(&mut idx_b),
        gates: x.addr_mut(&mut gates_t),
        dgates: x.addr(&dg_t),
        dprobs: x.addr_mut(&mut dprobs_t),
        tokens: ti,
        experts: ei,
        k: ki,
        renorm: 1,
    };
    let sel_geom = select_geometry(t);
    let sname = format!("topk_select_fwd_{}", T::SUFFIX);
    bench_kernel(x, ("gating.cu", &sname), sel_geom, &sp, (t * e) as f64 * sz + (t * k) as f64 * (4.0 + sz), &shape, rows)?;
    sp.topk_idx = x.addr(&idx_b);
    let sname = format!("topk_select_bwd_{}", T::SUFFIX);
    bench_kernel(x, ("gating.cu", &sname), sel_geom, &sp, (t * e) as f64 * sz + (t * k) as f64 * (4.0 + 3.0 * sz), &shape, rows)?;

    let mut pool: Vec<i32> = (0..e as i32).collect();
    let idx: Vec<i32> = (0..t)
        .flat_map(|_| {
            pool.shuffle(&mut rng);
            pool[..k].to_vec()
        })
        .collect();
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
    // Reads topk_idx, writes pos and src_row: 12 bytes per pair (the count pass re-reads topk_idx).
    // SAFETY: buffers allocated with the sizes dispatch_params and dispatch_scratch_len give.
    bench(x, "permute_dispatch (3 kernels)", &shape, (t * k * 12) as f64, rows, || unsafe { enqueue_dispatch(x, &dp) })?;
    if !with_rows {
        return Ok(());
    }

    let disp = r::dispatch(&idx, t, k, e, 1)?;
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
    bench_kernel(x, ("permute.cu", &format!("permute_fwd_{}", T::SUFFIX)), warp_per_item(nrows), &pf, 2.0 * row_bytes, &shape, rows)?;
    let mut dx = up(x, &vec![T::from_f32(0.0); t * d])?;
    let pbw = PermuteBwdParams { dxp: x.addr(&xp), pos: x.addr(&pb), dx: x.addr_mut(&mut dx), tokens: ti, k: ki, d: di, reserved: 0 };
    let tok_bytes = (t * d) as f64 * sz;
    bench_kernel(x, ("permute.cu", &format!("permute_bwd_{}", T::SUFFIX)), warp_per_item(t), &pbw, row_bytes + tok_bytes, &shape, rows)?;
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
    bench_kernel(x, ("permute.cu", &format!("combine_fwd_{}", T::SUFFIX)), warp_per_item(t), &cf, row_bytes + tok_bytes, &shape, rows)?;
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
    bench_kernel(
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
    run_size::<f32>(x, (16384, 64, 2, 1024), true, &mut rows)?;
    run_size::<bf16>(x, (16384, 64, 2, 1024), true, &mut rows)?;
    run_size::<f32>(x, (65536, 64, 2, 1024), false, &mut rows)?;
    run_size::<bf16>(x, (65536, 64, 2, 1024), false, &mut rows)?;
    run_size::<bf16>(x, (16384, 6, 1, 640), true, &mut rows)?;
    run_size::<bf16>(x, (65536, 6, 1, 640), false, &mut rows)?;
    for t in [1, 5, 8] {
        run_size::<bf16>(x, (t, 6, 1, 640), true, &mut rows)?;
    }
    println!("{:<28} {:<26} {:>9} {:>10} {:>9} {:>8}", "kernel", "shape", "µs", "µs launch", "GB/s", "% copy");
    for r in rows {
        let gbs = r.bytes / (r.us * 1e-6) / 1e9;
        println!("{:<28} {:<26} {:>9.2} {:>10.2} {:>9.1} {:>7.1}%", r.kernel, r.shape, r.us, r.us_launch, gbs, 100.0 * gbs * 1e9 / copy);
    }
    Ok(())
}
