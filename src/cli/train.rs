//! `automoe train`: a fixed subnet trained from scratch, exported as a standalone model. The
//! options shared with `automoe train-supernet` ([`CommonArgs`]) live here too.

use std::path::PathBuf;

use clap::{ArgGroup, ValueEnum};

use crate::data::BpeConfig;
use crate::model::{FfnActivation, ModelOptions, SearchSpace, SubnetConfig};
use crate::train::mt::data::{DataConfig, DataSource};
use crate::train::mt::{self, Mode, RunSpec, RunSummary};
use crate::train::{AdamConfig, LrSchedule, TrainConfig, WeightAveraging};
use crate::{Error, Result};

/// clap parser for `--device` (`cpu`, `cuda`, `cuda:N`, `emu`).
pub fn parse_device(s: &str) -> std::result::Result<crate::Device, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Schedule {
    /// Linear warmup, then a cosine decay to `--min-lr` at `--max-updates` (AutoMoE's recipe).
    Cosine,
    /// Linear warmup, then `lr * sqrt(warmup / update)` (fairseq's inverse_sqrt).
    InverseSqrt,
}

/// Options shared by `train` and `train-supernet`.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Corpus directory with train.SRC, train.TGT, val.SRC, val.TGT (gzip if named .gz). Without
    /// it, the built-in synthetic corpus is used.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "en")]
    pub src: String,
    #[arg(long, default_value = "de")]
    pub tgt: String,
    /// Run directory: tokenizer.json, checkpoint/, train.jsonl (and model/ for `train`).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Search space (TOML); default: the built-in small space (configs/space_small.toml).
    #[arg(long, value_name = "FILE")]
    pub space: Option<PathBuf>,
    /// Use this tokenizer.json instead of training a BPE on the training data.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// BPE vocabulary size when training the tokenizer (default: 2000 synthetic, 8000 files).
    #[arg(long, conflicts_with = "tokenizer")]
    pub vocab_size: Option<usize>,
    /// Training pairs of the synthetic corpus.
    #[arg(long, default_value_t = 20_000)]
    pub synthetic_pairs: usize,
    /// Validation pairs of the synthetic corpus.
    #[arg(long, default_value_t = 1000)]
    pub synthetic_valid: usize,
    /// Optimizer updates in total (a resumed run counts the updates before it).
    #[arg(long, default_value_t = 2000)]
    pub max_updates: u64,
    /// Padded tokens per micro-batch.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Micro-batches per update (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    pub accumulate: usize,
    /// Where to train: `cpu`, `cuda` / `cuda:N` (a GPU), or `emu` (the CUDA kernels on the CPU
    /// emulator: slow, for checking the CUDA path without a GPU).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: crate::Device,
    /// Mixed precision on a CUDA device: bf16 activations and parameter copies, f32 master
    /// weights, f32 optimizer state and accumulation.
    #[arg(long)]
    pub mixed_precision: bool,
    /// Training pairs with a side longer than this many tokens are dropped.
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Warmup updates.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    #[arg(long, value_enum, default_value_t = Schedule::Cosine)]
    pub schedule: Schedule,
    /// Final learning rate of the cosine schedule.
    #[arg(long, default_value_t = 1e-5)]
    pub min_lr: f64,
    /// Global gradient-norm clipping (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    /// Residual/embedding dropout at the largest width (scaled by width for narrower subnets).
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    #[arg(long, default_value_t = 0.1)]
    pub attention_dropout: f64,
    /// Label smoothing of the cross-entropy.
    #[arg(long, default_value_t = 0.1)]
    pub label_smoothing: f64,
    /// Weight of the MoE load-balancing loss (0: off), added to the per-token mean loss. The
    /// reference adds it to the summed loss before dividing by the token count, so its 0.01 is
    /// about 0.01 / tokens-per-batch here.
    #[arg(long, default_value_t = 0.0)]
    pub balance_coef: f64,
    /// Pre-LayerNorm instead of post-LayerNorm.
    #[arg(long)]
    pub pre_norm: bool,
    /// Seed of initialisation, batching, dropout and subnet sampling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Continue the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 100)]
    pub log_every: u64,
    /// Validate every this many updates (0: only at the end).
    #[arg(long, default_value_t = 500)]
    pub valid_every: u64,
    /// Save a checkpoint every this many updates (0: only at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// No progress bar and no summary lines.
    #[arg(long)]
    pub quiet: bool,
}

impl CommonArgs {
    /// The search space: `--space` or the built-in small one.
    pub fn space(&self) -> Result<SearchSpace> {
        match &self.space {
            Some(p) => SearchSpace::from_toml_file(p),
            None => mt::small_space(),
        }
    }

    /// The run `mode` trains with these options.
    pub fn spec(&self, mode: Mode) -> Result<RunSpec> {
        // Zeros the run would reject only after reading the corpus and training the tokenizer,
        // and then in the trainer's terms rather than the flag's.
        for (flag, value) in [
            ("--max-updates", self.max_updates as usize),
            ("--max-tokens", self.max_tokens),
            ("--max-len", self.max_len),
            ("--accumulate", self.accumulate),
        ] {
            if value == 0 {
                return Err(Error::invalid(flag, "must be at least 1"));
            }
        }
        // The built-in corpus's sizes: without --data, before the run directory is made.
        if self.data.is_none() {
            for (flag, value) in [("--synthetic-pairs", self.synthetic_pairs), ("--synthetic-valid", self.synthetic_valid)] {
                if value == 0 {
                    return Err(Error::invalid(flag, "must be at least 1 (the built-in corpus would be empty)"));
                }
            }
        }
        let source = match &self.data {
            // Absolute, so that a resume from another working directory describes the same data.
            Some(dir) => DataSource::Files {
                dir: std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?,
                src: self.src.clone(),
                tgt: self.tgt.clone(),
            },
            None => DataSource::Synthetic { seed: 0, n_train: self.synthetic_pairs, n_valid: self.synthetic_valid },
        };
        let mut data = DataConfig { max_len: self.max_len, max_tokens: self.max_tokens, ..DataConfig::new(source) };
        if let Some(v) = self.vocab_size {
            data.vocab_size = v;
        }
        if data.vocab_size > BpeConfig::default().vocab_size * 8 {
            return Err(Error::invalid("--vocab-size", format!("{} is unreasonably large for this trainer", data.vocab_size)));
        }
        // The rate itself first, so that a bad --lr is not reported as a bad --min-lr.
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid("--lr", format!("{} must be a positive, finite learning rate", self.lr)));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0) {
            return Err(Error::invalid("--min-lr", format!("{} must be a finite learning rate >= 0", self.min_lr)));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm >= 0.0) {
            return Err(Error::invalid("--clip-norm", format!("{} must be a finite norm >= 0 (0 turns clipping off)", self.clip_norm)));
        }
        if self.schedule == Schedule::Cosine && self.min_lr > self.lr {
            return Err(Error::invalid("--min-lr", format!("{} is above --lr {}: the cosine would raise the rate", self.min_lr, self.lr)));
        }
        let schedule = match self.schedule {
            Schedule::Cosine => LrSchedule::WarmupCosine { lr: self.lr, warmup: self.warmup, total: self.max_updates, min_lr: self.min_lr },
            Schedule::InverseSqrt => LrSchedule::InverseSqrt { lr: self.lr, warmup: self.warmup, init_lr: 0.0 },
        };
        schedule.check()?;
        if let Some(w) = schedule.warning(self.max_updates) {
            if !self.quiet {
                eprintln!("warning: {w} (--warmup {} with --max-updates {})", self.warmup, self.max_updates);
            }
        }
        let options = ModelOptions {
            pre_norm: self.pre_norm,
            dropout: self.dropout,
            attention_dropout: self.attention_dropout,
            activation: FfnActivation::Relu,
            renormalize_gates: false,
            capacity_factor: None,
            balance_coef: self.balance_coef,
        };
        options.check()?;
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::invalid("--label-smoothing", format!("{} is not in [0, 1)", self.label_smoothing)));
        }
        let train = TrainConfig {
            max_updates: self.max_updates,
            accumulate: self.accumulate,
            clip_norm: self.clip_norm,
            schedule,
            adam: AdamConfig::default(),
            log_every: self.log_every,
            valid_every: self.valid_every,
            checkpoint_every: self.checkpoint_every,
            checkpoint_dir: None,
            averaging: None,
            snapshot_dir: None,
            log_path: None,
            seed: self.seed,
            quiet: self.quiet,
            device: self.device,
            mixed_precision: self.mixed_precision,
        };
        // Here, before the run directory is made or the corpus read (the trainer checks again).
        train.check()?;
        Ok(RunSpec {
            mode,
            options,
            data,
            label_smoothing: self.label_smoothing,
            train,
            out: self.out.clone(),
            resume: self.resume,
            tokenizer: self.tokenizer.clone(),
            verbose: !self.quiet,
        })
    }

    /// Runs `spec` on a pool of `--threads` threads (a local pool, so library callers keep theirs).
    pub fn execute(&self, spec: &RunSpec) -> Result<RunSummary> {
        crate::device::cpu_pool(self.threads.unwrap_or(0), "--threads")?.install(|| mt::run(spec))
    }
}

/// Arguments of `automoe train`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(ArgGroup::new("which").required(true).args(["subnet_config", "largest", "smallest", "dense"])))]
pub struct Args {
    /// The subnet to train (JSON, as `SubnetConfig::to_json` writes it).
    #[arg(long, value_name = "FILE.json")]
    pub subnet_config: Option<PathBuf>,
    /// The space's largest subnet (every expert, widest everything).
    #[arg(long)]
    pub largest: bool,
    /// The space's smallest subnet.
    #[arg(long)]
    pub smallest: bool,
    /// The space's dense baseline: the largest subnet with one expert (a dense FFN) per layer.
    #[arg(long)]
    pub dense: bool,
    /// Export the mean of the weights at this many points at the end of training (fairseq's
    /// checkpoint averaging; 0: the final weights). The points' weights go to `snapshots/`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub average: usize,
    /// Updates between the averaged points (default: spread over the last quarter of training).
    #[arg(long, value_name = "UPDATES", requires = "average")]
    pub average_every: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl Args {
    /// The subnet the arguments select.
    /// The run the arguments describe: the selected subnet, with the weight averaging asked for.
    pub fn spec(&self) -> Result<RunSpec> {
        if self.average == 0 && self.average_every.is_some() {
            return Err(Error::invalid("--average-every", "needs --average N with N >= 1 (with --average 0 nothing is averaged)"));
        }
        let mut spec = self.common.spec(Mode::Subnet { config: self.subnet()? })?;
        spec.train.averaging = self.averaging();
        if let Some(a) = &spec.train.averaging {
            a.check(spec.train.max_updates).map_err(|e| Error::invalid("--average", e.to_string()))?;
        }
        Ok(spec)
    }

    /// The weight averaging `--average` and `--average-every` ask for.
    pub fn averaging(&self) -> Option<WeightAveraging> {
        WeightAveraging::from_settings(self.average, self.average_every, self.common.max_updates)
    }

    pub fn subnet(&self) -> Result<SubnetConfig> {
        if let Some(path) = &self.subnet_config {
            let cfg = SubnetConfig::from_json_file(path)?;
            // A config from a search must belong to the space it was searched in, when one is given.
            if self.common.space.is_some() {
                self.common.space()?.validate(&cfg).map_err(|e| Error::Format { path: path.clone(), msg: e.to_string() })?;
            }
            return Ok(cfg);
        }
        let space = self.common.space()?;
        Ok(if self.largest {
            space.largest()
        } else if self.smallest {
            space.smallest()
        } else {
            space.dense()
        })
    }
}

/// Prints the outcome of a run (validation curve tail, throughput, where things are).
pub fn print_summary(s: &RunSummary, quiet: bool) {
    if quiet {
        return;
    }
    println!("unigram baseline: {:.4} nats/token", s.unigram_nll);
    if let Some((u, m)) = s.valid.last() {
        let metrics = m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ");
        println!("valid at update {u}: {metrics}");
    }
    println!(
        "{} updates in {:.0} s ({:.0} target tokens/s including validation), {} parameters",
        s.report.updates.len(),
        s.wall_s,
        s.tokens_per_s,
        s.params
    );
    println!("checkpoint: {}", s.checkpoint.display());
    if let Some(d) = &s.model_dir {
        match (s.averaged_updates.first(), s.averaged_updates.last()) {
            (Some(a), Some(b)) => {
                println!("model: {} (mean of the weights at {} updates, {a} to {b})", d.display(), s.averaged_updates.len())
            }
            _ => println!("model: {}", d.display()),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let spec = args.spec()?;
    let summary = args.common.execute(&spec)?;
    print_summary(&summary, args.common.quiet);
    Ok(())
}
