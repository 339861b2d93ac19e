//! The latency predictor: an MLP (AutoMoE: 3 hidden layers of 400, ReLU) from standardised
//! architecture features to the standardised logarithms of encoder and decoder latency, trained on
//! the tape with Adam on mean squared error.
//!
//! Why logarithms: latencies of a space span an order of magnitude and the quality that matters is
//! relative (MAPE, ranking), which squared error on log-time weighs evenly.
//!
//! The saved predictor (JSON) carries its space, the feature version and names, and the
//! normalisation statistics, so [`LatencyPredictor::predict`] builds its input with the same
//! [`features`] function and statistics as training did.

use std::path::Path;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::dataset::{LatencyDataset, LatencyRecord};
use super::features::{feature_names, features, FEATURE_VERSION};
use super::latency::{Latency, LatencyMeter};
use crate::autograd::{ParamId, ParamStore, Tape, Var};
use crate::fsio::write_atomic_creating_dir as write_file;
use crate::model::{SearchSpace, SubnetConfig};
use crate::train::{Adam, AdamConfig};
use crate::{DType, Error, Result, Tensor};

const FORMAT: &str = "automoe-latency-predictor-v1";

/// Largest magnitude a saved predictor's weight, bias or statistic may have. Training on
/// standardised inputs and targets keeps them within a few hundred; a larger one is a corrupt or
/// hand-edited file whose predictions would be infinite or meaningless.
pub const MAX_PREDICTOR_VALUE: f64 = 1e6;

/// Training settings of the predictor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictorConfig {
    /// Width of each hidden layer (paper: 400).
    pub hidden: usize,
    /// Hidden layers (paper: 3).
    pub layers: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Decoupled (AdamW) weight decay; a few hundred noisy measurements are easy to memorise.
    #[serde(default)]
    pub weight_decay: f64,
    pub seed: u64,
}

impl PredictorConfig {
    /// Sizes, epochs and learning rate must be positive; weight decay finite and not negative.
    pub fn check(&self) -> Result<()> {
        if !self.weight_decay.is_finite() || self.weight_decay < 0.0 {
            return Err(Error::invalid("LatencyPredictor::train", format!("weight_decay {} must be non-negative", self.weight_decay)));
        }
        if self.hidden == 0 || self.epochs == 0 || self.batch_size == 0 || !self.lr.is_finite() || self.lr <= 0.0 {
            return Err(Error::invalid("LatencyPredictor::train", format!("hidden, epochs, batch_size and lr must be positive: {self:?}")));
        }
        // The MLP is a few hidden layers of a few hundred units; past these it would not fit in memory.
        if self.hidden > 1 << 16 || self.layers > 64 {
            return Err(Error::invalid(
                "LatencyPredictor::train",
                format!("hidden = {} and layers = {} must be at most 65536 and 64", self.hidden, self.layers),
            ));
        }
        Ok(())
    }
}

impl Default for PredictorConfig {
    fn default() -> Self {
        PredictorConfig { hidden: 400, layers: 3, epochs: 300, batch_size: 32, lr: 1e-3, weight_decay: 0.5, seed: 0 }
    }
}

/// One dense layer, `w` row-major `[out, in]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dense {
    out: usize,
    inp: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

/// A trained predictor with everything needed to use it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyPredictor {
    format: String,
    feature_version: u32,
    pub space: SearchSpace,
    pub feature_names: Vec<String>,
    /// Per-feature mean and standard deviation over the training set (std 1 for a constant one).
    feature_mean: Vec<f32>,
    feature_std: Vec<f32>,
    /// Mean and std of ln(encoder ms) and ln(decoder ms) over the training set.
    target_mean: [f64; 2],
    target_std: [f64; 2],
    layers: Vec<Dense>,
    pub config: PredictorConfig,
    /// The meter whose measurements it learned.
    pub meter: String,
}

/// Held-out quality, on total latency (encoder + decoder).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictorReport {
    pub n: usize,
    pub rmse_ms: f64,
    /// Mean absolute percentage error, in percent.
    pub mape_pct: f64,
    pub kendall_tau: f64,
    /// RMSE and MAPE of predicting the training mean for every subnet (the baseline to beat).
    pub baseline_rmse_ms: f64,
    pub baseline_mape_pct: f64,
}

impl std::fmt::Display for PredictorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} subnets: RMSE {:.3} ms, MAPE {:.2} %, Kendall tau {:.3} (constant baseline: RMSE {:.3} ms, MAPE {:.2} %)",
            self.n, self.rmse_ms, self.mape_pct, self.kendall_tau, self.baseline_rmse_ms, self.baseline_mape_pct
        )
    }
}

/// Kendall's τ-b of two equally long series (ties in either series count as neither concordant
/// nor discordant, and shrink the denominator).
pub fn kendall_tau(a: &[f64], b: &[f64]) -> f64 {
    let (mut conc, mut disc, mut ties_a, mut ties_b) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..a.len().min(b.len()) {
        for j in i + 1..a.len().min(b.len()) {
            let (da, db) = (a[i] - a[j], b[i] - b[j]);
            if da == 0.0 && db == 0.0 {
                continue;
            } else if da == 0.0 {
                ties_a += 1;
            } else if db == 0.0 {
                ties_b += 1;
            } else if (da > 0.0) == (db > 0.0) {
                conc += 1;
            } else {
                disc += 1;
            }
        }
    }
    let denom = (((conc + disc + ties_a) as f64) * ((conc + disc + ties_b) as f64)).sqrt();
    if denom == 0.0 {
        0.0
    } else {
        (conc - disc) as f64 / denom
    }
}

/// The MLP's parameters in a store, and its forward pass: the one used by training and prediction.
struct Mlp {
    store: ParamStore,
    ids: Vec<(ParamId, ParamId)>,
}

impl Mlp {
    fn from_layers(layers: &[Dense]) -> Result<Self> {
        let mut store = ParamStore::new();
        let mut ids = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let w = store.add(format!("mlp.{i}.weight"), Tensor::from_vec(l.w.clone(), &[l.out, l.inp])?)?;
            let b = store.add(format!("mlp.{i}.bias"), Tensor::from_vec(l.b.clone(), &[l.out])?)?;
            ids.push((w, b));
        }
        Ok(Mlp { store, ids })
    }

    /// `x: [n, features]` -> `[n, 2]`, ReLU between layers.
    fn forward(&self, tape: &mut Tape, x: &Var) -> Result<Var> {
        let mut h = x.clone();
        for (i, &(w, b)) in self.ids.iter().enumerate() {
            let (w, b) = (tape.param(&self.store, w)?, tape.param(&self.store, b)?);
            h = tape.linear(&h, &w, Some(&b))?;
            if i + 1 < self.ids.len() {
                h = tape.relu(&h)?;
            }
        }
        Ok(h)
    }

    fn to_layers(&self) -> Result<Vec<Dense>> {
        self.ids
            .iter()
            .map(|&(w, b)| {
                let wt = self.store.value(w);
                Ok(Dense { out: wt.shape()[0], inp: wt.shape()[1], w: wt.to_f32_vec()?, b: self.store.value(b).to_f32_vec()? })
            })
            .collect()
    }
}

fn mean_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count().max(1) as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

impl LatencyPredictor {
    fn standardise(&self, f: &[f32]) -> Vec<f32> {
        f.iter().zip(&self.feature_mean).zip(&self.feature_std).map(|((x, m), s)| (x - m) / s).collect()
    }

    /// Input rows (standardised features) of configs: the single path into the MLP.
    fn inputs(&self, cfgs: &[&SubnetConfig]) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(cfgs.len() * self.feature_mean.len());
        for cfg in cfgs {
            rows.extend(self.standardise(&features(cfg, &self.space)?));
        }
        Tensor::from_vec(rows, &[cfgs.len(), self.feature_mean.len()])
    }

    /// Trains on `train` (records of `ds.space`); the returned predictor remembers the space and
    /// the statistics.
    pub fn train(ds: &LatencyDataset, train: &[LatencyRecord], config: PredictorConfig, mut progress: impl FnMut(usize)) -> Result<Self> {
        if train.len() < 2 {
            return Err(Error::invalid("LatencyPredictor::train", format!("needs at least 2 training subnets, got {}", train.len())));
        }
        config.check()?;
        for (i, r) in train.iter().enumerate() {
            super::dataset::check_latency(&r.latency)
                .map_err(|e| Error::invalid("LatencyPredictor::train", format!("training record {i}: {e}")))?;
        }
        let nf = feature_names(&ds.space).len();
        let feats: Vec<Vec<f32>> = train.iter().map(|r| features(&r.config, &ds.space)).collect::<Result<_>>()?;
        let mut feature_mean = Vec::with_capacity(nf);
        let mut feature_std = Vec::with_capacity(nf);
        for j in 0..nf {
            let (m, s) = mean_std(feats.iter().map(|f| f[j] as f64));
            feature_mean.push(m as f32);
            // A feature constant over the training set carries no information; std 1 keeps it 0.
            feature_std.push(if s > 1e-9 { s as f32 } else { 1.0 });
        }
        let logs = |r: &LatencyRecord| [r.latency.encoder_ms.max(1e-6).ln(), r.latency.decoder_ms.max(1e-6).ln()];
        let mut target_mean = [0.0; 2];
        let mut target_std = [1.0; 2];
        for k in 0..2 {
            let (m, s) = mean_std(train.iter().map(|r| logs(r)[k]));
            target_mean[k] = m;
            target_std[k] = if s > 1e-9 { s } else { 1.0 };
        }
        // He-uniform initialisation for ReLU layers.
        let mut rng = crate::rng::seeded(config.seed);
        let mut dims = vec![nf];
        dims.extend(std::iter::repeat_n(config.hidden, config.layers));
        dims.push(2);
        let layers: Vec<Dense> = dims
            .windows(2)
            .map(|io| {
                let bound = (6.0 / io[0] as f64).sqrt();
                let w = Tensor::rand_uniform(&[io[1], io[0]], -bound, bound, DType::F32, &mut rng)?;
                Ok(Dense { out: io[1], inp: io[0], w: w.to_f32_vec()?, b: vec![0.0; io[1]] })
            })
            .collect::<Result<_>>()?;
        let mut pred = LatencyPredictor {
            format: FORMAT.into(),
            feature_version: FEATURE_VERSION,
            space: ds.space.clone(),
            feature_names: feature_names(&ds.space),
            feature_mean,
            feature_std,
            target_mean,
            target_std,
            layers,
            config,
            meter: ds.meter.clone(),
        };
        let x_all: Vec<Vec<f32>> = feats.iter().map(|f| pred.standardise(f)).collect();
        let y_all: Vec<[f32; 2]> = train
            .iter()
            .map(|r| {
                let l = logs(r);
                [((l[0] - target_mean[0]) / target_std[0]) as f32, ((l[1] - target_mean[1]) / target_std[1]) as f32]
            })
            .collect();
        let mut mlp = Mlp::from_layers(&pred.layers)?;
        let mut adam = Adam::new(AdamConfig { weight_decay: config.weight_decay, decoupled_weight_decay: true, ..AdamConfig::default() });
        let mut order: Vec<usize> = (0..train.len()).collect();
        for epoch in 0..config.epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(config.batch_size) {
                let x = Tensor::from_vec(chunk.iter().flat_map(|&i| x_all[i].iter().copied()).collect::<Vec<_>>(), &[chunk.len(), nf])?;
                let y = Tensor::from_vec(chunk.iter().flat_map(|&i| y_all[i]).collect::<Vec<_>>(), &[chunk.len(), 2])?;
                let mut tape = Tape::new();
                let x = tape.constant(x);
                let y = tape.constant(y);
                let out = mlp.forward(&mut tape, &x)?;
                let err = tape.sub(&out, &y)?;
                let sq = tape.mul(&err, &err)?;
                let loss = tape.mean(&sq)?;
                if !loss.value().to_scalar()?.is_finite() {
                    return Err(Error::NonFinite(format!("predictor training loss at epoch {epoch}")));
                }
                let grads = tape.backward(&loss)?;
                mlp.store.zero_grads();
                mlp.store.accumulate(&grads)?;
                adam.step(&mut mlp.store, config.lr)?;
            }
            progress(epoch + 1);
        }
        pred.layers = mlp.to_layers()?;
        pred.check_values().map_err(|e| Error::NonFinite(format!("the trained predictor: {e}")))?;
        pred.check_prediction().map_err(|e| Error::NonFinite(format!("the trained predictor: {e}")))?;
        Ok(pred)
    }

    /// Every statistic, weight and bias finite and within [`MAX_PREDICTOR_VALUE`], and every
    /// standard deviation positive (they divide).
    fn check_values(&self) -> std::result::Result<(), String> {
        let bounded = |what: &str, v: f64| {
            if v.is_finite() && v.abs() <= MAX_PREDICTOR_VALUE {
                Ok(())
            } else {
                Err(format!("{what} = {v} is not a finite value within ±{MAX_PREDICTOR_VALUE}"))
            }
        };
        let positive = |what: &str, v: f64| if v > 0.0 { Ok(()) } else { Err(format!("{what} = {v} is not positive (it divides)")) };
        for (j, name) in self.feature_names.iter().enumerate() {
            bounded(&format!("feature_mean of `{name}`"), self.feature_mean[j] as f64)?;
            bounded(&format!("feature_std of `{name}`"), self.feature_std[j] as f64)?;
            positive(&format!("feature_std of `{name}`"), self.feature_std[j] as f64)?;
        }
        for (k, part) in ["encoder", "decoder"].iter().enumerate() {
            bounded(&format!("target_mean of the {part}"), self.target_mean[k])?;
            bounded(&format!("target_std of the {part}"), self.target_std[k])?;
            positive(&format!("target_std of the {part}"), self.target_std[k])?;
        }
        for (i, l) in self.layers.iter().enumerate() {
            for (j, &w) in l.w.iter().enumerate() {
                bounded(&format!("layer {i} weight {j}"), w as f64)?;
            }
            for (j, &b) in l.b.iter().enumerate() {
                bounded(&format!("layer {i} bias {j}"), b as f64)?;
            }
        }
        Ok(())
    }

    /// Predicts the space's smallest and largest subnets: values in range can still combine into
    /// an overflowing prediction, which is better found now than in the middle of a search.
    fn check_prediction(&self) -> std::result::Result<(), String> {
        let (small, large) = (self.space.smallest(), self.space.largest());
        self.predict_many(&[&small, &large]).map(|_| ()).map_err(|e| format!("a test prediction failed: {e}"))
    }

    /// Refuses use on a space other than the one it was trained for, naming the first setting
    /// that differs.
    pub fn check_space(&self, space: &SearchSpace) -> Result<()> {
        if &self.space == space {
            return Ok(());
        }
        let detail = crate::model::space_difference(&self.space, space).map(|d| format!(": {d}")).unwrap_or_default();
        Err(Error::invalid("LatencyPredictor", format!("trained for space `{}`, used on space `{}`{detail}", self.space.name, space.name)))
    }

    /// Predicted latencies of several subnets in one batched pass.
    pub fn predict_many(&self, cfgs: &[&SubnetConfig]) -> Result<Vec<Latency>> {
        if cfgs.is_empty() {
            return Ok(Vec::new());
        }
        let mlp = Mlp::from_layers(&self.layers)?;
        let mut tape = Tape::inference();
        let x = tape.constant(self.inputs(cfgs)?);
        let out = mlp.forward(&mut tape, &x)?.value().to_f64_vec()?;
        let latencies: Vec<Latency> = out
            .chunks_exact(2)
            .map(|o| Latency {
                encoder_ms: (o[0] * self.target_std[0] + self.target_mean[0]).exp(),
                decoder_ms: (o[1] * self.target_std[1] + self.target_mean[1]).exp(),
            })
            .collect();
        if let Some((i, l)) = latencies.iter().enumerate().find(|(_, l)| !(l.encoder_ms.is_finite() && l.decoder_ms.is_finite())) {
            return Err(Error::NonFinite(format!(
                "predicted latency of subnet {i} of {} is {:?}: the predictor's weights are out of range",
                latencies.len(),
                l
            )));
        }
        Ok(latencies)
    }

    pub fn predict(&self, cfg: &SubnetConfig) -> Result<Latency> {
        Ok(self.predict_many(&[cfg])?[0])
    }

    /// Held-out quality on `records` against the constant `baseline_ms` (the training mean).
    pub fn evaluate(&self, records: &[LatencyRecord], baseline_ms: f64) -> Result<PredictorReport> {
        let cfgs: Vec<&SubnetConfig> = records.iter().map(|r| &r.config).collect();
        let pred: Vec<f64> = self.predict_many(&cfgs)?.iter().map(Latency::total_ms).collect();
        let truth: Vec<f64> = records.iter().map(|r| r.latency.total_ms()).collect();
        let n = truth.len().max(1) as f64;
        let rmse = |p: &dyn Fn(usize) -> f64| (truth.iter().enumerate().map(|(i, t)| (p(i) - t).powi(2)).sum::<f64>() / n).sqrt();
        let mape = |p: &dyn Fn(usize) -> f64| 100.0 * truth.iter().enumerate().map(|(i, t)| ((p(i) - t) / t).abs()).sum::<f64>() / n;
        Ok(PredictorReport {
            n: truth.len(),
            rmse_ms: rmse(&|i| pred[i]),
            mape_pct: mape(&|i| pred[i]),
            kendall_tau: kendall_tau(&pred, &truth),
            baseline_rmse_ms: rmse(&|_| baseline_ms),
            baseline_mape_pct: mape(&|_| baseline_ms),
        })
    }

    /// Writes the predictor as JSON (atomically); a predictor whose values are out of range (see
    /// [`LatencyPredictor::load`]) is refused rather than written.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.check_values()
            .and_then(|()| self.check_prediction())
            .map_err(|e| Error::invalid("LatencyPredictor::save", format!("{}: {e}", path.display())))?;
        let json = serde_json::to_vec(self).map_err(|e| Error::Format { path: path.to_path_buf(), msg: e.to_string() })?;
        write_file(path, &json)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let fmt = |msg: String| Error::Format { path: path.to_path_buf(), msg };
        let p: LatencyPredictor = serde_json::from_slice(&bytes).map_err(|e| fmt(format!("not a latency predictor: {e}")))?;
        if p.format != FORMAT {
            return Err(fmt(format!("format `{}` is not `{FORMAT}`", p.format)));
        }
        // Before the feature names: a space with absurd sizes would name billions of features.
        p.space.check().map_err(|e| fmt(e.to_string()))?;
        if p.feature_version != FEATURE_VERSION {
            return Err(fmt(format!("trained on feature version {} (this build: {FEATURE_VERSION}); retrain it", p.feature_version)));
        }
        let expected = feature_names(&p.space);
        if p.feature_names != expected {
            let detail = match p.feature_names.iter().zip(&expected).position(|(a, b)| a != b) {
                Some(j) => format!("feature {j} is `{}`, this build names it `{}`", p.feature_names[j], expected[j]),
                None => format!("{} feature names, this build computes {} for its space", p.feature_names.len(), expected.len()),
            };
            return Err(fmt(format!("its feature names differ from this build's ({detail}); retrain it")));
        }
        let nf = p.feature_names.len();
        let mut inp = nf;
        for (i, l) in p.layers.iter().enumerate() {
            if l.inp != inp || l.w.len() != l.out * l.inp || l.b.len() != l.out {
                return Err(fmt(format!("layer {i} has inconsistent shapes")));
            }
            inp = l.out;
        }
        if inp != 2 || p.feature_mean.len() != nf || p.feature_std.len() != nf || p.layers.is_empty() {
            return Err(fmt("the layers or the normalisation statistics do not match the features".into()));
        }
        p.check_values().map_err(&fmt)?;
        p.check_prediction().map_err(fmt)?;
        Ok(p)
    }
}

impl LatencyMeter for LatencyPredictor {
    fn measure(&mut self, cfg: &SubnetConfig) -> Result<Latency> {
        self.predict(cfg)
    }
    fn describe(&self) -> String {
        format!("predicted by an MLP ({}x{}) trained on: {}", self.config.layers, self.config.hidden, self.meter)
    }
}

/// Splits records into (train, held out) by a seeded shuffle, `holdout` in (0, 1).
pub fn split_records(records: &[LatencyRecord], holdout: f64, seed: u64) -> Result<(Vec<LatencyRecord>, Vec<LatencyRecord>)> {
    if !(holdout > 0.0 && holdout < 1.0) {
        return Err(Error::invalid("split_records", format!("held-out fraction {holdout} is not in (0, 1)")));
    }
    let mut idx: Vec<usize> = (0..records.len()).collect();
    idx.shuffle(&mut crate::rng::seeded(seed));
    let n_test = ((records.len() as f64 * holdout).round() as usize).clamp(1, records.len().saturating_sub(2).max(1));
    if records.len() < 3 {
        return Err(Error::invalid("split_records", format!("{} records are too few to hold some out", records.len())));
    }
    let test = idx[..n_test].iter().map(|&i| records[i].clone()).collect();
    let train = idx[n_test..].iter().map(|&i| records[i].clone()).collect();
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::kendall_tau;

    #[test]
    fn kendall_tau_extremes() {
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0);
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
        assert!((kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]) - 4.0 / 6.0).abs() < 1e-12);
    }
}
