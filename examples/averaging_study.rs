//! Does weight averaging help at the demo's training budget? Trains the small space's dense
//! baseline and its largest MoE subnet on the demo's synthetic corpus with the demo's
//! `[final_train]` settings (500 updates, peak lr 0.002, warmup 50, cosine to 1 %), keeping a
//! snapshot every 25 updates over the last half, and scores test BLEU (beam 4, lenpen 0.6, the
//! demo's 200 test sentences) of the final weights and of the means of the last 2, 5 and 10
//! snapshots, for each of a few seeds.
//!
//! ```sh
//! cargo run --release --example averaging_study -- [SEEDS [OUT_DIR]]
//! ```
//! Defaults: 2 seeds, `$TMPDIR/automoe_averaging_study` (replaced on each run). Prints one
//! Markdown table row per system and seed; docs/RESULTS.md records a run.

use std::path::{Path, PathBuf};

use automoe::cli::translate::{load_model_dir, translate_lines, DecodeArgs};
use automoe::data::synthetic::synthetic_corpus;
use automoe::decode::bleu::corpus_bleu;
use automoe::model::{ModelOptions, SubnetConfig};
use automoe::train::average::snapshot_path;
use automoe::train::mt::data::{DataConfig, DataSource};
use automoe::train::mt::{self, Mode, RunSpec};
use automoe::train::{average_weight_files, LrSchedule, TrainConfig, WeightAveraging};
use automoe::{Error, Result};

const UPDATES: u64 = 500;
const EVERY: u64 = 25;
const SNAPSHOTS: usize = 10;
/// The averages scored, as numbers of final snapshots (1: the final weights).
const LAST: [usize; 4] = [1, 2, 5, 10];

fn write_split(dir: &Path, split: &str, pairs: &[(String, String)]) -> Result<()> {
    let join = |f: &dyn Fn(&(String, String)) -> &str| pairs.iter().map(|p| format!("{}\n", f(p))).collect::<String>();
    for (lang, text) in [("en", join(&|p| &p.0)), ("de", join(&|p| &p.1))] {
        let path = dir.join(format!("{split}.{lang}"));
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Trains `config` into `out` with snapshots; returns the test BLEU of each average in `LAST`.
fn train_and_score(config: &SubnetConfig, data_dir: &Path, out: &Path, seed: u64, test: &[(String, String)]) -> Result<Vec<f64>> {
    let spec = RunSpec {
        mode: Mode::Subnet { config: config.clone() },
        options: ModelOptions { dropout: 0.1, ..ModelOptions::default() },
        data: DataConfig {
            vocab_size: 1000,
            max_tokens: 2048,
            ..DataConfig::new(DataSource::Files { dir: data_dir.to_path_buf(), src: "en".into(), tgt: "de".into() })
        },
        label_smoothing: 0.1,
        train: TrainConfig {
            max_updates: UPDATES,
            clip_norm: 1.0,
            schedule: LrSchedule::WarmupCosine { lr: 0.002, warmup: 50, total: UPDATES, min_lr: 2e-5 },
            log_every: 100,
            checkpoint_every: 125,
            averaging: Some(WeightAveraging { snapshots: SNAPSHOTS, every: EVERY }),
            seed,
            quiet: true,
            ..TrainConfig::default()
        },
        out: out.to_path_buf(),
        resume: false,
        tokenizer: None,
        verbose: false,
    };
    let summary = mt::run(&spec)?;
    let (mut model, tok) = load_model_dir(summary.model_dir.as_deref().unwrap_or(out))?;
    let (src, refs): (Vec<String>, Vec<String>) = test.iter().cloned().unzip();
    let decode = DecodeArgs::default();
    let points = WeightAveraging { snapshots: SNAPSHOTS, every: EVERY }.points(UPDATES);
    let mut scores = Vec::new();
    for last in LAST {
        let files: Vec<PathBuf> = points[points.len() - last..].iter().map(|&u| snapshot_path(&mt::snapshot_dir(out), u)).collect();
        average_weight_files(&files, &mut model.store)?;
        let hyps = translate_lines(&model.view()?, &tok, &src, &decode)?;
        scores.push(corpus_bleu(&hyps, &refs)?.score);
    }
    Ok(scores)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = match args.first() {
        Some(s) => s.parse().map_err(|e| Error::invalid("averaging_study", format!("SEEDS `{s}`: {e}")))?,
        None => 2,
    };
    let out = args.get(1).map_or_else(|| std::env::temp_dir().join("automoe_averaging_study"), PathBuf::from);
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    }
    let data_dir = out.join("data");
    std::fs::create_dir_all(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
    // The demo's corpus: 12k training pairs, 300 validation, 200 test, from the pipeline's seed 1.
    let corpus = synthetic_corpus(1, 12_000, 300, 200)?;
    write_split(&data_dir, "train", &corpus.train)?;
    write_split(&data_dir, "val", &corpus.valid)?;
    let test = corpus.test;

    let space = mt::small_space()?;
    println!("| system | seed | {} |", LAST.map(|n| if n == 1 { "final".to_string() } else { format!("last {n}") }).join(" | "));
    println!("| --- | ---: |{}", " ---: |".repeat(LAST.len()));
    for (name, config) in [("dense_large", space.dense()), ("switch", space.largest())] {
        for seed in 1..=seeds {
            let bleu = train_and_score(&config, &data_dir, &out.join(format!("{name}_{seed}")), seed, &test)?;
            println!("| {name} | {seed} | {} |", bleu.iter().map(|b| format!("{b:.2}")).collect::<Vec<_>>().join(" | "));
        }
    }
    Ok(())
}
