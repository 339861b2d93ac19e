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

use std::time::Instant;

use automoe::model::ModelOptions;
use automoe::train::mt::data::{prepare, DataConfig, DataSource};
use automoe::train::mt::{self, Mode, RunDescription};
use automoe::train::{LrSchedule, TrainConfig, Trainer};

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
    for (name, mode) in [
        ("supernet (small space, sampled)", Mode::Supernet { space: space.clone() }),
        ("dense baseline (128, 3+3, 512)", Mode::Subnet { config: space.dense() }),
    ] {
        for threads in [1, cores] {
            let desc = RunDescription {
                mode: mode.clone(),
                options: ModelOptions { dropout: 0.1, attention_dropout: 0.1, ..ModelOptions::default() },
                vocab: data.tokenizer.vocab_size(),
                label_smoothing: 0.1,
                data: data_cfg.clone(),
            };
            let net = mt::build_net(&desc, 1)?;
            let params = net.store.numel();
            let cfg = TrainConfig {
                max_updates: warmup + timed,
                clip_norm: 1.0,
                schedule: LrSchedule::Constant { lr: 5e-4 },
                seed: 1,
                quiet: true,
                ..TrainConfig::default()
            };
            let mut trainer = Trainer::new(cfg, net.store)?;
            let mut loss_fn = |tape: &mut automoe::autograd::Tape,
                               store: &automoe::autograd::ParamStore,
                               batch: &automoe::data::Batch,
                               ctx: automoe::train::UpdateCtx| {
                let sub = match &desc.mode {
                    Mode::Supernet { space } => mt::sampled_subnet(space, 1, ctx.update)?,
                    Mode::Subnet { config } => config.clone(),
                };
                mt::batch_loss(tape, store, &net.params, &desc, &sub, batch, automoe::model::RunMode::train(ctx.seed))
            };
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| automoe::Error::invalid("bench", e.to_string()))?;
            let (secs, tokens) = pool.install(|| -> automoe::Result<(f64, usize)> {
                for _ in 0..warmup {
                    trainer.step(&data.train, &mut loss_fn)?;
                }
                let t0 = Instant::now();
                let mut tokens = 0;
                for _ in 0..timed {
                    tokens += trainer.step(&data.train, &mut loss_fn)?.tokens;
                }
                Ok((t0.elapsed().as_secs_f64(), tokens))
            })?;
            println!("{name:<34} {threads:>7} {params:>10} {:>12.3} {:>12.0}", secs / timed as f64, tokens as f64 / secs);
        }
    }
    Ok(())
}
