//! Where each stage keeps its outputs in a run directory: one definition for the stages that write
//! them, the freshness check that guards them and the plan (`automoe pipeline --plan`) that reads
//! them.

use std::path::{Path, PathBuf};

use super::config::PipelineConfig;
use crate::cli::translate::TOKENIZER_FILE;
use crate::train::mt;

/// Marks a finished training stage (its directory is otherwise resumed).
pub const DONE: &str = "DONE";

/// The systems' names, in report order: the searched model first, then (with `baselines`) the
/// HAT-style dense search, the space's largest dense model and the Switch-style MoE, and (with
/// `search.homogeneous_baseline`) the search restricted to homogeneous MoE subnets.
pub const AUTOMOE: &str = "automoe";
pub const BASELINES: [&str; 3] = ["dense_searched", "dense_large", "switch"];
pub const HOMOGENEOUS: &str = "homogeneous_searched";

/// The systems a run of `cfg` compares, in report order.
pub fn system_names(cfg: &PipelineConfig) -> Vec<&'static str> {
    let mut names = vec![AUTOMOE];
    if cfg.baselines {
        names.extend(BASELINES);
    }
    if cfg.search.homogeneous_baseline {
        names.push(HOMOGENEOUS);
    }
    names
}

/// The searches a run can make, each in its own directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// AutoMoE's: the whole space.
    AutoMoe,
    /// HAT-style: one expert per layer.
    Dense,
    /// Every expert of a layer one width.
    Homogeneous,
}

impl Search {
    /// The searches a run of `cfg` makes, in order.
    pub fn all(cfg: &PipelineConfig) -> Vec<Search> {
        let mut v = vec![Search::AutoMoe];
        if cfg.baselines {
            v.push(Search::Dense);
        }
        if cfg.search.homogeneous_baseline {
            v.push(Search::Homogeneous);
        }
        v
    }

    pub fn dir_name(self) -> &'static str {
        match self {
            Search::AutoMoe => "search",
            Search::Dense => "search_dense",
            Search::Homogeneous => "search_homogeneous",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Search::AutoMoe => "AutoMoE search",
            Search::Dense => "HAT-style search (one expert per layer)",
            Search::Homogeneous => "homogeneous MoE search (every expert of a layer one width)",
        }
    }
}

/// A run directory's paths.
#[derive(Clone, Copy, Debug)]
pub struct RunDir<'a>(pub &'a Path);

impl RunDir<'_> {
    pub fn tokenizer(&self) -> PathBuf {
        self.0.join(TOKENIZER_FILE)
    }
    pub fn supernet(&self) -> PathBuf {
        self.0.join("supernet")
    }
    pub fn latency(&self) -> PathBuf {
        self.0.join("latency")
    }
    pub fn latency_dataset(&self) -> PathBuf {
        self.latency().join("dataset.json")
    }
    pub fn predictor(&self) -> PathBuf {
        self.latency().join("predictor.json")
    }
    /// A search's directory.
    pub fn search(&self, which: Search) -> PathBuf {
        self.0.join(which.dir_name())
    }
    /// A search's finished result, in its directory.
    pub fn population(search_dir: &Path) -> PathBuf {
        search_dir.join("population.json")
    }
    /// A system's training run (`label`: `Replicate::label`).
    pub fn system(&self, label: &str) -> PathBuf {
        self.0.join("systems").join(label)
    }
    /// The evaluation's copy of the test split.
    pub fn data(&self) -> PathBuf {
        self.0.join("data")
    }
    pub fn eval(&self) -> PathBuf {
        self.0.join("eval")
    }
    /// A system run's scores and costs.
    pub fn eval_result(&self, label: &str) -> PathBuf {
        self.eval().join(format!("{label}.json"))
    }
    /// A system run's translations of the test split.
    pub fn eval_translations(&self, label: &str) -> PathBuf {
        self.eval().join(format!("{label}.hyp"))
    }
    pub fn export(&self) -> PathBuf {
        self.0.join("export")
    }
}

/// Whether a training directory has finished.
pub fn trained(dir: &Path) -> bool {
    dir.join(DONE).exists()
}

/// Whether an unfinished training directory has a checkpoint to resume from.
pub fn resumable(dir: &Path) -> bool {
    crate::train::checkpoint::resolve_checkpoint_dir(&mt::checkpoint_dir(dir)).exists()
}
