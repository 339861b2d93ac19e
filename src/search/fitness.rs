//! Fitness of a candidate: the validation loss of the subnet with weights inherited from the
//! supernet (lower is better). A trait, so that the search can be tested with a synthetic fitness
//! whose optimum is known.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::autograd::Tape;
use crate::data::{make_batches, TokenizedPair, PAD_ID};
use crate::model::{Batch, ModelOptions, RunMode, SearchSpace, SubnetConfig, Supernet};
use crate::train::{load_checkpoint, read_checkpoint_meta, CheckpointMeta};
use crate::{DType, Error, Result};

/// Lower is better.
pub trait Fitness {
    fn loss(&mut self, cfg: &SubnetConfig) -> Result<f64>;
}

impl<F: FnMut(&SubnetConfig) -> Result<f64>> Fitness for F {
    fn loss(&mut self, cfg: &SubnetConfig) -> Result<f64> {
        self(cfg)
    }
}

/// What a supernet checkpoint's `meta.json` holds under `model_config`: enough to rebuild the
/// supernet's parameter store before loading the weights into it. Fields other than these are
/// ignored, so the training command may record more (its run description adds `mode`, label
/// smoothing and data settings beside `space`, `options` and `vocab`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SupernetMeta {
    /// `"supernet"` in a training run's description; a `"subnet"` run is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    pub space: SearchSpace,
    #[serde(alias = "model_options")]
    pub options: ModelOptions,
    #[serde(alias = "vocab_size")]
    pub vocab: usize,
}

impl SupernetMeta {
    pub fn of(net: &Supernet) -> Self {
        SupernetMeta { mode: Some("supernet".into()), space: net.space.clone(), options: net.options.clone(), vocab: net.vocab }
    }

    /// The value to store as `CheckpointMeta::model_config`.
    pub fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| Error::invalid("SupernetMeta", e.to_string()))
    }
}

/// Loads the supernet of a checkpoint directory written with [`crate::train::save_checkpoint`]
/// whose `model_config` is a [`SupernetMeta`].
pub fn load_supernet(dir: &Path) -> Result<(Supernet, CheckpointMeta)> {
    let meta = read_checkpoint_meta(dir)?;
    let meta_path = dir.join(crate::train::checkpoint::META_FILE);
    if let Some(mode) = meta.model_config.get("mode").and_then(|m| m.as_str()).filter(|&m| m != "supernet") {
        return Err(Error::Format { path: meta_path, msg: format!("a checkpoint of a `{mode}` run, not of a supernet") });
    }
    let sm: SupernetMeta = serde_json::from_value(meta.model_config.clone()).map_err(|e| Error::Format {
        path: meta_path.clone(),
        msg: format!("model_config is not a supernet description (needs `space`, `options`, `vocab`): {e}"),
    })?;
    sm.space.check().map_err(|e| Error::Format { path: meta_path.clone(), msg: e.to_string() })?;
    crate::model::check_vocab(sm.vocab, "model_config.vocab").map_err(|e| Error::Format { path: meta_path, msg: e.to_string() })?;
    // The seed only initialises values that the checkpoint then overwrites.
    let mut net = Supernet::new(sm.space, sm.vocab, sm.options, 0, DType::F32)?;
    load_checkpoint(dir, &mut net.store)?;
    Ok((net, meta))
}

/// Token-weighted mean cross-entropy (no label smoothing: the plain validation NLL per target
/// token) of subnets on a fixed set of validation batches, with the supernet's weights.
pub struct SupernetLoss<'a> {
    supernet: &'a Supernet,
    batches: Vec<(Batch, Vec<u32>)>,
    tokens: usize,
}

impl<'a> SupernetLoss<'a> {
    /// Batches `pairs` (in the deterministic length order) into batches of at most `max_tokens`.
    pub fn new(supernet: &'a Supernet, pairs: &[TokenizedPair], max_tokens: usize) -> Result<Self> {
        if pairs.is_empty() {
            return Err(Error::invalid("SupernetLoss", "the validation set is empty"));
        }
        let mut batches = Vec::new();
        let mut tokens = 0;
        for b in make_batches(pairs, max_tokens, None)? {
            tokens += b.n_tokens;
            let mb = Batch::new(b.b, b.s_len, b.t_len, b.src, b.src_pad_mask, b.tgt_in, b.tgt_pad_mask)?;
            batches.push((mb, b.tgt_out));
        }
        Ok(SupernetLoss { supernet, batches, tokens })
    }

    /// Real target tokens the loss averages over.
    pub fn tokens(&self) -> usize {
        self.tokens
    }
}

impl Fitness for SupernetLoss<'_> {
    fn loss(&mut self, cfg: &SubnetConfig) -> Result<f64> {
        let (mut sum, mut count) = (0.0, 0usize);
        for (batch, targets) in &self.batches {
            // An inference tape records nothing: no graph is kept, only values.
            let mut tape = Tape::inference();
            let out = self.supernet.forward(&mut tape, cfg, batch, RunMode::inference())?;
            let (_, stats) = tape.cross_entropy(&out.logits, targets, 0.0, Some(PAD_ID))?;
            sum += stats.nll * stats.count as f64;
            count += stats.count;
        }
        Ok(sum / count.max(1) as f64)
    }
}
