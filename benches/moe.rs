//! MoE layer benchmark (issue 3): the grouped variable-width expert FFN against a dense GEMM doing
//! the same FLOPs, and against PyTorch eager running the same layer (`benches/torch_moe.py`, when
//! torch is importable by `$AUTOMOE_TORCH_PYTHON` or `python3`).
//! Run: `cargo bench --bench moe`.

use std::time::Instant;

use automoe::autograd::{ParamStore, Tape};
use automoe::moe::{moe_forward, MoeOptions, MoeParams, MoeSubnet};
use automoe::rng::seeded;
use automoe::{DType, Tensor};

const D: usize = 512;
const TOKENS: usize = 4096;
const REPS: usize = 9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

struct Row {
    name: String,
    fwd_ms: f64,
    fwd_gflops: f64,
    dense_gflops: f64,
    fwdbwd_ms: f64,
}

fn bench_case(name: &str, widths: &[usize], k: usize) -> Row {
    let mut rng = seeded(0);
    let mut store = ParamStore::new();
    let p = MoeParams::new(&mut store, "moe", D, widths.len(), *widths.iter().max().unwrap(), &mut rng).unwrap();
    // Zero router weights + zero bias give uniform probabilities; a small random router spreads
    // tokens roughly evenly, as a trained, balanced router would.
    store.get_mut(p.router_w).value = Tensor::randn(&[widths.len(), D], 0.01, DType::F32, &mut rng);
    let sub = MoeSubnet { d: D, widths: widths.to_vec(), k };
    let x = Tensor::randn(&[TOKENS, D], 1.0, DType::F32, &mut rng);
    let opts = MoeOptions::default();

    let mut counts = Vec::new();
    let fwd = time(REPS, || {
        let mut tape = Tape::inference();
        let xv = tape.constant(x.clone());
        let out = moe_forward(&mut tape, &store, &p, &sub, &opts, &xv).unwrap();
        counts = out.routing.counts().unwrap().to_vec();
    });
    let fwdbwd = time(REPS, || {
        let mut tape = Tape::new();
        let xv = tape.input(x.clone());
        let out = moe_forward(&mut tape, &store, &p, &sub, &opts, &xv).unwrap();
        let loss = tape.sum(&out.y).unwrap();
        std::hint::black_box(tape.backward(&loss).unwrap());
    });
    // Expert FLOPs actually executed: two GEMMs per routed row.
    let flops: f64 = counts.iter().zip(widths).map(|(&r, &h)| 4.0 * (r * D * h) as f64).sum();
    // The same FLOPs as one dense FFN: [T*k, D] x [D, H] x [H, D] with H the row-weighted mean width.
    let rows = TOKENS * k;
    let h_mean = (flops / (4.0 * (rows * D) as f64)).round() as usize;
    let a = Tensor::randn(&[rows, D], 1.0, DType::F32, &mut rng);
    let w1 = Tensor::randn(&[D, h_mean], 0.02, DType::F32, &mut rng);
    let w2 = Tensor::randn(&[h_mean, D], 0.02, DType::F32, &mut rng);
    let dense = time(REPS, || {
        let h = a.matmul(&w1).unwrap().relu().unwrap();
        std::hint::black_box(h.matmul(&w2).unwrap());
    });
    let dense_flops = 4.0 * (rows * D * h_mean) as f64;
    Row {
        name: name.to_string(),
        fwd_ms: fwd * 1e3,
        fwd_gflops: flops / fwd / 1e9,
        dense_gflops: dense_flops / dense / 1e9,
        fwdbwd_ms: fwdbwd * 1e3,
    }
}

/// PyTorch's timings, `(case name, fwd ms, fwd+bwd ms)`, when torch can be imported.
fn torch_times() -> Result<Vec<(String, f64, f64)>, String> {
    let py = std::env::var("AUTOMOE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_moe.py");
    let out = std::process::Command::new(&py).arg(script).arg("--tsv").output().map_err(|e| format!("{py}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
        })
        .collect())
}

fn main() {
    automoe::cpu::alloc::retain_freed_memory();
    println!("MoE layer, d = {D}, 8 experts, T = {TOKENS} tokens, f32, {} rayon threads", rayon::current_num_threads());
    let homo = [2048; 8];
    let hetero = [3072, 3072, 2048, 2048, 1024, 1024, 512, 512];
    let rows: Vec<Row> = [("homogeneous 2048", &homo[..]), ("heterogeneous", &hetero[..])]
        .iter()
        .flat_map(|&(n, w)| [1, 2].map(|k| bench_case(&format!("{n} top-{k}"), w, k)))
        .collect();
    let torch = torch_times();
    if let Err(e) = &torch {
        println!("PyTorch: not measured ({e})");
    }
    let torch = torch.unwrap_or_default();
    println!(
        "{:<24} {:>9} {:>10} {:>10} {:>7} {:>11} {:>10} {:>10} {:>11} {:>10}",
        "case", "fwd ms", "fwd GF/s", "dense GF/s", "% dense", "fwd+bwd ms", "torch fwd", "torch f+b", "x torch fwd", "x torch fb"
    );
    for r in rows {
        let t = torch.iter().find(|(n, _, _)| *n == r.name);
        let (tf, tb) = t.map(|(_, f, b)| (*f, *b)).unwrap_or((f64::NAN, f64::NAN));
        println!(
            "{:<24} {:>9.1} {:>10.1} {:>10.1} {:>6.0}% {:>11.1} {:>10.1} {:>10.1} {:>11.2} {:>10.2}",
            r.name,
            r.fwd_ms,
            r.fwd_gflops,
            r.dense_gflops,
            100.0 * r.fwd_gflops / r.dense_gflops,
            r.fwdbwd_ms,
            tf,
            tb,
            tf / r.fwd_ms,
            tb / r.fwdbwd_ms
        );
    }
}
