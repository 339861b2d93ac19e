//! Training throughput on the CPU: target tokens per second of full optimizer updates (forward,
//! backward, clipping, Adam) for the small space's supernet (a uniformly sampled subnet per update)
//! and for its dense baseline subnet, on the built-in synthetic corpus with 2048-token batches.
//!
//! ```sh
//! cargo bench --bench train_throughput            # 2 warm-up + 8 timed updates per model
//! AUTOMOE_BENCH_UPDATES=20 cargo bench --bench train_throughput
//! ```
//! Data preparation and validation are not timed. Tokens are real (non-pad) target tokens, the unit
//! the training log reports. Each model runs on 1 thread and on all threads.

mod common;

use automoe::train::mt;
use automoe::train::mt::data::{prepare, DataConfig, DataSource};
use automoe::train::TrainConfig;

fn main() -> automoe::Result<()> {
    automoe::cpu::alloc::retain_freed_memory();
    let timed: u64 = std::env::var("AUTOMOE_BENCH_UPDATES").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let warmup = 2u64;
    let data_cfg = DataConfig::new(DataSource::Synthetic { seed: 0, n_train: 5000, n_valid: 100 });
    let data = prepare(&data_cfg, None, 1)?;
    let space = mt::small_space()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} training batches, mean {:.0} target tokens per batch; vocab {}; {warmup} warm-up + {timed} timed updates",
        data.train.len(),
        data.train_tokens as f64 / data.train.len() as f64,
        data.tokenizer.vocab_size()
    );
    println!("{:<34} {:>7} {:>10} {:>12} {:>12}", "model", "threads", "params", "s/update", "tokens/s");
    for (name, mode) in common::models(&space) {
        for threads in [1, cores] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| automoe::Error::invalid("bench", e.to_string()))?;
            let t = pool.install(|| common::time_updates(&mode, &data, &data_cfg, TrainConfig::default(), warmup, timed))?;
            println!("{name:<34} {threads:>7} {:>10} {:>12.3} {:>12.0}", t.params, t.secs / timed as f64, t.tokens as f64 / t.secs);
        }
    }
    Ok(())
}
