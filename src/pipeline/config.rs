//! The pipeline's configuration file (TOML). Every section has defaults; the built-in demo preset
//! (`configs/pipeline_demo.toml`) is sized to finish within 15 minutes on 2 cores.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decode::latency::Clock;
use crate::{Error, Result};

/// Where the corpus comes from: a directory of `train.{src,tgt}`, `val.*` and a test split, or
/// (no `dir`) the built-in synthetic language pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    pub dir: Option<PathBuf>,
    pub src: String,
    pub tgt: String,
    /// Name of the test split: `{dir}/{test}.{src}` and `.{tgt}`.
    pub test: String,
    pub vocab_size: usize,
    pub max_tokens: usize,
    /// Sizes of the synthetic corpus (when `dir` is absent).
    pub synthetic_train: usize,
    pub synthetic_valid: usize,
    pub synthetic_test: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            dir: None,
            src: "en".into(),
            tgt: "de".into(),
            test: "test".into(),
            vocab_size: 2000,
            max_tokens: 2048,
            synthetic_train: 20_000,
            synthetic_valid: 500,
            synthetic_test: 300,
        }
    }
}

/// A training stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub updates: u64,
    pub lr: f64,
    pub warmup: u64,
    pub dropout: f64,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection { updates: 400, lr: 1e-3, warmup: 100, dropout: 0.1 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencySection {
    /// Subnets measured for the predictor's dataset.
    pub samples: usize,
    /// Share of the dataset held out to evaluate the predictor.
    pub holdout: f64,
    pub predictor_epochs: usize,
    /// Threads the latency of every model is measured with (fixed, reported).
    pub threads: usize,
    /// What the timings read: `wall` (AutoMoE's protocol) or `cpu`, the timing thread's CPU time,
    /// for a shared, loaded machine whose wall clock is mostly other processes' noise (needs
    /// `threads = 1`). Used for the predictor's dataset and the final systems' latencies alike.
    pub clock: Clock,
    /// Measure the predictor's dataset in rounds over all subnets (each round one timed run of
    /// every subnet), so that load drifting over minutes hits every subnet alike.
    pub interleave: bool,
}

impl Default for LatencySection {
    fn default() -> Self {
        LatencySection { samples: 300, holdout: 0.2, predictor_epochs: 300, threads: 1, clock: Clock::Wall, interleave: false }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSection {
    pub iterations: usize,
    pub parents: usize,
    pub mutations: usize,
    pub crossovers: usize,
    /// Latency budget as a fraction of the largest dense subnet's predicted latency.
    pub latency_fraction: Option<f64>,
    /// An absolute latency budget (ms), instead of the fraction.
    pub latency_ms: Option<f64>,
    pub gflops: Option<f64>,
    pub active_params: Option<f64>,
    /// Validation sentences the fitness (validation loss with inherited weights) is computed on.
    pub valid_sentences: usize,
}

impl Default for SearchSection {
    fn default() -> Self {
        SearchSection {
            iterations: 10,
            parents: 25,
            mutations: 50,
            crossovers: 50,
            latency_fraction: Some(0.5),
            latency_ms: None,
            gflops: None,
            active_params: None,
            valid_sentences: 300,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    pub beam: usize,
    pub lenpen: f64,
    /// Test sentences translated for BLEU (0 = all).
    pub max_sentences: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection { beam: 4, lenpen: 0.6, max_sentences: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub name: String,
    pub seed: u64,
    /// `small` or `wmt14` (the built-in spaces), or a path to a space TOML file.
    pub space: String,
    pub data: DataSection,
    pub supernet: TrainSection,
    pub latency: LatencySection,
    pub search: SearchSection,
    /// Training of the found subnet and of every baseline, from scratch.
    pub final_train: TrainSection,
    pub eval: EvalSection,
    /// Train and evaluate the dense, HAT-style dense-searched and Switch baselines too.
    pub baselines: bool,
    /// Where the training stages run (`cpu`, `cuda:N`, `emu`); latency is measured, and models
    /// are evaluated, on the CPU.
    pub device: crate::Device,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            name: "automoe".into(),
            seed: 1,
            space: "small".into(),
            data: DataSection::default(),
            supernet: TrainSection::default(),
            latency: LatencySection::default(),
            search: SearchSection::default(),
            final_train: TrainSection::default(),
            eval: EvalSection::default(),
            baselines: true,
            device: crate::Device::Cpu,
        }
    }
}

/// The built-in demo preset: the synthetic corpus, the small space, budgets for ~15 min on 2 cores.
pub const DEMO_TOML: &str = include_str!("../../configs/pipeline_demo.toml");

impl PipelineConfig {
    pub fn from_toml_str(s: &str, origin: &Path) -> Result<Self> {
        let cfg: PipelineConfig = toml::from_str(s).map_err(|e| Error::Format { path: origin.to_path_buf(), msg: e.to_string() })?;
        cfg.check(origin)?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&s, path)
    }

    pub fn demo() -> Result<Self> {
        Self::from_toml_str(DEMO_TOML, Path::new("configs/pipeline_demo.toml"))
    }

    fn check(&self, origin: &Path) -> Result<()> {
        let bad = |msg: String| Err(Error::Format { path: origin.to_path_buf(), msg });
        if self.supernet.updates == 0 || self.final_train.updates == 0 {
            return bad("supernet.updates and final_train.updates must be positive".into());
        }
        if self.latency.samples < 10 {
            return bad(format!("latency.samples = {} is too few to train a predictor (at least 10)", self.latency.samples));
        }
        if !(0.0..0.9).contains(&self.latency.holdout) {
            return bad(format!("latency.holdout = {} must be in [0, 0.9)", self.latency.holdout));
        }
        if self.latency.clock == Clock::Cpu && self.latency.threads != 1 {
            return bad(format!("latency.clock = \"cpu\" times one thread, but latency.threads = {}", self.latency.threads));
        }
        if let Some(f) = self.search.latency_fraction {
            if !(f > 0.0 && f.is_finite()) {
                return bad(format!("search.latency_fraction = {f} must be positive"));
            }
        }
        if self.eval.beam == 0 {
            return bad("eval.beam must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_preset_parses_and_bad_values_are_named() {
        let d = PipelineConfig::demo().unwrap();
        assert!(d.data.dir.is_none());
        let err = PipelineConfig::from_toml_str("[latency]\nsamples = 3\n", Path::new("x.toml")).unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("latency.samples"), "{err}");
        let err = PipelineConfig::from_toml_str("[search]\nbogus = 1\n", Path::new("y.toml")).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
