//! Throughput of the grouped expert GEMMs (cuda/grouped_gemm.cu) on a CUDA device against a
//! per-expert cuBLAS loop (one cuBLAS call per expert, the usual way without a grouped kernel) and
//! against the bf16 matrix ceiling measured in the same run (one big cuBLAS bf16 GEMM).
//! harness = false; prints a table, asserts nothing; without a device it prints why and exits 0.
//!
//!     cargo bench --bench cuda_grouped_gemm
//!
//! Problems (k = 1, 16384 tokens): (a) 8 experts, d = 1024, width 4096 (homogeneous, 2048 tokens
//! each); (b) AutoMoE's heterogeneous widths {3072, 2048, 1024, 512, 96}, d = 1024, tokens split
//! 30/25/20/15/10 %. Stages are the fc1 shapes: fwd `y = x W^T` (N = h_e, K = d), dgrad
//! `dx = dy W` (N = d, K = h_e), wgrad `dW = dy^T x` (M = h_e, N = d, K = tokens).

use std::time::Instant;

use automoe::cuda::abi::*;
use automoe::cuda::grouped_gemm::{plan_with, run_args, Bf16Kernel, GemmStage, BF16_KERNELS, FILE};
use automoe::cuda::moe_exec::Exec;
use automoe::cuda::moe_ops::KernelFloat;
use automoe::cuda::CudaExec;
use automoe::{Error, Result};
use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, DevicePtr};
use half::bf16;

fn cuda<E: std::fmt::Display>(e: E) -> Error {
    Error::Cuda(e.to_string())
}

/// Mean seconds per call of `f` after warm-up, synchronising once around the timed loop.
fn time_s(x: &CudaExec, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    x.stream().synchronize().map_err(cuda)?;
    let t0 = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    x.stream().synchronize().map_err(cuda)?;
    Ok(t0.elapsed().as_secs_f64() / iters as f64)
}

/// TFLOP/s of one square cuBLAS bf16 GEMM (n = 8192): the device's practical matrix ceiling.
fn bf16_ceiling(x: &CudaExec, blas: &CudaBlas) -> Result<f64> {
    let n = 8192usize;
    // Random operands, like the grouped problems: all-zero inputs draw less power and let the
    // clocks run higher, which would overstate the ceiling.
    let a = x.stream().clone_htod(&pseudo_random::<bf16>(n * n, 3)).map_err(cuda)?;
    let b = x.stream().clone_htod(&pseudo_random::<bf16>(n * n, 4)).map_err(cuda)?;
    let mut c = x.stream().alloc_zeros::<bf16>(n * n).map_err(cuda)?;
    let ni = n as i32;
    let cfg = GemmConfig {
        transa: CUBLAS_OP_N,
        transb: CUBLAS_OP_N,
        m: ni,
        n: ni,
        k: ni,
        alpha: bf16::ONE,
        lda: ni,
        ldb: ni,
        beta: bf16::ZERO,
        ldc: ni,
    };
    // SAFETY: all three buffers hold n * n elements, as the configuration reads and writes.
    let s = time_s(x, 10, || unsafe { blas.gemm(cfg, &a, &b, &mut c) }.map_err(cuda))?;
    Ok(2.0 * (n * n * n) as f64 / s / 1e12)
}

struct Case {
    name: &'static str,
    widths: Vec<usize>,
    counts: Vec<usize>,
    d: usize,
}

fn cases() -> Vec<Case> {
    let t = 16384usize;
    let het = [3072, 2048, 1024, 512, 96];
    let share = [30, 25, 20, 15, 10];
    let mut counts: Vec<usize> = share.iter().map(|s| t * s / 100).collect();
    counts[0] += t - counts.iter().sum::<usize>();
    vec![
        Case { name: "8x4096 d1024", widths: vec![4096; 8], counts: vec![t / 8; 8], d: 1024 },
        Case { name: "hetero d1024", widths: het.to_vec(), counts, d: 1024 },
    ]
}

/// (m, n, k) of expert e's problem at `stage`.
fn dims(stage: GemmStage, c: &Case, e: usize) -> (usize, usize, usize) {
    let (tok, h, d) = (c.counts[e], c.widths[e], c.d);
    match stage {
        GemmStage::Fwd => (tok, h, d),
        GemmStage::Dgrad => (tok, d, h),
        GemmStage::Wgrad => (h, d, tok),
    }
}

/// The row-major problem as a column-major cuBLAS call.
#[allow(clippy::too_many_arguments)]
fn blas_cfg<T: Copy>(stage: GemmStage, m: usize, n: usize, k: usize, lda: usize, ldb: usize, ldc: usize, one: T, beta: T) -> GemmConfig<T> {
    let (mi, ni, ki) = (m as i32, n as i32, k as i32);
    // Row-major X [r, c] is column-major X^T, so C = f(A, B) becomes C^T = f'(B, A).
    let (ta, tb) = match stage {
        GemmStage::Fwd => (CUBLAS_OP_T, CUBLAS_OP_N),   // C^T = B A^T, B stored [N, K]
        GemmStage::Dgrad => (CUBLAS_OP_N, CUBLAS_OP_N), // C^T = B^T A^T, B stored [K, N]
        GemmStage::Wgrad => (CUBLAS_OP_N, CUBLAS_OP_T), // C^T = B^T A, A stored [K, M]
    };
    GemmConfig { transa: ta, transb: tb, m: ni, n: mi, k: ki, alpha: one, lda: ldb as i32, ldb: lda as i32, beta, ldc: ldc as i32 }
}

/// Per-expert operand offsets (elements) and leading dimensions: token operands are one
/// [tokens, width] buffer, weights one [E, h_max, d] parent buffer.
struct Layout {
    a_off: Vec<usize>,
    b_off: Vec<usize>,
    c_off: Vec<usize>,
    lda: usize,
    ldb: usize,
    ldc: usize,
    a_len: usize,
    b_len: usize,
    c_len: usize,
}

fn layout(stage: GemmStage, c: &Case) -> Layout {
    let (hm, d, e) = (*c.widths.iter().max().unwrap_or(&1), c.d, c.widths.len());
    let t: usize = c.counts.iter().sum();
    let row0: Vec<usize> = c.counts.iter().scan(0, |s, &n| Some(std::mem::replace(s, *s + n))).collect();
    let w: Vec<usize> = (0..e).map(|i| i * hm * d).collect();
    match stage {
        // x [T, d], W [E, hm, d] (ld d), y [T, hm]
        GemmStage::Fwd => Layout {
            a_off: row0.iter().map(|r| r * d).collect(),
            b_off: w,
            c_off: row0.iter().map(|r| r * hm).collect(),
            lda: d,
            ldb: d,
            ldc: hm,
            a_len: t * d,
            b_len: e * hm * d,
            c_len: t * hm,
        },
        // dy [T, hm], W [E, hm, d] as [K = h, N = d] (ld d), dx [T, d]
        GemmStage::Dgrad => Layout {
            a_off: row0.iter().map(|r| r * hm).collect(),
            b_off: w,
            c_off: row0.iter().map(|r| r * d).collect(),
            lda: hm,
            ldb: d,
            ldc: d,
            a_len: t * hm,
            b_len: e * hm * d,
            c_len: t * d,
        },
        // dy [T, hm] as [K, M], x [T, d] as [K, N], dW [E, hm, d]
        GemmStage::Wgrad => Layout {
            a_off: row0.iter().map(|r| r * hm).collect(),
            b_off: row0.iter().map(|r| r * d).collect(),
            c_off: w,
            lda: hm,
            ldb: d,
            ldc: d,
            a_len: t * hm,
            b_len: t * d,
            c_len: e * hm * d,
        },
    }
}

struct Row {
    case: &'static str,
    kernel: String,
    tflops: f64,
    blas_tflops: f64,
    plan_us: f64,
    /// max |grouped - cuBLAS| / max |cuBLAS| of the validation run.
    diff: f32,
}

/// Cheap deterministic values in [-1, 1) (a hash, not rand: these buffers have ~10^8 elements).
fn pseudo_random<T: KernelFloat>(n: usize, seed: u64) -> Vec<T> {
    (0..n as u64)
        .map(|i| {
            let h = (i ^ (seed << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            T::from_f32((h >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect()
}

fn addr<T>(x: &CudaExec, s: &CudaSlice<T>) -> automoe_dptr {
    let (p, _guard) = s.device_ptr(x.stream());
    p as automoe_dptr
}

fn bench_stage<T: KernelFloat + cudarc::driver::ValidAsZeroBits, C: KernelFloat + cudarc::driver::ValidAsZeroBits>(
    x: &CudaExec,
    blas: &CudaBlas,
    stage: GemmStage,
    c: &Case,
    rows: &mut Vec<Row>,
) -> Result<()>
where
    CudaBlas: Gemm<T>,
{
    let l = layout(stage, c);
    // Random operands, so the validation below compares real products.
    let a = x.stream().clone_htod(&pseudo_random::<T>(l.a_len, 1)).map_err(cuda)?;
    let b = x.stream().clone_htod(&pseudo_random::<T>(l.b_len, 2)).map_err(cuda)?;
    let mut out = x.stream().alloc_zeros::<C>(l.c_len).map_err(cuda)?;
    // cuBLAS writes T (its bf16 wgrad has no f32 output of bf16 inputs through this API).
    let mut out_blas = x.stream().alloc_zeros::<T>(l.c_len).map_err(cuda)?;
    let (ts, cs) = (std::mem::size_of::<T>(), std::mem::size_of::<C>());
    let e = c.widths.len();
    // Token counts come from the device offsets, as in the MoE layer (not from the template).
    let templ: Vec<GemmGroupParams> = (0..e)
        .map(|i| {
            let (m, n, k) = dims(stage, c, i);
            let (shift, count_k) = stage.token_operands();
            // Token operands' offsets are segment rows, which the plan adds itself.
            let base = |off: usize, bit: u32, size: usize, buf: automoe_dptr| {
                let o = if shift & bit != 0 { 0 } else { off };
                buf + (o * size) as automoe_dptr
            };
            GemmGroupParams {
                a: base(l.a_off[i], AUTOMOE_GEMM_SHIFT_A, ts, addr(x, &a)),
                b: base(l.b_off[i], AUTOMOE_GEMM_SHIFT_B, ts, addr(x, &b)),
                c: base(l.c_off[i], AUTOMOE_GEMM_SHIFT_C, cs, addr(x, &out)),
                m: if count_k { m } else { 0 } as i32,
                n: n as i32,
                k: if count_k { 0 } else { k } as i32,
                lda: l.lda as i32,
                ldb: l.ldb as i32,
                ldc: l.ldc as i32,
                ..Default::default()
            }
        })
        .collect();
    let mut offsets = vec![0i32];
    for &n in &c.counts {
        offsets.push(offsets.last().copied().unwrap_or(0) + n as i32);
    }
    let offb = x.upload(&offsets)?;
    let t: usize = c.counts.iter().sum();
    let flags = if stage == GemmStage::Wgrad { AUTOMOE_GEMM_ACCUMULATE } else { 0 };
    // SAFETY: every group's operands lie inside a, b, out (layout() sized them for these counts).
    let plan_for = |k: Bf16Kernel| unsafe { plan_with::<CudaExec, T>(x, stage, &templ, Some(&offb), t, k) };
    let mut pl = plan_for(BF16_KERNELS[0])?;
    let flops: f64 = (0..e).map(|i| dims(stage, c, i)).map(|(m, n, k)| 2.0 * (m * n * k) as f64).sum();
    let (one, beta) = (T::from_f32(1.0), T::from_f32(if flags != 0 { 1.0 } else { 0.0 }));
    let blas_loop = |out_blas: &mut CudaSlice<T>| -> Result<()> {
        for i in 0..e {
            let (m, n, k) = dims(stage, c, i);
            if m == 0 || n == 0 || k == 0 {
                continue;
            }
            let cfg = blas_cfg(stage, m, n, k, l.lda, l.ldb, l.ldc, one, beta);
            let av = a.slice(l.a_off[i]..);
            let bv = b.slice(l.b_off[i]..);
            let mut cv = out_blas.slice_mut(l.c_off[i]..);
            // SAFETY: each expert's operands lie inside the buffers (layout() sized them).
            unsafe { blas.gemm(cfg, &bv, &av, &mut cv) }.map_err(cuda)?;
        }
        Ok(())
    };
    // One cuBLAS result to validate every configuration against (wgrad accumulates: compare the
    // first call of each, from zeroed outputs).
    x.stream().memset_zeros(&mut out_blas).map_err(cuda)?;
    blas_loop(&mut out_blas)?;
    let want: Vec<f32> = x.stream().clone_dtoh(&out_blas).map_err(cuda)?.iter().map(|v| v.to_f32()).collect();
    let scale = want.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    let sb = time_s(x, 20, || blas_loop(&mut out_blas))?;
    let (pg, pp) = pl.replan_args(x, Some(&offb));
    // SAFETY: the plan's template and offsets are live buffers of `x`.
    let plan_s = time_s(x, 20, || unsafe { x.launch_async(FILE, "grouped_gemm_plan_i32", pg, &pp) })?;
    // bf16: every compiled configuration (the default first); f32: the one SIMT kernel.
    let kernels: &[Bf16Kernel] = if T::SUFFIX == "bf16" { &BF16_KERNELS } else { &BF16_KERNELS[..1] };
    for &k in kernels.iter().filter(|k| k.runs_on(x)) {
        // A configuration's block tile is part of its plan (the plan kernel tiles the groups by it).
        let pl = plan_for(k)?;
        let l = run_args::<CudaExec, T>(x, &pl, flags);
        let (name, g, p) = (&l.name, l.geometry, &l.params);
        x.stream().memset_zeros(&mut out).map_err(cuda)?;
        // SAFETY: the plan's addresses point into a, b and out, sized by layout().
        unsafe { x.launch_async(l.file, name, g, p)? };
        let got: Vec<f32> = x.stream().clone_dtoh(&out).map_err(cuda)?.iter().map(|v| v.to_f32()).collect();
        let diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        // SAFETY: as above.
        let s = time_s(x, 20, || unsafe { x.launch_async(l.file, name, g, p) })?;
        rows.push(Row {
            case: c.name,
            kernel: l.name.clone(),
            tflops: flops / s / 1e12,
            blas_tflops: flops / sb / 1e12,
            plan_us: plan_s * 1e6,
            diff,
        });
    }
    Ok(())
}

fn run(x: &CudaExec) -> Result<()> {
    let blas = CudaBlas::new(x.stream().clone()).map_err(cuda)?;
    let ceiling = bf16_ceiling(x, &blas)?;
    println!("device {}: bf16 matrix ceiling (cuBLAS 8192^3) {ceiling:.0} TFLOP/s", x.backend_name());
    for k in BF16_KERNELS {
        let name = if k.suffix.is_empty() { "(default)" } else { k.suffix };
        println!("bf16 configuration {name:<10} {} ({} threads, {} KiB shared memory)", k.describe(), k.threads(), k.smem_bytes() / 1024);
    }
    let mut rows = Vec::new();
    for c in cases() {
        // bf16 weight gradients accumulate into f32 (the kernels' contract).
        bench_stage::<bf16, bf16>(x, &blas, GemmStage::Fwd, &c, &mut rows)?;
        bench_stage::<bf16, bf16>(x, &blas, GemmStage::Dgrad, &c, &mut rows)?;
        bench_stage::<bf16, f32>(x, &blas, GemmStage::Wgrad, &c, &mut rows)?;
        for stage in [GemmStage::Fwd, GemmStage::Dgrad, GemmStage::Wgrad] {
            bench_stage::<f32, f32>(x, &blas, stage, &c, &mut rows)?;
        }
    }
    println!(
        "{:<14} {:<30} {:>10} {:>12} {:>9} {:>10} {:>12}",
        "problem", "kernel", "TFLOP/s", "cuBLAS loop", "% ceil", "plan µs", "vs cuBLAS"
    );
    for r in rows {
        // bf16 outputs differ from cuBLAS's by bf16 rounding (~4e-3); more means a real mismatch.
        let flag = if r.diff > 2e-2 { "  MISMATCH" } else { "" };
        println!(
            "{:<14} {:<30} {:>10.1} {:>12.1} {:>8.1}% {:>10.1} {:>12.1e}{flag}",
            r.case,
            r.kernel,
            r.tflops,
            r.blas_tflops,
            100.0 * r.tflops / ceiling,
            r.plan_us,
            r.diff
        );
    }
    Ok(())
}

fn main() {
    let x = match CudaExec::new(0) {
        Ok(x) => x,
        Err(e) => {
            println!("cuda_grouped_gemm: skipped: {e}");
            return;
        }
    };
    // SAFETY: only probes whether libcublas can be opened.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        println!("cuda_grouped_gemm: skipped: libcublas.so.13 cannot be loaded (put it on LD_LIBRARY_PATH)");
        return;
    }
    if let Err(e) = run(&x) {
        eprintln!("cuda_grouped_gemm: {e}");
        std::process::exit(1);
    }
}
