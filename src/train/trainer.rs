//! The training loop, generic over the model: the caller's loss closure records the forward pass
//! on a [`Tape`] from the [`ParamStore`] and a [`Batch`]; the trainer never names a model type.
//!
//! One update: zero the gradients; for each of `accumulate` micro-batches, run the closure on a fresh
//! tape, weight its loss by the micro-batch's share of the update's target tokens
//! ([`Batch::n_tokens`]), backpropagate and add the gradients into the store; clip the global norm;
//! take an Adam step with the scheduled learning rate. With a per-token-mean loss (the usual
//! cross-entropy) the update's gradient is therefore that of one mean over all its tokens, whatever
//! way they were split into micro-batches. The weights are known before any forward pass, so no
//! micro-batch's graph has to be kept until the others ran.
//!
//! A non-finite loss or gradient stops training with [`Error::TrainingDiverged`] naming the update
//! (and the last checkpoint, which is untouched): nothing of that update reaches the weights.
//!
//! Randomness carries no stream state: batch order in epoch `e` is a shuffle seeded by
//! `hash64(seed, e)`, and the seed the closure gets ([`UpdateCtx::seed`]) is a hash of
//! (seed, update, micro-batch). A checkpoint's (epoch, position, update) therefore resumes the run
//! exactly, bit for bit on the CPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;

use super::average::{average_weight_files, snapshot_path, WeightAveraging};
use super::checkpoint::{load_checkpoint, save_checkpoint, save_weights, CheckpointMeta};
use super::log::{drop_lines_after, TrainLog, Window};
use super::optim::{clip_grad_norm, Adam, AdamConfig};
use super::schedule::LrSchedule;
use crate::autograd::{LossStats, ParamStore, Tape, Var};
use crate::data::Batch;
use crate::rng::{hash64, seeded};
use crate::{Error, Result};

/// Named validation metrics (e.g. `"loss"`, `"bleu"`).
pub type Metrics = BTreeMap<String, f64>;

// Domain separators so that the order stream and the per-update seeds never coincide.
const ORDER_DOMAIN: u64 = 0x6F72_6465_7200_0001;
const UPDATE_DOMAIN: u64 = 0x7570_6461_7465_0002;

/// What the loss closure is told about the micro-batch it computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateCtx {
    /// The update being computed, counted from 1 (the schedule's step).
    pub update: u64,
    /// Index of the micro-batch within the update, `0..accumulate`.
    pub micro: usize,
    /// A seed for this (update, micro-batch), derived from the run's seed: use it for dropout masks
    /// and subnet sampling so that a resumed run draws the same.
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Training stops when this many updates are done (counting those before a resume).
    pub max_updates: u64,
    /// Micro-batches per update (gradient accumulation), at least 1.
    pub accumulate: usize,
    /// Global gradient-norm clipping threshold; `<= 0` disables clipping (the norm is still
    /// computed, for the log and the non-finite check).
    pub clip_norm: f64,
    pub schedule: LrSchedule,
    pub adam: AdamConfig,
    /// Write a log line every this many updates (0: only after the last update).
    pub log_every: u64,
    /// Run the validation closure every this many updates (0: never).
    pub valid_every: u64,
    /// Save a checkpoint every this many updates (0: only at the end); needs `checkpoint_dir`.
    pub checkpoint_every: u64,
    /// The checkpoint directory, replaced atomically at each save.
    pub checkpoint_dir: Option<PathBuf>,
    /// Weight averaging (see [`super::average`]): the weights are written to `snapshot_dir` at
    /// each of the schedule's points, and [`Trainer::averaged_store`] averages them.
    #[serde(default)]
    pub averaging: Option<WeightAveraging>,
    /// Where the averaging snapshots are written (the trainer needs one with `averaging`).
    #[serde(default)]
    pub snapshot_dir: Option<PathBuf>,
    /// The JSONL log file (appended to).
    pub log_path: Option<PathBuf>,
    pub seed: u64,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    pub quiet: bool,
    /// Where the parameters, optimizer state and every op of the step live.
    #[serde(default)]
    pub device: crate::Device,
    /// bf16 activations and parameter copies over f32 master weights and f32 optimizer state
    /// (CUDA backends only).
    #[serde(default)]
    pub mixed_precision: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            max_updates: 1000,
            accumulate: 1,
            clip_norm: 0.0,
            schedule: LrSchedule::Constant { lr: 5e-4 },
            adam: AdamConfig::default(),
            log_every: 100,
            valid_every: 0,
            checkpoint_every: 0,
            checkpoint_dir: None,
            averaging: None,
            snapshot_dir: None,
            log_path: None,
            seed: 0,
            quiet: false,
            device: crate::Device::Cpu,
            mixed_precision: false,
        }
    }
}

/// The outcome of one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateRecord {
    pub update: u64,
    /// The epoch the update's last micro-batch came from.
    pub epoch: u64,
    /// Token-weighted mean of the micro-batches' [`LossStats::loss`] and [`LossStats::nll`].
    pub loss: f64,
    pub nll: f64,
    /// Sum of the micro-batches' [`LossStats::count`].
    pub tokens: usize,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// What [`Trainer::train`] did in this session.
#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    pub updates: Vec<UpdateRecord>,
    pub valid: Vec<(u64, Metrics)>,
    /// The checkpoint on disk after training, with its update number.
    pub last_checkpoint: Option<(PathBuf, u64)>,
}

pub struct Trainer {
    config: TrainConfig,
    store: ParamStore,
    adam: Adam,
    /// Updates completed.
    update: u64,
    /// Data position: the epoch in progress and the batches of its order already consumed.
    epoch: u64,
    epoch_pos: usize,
    /// Length of the batch list the position refers to, once known.
    num_batches: Option<usize>,
    /// The shuffled order of `epoch`, cached.
    order: Option<(u64, Vec<usize>)>,
    model_config: serde_json::Value,
    tokenizer_hash: Option<String>,
    /// Training time of earlier sessions (from the checkpoint resumed) plus this session's.
    elapsed_before: f64,
    session_start: Option<Instant>,
    last_checkpoint: Option<(PathBuf, u64)>,
    /// The schedule the resumed checkpoint was trained with (None for a fresh run).
    resumed_schedule: Option<LrSchedule>,
}

/// Most micro-batches one update may accumulate.
pub const MAX_ACCUMULATE: usize = 1 << 16;

impl TrainConfig {
    /// What can be checked without a model or data: accumulation, schedule, clipping, and mixed
    /// precision only on a CUDA backend. (Whether the device is present is [`Trainer::new`]'s.)
    pub fn check(&self) -> Result<()> {
        if self.accumulate == 0 || self.accumulate > MAX_ACCUMULATE {
            return Err(Error::invalid("TrainConfig", format!("accumulate = {} must be between 1 and {MAX_ACCUMULATE}", self.accumulate)));
        }
        self.schedule.check()?;
        if self.clip_norm.is_nan() || self.clip_norm < 0.0 {
            return Err(Error::invalid(
                "TrainConfig",
                format!("clip_norm = {} must be positive, or 0 to turn clipping off", self.clip_norm),
            ));
        }
        if let Some(a) = &self.averaging {
            a.check(self.max_updates)?;
        }
        if self.mixed_precision && !self.device.is_cuda() {
            return Err(Error::invalid(
                "TrainConfig",
                format!("mixed precision (bf16) needs a CUDA device (cuda:N, or emu for the emulator), not {}", self.device),
            ));
        }
        Ok(())
    }
}

impl Trainer {
    /// A trainer for the parameters in `store`, starting at update 0.
    pub fn new(config: TrainConfig, store: ParamStore) -> Result<Self> {
        config.check()?;
        if config.averaging.is_some() && config.snapshot_dir.is_none() {
            return Err(Error::invalid("Trainer", "weight averaging needs a snapshot_dir to write its snapshots to"));
        }
        config.device.check_available()?;
        if config.device == crate::Device::Cpu {
            // The weights exist already; training adds a gradient and Adam's two f32 moments per
            // weight, which a space too big would fail to allocate at the first update (an abort).
            let n = store.numel() as u64;
            let bytes = n.saturating_mul(3 * 4);
            crate::device::check_host_memory(bytes, &format!("the gradients and Adam moments of {n} parameters"))?;
        }
        let store = store.to_device(config.device)?;
        let adam = Adam::new(config.adam);
        Ok(Trainer {
            config,
            store,
            adam,
            update: 0,
            epoch: 0,
            epoch_pos: 0,
            num_batches: None,
            order: None,
            model_config: serde_json::Value::Null,
            tokenizer_hash: None,
            elapsed_before: 0.0,
            session_start: None,
            last_checkpoint: None,
            resumed_schedule: None,
        })
    }

    /// Continues the run saved in `dir`: parameters (into `store`, which must hold the same
    /// parameters, e.g. a freshly initialised model of the same config), Adam state, update counter
    /// and data position. `config` governs from here on; its seed must be the checkpoint's, since
    /// the data order and per-update seeds derive from it.
    pub fn resume(config: TrainConfig, mut store: ParamStore, dir: &Path) -> Result<Self> {
        let (meta, mut adam) = load_checkpoint(dir, &mut store)?;
        if meta.seed != config.seed {
            return Err(Error::invalid(
                "Trainer::resume",
                format!("{} was trained with seed {}, but TrainConfig.seed is {}", dir.display(), meta.seed, config.seed),
            ));
        }
        adam.config = config.adam;
        let device = config.device;
        let mut t = Trainer::new(config, store)?;
        adam.to_device(device)?;
        t.adam = adam;
        t.update = meta.update;
        t.epoch = meta.epoch;
        t.epoch_pos = meta.epoch_pos;
        t.num_batches = Some(meta.num_batches);
        t.model_config = meta.model_config;
        t.tokenizer_hash = meta.tokenizer_hash;
        t.elapsed_before = meta.elapsed_s;
        t.last_checkpoint = Some((dir.to_path_buf(), meta.update));
        t.resumed_schedule = Some(meta.schedule);
        Ok(t)
    }

    /// When this resumed run's learning-rate schedule is not the checkpoint's (a cosine run resumed
    /// with more `max_updates` stretches its decay), what that does to the next update's rate.
    /// Allowed, since growing a run is what resuming is for, but worth saying: the rate jumps.
    pub fn schedule_change(&self) -> Option<String> {
        let old = self.resumed_schedule?;
        let new = self.config.schedule;
        if old == new {
            return None;
        }
        let next = self.update + 1;
        Some(format!(
            "the learning-rate schedule differs from the checkpoint's, so update {next} runs at {:.3e} instead of {:.3e} ({old:?} -> {new:?})",
            new.lr(next),
            old.lr(next)
        ))
    }

    /// Records the model's configuration and the tokenizer's hash in the checkpoints. A resumed
    /// trainer refuses a tokenizer hash different from the checkpoint's.
    pub fn with_model_info(mut self, model_config: serde_json::Value, tokenizer_hash: Option<String>) -> Result<Self> {
        if let (Some(old), Some(new)) = (&self.tokenizer_hash, &tokenizer_hash) {
            if old != new {
                return Err(Error::invalid(
                    "Trainer::with_model_info",
                    format!("the checkpoint was trained with tokenizer {old}, this run uses {new}"),
                ));
            }
        }
        self.model_config = model_config;
        self.tokenizer_hash = tokenizer_hash.or(self.tokenizer_hash);
        Ok(self)
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
    pub fn store(&self) -> &ParamStore {
        &self.store
    }
    pub fn store_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }
    pub fn into_store(self) -> ParamStore {
        self.store
    }
    pub fn adam(&self) -> &Adam {
        &self.adam
    }
    /// Updates completed.
    pub fn update(&self) -> u64 {
        self.update
    }
    /// (epoch, batches of that epoch consumed).
    pub fn data_position(&self) -> (u64, usize) {
        (self.epoch, self.epoch_pos)
    }

    fn elapsed_s(&self) -> f64 {
        self.elapsed_before + self.session_start.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// The metadata a checkpoint taken now records.
    pub fn checkpoint_meta(&self) -> CheckpointMeta {
        CheckpointMeta {
            model_config: self.model_config.clone(),
            epoch: self.epoch,
            epoch_pos: self.epoch_pos,
            num_batches: self.num_batches.unwrap_or(0),
            tokenizer_hash: self.tokenizer_hash.clone(),
            elapsed_s: self.elapsed_s(),
            ..CheckpointMeta::new(self.update, self.config.seed, self.config.schedule, self.config.adam)
        }
    }

    /// Saves a checkpoint of the current state to `dir` (atomically).
    pub fn save_checkpoint(&mut self, dir: &Path) -> Result<()> {
        save_checkpoint(dir, &self.store, &self.adam, &self.checkpoint_meta())?;
        self.last_checkpoint = Some((dir.to_path_buf(), self.update));
        Ok(())
    }

    /// The snapshot file to write after update `k`, if `k` is one of the averaging points.
    fn snapshot_due(&self, k: u64) -> Option<PathBuf> {
        let (a, dir) = (self.config.averaging.as_ref()?, self.config.snapshot_dir.as_ref()?);
        a.points(self.config.max_updates).contains(&k).then(|| snapshot_path(dir, k))
    }

    /// The snapshot files of the averaging points already passed (all of them once training is
    /// done). Errors, naming them, when some are missing: a run resumed with averaging turned on
    /// (or its schedule changed) after it passed those points.
    fn snapshots_so_far(&self) -> Result<Vec<PathBuf>> {
        let (Some(a), Some(dir)) = (&self.config.averaging, &self.config.snapshot_dir) else {
            return Ok(Vec::new());
        };
        let files: Vec<PathBuf> =
            a.points(self.config.max_updates).into_iter().filter(|&u| u <= self.update).map(|u| snapshot_path(dir, u)).collect();
        let missing: Vec<String> = files.iter().filter(|f| !f.is_file()).map(|f| f.display().to_string()).collect();
        if !missing.is_empty() {
            return Err(Error::invalid(
                "weight averaging",
                format!(
                    "the run is at update {} but the snapshots of earlier averaging points are missing: {} \
                     (averaging was turned on, or its schedule changed, after the run passed them; \
                     average fewer or later snapshots)",
                    self.update,
                    missing.join(", ")
                ),
            ));
        }
        Ok(files)
    }

    /// The parameters with every value replaced by the mean over the averaging snapshots (see
    /// [`super::average`]); `None` when the config has no averaging. Errors before training has
    /// reached `max_updates` or when a snapshot is missing.
    pub fn averaged_store(&self) -> Result<Option<ParamStore>> {
        if self.config.averaging.is_none() {
            return Ok(None);
        }
        if self.update < self.config.max_updates {
            return Err(Error::invalid(
                "Trainer::averaged_store",
                format!("training is at update {} of {}: the last snapshots are not written yet", self.update, self.config.max_updates),
            ));
        }
        let mut store = self.store.clone();
        average_weight_files(&self.snapshots_so_far()?, &mut store)?;
        Ok(Some(store))
    }

    fn check_data(&mut self, batches: &[Batch]) -> Result<()> {
        if batches.is_empty() {
            return Err(Error::invalid("Trainer", "no training batches"));
        }
        match self.num_batches {
            Some(n) if n != batches.len() => Err(Error::invalid(
                "Trainer",
                format!("the data position refers to a list of {n} batches, but {} were given (different data or batching)", batches.len()),
            )),
            _ => {
                self.num_batches = Some(batches.len());
                Ok(())
            }
        }
    }

    /// Batch index at position `pos` of epoch `epoch`'s order.
    fn batch_at(&mut self, epoch: u64, pos: usize, n: usize) -> usize {
        if !matches!(&self.order, Some((e, o)) if *e == epoch && o.len() == n) {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut seeded(hash64(self.config.seed ^ ORDER_DOMAIN, epoch)));
            self.order = Some((epoch, order));
        }
        self.order.as_ref().map_or(pos, |(_, o)| o[pos])
    }

    fn diverged(&self, update: u64, what: String) -> Error {
        let last_checkpoint = match &self.last_checkpoint {
            Some((dir, u)) => format!("the last checkpoint, {} (update {u}), is intact", dir.display()),
            None => "no checkpoint was saved".to_string(),
        };
        Error::TrainingDiverged { update, what, last_checkpoint }
    }

    /// Runs one update on the next `accumulate` batches of the epoch order.
    pub fn step<L>(&mut self, batches: &[Batch], loss_fn: &mut L) -> Result<UpdateRecord>
    where
        L: FnMut(&mut Tape, &ParamStore, &Batch, UpdateCtx) -> Result<(Var, LossStats)>,
    {
        self.check_data(batches)?;
        self.snapshots_so_far()?;
        self.session_start.get_or_insert_with(Instant::now);
        let n = batches.len();
        let k = self.update + 1;
        // The position advances only when the update succeeds.
        let (mut epoch, mut pos) = (self.epoch, self.epoch_pos);
        let mut picks = Vec::with_capacity(self.config.accumulate);
        for _ in 0..self.config.accumulate {
            if pos == n {
                epoch += 1;
                pos = 0;
            }
            picks.push(self.batch_at(epoch, pos, n));
            pos += 1;
        }
        // What the record reports: the position below moves on to the next epoch when this
        // update used the last batch of one.
        let last_pick_epoch = epoch;
        let total_tokens: usize = picks.iter().map(|&i| batches[i].n_tokens).sum();

        self.store.zero_grads();
        let (mut loss_sum, mut nll_sum, mut count) = (0.0, 0.0, 0usize);
        for (micro, &bi) in picks.iter().enumerate() {
            let batch = &batches[bi];
            let weight = if total_tokens > 0 { batch.n_tokens as f64 / total_tokens as f64 } else { 1.0 / picks.len() as f64 };
            let ctx = UpdateCtx { update: k, micro, seed: hash64(hash64(self.config.seed ^ UPDATE_DOMAIN, k), micro as u64) };
            let mut tape = Tape::new();
            if self.config.mixed_precision {
                tape.set_param_dtype(Some(crate::DType::BF16));
            }
            let (loss, stats) = loss_fn(&mut tape, &self.store, batch, ctx)?;
            let value = loss.value().to_scalar()?;
            if !value.is_finite() {
                return Err(self.diverged(k, format!("loss {value} in micro-batch {micro}")));
            }
            let weighted = if weight == 1.0 { loss } else { tape.scale(&loss, weight)? };
            let grads = tape.backward(&weighted)?;
            self.store.accumulate(&grads)?;
            loss_sum += stats.loss * stats.count as f64;
            nll_sum += stats.nll * stats.count as f64;
            count += stats.count;
        }
        let grad_norm = match clip_grad_norm(&mut self.store, self.config.clip_norm) {
            Ok(norm) => norm,
            Err(Error::NonFinite(what)) => return Err(self.diverged(k, what)),
            Err(e) => return Err(e),
        };
        let lr = self.config.schedule.lr(k);
        self.adam.step(&mut self.store, lr)?;

        if pos == n {
            epoch += 1;
            pos = 0;
        }
        self.update = k;
        self.epoch = epoch;
        self.epoch_pos = pos;
        let c = count.max(1) as f64;
        Ok(UpdateRecord { update: k, epoch: last_pick_epoch, loss: loss_sum / c, nll: nll_sum / c, tokens: count, lr, grad_norm })
    }

    /// Trains until `max_updates`, logging and checkpointing as configured (a final checkpoint is
    /// saved when `checkpoint_dir` is set).
    pub fn train<L>(&mut self, batches: &[Batch], loss_fn: L) -> Result<TrainReport>
    where
        L: FnMut(&mut Tape, &ParamStore, &Batch, UpdateCtx) -> Result<(Var, LossStats)>,
    {
        self.train_with_validation(batches, loss_fn, |_: &ParamStore, _: u64| Ok(Metrics::new()))
    }

    /// [`Trainer::train`] with a validation closure called every `valid_every` updates with the
    /// parameters and the update number; its metrics are logged and returned.
    pub fn train_with_validation<L, V>(&mut self, batches: &[Batch], mut loss_fn: L, mut valid_fn: V) -> Result<TrainReport>
    where
        L: FnMut(&mut Tape, &ParamStore, &Batch, UpdateCtx) -> Result<(Var, LossStats)>,
        V: FnMut(&ParamStore, u64) -> Result<Metrics>,
    {
        self.check_data(batches)?;
        self.snapshots_so_far()?;
        self.session_start.get_or_insert_with(Instant::now);
        let cfg = self.config.clone();
        if let Some(path) = &cfg.log_path {
            drop_lines_after(path, self.update)?;
        }
        let mut log = TrainLog::open(cfg.log_path.as_deref(), cfg.max_updates, self.update, cfg.quiet)?;
        let result = self.run(batches, &mut loss_fn, &mut valid_fn, &mut log);
        log.finish();
        result
    }

    fn run<L, V>(&mut self, batches: &[Batch], loss_fn: &mut L, valid_fn: &mut V, log: &mut TrainLog) -> Result<TrainReport>
    where
        L: FnMut(&mut Tape, &ParamStore, &Batch, UpdateCtx) -> Result<(Var, LossStats)>,
        V: FnMut(&ParamStore, u64) -> Result<Metrics>,
    {
        let cfg = self.config.clone();
        let every = |period: u64, k: u64| period > 0 && k % period == 0;
        let mut report = TrainReport::default();
        let mut window = Window::default();
        while self.update < cfg.max_updates {
            let t0 = Instant::now();
            let rec = self.step(batches, loss_fn)?;
            window.add(rec.loss, rec.nll, rec.tokens, rec.grad_norm, t0.elapsed().as_secs_f64());
            report.updates.push(rec);
            let k = rec.update;
            log.progress(k, rec.loss, window.tokens_per_s(), rec.lr);
            if every(cfg.log_every, k) || k == cfg.max_updates {
                log.line(&window.take(k, rec.epoch, rec.lr, self.elapsed_s()))?;
            }
            if every(cfg.valid_every, k) {
                let metrics = valid_fn(&self.store, k)?;
                log.valid(k, &metrics, self.elapsed_s())?;
                report.valid.push((k, metrics));
            }
            // Before the checkpoint: a checkpoint at update k implies the snapshot of k exists.
            if let Some(path) = self.snapshot_due(k) {
                let dir = self.config.snapshot_dir.as_deref().unwrap_or(Path::new("."));
                crate::fsio::create_output_dir(dir)?;
                save_weights(&path, &self.store)?;
            }
            if let Some(dir) = &cfg.checkpoint_dir {
                if every(cfg.checkpoint_every, k) {
                    self.save_checkpoint(dir)?;
                }
            }
        }
        if let Some(dir) = &cfg.checkpoint_dir {
            if self.last_checkpoint.as_ref().is_none_or(|(d, u)| d != dir || *u != self.update) {
                self.save_checkpoint(dir)?;
            }
        }
        report.last_checkpoint = self.last_checkpoint.clone();
        Ok(report)
    }
}
