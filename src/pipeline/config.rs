//! The pipeline's configuration file (TOML). Every section has defaults; the built-in demo preset
//! (`configs/pipeline_demo.toml`) is sized to finish within 15 minutes on 2 cores (6 to 11 minutes measured).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::translate::DecodeArgs;
use crate::decode::latency::Clock;
use crate::model::ModelOptions;
use crate::search::{Constraints, PredictorConfig, SearchConfig};
use crate::train::{LrSchedule, TrainConfig, WeightAveraging};
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
    /// Weight of the MoE load-balancing loss (Switch's `N · Σ f_e · P_e` per MoE layer) added to
    /// the per-token mean loss; 0 (the default) is AutoMoE's recipe, whose reference adds its 0.01
    /// to the summed loss, so that it is all but off. The report's routing shares show whether a
    /// router collapsed onto one expert.
    pub balance_coef: f64,
    /// `[final_train]` only: export the mean of the weights at this many points at the end of
    /// training (checkpoint averaging; 0: the final weights).
    pub average: usize,
    /// Updates between the averaged points (default: spread over the last quarter of training).
    pub average_every: Option<u64>,
    /// `[final_train]` only: train every system this many times, from the seeds `seed + 1`,
    /// `seed + 2`, …, and report the mean and standard deviation of BLEU and chrF over them (a
    /// BLEU difference smaller than the spread between seeds is noise). Raising it in an existing
    /// run directory keeps the trained replicates and trains only the new ones.
    pub replicates: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            updates: 400,
            lr: 1e-3,
            warmup: 100,
            dropout: 0.1,
            balance_coef: 0.0,
            average: 0,
            average_every: None,
            replicates: 1,
        }
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
    /// Repetitions of the predictor's dataset: `paper` (the default; 5 warm-up and 20 timed runs,
    /// 10 % trimmed each end: the protocol the search's verification and the systems' latencies
    /// use, so that the budget, the predictions and the measurements are one quantity) or `fast`
    /// (1 warm-up, 5 timed runs, trim 0.2: a quarter of the time, and noisier).
    pub dataset_protocol: DatasetProtocol,
    /// The hardware the search targets: the predictor's dataset and the systems' latencies are
    /// measured there — `cpu` (the default), `cuda:N` (a GPU; host work on `threads` threads), or
    /// `emu` (the CUDA path on the emulator: for tests, its timings say nothing about a GPU).
    pub device: crate::Device,
}

impl Default for LatencySection {
    fn default() -> Self {
        LatencySection {
            samples: 300,
            holdout: 0.2,
            predictor_epochs: 300,
            threads: 1,
            clock: Clock::Wall,
            interleave: false,
            dataset_protocol: DatasetProtocol::Paper,
            device: crate::Device::Cpu,
        }
    }
}

/// The repetitions the predictor's latency dataset is measured with (`[latency] dataset_protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetProtocol {
    /// [`LatencyProtocol::paper`](crate::decode::LatencyProtocol::paper).
    #[default]
    Paper,
    /// [`LatencyProtocol::fast`](crate::decode::LatencyProtocol::fast).
    Fast,
}

impl DatasetProtocol {
    pub fn protocol(self) -> crate::decode::LatencyProtocol {
        match self {
            DatasetProtocol::Paper => crate::decode::LatencyProtocol::paper(),
            DatasetProtocol::Fast => crate::decode::LatencyProtocol::fast(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSection {
    pub iterations: usize,
    pub parents: usize,
    pub mutations: usize,
    pub crossovers: usize,
    /// Latency budget as a fraction of the largest dense subnet's predicted latency; 0 turns the
    /// latency budget off (TOML has no null), e.g. for a search bounded by `gflops` alone.
    pub latency_fraction: Option<f64>,
    /// An absolute latency budget (ms), instead of the fraction.
    pub latency_ms: Option<f64>,
    pub gflops: Option<f64>,
    pub active_params: Option<f64>,
    /// Validation sentences the fitness (validation loss with inherited weights) is computed on.
    pub valid_sentences: usize,
    /// Also search the space's homogeneous MoE subnets (every expert of a layer one width) under
    /// the same budget, and train and evaluate the result as `homogeneous_searched`: what the
    /// heterogeneous expert widths buy, at the same search effort.
    pub homogeneous_baseline: bool,
    /// Measure the best this many candidates of each search, in order of fitness, by the
    /// paper's protocol on the latency device, and take the first within the latency budget
    /// (`search::verify_latency`): a predicted budget otherwise favours the candidates the
    /// predictor underestimates. 0 (the default, as in AutoMoE): the search's best as it is.
    pub verify_latency: usize,
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
            homogeneous_baseline: false,
            verify_latency: 0,
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
    /// Where the training stages run (`cpu`, `cuda:N`, `emu`). Models are translated for
    /// evaluation on the CPU; latency is timed on `[latency] device`.
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

/// The most training runs per system `[final_train] replicates` may ask for.
pub const MAX_REPLICATES: usize = 100;

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

    /// The search space `space` names: a built-in one (`small`, `wmt14`) or a space TOML file.
    pub fn search_space(&self) -> Result<crate::model::SearchSpace> {
        use crate::model::SearchSpace;
        match self.space.as_str() {
            "small" => crate::train::mt::small_space(),
            "wmt14" => SearchSpace::from_toml_str(include_str!("../../configs/space_wmt14.toml")),
            path => {
                if crate::fsio::metadata_if_exists(Path::new(path))?.is_none() {
                    return Err(Error::invalid(
                        "space",
                        format!("`{path}` is neither a built-in space (small, wmt14) nor a space TOML file that exists"),
                    ));
                }
                SearchSpace::from_toml_file(Path::new(path))
            }
        }
    }

    /// `[data] dir` made absolute (so that a resume from another working directory reads the same
    /// files); `None` for the synthetic corpus.
    pub fn data_dir(&self) -> Result<Option<PathBuf>> {
        let Some(dir) = &self.data.dir else { return Ok(None) };
        let abs = std::fs::canonicalize(dir).map_err(|e| Error::invalid("[data] dir", format!("{}: {e}", dir.display())))?;
        if !abs.is_dir() {
            return Err(Error::invalid("[data] dir", format!("{} is not a directory", dir.display())));
        }
        Ok(Some(abs))
    }

    /// Checks that the inputs the configuration names are there: the space (parsed) and the data
    /// directory. Separate from the parse's checks because a run directory's saved copy of the
    /// settings is parsed too, possibly from elsewhere; errors name `origin`, the file read.
    pub fn check_inputs(&self, origin: &Path) -> Result<()> {
        let at = |e: Error| Error::Format { path: origin.to_path_buf(), msg: e.to_string() };
        self.search_space().map_err(at)?;
        self.data_dir().map_err(at)?;
        Ok(())
    }

    pub fn demo() -> Result<Self> {
        Self::from_toml_str(DEMO_TOML, Path::new("configs/pipeline_demo.toml"))
    }

    /// The model options of a training stage.
    pub(crate) fn model_options(section: &TrainSection) -> ModelOptions {
        ModelOptions { dropout: section.dropout, balance_coef: section.balance_coef, ..ModelOptions::default() }
    }

    /// The training loop's settings for a stage: warmup then cosine to 1 % of the peak rate,
    /// clipping at 1, ten log lines and four checkpoints per run.
    pub(crate) fn train_config(&self, section: &TrainSection, seed: u64) -> TrainConfig {
        TrainConfig {
            max_updates: section.updates,
            clip_norm: 1.0,
            schedule: LrSchedule::WarmupCosine {
                lr: section.lr,
                warmup: section.warmup,
                total: section.updates,
                min_lr: section.lr * 0.01,
            },
            log_every: (section.updates / 10).max(1),
            valid_every: 0,
            checkpoint_every: (section.updates / 4).max(1),
            averaging: WeightAveraging::from_settings(section.average, section.average_every, section.updates),
            seed,
            quiet: true,
            device: self.device,
            ..TrainConfig::default()
        }
    }

    /// The training seed of each replicate of a system: `seed + 1`, `seed + 2`, … (wrapping).
    pub fn replicate_seeds(&self) -> Vec<u64> {
        (1..=self.final_train.replicates as u64).map(|r| self.seed.wrapping_add(r)).collect()
    }

    pub(crate) fn predictor_config(&self) -> PredictorConfig {
        PredictorConfig { epochs: self.latency.predictor_epochs, seed: self.seed, ..PredictorConfig::default() }
    }

    /// The evolutionary search's settings; `vocab` and `pre_norm` are the trained supernet's.
    pub(crate) fn search_config(&self, vocab: usize, pre_norm: bool) -> SearchConfig {
        let s = &self.search;
        SearchConfig {
            parents: s.parents,
            mutations: s.mutations,
            crossovers: s.crossovers,
            iterations: s.iterations,
            seed: self.seed,
            vocab,
            pre_norm,
            ..SearchConfig::default()
        }
    }

    /// How the systems are translated for BLEU (on the latency threads).
    pub(crate) fn decode_args(&self) -> DecodeArgs {
        DecodeArgs { beam: self.eval.beam, lenpen: self.eval.lenpen, threads: Some(self.latency.threads.max(1)), ..DecodeArgs::default() }
    }

    /// The search's latency budget (ms), if any: `latency_ms`, else `latency_fraction` of the
    /// largest dense subnet's predicted latency (`dense_ms`, asked only when needed), 0 meaning none.
    pub(crate) fn latency_budget(&self, dense_ms: impl FnOnce() -> Result<f64>) -> Result<Option<f64>> {
        Ok(match (self.search.latency_ms, self.search.latency_fraction) {
            (Some(ms), _) => Some(ms),
            (None, Some(0.0)) => None,
            (None, Some(f)) => Some(f * dense_ms()?),
            (None, None) => None,
        })
    }

    /// What is legal but likely unwanted (see [`crate::train::LrSchedule::warning`]), one line per
    /// finding, naming the section.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = [("supernet", &self.supernet), ("final_train", &self.final_train)]
            .into_iter()
            .filter_map(|(name, s)| {
                self.train_config(s, self.seed).schedule.warning(s.updates).map(|w| format!("[{name}] warmup = {}: {w}", s.warmup))
            })
            .collect();
        if self.latency.device == crate::Device::Emu {
            w.push(
                "[latency] device = \"emu\": latency is timed on the CUDA emulator, whose timings say nothing about any GPU's; \
                 the search then targets the emulator"
                    .into(),
            );
        }
        w
    }

    /// Everything a stage would reject later is rejected here, before hours of training: each
    /// section is turned into the settings its stage uses and checked by the same code.
    fn check(&self, origin: &Path) -> Result<()> {
        let bad = |msg: String| Err(Error::Format { path: origin.to_path_buf(), msg });
        let section =
            |name: &str, r: Result<()>| r.map_err(|e| Error::Format { path: origin.to_path_buf(), msg: format!("[{name}]: {e}") });
        if self.supernet.average > 0 || self.supernet.average_every.is_some() {
            return bad("[supernet] average: weight averaging applies to the trained systems ([final_train]); the search reads the supernet's weights as trained".into());
        }
        if self.search.verify_latency > 0 && self.latency_budget(|| Ok(1.0))?.is_none() {
            return bad("[search] verify_latency: there is no latency budget to verify against (set latency_fraction or latency_ms)".into());
        }
        if self.supernet.replicates != 1 {
            return bad(
                "[supernet] replicates: the supernet is trained once; replicates applies to the trained systems ([final_train])".into()
            );
        }
        if self.final_train.replicates == 0 || self.final_train.replicates > MAX_REPLICATES {
            return bad(format!("final_train.replicates = {} must be between 1 and {MAX_REPLICATES}", self.final_train.replicates));
        }
        for (name, s) in [("supernet", &self.supernet), ("final_train", &self.final_train)] {
            section(name, Self::model_options(s).check().and_then(|()| self.train_config(s, self.seed).check()))?;
        }
        section("latency", self.predictor_config().check().and_then(|()| crate::search::dataset::check_samples(self.latency.samples)))?;
        if self.latency.threads == 0 || self.latency.threads > crate::device::MAX_CPU_THREADS {
            return bad(format!("latency.threads = {} must be between 1 and {}", self.latency.threads, crate::device::MAX_CPU_THREADS));
        }
        section("search", self.search_config(1, false).check())?;
        let s = &self.search;
        let constraints = Constraints { latency_ms: s.latency_ms, gflops: s.gflops, active_params: s.active_params };
        section("search", constraints.check())?;
        section("eval", self.decode_args().search_options().map(|_| ()))?;
        let d = &self.data;
        if d.vocab_size <= crate::data::SPECIAL_TOKENS.len() || d.vocab_size > crate::data::tokenizer::MAX_VOCAB_SIZE {
            return bad(format!("data.vocab_size = {} must be between 5 and {}", d.vocab_size, crate::data::tokenizer::MAX_VOCAB_SIZE));
        }
        if d.max_tokens == 0 {
            return bad("data.max_tokens must be positive".into());
        }
        if d.dir.is_none() {
            if d.synthetic_train == 0 || d.synthetic_valid == 0 || d.synthetic_test == 0 {
                return bad("data.synthetic_train, synthetic_valid and synthetic_test must be positive".into());
            }
            section(
                "data",
                crate::data::synthetic::check_synthetic_sizes(d.synthetic_train, d.synthetic_valid, d.synthetic_test).map(|_| ()),
            )?;
        }
        if self.supernet.updates == 0 || self.final_train.updates == 0 {
            return bad("supernet.updates and final_train.updates must be positive".into());
        }
        if self.latency.samples < 10 {
            return bad(format!("latency.samples = {} is too few to train a predictor (at least 10)", self.latency.samples));
        }
        // split_records needs at least one held-out record, so 0 is refused here, not after the
        // latencies are measured.
        if !(self.latency.holdout > 0.0 && self.latency.holdout < 0.9) {
            return bad(format!("latency.holdout = {} must be in (0, 0.9)", self.latency.holdout));
        }
        if self.latency.clock == Clock::Cpu && self.latency.threads != 1 {
            return bad(format!("latency.clock = \"cpu\" times one thread, but latency.threads = {}", self.latency.threads));
        }
        if self.latency.clock == Clock::Cpu && self.latency.device.is_cuda() {
            return bad(format!(
                "latency.clock = \"cpu\" reads the host thread's CPU time, which cannot see work on latency.device = {}; use the wall clock",
                self.latency.device
            ));
        }
        if let Some(f) = self.search.latency_fraction {
            if !(f >= 0.0 && f.is_finite()) {
                return bad(format!("search.latency_fraction = {f} must be positive (or 0: no latency budget)"));
            }
        }
        if self.search.valid_sentences == 0 {
            return bad("search.valid_sentences must be at least 1 (the search's fitness is their loss)".into());
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

    #[test]
    fn the_dataset_protocol_is_the_papers_unless_asked_for_fast() {
        let parse = |toml: &str| PipelineConfig::from_toml_str(toml, Path::new("p.toml"));
        assert_eq!(parse("").unwrap().latency.dataset_protocol.protocol(), crate::decode::LatencyProtocol::paper());
        let fast = parse("[latency]\ndataset_protocol = \"fast\"\n").unwrap();
        assert_eq!(fast.latency.dataset_protocol.protocol(), crate::decode::LatencyProtocol::fast());
        let e = parse("[latency]\ndataset_protocol = \"quick\"\n").unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("quick"), "{e}");
    }

    #[test]
    fn the_space_and_data_directory_a_config_names_must_be_there() {
        let cfg = |toml: &str| PipelineConfig::from_toml_str(toml, Path::new("p.toml")).unwrap();
        let e = cfg("space = \"medium\"\n").check_inputs(Path::new("p.toml")).unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("`medium`") && e.contains("small, wmt14"), "{e}");
        let e = cfg("[data]\ndir = \"/no/such/corpus\"\n").check_inputs(Path::new("p.toml")).unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("[data] dir") && e.contains("/no/such/corpus"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let bad_space = dir.path().join("space.toml");
        std::fs::write(&bad_space, "bogus = 1\n").unwrap();
        let e = cfg(&format!("space = {:?}\n", bad_space.display().to_string())).check_inputs(Path::new("p.toml")).unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("space.toml"), "{e}");
        for ok in ["space = \"small\"\n", "space = \"wmt14\"\n"] {
            cfg(ok).check_inputs(Path::new("p.toml")).unwrap();
        }
        cfg(&format!("[data]\ndir = {:?}\n", dir.path().display().to_string())).check_inputs(Path::new("p.toml")).unwrap();
    }

    #[test]
    fn settings_a_late_stage_would_reject_are_errors_when_the_file_is_read() {
        let err = |toml: &str| PipelineConfig::from_toml_str(toml, Path::new("p.toml")).unwrap_err().to_string();
        for (toml, names) in [
            ("[final_train]\nlr = -1.0\n", &["p.toml", "[final_train]", "learning rate"][..]),
            ("[supernet]\ndropout = 1.5\n", &["[supernet]", "dropout"]),
            ("[final_train]\nbalance_coef = -0.1\n", &["[final_train]", "balance_coef = -0.1"]),
            ("[latency]\npredictor_epochs = 0\n", &["[latency]", "epochs"]),
            ("[latency]\nthreads = 100000\n", &["latency.threads = 100000"]),
            ("[latency]\nthreads = 0\n", &["latency.threads = 0"]),
            ("[latency]\nholdout = 0.0\n", &["latency.holdout = 0"]),
            ("[search]\nvalid_sentences = 0\n", &["search.valid_sentences"]),
            ("[search]\nlatency_fraction = -0.5\n", &["search.latency_fraction = -0.5"]),
            ("[latency]\nsamples = 4611686018427387904\n", &["[latency]", "samples"]),
            ("[search]\nparents = 0\n", &["[search]", "parents"]),
            ("[search]\nmutations = 4611686018427387904\n", &["[search]", "population"]),
            ("[search]\ngflops = -1.0\n", &["[search]", "gflops"]),
            ("[eval]\nbeam = 100000\n", &["[eval]", "beam 100000"]),
            ("[eval]\nlenpen = nan\n", &["[eval]", "length penalty"]),
            ("[data]\nvocab_size = 4611686018427387904\n", &["data.vocab_size"]),
            ("[data]\nsynthetic_train = 4611686018427387904\n", &["[data]", "synthetic corpus", "limit"]),
            ("[data]\nsynthetic_test = 0\n", &["synthetic_test"]),
            ("[data]\nmax_tokens = 0\n", &["data.max_tokens"]),
            ("[supernet]\naverage = 5\n", &["[supernet] average", "[final_train]"]),
            ("[supernet]\nreplicates = 3\n", &["[supernet] replicates", "[final_train]"]),
            ("[final_train]\nreplicates = 0\n", &["final_train.replicates = 0"]),
            ("[final_train]\nreplicates = 101\n", &["final_train.replicates = 101", "100"]),
            ("[latency]\nclock = \"cpu\"\ndevice = \"cuda:0\"\n", &["latency.clock", "latency.device = cuda:0", "wall clock"]),
            ("[latency]\nclock = \"cpu\"\ndevice = \"emu\"\n", &["latency.device = emu"]),
            ("[latency]\ndevice = \"tpu\"\n", &["p.toml", "tpu"]),
            (
                "[final_train]\nupdates = 40\nwarmup = 5\naverage = 5\naverage_every = 10\n",
                &["[final_train]", "5 snapshots 10 updates apart"],
            ),
        ] {
            let e = err(toml);
            assert!(names.iter().all(|n| e.contains(n)), "{toml}: {e}");
        }
        // `average` without a spacing spreads the points over the last quarter of the run.
        let c = PipelineConfig::from_toml_str("[final_train]\nupdates = 400\naverage = 4\n", Path::new("p.toml")).unwrap();
        assert_eq!(c.train_config(&c.final_train, 1).averaging, Some(WeightAveraging { snapshots: 4, every: 25 }));
        assert_eq!(c.train_config(&c.supernet, 1).averaging, None);
        // One training run per system unless asked; the replicates' seeds follow the run's seed.
        assert_eq!(c.replicate_seeds(), [2]);
        let r = PipelineConfig::from_toml_str("seed = 7\n[final_train]\nreplicates = 3\n", Path::new("p.toml")).unwrap();
        assert_eq!(r.replicate_seeds(), [8, 9, 10]);
        // The balance loss is off unless a section asks for it, each section on its own.
        assert_eq!(PipelineConfig::model_options(&c.final_train).balance_coef, 0.0);
        let b = PipelineConfig::from_toml_str("[supernet]\nbalance_coef = 0.01\n", Path::new("p.toml")).unwrap();
        assert_eq!(PipelineConfig::model_options(&b.supernet).balance_coef, 0.01);
        assert_eq!(PipelineConfig::model_options(&b.final_train).balance_coef, 0.0);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        // The latency budget: a fraction by default, an absolute bound first, 0 for none.
        assert_eq!(c.latency_budget(|| Ok(10.0)).unwrap(), Some(5.0));
        let off = PipelineConfig::from_toml_str("[search]\nlatency_fraction = 0.0\ngflops = 0.05\n", Path::new("p.toml")).unwrap();
        assert_eq!(off.latency_budget(|| panic!("not needed")).unwrap(), None);
        let ms = PipelineConfig::from_toml_str("[search]\nlatency_ms = 3.0\n", Path::new("p.toml")).unwrap();
        assert_eq!(ms.latency_budget(|| panic!("not needed")).unwrap(), Some(3.0));
        let short = PipelineConfig::from_toml_str("[final_train]\nupdates = 50\n", Path::new("p.toml")).unwrap();
        assert!(matches!(&short.warnings()[..], [w] if w.contains("[final_train] warmup = 100")), "{:?}", short.warnings());
        // The search's target hardware: the CPU unless named; the emulator only with a warning.
        assert_eq!(c.latency.device, crate::Device::Cpu);
        let gpu = PipelineConfig::from_toml_str("[latency]\ndevice = \"cuda:1\"\n", Path::new("p.toml")).unwrap();
        assert_eq!((gpu.latency.device, gpu.device), (crate::Device::Cuda(1), crate::Device::Cpu));
        assert!(gpu.warnings().is_empty(), "{:?}", gpu.warnings());
        let emu = PipelineConfig::from_toml_str("[latency]\ndevice = \"emu\"\n", Path::new("p.toml")).unwrap();
        assert!(matches!(&emu.warnings()[..], [w] if w.contains("emulator")), "{:?}", emu.warnings());
        // A real corpus has no synthetic sizes to check.
        PipelineConfig::from_toml_str("[data]\ndir = \"x\"\nsynthetic_test = 0\n", Path::new("p.toml")).unwrap();
    }
}
