//! Machine-translation training on top of the model-agnostic [`Trainer`]: the two modes of
//! AutoMoE, their loss closures and validation, and the run directory the CLI writes.
//!
//! * **supernet**: the weight-sharing supernet of a search space; every optimizer update trains one
//!   subnet drawn uniformly from the space, seeded by (run seed, update number), so every
//!   micro-batch of an update and a resumed run draw the same subnet. Validation runs the largest
//!   and the smallest subnet (they bracket the space).
//! * **subnet**: a fixed [`SubnetConfig`] trained from scratch as a standalone model whose tensors
//!   have exactly the subnet's sizes; exported with [`SubnetModel::save`].
//!
//! Loss: label-smoothed cross-entropy over the non-pad targets (mean per token), plus the MoE
//! balance loss times `ModelOptions::balance_coef` when that is above 0. The coefficient weighs the
//! balance loss against the per-token mean, not the summed loss the reference adds it to.
//!
//! A run directory holds `tokenizer.json`, `checkpoint/` (see `checkpoint.rs`), `train.jsonl` and,
//! for a subnet, `model/` (the exported model plus a copy of `tokenizer.json`) and, with weight
//! averaging, `snapshots/` (the averaged points' weights; `model/` holds their mean). The checkpoint's
//! `model_config` is a [`RunDescription`]: resuming compares it with the new run's and refuses
//! anything that would change the model or the batches.

pub mod data;

use std::path::{Path, PathBuf};
use std::time::Instant;

use self::data::{model_batch, tokenizer_path, DataConfig, MtData};
use super::checkpoint::{load_weights, read_checkpoint_meta, resolve_checkpoint_dir, CheckpointMeta, WEIGHTS_FILE};
use super::trainer::{Metrics, TrainConfig, TrainReport, Trainer, UpdateCtx};
use crate::autograd::{LossStats, ParamStore, Tape, Var};
use crate::data::{Batch, Tokenizer, PAD_ID};
use crate::model::transformer::forward;
use crate::model::{ModelOptions, NetParams, PassRouting, RunMode, SearchSpace, SubnetConfig, SubnetModel, Supernet};
use crate::rng::{hash64, seeded};
use crate::{DType, Error, Result};

/// The small search space (`configs/space_small.toml`), built into the crate so that the CLI works
/// from any directory.
pub const SMALL_SPACE_TOML: &str = include_str!("../../../configs/space_small.toml");

/// The built-in small space.
pub fn small_space() -> Result<SearchSpace> {
    SearchSpace::from_toml_str(SMALL_SPACE_TOML)
}

// Keeps subnet sampling independent of the trainer's per-update seeds (dropout).
const SAMPLE_DOMAIN: u64 = 0x7375_626E_6574_0003;

/// What is trained.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    Supernet { space: SearchSpace },
    Subnet { config: SubnetConfig },
}

/// Everything that fixes the model and the batches; stored as the checkpoint's `model_config`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunDescription {
    #[serde(flatten)]
    pub mode: Mode,
    pub options: ModelOptions,
    pub vocab: usize,
    pub label_smoothing: f64,
    pub data: DataConfig,
}

/// A training run: the model, the data, the trainer settings and the run directory.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub mode: Mode,
    pub options: ModelOptions,
    pub data: DataConfig,
    pub label_smoothing: f64,
    /// Trainer settings; `checkpoint_dir` and `log_path` are set from `out`.
    pub train: TrainConfig,
    pub out: PathBuf,
    /// Continue `out/checkpoint` (it must exist); without it, an existing checkpoint is an error.
    pub resume: bool,
    /// Use this tokenizer instead of training one (e.g. the supernet's, for the final subnet).
    pub tokenizer: Option<PathBuf>,
    /// Print the data and model summary (the progress bar is `train.quiet`).
    pub verbose: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub unigram_nll: f64,
    /// Validation metrics of this session, by update (the last one is after the final update).
    pub valid: Vec<(u64, Metrics)>,
    pub report: TrainReport,
    /// Updates done before this session (resumed runs).
    pub start_update: u64,
    /// Target tokens per second over this session's wall time (validation included).
    pub tokens_per_s: f64,
    pub wall_s: f64,
    pub checkpoint: PathBuf,
    /// The exported standalone model (subnet mode).
    pub model_dir: Option<PathBuf>,
    /// The updates whose weights the exported model averages (empty: the final weights).
    pub averaged_updates: Vec<u64>,
    /// Scalars trained (the whole supernet, or the subnet).
    pub params: usize,
}

pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}
pub fn log_path(out: &Path) -> PathBuf {
    out.join("train.jsonl")
}
pub fn model_dir(out: &Path) -> PathBuf {
    out.join("model")
}
/// Where weight averaging's snapshots go (`--average`).
pub fn snapshot_dir(out: &Path) -> PathBuf {
    out.join("snapshots")
}

/// The parameters being trained, with the structure the forward pass needs.
pub struct Net {
    pub params: NetParams,
    pub store: ParamStore,
}

/// A fresh model for a run description (also the skeleton a checkpoint is loaded into).
pub fn build_net(desc: &RunDescription, seed: u64) -> Result<Net> {
    match &desc.mode {
        Mode::Supernet { space } => {
            let s = Supernet::new(space.clone(), desc.vocab, desc.options.clone(), seed, DType::F32)?;
            Ok(Net { params: s.params, store: s.store })
        }
        Mode::Subnet { config } => {
            // Initialised as the only member of its own space, then cut to exact sizes.
            let s = Supernet::new(SearchSpace::of_subnet(config)?, desc.vocab, desc.options.clone(), seed, DType::F32)?;
            let m = s.extract(config)?;
            Ok(Net { params: m.params, store: m.store })
        }
    }
}

/// Label-smoothed cross-entropy (pad ignored) of `cfg` on one batch, plus the balance loss when
/// training: the loss closure of both modes (they differ only in which `cfg` an update uses).
pub fn batch_loss(
    tape: &mut Tape,
    store: &ParamStore,
    params: &NetParams,
    desc: &RunDescription,
    cfg: &SubnetConfig,
    batch: &Batch,
    run: RunMode,
) -> Result<(Var, LossStats)> {
    let out = forward(tape, store, params, &desc.options, cfg, &model_batch(batch)?, run)?;
    let (ce, stats) = tape.cross_entropy(&out.logits, &batch.tgt_out, desc.label_smoothing, Some(PAD_ID))?;
    let loss = match &out.balance_loss {
        Some(b) if run.train => tape.add(&ce, b)?,
        _ => ce,
    };
    Ok((loss, stats))
}

/// Token-weighted validation loss and NLL of `cfg` (inference mode: no dropout, nothing recorded),
/// and the routing of its FFN layers summed over `batches`.
pub fn validate(
    store: &ParamStore,
    params: &NetParams,
    options: &ModelOptions,
    label_smoothing: f64,
    cfg: &SubnetConfig,
    batches: &[Batch],
) -> Result<(LossStats, PassRouting)> {
    let (mut loss, mut nll, mut count) = (0.0, 0.0, 0usize);
    let mut routing = PassRouting::default();
    for b in batches {
        let mut tape = Tape::inference();
        let out = forward(&mut tape, store, params, options, cfg, &model_batch(b)?, RunMode::inference())?;
        let (_, s) = tape.cross_entropy(&out.logits, &b.tgt_out, label_smoothing, Some(PAD_ID))?;
        loss += s.loss * s.count as f64;
        nll += s.nll * s.count as f64;
        count += s.count;
        routing.merge(&out.routing)?;
    }
    let n = count.max(1) as f64;
    Ok((LossStats { loss: loss / n, nll: nll / n, count }, routing))
}

/// The subnet trained at `update` of a supernet run with `seed` (uniform over the space).
pub fn sampled_subnet(space: &SearchSpace, seed: u64, update: u64) -> Result<SubnetConfig> {
    space.sample(&mut seeded(hash64(seed ^ SAMPLE_DOMAIN, update)))
}

/// The subnets validated: `largest` and `smallest` for a supernet, the subnet itself otherwise.
fn valid_subnets(mode: &Mode) -> Vec<(String, SubnetConfig)> {
    match mode {
        Mode::Supernet { space } => vec![("largest".into(), space.largest()), ("smallest".into(), space.smallest())],
        Mode::Subnet { config } => vec![(String::new(), config.clone())],
    }
}

fn valid_metrics(net_params: &NetParams, store: &ParamStore, desc: &RunDescription, batches: &[Batch]) -> Result<Metrics> {
    let mut m = Metrics::new();
    for (name, cfg) in valid_subnets(&desc.mode) {
        let (s, routing) = validate(store, net_params, &desc.options, desc.label_smoothing, &cfg, batches)?;
        let key = |k: &str| if name.is_empty() { k.to_string() } else { format!("{name}.{k}") };
        m.insert(key("loss"), s.loss);
        m.insert(key("nll"), s.nll);
        if let Some(share) = routing.mean_max_share() {
            m.insert(key("max_expert_share"), share);
        }
    }
    Ok(m)
}

/// Names the first top-level field where two run descriptions differ.
fn describe_difference(old: &serde_json::Value, new: &serde_json::Value) -> String {
    match (old.as_object(), new.as_object()) {
        (Some(a), Some(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .find(|k| a.get(*k) != b.get(*k))
                .map(|k| format!("`{k}` differs: checkpoint {}, this run {}", short(a.get(k)), short(b.get(k))))
                .unwrap_or_else(|| "the descriptions differ".into())
        }
        _ => "the checkpoint's model_config is not a run description".into(),
    }
}

fn short(v: Option<&serde_json::Value>) -> String {
    let s = v.map_or_else(|| "(absent)".to_string(), |v| v.to_string());
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

fn say(verbose: bool, msg: impl AsRef<str>) {
    if verbose {
        eprintln!("{}", msg.as_ref());
    }
}

/// The tokenizer of a run: the run directory's own when resuming, else `--tokenizer`, else trained.
fn pick_tokenizer(spec: &RunSpec) -> Result<Option<Tokenizer>> {
    let own = tokenizer_path(&spec.out);
    if spec.resume {
        let tok = Tokenizer::load(&own)?;
        // A --tokenizer given with --resume must be the one the run was started with.
        if let Some(given) = &spec.tokenizer {
            if Tokenizer::load(given)?.hash()? != tok.hash()? {
                return Err(Error::invalid(
                    "train --resume",
                    format!("--tokenizer {} is not the tokenizer the run was started with ({})", given.display(), own.display()),
                ));
            }
        }
        return Ok(Some(tok));
    }
    spec.tokenizer.as_ref().map(Tokenizer::load).transpose()
}

/// Runs training as `spec` describes; see the module documentation for the run directory.
pub fn run(spec: &RunSpec) -> Result<RunSummary> {
    let out = &spec.out;
    let ck = checkpoint_dir(out);
    if !spec.resume && resolve_checkpoint_dir(&ck).exists() {
        return Err(Error::invalid(
            "train",
            format!("{} already holds a checkpoint; pass --resume to continue it or choose another --out", out.display()),
        ));
    }
    if spec.resume && !resolve_checkpoint_dir(&ck).exists() {
        return Err(Error::invalid("train --resume", format!("there is no checkpoint to resume in {}", ck.display())));
    }
    if spec.train.averaging.is_some() && matches!(spec.mode, Mode::Supernet { .. }) {
        return Err(Error::invalid(
            "train-supernet",
            "weight averaging applies to a trained subnet (the search reads the supernet's checkpoint as it is)",
        ));
    }
    crate::fsio::create_output_dir(out)?;

    let t_data = Instant::now();
    let data: MtData = data::prepare(&spec.data, pick_tokenizer(spec)?, spec.train.seed)?;
    if !spec.resume {
        data.tokenizer.save(tokenizer_path(out))?;
    }
    say(spec.verbose, format!("data: train {} ({} batches, {} target tokens)", data.train_report, data.train.len(), data.train_tokens));
    say(spec.verbose, format!("data: valid {} ({} target tokens)", data.valid_report, data.valid_tokens));
    say(
        spec.verbose,
        format!(
            "tokenizer: {} entries, hash {} ({:.1} s for data preparation)",
            data.tokenizer.vocab_size(),
            data.tokenizer_hash,
            t_data.elapsed().as_secs_f64()
        ),
    );

    let desc = RunDescription {
        mode: spec.mode.clone(),
        options: spec.options.clone(),
        vocab: data.tokenizer.vocab_size(),
        label_smoothing: spec.label_smoothing,
        data: spec.data.clone(),
    };
    let desc_json = serde_json::to_value(&desc).map_err(|e| Error::invalid("train", e.to_string()))?;
    let train_cfg = TrainConfig {
        checkpoint_dir: Some(ck.clone()),
        log_path: Some(log_path(out)),
        snapshot_dir: spec.train.averaging.map(|_| snapshot_dir(out)),
        ..spec.train.clone()
    };
    let net = build_net(&desc, spec.train.seed)?;
    let params_count = net.store.numel();
    let mut trainer = if spec.resume {
        let meta = read_checkpoint_meta(&ck)?;
        if meta.update > spec.train.max_updates {
            return Err(Error::invalid(
                "train --resume",
                format!(
                    "the checkpoint {} is at update {}, past --max-updates {}: give --max-updates {} or more to continue it",
                    ck.display(),
                    meta.update,
                    spec.train.max_updates,
                    meta.update
                ),
            ));
        }
        if meta.model_config != desc_json {
            return Err(Error::invalid(
                "train --resume",
                format!(
                    "{} was trained with another model or data setup: {}",
                    ck.display(),
                    describe_difference(&meta.model_config, &desc_json)
                ),
            ));
        }
        Trainer::resume(train_cfg, net.store, &ck)?
    } else {
        Trainer::new(train_cfg, net.store)?
    }
    .with_model_info(desc_json, Some(data.tokenizer_hash.clone()))?;
    let start_update = trainer.update();
    say(spec.verbose, format!("model: {} parameters, unigram baseline {:.4} nats/token on valid", params_count, data.unigram_nll));
    if start_update > 0 {
        say(spec.verbose, format!("resuming {} at update {start_update}", ck.display()));
    }
    if let Some(w) = trainer.schedule_change() {
        eprintln!("warning: {w}");
    }

    let params = net.params;
    let t0 = Instant::now();
    let mut report = {
        let (desc, params, valid) = (&desc, &params, &data.valid);
        let seed = spec.train.seed;
        let loss_fn = |tape: &mut Tape, store: &ParamStore, batch: &Batch, ctx: UpdateCtx| {
            let cfg = match &desc.mode {
                Mode::Supernet { space } => sampled_subnet(space, seed, ctx.update)?,
                Mode::Subnet { config } => config.clone(),
            };
            batch_loss(tape, store, params, desc, &cfg, batch, RunMode::train(ctx.seed))
        };
        let valid_fn = |store: &ParamStore, _update: u64| valid_metrics(params, store, desc, valid);
        trainer.train_with_validation(&data.train, loss_fn, valid_fn)?
    };
    // Always end with a validation of the final weights (unless the schedule just did one; a rerun
    // of a finished run validates again for its summary but logs nothing new).
    let last = trainer.update();
    if report.valid.last().is_none_or(|(u, _)| *u != last) {
        let m = valid_metrics(&params, trainer.store(), &desc, &data.valid)?;
        super::log::append_valid_once(&log_path(out), last, &m, trainer.checkpoint_meta().elapsed_s)?;
        report.valid.push((last, m));
    }
    // The averaged weights are validated too (as `averaged.loss`, ...), beside the final ones.
    let averaged = trainer.averaged_store()?;
    let averaged_updates = match &averaged {
        Some(store) => {
            let m: Metrics =
                valid_metrics(&params, store, &desc, &data.valid)?.into_iter().map(|(k, v)| (format!("averaged.{k}"), v)).collect();
            super::log::append_valid_once(&log_path(out), last, &m, trainer.checkpoint_meta().elapsed_s)?;
            if let Some((_, metrics)) = report.valid.last_mut() {
                metrics.extend(m);
            }
            spec.train.averaging.map(|a| a.points(spec.train.max_updates)).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let wall_s = t0.elapsed().as_secs_f64();
    let tokens: usize = report.updates.iter().map(|r| r.tokens).sum();

    let model_dir = match &desc.mode {
        Mode::Subnet { config } => {
            let model = SubnetModel {
                config: config.clone(),
                options: desc.options.clone(),
                vocab: desc.vocab,
                store: averaged.unwrap_or_else(|| trainer.into_store()),
                params,
            };
            let dir = model_dir(out);
            model.save(&dir)?;
            data.tokenizer.save(tokenizer_path(&dir))?;
            Some(dir)
        }
        Mode::Supernet { .. } => None,
    };
    Ok(RunSummary {
        unigram_nll: data.unigram_nll,
        valid: report.valid.clone(),
        start_update,
        tokens_per_s: if wall_s > 0.0 { tokens as f64 / wall_s } else { 0.0 },
        wall_s,
        checkpoint: ck,
        model_dir,
        averaged_updates,
        params: params_count,
        report,
    })
}

/// Loads the supernet of a `train-supernet` run directory (or its `checkpoint/`), with the
/// checkpoint's metadata: what the search starts from.
pub fn load_supernet(dir: &Path) -> Result<(Supernet, CheckpointMeta)> {
    let ck = if dir.join(super::checkpoint::META_FILE).exists() { dir.to_path_buf() } else { checkpoint_dir(dir) };
    let ck = resolve_checkpoint_dir(&ck);
    let meta = read_checkpoint_meta(&ck)?;
    let meta_path = ck.join(super::checkpoint::META_FILE);
    let desc: RunDescription = serde_json::from_value(meta.model_config.clone())
        .map_err(|e| Error::Format { path: meta_path.clone(), msg: format!("model_config is not an automoe translation run: {e}") })?;
    crate::model::check_vocab(desc.vocab, "model_config.vocab").map_err(|e| Error::Format { path: meta_path, msg: e.to_string() })?;
    let Mode::Supernet { space } = desc.mode else {
        return Err(Error::Format { path: ck.clone(), msg: "this checkpoint holds a subnet, not a supernet".into() });
    };
    let mut s = Supernet::new(space, desc.vocab, desc.options, 0, DType::F32)?;
    load_weights(&ck.join(WEIGHTS_FILE), &mut s.store)?;
    Ok((s, meta))
}
