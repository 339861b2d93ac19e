//! Trains the small space's dense baseline subnet (embed 128, 3 + 3 layers, FFN 512) on the
//! built-in synthetic corpus and prints the validation loss next to the unigram baseline (the
//! loss of a model that ignores the source and the target history).
//!
//! ```sh
//! cargo run --release --example train_small -- [MAX_UPDATES [OUT_DIR [THREADS]]]
//! ```
//! Defaults: 400 updates of 2048 padded tokens, `$TMPDIR/automoe_train_small`, all cores. The run
//! directory is replaced on each run.

use std::path::PathBuf;

use automoe::model::ModelOptions;
use automoe::train::mt::data::{DataConfig, DataSource};
use automoe::train::mt::{self, Mode, RunSpec};
use automoe::train::{LrSchedule, TrainConfig};

fn main() -> automoe::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |i: usize, what: &str, default: u64| -> automoe::Result<u64> {
        args.get(i).map_or(Ok(default), |s| s.parse().map_err(|e| automoe::Error::invalid("train_small", format!("{what} `{s}`: {e}"))))
    };
    let max_updates = parse(0, "MAX_UPDATES", 400)?;
    let out = args.get(1).map_or_else(|| std::env::temp_dir().join("automoe_train_small"), PathBuf::from);
    let threads = parse(2, "THREADS", 0)? as usize;
    if out.join("checkpoint").exists() {
        std::fs::remove_dir_all(&out).map_err(|e| automoe::Error::io(&out, e))?;
    }
    let space = mt::small_space()?;
    let spec = RunSpec {
        mode: Mode::Subnet { config: space.dense() },
        options: ModelOptions { dropout: 0.1, attention_dropout: 0.1, ..ModelOptions::default() },
        data: DataConfig::new(DataSource::Synthetic { seed: 0, n_train: 20_000, n_valid: 1000 }),
        label_smoothing: 0.1,
        train: TrainConfig {
            max_updates,
            clip_norm: 1.0,
            schedule: LrSchedule::WarmupCosine { lr: 1e-3, warmup: max_updates / 10, total: max_updates, min_lr: 1e-5 },
            log_every: 50,
            valid_every: (max_updates / 4).max(1),
            checkpoint_every: 0,
            seed: 1,
            ..TrainConfig::default()
        },
        out,
        resume: false,
        tokenizer: None,
        verbose: true,
    };
    let pool =
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| automoe::Error::invalid("train_small", e.to_string()))?;
    let s = pool.install(|| mt::run(&spec))?;
    println!("unigram baseline (valid): {:.4} nats/token", s.unigram_nll);
    for (u, m) in &s.valid {
        println!("update {u:>5}: valid nll {:.4}, label-smoothed loss {:.4}", m["nll"], m["loss"]);
    }
    println!("{} updates, {:.0} s, {:.0} target tokens/s (validation included)", s.report.updates.len(), s.wall_s, s.tokens_per_s);
    Ok(())
}
