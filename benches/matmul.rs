//! Matmul throughput: the tensor layer's `matmul` against the `gemm` crate called directly on the
//! same shapes, beside the machine's f32 peak. Run: `cargo bench --bench matmul`.

use std::time::Instant;

use automoe::rng::seeded;
use automoe::{DType, Tensor};

/// Nominal f32 peak at the base clock `/proc/cpuinfo` reports: cores x 64 FLOP/cycle (two
/// AVX-512 FMA pipes x 16 lanes x 2 FLOP). Boost clocks can exceed it.
fn peak_gflops() -> (f64, f64, usize) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("cpu MHz")).and_then(|l| l.split(':').nth(1)).and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    (cores as f64 * 64.0 * mhz / 1e3, mhz, cores)
}

/// `out[m, n] = A @ B` through the `gemm` crate directly (2 threads), `A` row-major `[m, k]`,
/// `out` row-major, `B` with column stride `b_cs` and row stride `b_rs`.
#[allow(clippy::too_many_arguments)]
fn gemm_direct(out: &mut [f32], m: usize, n: usize, k: usize, a: &[f32], b: &[f32], b_cs: usize, b_rs: usize) {
    assert!(out.len() >= m * n && a.len() >= m * k && b.len() > (n - 1) * b_cs + (k - 1) * b_rs);
    // SAFETY: the assert keeps every index gemm computes from these strides inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    };
}

fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() {
    automoe::cpu::alloc::retain_freed_memory();
    let (peak, mhz, cores) = peak_gflops();
    println!("machine: {cores} cores at {mhz:.0} MHz, nominal f32 peak {peak:.0} GFLOP/s; rayon threads {}", rayon::current_num_threads());
    println!("{:<18} {:>12} {:>12} {:>8} {:>9}", "M x K x N", "tensor GF/s", "gemm GF/s", "ratio", "% peak");
    let mut rng = seeded(0);
    for (m, k, n) in [(1024, 1024, 1024), (4096, 512, 2048), (4096, 2048, 512)] {
        let a = Tensor::randn(&[m, k], 1.0, DType::F32, &mut rng);
        let b = Tensor::randn(&[k, n], 1.0, DType::F32, &mut rng);
        let flops = 2.0 * (m * k * n) as f64;
        let reps = 9;
        let t_tensor = median_secs(reps, || {
            std::hint::black_box(a.matmul(&b).unwrap());
        });
        let (av, bv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let mut out = vec![0f32; m * n];
        let t_gemm = median_secs(reps, || {
            // B row-major [k, n]: column stride 1, row stride n.
            gemm_direct(&mut out, m, n, k, &av, &bv, 1, n);
            std::hint::black_box(&out);
        });
        let (gt, gg) = (flops / t_tensor / 1e9, flops / t_gemm / 1e9);
        println!("{:<18} {:>12.1} {:>12.1} {:>7.0}% {:>8.0}%", format!("{m}x{k}x{n}"), gt, gg, 100.0 * gt / gg, 100.0 * gt / peak);
    }
    few_rows_transposed_weight();
}

/// `x W^T` with `W: [n, k]` read in place (a linear layer), for the row counts of encoding and
/// incremental decoding: the tensor layer (a contiguous copy of `W^T`, or one matrix-vector
/// product per row up to `cpu::matmul::ROWWISE_MAX_ROWS` rows) against `gemm` handed the
/// transposed view directly (which gathers `W` into its packed layout).
fn few_rows_transposed_weight() {
    println!();
    println!("x [m, k] @ W^T, W [n, k] row-major: microseconds per product");
    println!("{:<18} {:>12} {:>12} {:>8}", "m x k x n", "tensor us", "gemm us", "speedup");
    let mut rng = seeded(1);
    for (m, k, n) in [(1, 512, 2048), (2, 512, 2048), (8, 512, 2048), (30, 512, 512), (30, 512, 2048), (150, 512, 512)] {
        let x = Tensor::randn(&[m, k], 1.0, DType::F32, &mut rng);
        let w = Tensor::randn(&[n, k], 1.0, DType::F32, &mut rng);
        let wt = w.t().unwrap();
        let t_tensor = median_secs(101, || {
            std::hint::black_box(x.matmul(&wt).unwrap());
        });
        let (xv, wv) = (x.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
        let mut out = vec![0f32; m * n];
        let t_gemm = median_secs(101, || {
            // B = W^T read in place: column stride k, row stride 1.
            gemm_direct(&mut out, m, n, k, &xv, &wv, k, 1);
            std::hint::black_box(&out);
        });
        println!("{:<18} {:>12.1} {:>12.1} {:>7.2}x", format!("{m}x{k}x{n}"), t_tensor * 1e6, t_gemm * 1e6, t_gemm / t_tensor);
    }
}
