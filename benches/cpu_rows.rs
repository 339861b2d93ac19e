//! The CPU's row kernels at a training step's shapes: label-smoothed cross-entropy forward and
//! backward over `[2048, 1698]` logits (the synthetic corpus's batch and vocabulary), attention
//! softmax forward and backward (`[64 x 4 heads x 30, 30]`, causal and key-padded), layer norm
//! forward and backward (`[2048, 128]`), and a dropout mask the size of an FFN activation.
//!
//! ```sh
//! cargo bench --bench cpu_rows             # 1 thread and all threads, 40 calls each
//! ```
//! Prints the minimum and the median ms per call: on a shared machine the minimum is the steadier
//! figure for a kernel this short.

use std::sync::Arc;
use std::time::Instant;

use automoe::cpu::{loss, norm, softmax};
use automoe::tensor::MaskSpec;
use rand::{Rng, SeedableRng};

const REPS: usize = 40;

fn time(f: &mut (dyn FnMut() + Send)) -> (f64, f64) {
    f();
    let mut t: Vec<f64> = (0..REPS)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[0], t[REPS / 2])
}

fn main() {
    automoe::cpu::alloc::retain_freed_memory();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut randv = |n: usize, s: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-s..s)).collect() };
    let (rows, v) = (2048usize, 1698usize);
    let logits = randv(rows * v, 8.0);
    let targets: Vec<u32> = (0..rows).map(|i| if i % 20 == 19 { 0 } else { (i * 7919 % v) as u32 }).collect();
    let (batch, heads, t) = (64usize, 4usize, 30usize);
    let scores = randv(batch * heads * t * t, 4.0);
    let dscores = randv(scores.len(), 1.0);
    let pad: Vec<bool> = (0..batch * t).map(|i| i % t >= t - (i / t) % 7).collect();
    let mask = MaskSpec { causal: true, key_padding: Some(Arc::new(pad)) };
    let d = 128usize;
    let x = randv(rows * d, 2.0);
    let dy = randv(rows * d, 1.0);
    let gamma = randv(d, 1.0);
    let beta = randv(d, 1.0);
    let (_, stats) = norm::layer_norm_fwd(&x, &gamma, &beta, d, 1e-5);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{:<28} {:>7} {:>10} {:>10}", "kernel", "threads", "min ms", "median ms");
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
        let row = |name: &str, f: &mut (dyn FnMut() + Send)| {
            let (min, med) = pool.install(|| time(f));
            println!("{name:<28} {threads:>7} {min:>10.3} {med:>10.3}");
        };
        row("cross_entropy_fwd", &mut || {
            std::hint::black_box(loss::cross_entropy_fwd(&logits, &targets, v, 0.1, Some(0)));
        });
        row("cross_entropy_bwd", &mut || {
            std::hint::black_box(loss::cross_entropy_bwd(&logits, &targets, v, 0.1, Some(0), 1e-3));
        });
        row("softmax_fwd (masked)", &mut || {
            std::hint::black_box(softmax::softmax_fwd(&scores, t, t, heads * t, &mask));
        });
        row("softmax_bwd", &mut || {
            std::hint::black_box(softmax::softmax_bwd(&scores, &dscores, t));
        });
        row("layer_norm_fwd", &mut || {
            std::hint::black_box(norm::layer_norm_fwd(&x, &gamma, &beta, d, 1e-5));
        });
        row("layer_norm_bwd", &mut || {
            std::hint::black_box(norm::layer_norm_bwd(&x, &gamma, &stats, &dy, d));
        });
        row("dropout_mask [2048, 512]", &mut || {
            std::hint::black_box(automoe::Tensor::dropout_mask(&[rows, 512], 0.1, 7, automoe::DType::F32).expect("mask"));
        });
    }
}
