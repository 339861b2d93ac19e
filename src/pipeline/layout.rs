//! Where each stage keeps its outputs in a run directory: one definition for the stages that write
//! them, the freshness check that guards them and the plan (`automoe pipeline --plan`) that reads
//! them.

use std::path::{Path, PathBuf};

use super::config::PipelineConfig;
use crate::cli::translate::TOKENIZER_FILE;
use crate::train::mt;

/// The systems' latencies, measured together after all are trained (an output of the evaluation).
pub const SYSTEMS_LATENCY_FILE: &str = "systems_latency.json";

/// Marks a finished training stage (its directory is otherwise resumed).
pub const DONE: &str = "DONE";

/// The systems a run can compare, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemKind {
    /// AutoMoE's searched subnet.
    AutoMoe,
    /// The HAT-style dense search's subnet (`baselines`).
    DenseSearched,
    /// The space's largest dense subnet (`baselines`).
    DenseLarge,
    /// The Switch-style MoE: the most experts, all of the largest width (`baselines`).
    Switch,
    /// The search restricted to homogeneous MoE subnets (`search.homogeneous_baseline`).
    HomogeneousSearched,
}

/// How a system's subnet is chosen: by one of the run's searches, or as a fixed point of the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Search(Search),
    LargestDense,
    LargestMoe,
}

impl SystemKind {
    /// The systems a run of `cfg` compares, in report order: the only place that reads which
    /// systems a configuration asks for, so that the stages, the plan and the report agree.
    pub fn all(cfg: &PipelineConfig) -> Vec<SystemKind> {
        let mut v = vec![SystemKind::AutoMoe];
        if cfg.baselines {
            v.extend([SystemKind::DenseSearched, SystemKind::DenseLarge, SystemKind::Switch]);
        }
        if cfg.search.homogeneous_baseline {
            v.push(SystemKind::HomogeneousSearched);
        }
        v
    }

    /// The name of its training runs (`systems/<name>`), results and report rows.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::AutoMoe => "automoe",
            SystemKind::DenseSearched => "dense_searched",
            SystemKind::DenseLarge => "dense_large",
            SystemKind::Switch => "switch",
            SystemKind::HomogeneousSearched => "homogeneous_searched",
        }
    }

    pub fn choice(self) -> Choice {
        match self {
            SystemKind::AutoMoe => Choice::Search(Search::AutoMoe),
            SystemKind::DenseSearched => Choice::Search(Search::Dense),
            SystemKind::DenseLarge => Choice::LargestDense,
            SystemKind::Switch => Choice::LargestMoe,
            SystemKind::HomogeneousSearched => Choice::Search(Search::Homogeneous),
        }
    }

    /// What the report says the system is; `budget` names the searches' latency budget and
    /// `max_experts` is the space's most experts per layer.
    pub fn describe(self, budget: &str, max_experts: usize) -> String {
        match self {
            SystemKind::AutoMoe => format!("AutoMoE search ({budget})"),
            SystemKind::DenseSearched => format!("HAT-style search, 1 expert per layer ({budget})"),
            SystemKind::DenseLarge => "dense Transformer, largest of the space".into(),
            SystemKind::Switch => format!("Switch-style MoE: {max_experts} experts of the largest width in every layer"),
            SystemKind::HomogeneousSearched => format!("AutoMoE search with every expert of a layer one width ({budget})"),
        }
    }
}

/// The systems' names a run of `cfg` compares, in report order.
pub fn system_names(cfg: &PipelineConfig) -> Vec<&'static str> {
    SystemKind::all(cfg).into_iter().map(SystemKind::name).collect()
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
    /// The searches a run of `cfg` makes, in order: those that choose its systems.
    pub fn all(cfg: &PipelineConfig) -> Vec<Search> {
        SystemKind::all(cfg)
            .into_iter()
            .filter_map(|kind| match kind.choice() {
                Choice::Search(which) => Some(which),
                Choice::LargestDense | Choice::LargestMoe => None,
            })
            .collect()
    }

    /// The system this search chooses (the one [`SystemKind::choice`] names it for).
    pub fn system(self) -> SystemKind {
        match self {
            Search::AutoMoe => SystemKind::AutoMoe,
            Search::Dense => SystemKind::DenseSearched,
            Search::Homogeneous => SystemKind::HomogeneousSearched,
        }
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

    /// Every trained system's latency, timed together in rounds.
    pub fn systems_latency(&self) -> PathBuf {
        self.0.join(SYSTEMS_LATENCY_FILE)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_systems_and_their_searches_follow_the_settings() {
        let all = ["automoe", "dense_searched", "dense_large", "switch", "homogeneous_searched"];
        for (baselines, homogeneous, names, searches) in [
            (false, false, &all[..1], &["search"][..]),
            (true, false, &all[..4], &["search", "search_dense"][..]),
            (false, true, &["automoe", "homogeneous_searched"][..], &["search", "search_homogeneous"][..]),
            (true, true, &all[..], &["search", "search_dense", "search_homogeneous"][..]),
        ] {
            let mut cfg = PipelineConfig { baselines, ..Default::default() };
            cfg.search.homogeneous_baseline = homogeneous;
            assert_eq!(system_names(&cfg), names, "baselines {baselines}, homogeneous {homogeneous}");
            let dirs: Vec<&str> = Search::all(&cfg).into_iter().map(Search::dir_name).collect();
            assert_eq!(dirs, searches, "baselines {baselines}, homogeneous {homogeneous}");
            for which in Search::all(&cfg) {
                assert_eq!(which.system().choice(), Choice::Search(which), "{which:?} chooses the system it names");
            }
        }
    }
}
