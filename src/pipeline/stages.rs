//! The pipeline's stages. Each checks for its outputs first and skips when they are complete.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::config::{PipelineConfig, TrainSection};
use super::layout::{resumable, trained, Choice, RunDir, Search, SystemKind, DONE};
use super::report::SystemResult;
use super::say;
use super::systems_latency::{SystemsLatency, TimedRun};
use super::timings::Timings;
use crate::cli::evaluate::{evaluate, Args as EvalArgs};
use crate::cli::latency::measure_model_dirs_together;
use crate::cli::translate::{encode_source, load_model_dir, TOKENIZER_FILE};
use crate::data::corpus::{filter_pairs, read_parallel, split_paths, LengthFilter};
use crate::data::{read_lines, synthetic_corpus, Tokenizer};
use crate::decode::significance::{paired_bootstrap, PairedBootstrap, DEFAULT_RESAMPLES, DEFAULT_SEED};
use crate::fsio::write_atomic;
use crate::model::{flop_report, param_report, Routing, SearchSpace, SubnetConfig, Supernet, PAPER_SRC_LEN, PAPER_TGT_LEN};
use crate::search::{
    load_supernet, report::save_search, search, split_records, verify_latency, Constraints, LatencyDataset, LatencyMeter, LatencyPredictor,
    LatencyProtocol, SearchConfig, SearchResult, SubnetLatencyMeter, SupernetLoss,
};
use crate::train::mt::data::{read_source, train_tokenizer, DataConfig, DataSource};
use crate::train::mt::{self, Mode, RunSpec};
use crate::{Error, Result};

/// One system of the comparison.
#[derive(Clone, Debug)]
pub struct System {
    pub name: String,
    pub description: String,
    pub config: SubnetConfig,
}

/// What stage 4 chose: the systems in report order and each search's result, in the order the
/// searches ran.
pub struct Chosen {
    pub systems: Vec<System>,
    pub searches: Vec<(Search, SearchResult)>,
}

/// One training run of a system: its index among the system's replicates and its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicate {
    pub index: usize,
    pub seed: u64,
}

impl Replicate {
    /// The training runs of every system under `cfg`, in order.
    pub fn all(cfg: &PipelineConfig) -> Vec<Replicate> {
        cfg.replicate_seeds().into_iter().enumerate().map(|(index, seed)| Replicate { index, seed }).collect()
    }

    /// The run's name under `systems/` and `eval/`: the system's name for the first replicate
    /// (the layout of a run without replicates), `<name>.seed<seed>` for the others.
    pub fn label(&self, system: &str) -> String {
        if self.index == 0 {
            system.to_string()
        } else {
            format!("{system}.seed{}", self.seed)
        }
    }
}

pub struct Context<'a> {
    cfg: &'a PipelineConfig,
    out: &'a Path,
    space: SearchSpace,
    source: DataSource,
    /// Each stage's wall time, recorded as the stage finishes (`timings.json`).
    timings: RefCell<Timings>,
    tok_path: PathBuf,
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::invalid("pipeline", e.to_string()))
}

/// A run directory's JSON file, an error naming it when it does not parse.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&s).map_err(|e| Error::Format { path: path.to_path_buf(), msg: e.to_string() })
}

impl<'a> Context<'a> {
    /// Resolves the space and the data, and trains (or loads) the pipeline's one tokenizer.
    pub fn new(cfg: &'a PipelineConfig, out: &'a Path) -> Result<Self> {
        let space = cfg.search_space()?;
        let d = &cfg.data;
        let source = match cfg.data_dir()? {
            Some(dir) => DataSource::Files { dir, src: d.src.clone(), tgt: d.tgt.clone() },
            None => DataSource::Synthetic { seed: cfg.seed, n_train: d.synthetic_train, n_valid: d.synthetic_valid },
        };
        let mut timings = Timings::load(out)?;
        let tok_path = RunDir(out).tokenizer();
        if tok_path.exists() {
            say(format!("tokenizer: {} exists, kept", tok_path.display()));
        } else {
            let start = Instant::now();
            let (train, _) = read_source(&source)?;
            let tok = train_tokenizer(&train, d.vocab_size)?;
            tok.save(&tok_path)?;
            say(format!("tokenizer: {} entries trained on {} pairs", tok.vocab_size(), train.len()));
            timings.record(out, TOKENIZER_FILE, start.elapsed().as_secs_f64(), false)?;
        }
        Ok(Context { cfg, out, space, source, tok_path, timings: RefCell::new(timings) })
    }

    /// Records the wall time since `start` of the stage whose output is `output` (under the run
    /// directory), added to its earlier time when `resumed`.
    fn record_time(&self, output: &Path, start: Instant, resumed: bool) -> Result<()> {
        let stage = Timings::stage_name(self.out, output);
        self.timings.borrow_mut().record(self.out, &stage, start.elapsed().as_secs_f64(), resumed)
    }

    /// The recorded wall time of every stage whose outputs are still there (the report's).
    pub fn timings(&self) -> Timings {
        self.timings.borrow().present(self.out)
    }

    fn dirs(&self) -> RunDir<'_> {
        RunDir(self.out)
    }

    /// A meter of `net`'s subnets by `base`'s repetitions and `[latency]`'s clock, threads and
    /// device: the latency dataset's (`[latency] dataset_protocol`) and the search verification's
    /// (the paper's).
    fn latency_meter<'n>(&self, net: &'n Supernet, base: LatencyProtocol) -> Result<SubnetLatencyMeter<'n>> {
        let l = &self.cfg.latency;
        SubnetLatencyMeter::new(net, LatencyProtocol { clock: l.clock, ..base }, l.threads, self.cfg.seed)?.on_device(l.device)
    }

    fn data_config(&self) -> DataConfig {
        DataConfig { max_tokens: self.cfg.data.max_tokens, vocab_size: self.cfg.data.vocab_size, ..DataConfig::new(self.source.clone()) }
    }

    /// Trains `mode` into `dir` (resuming an interrupted run; skipping a finished one).
    fn train(&self, dir: &Path, mode: Mode, section: &TrainSection, seed: u64) -> Result<()> {
        if trained(dir) {
            say(format!("{}: trained already, kept", dir.display()));
            return Ok(());
        }
        let start = Instant::now();
        let resume = resumable(dir);
        // The training time earlier, interrupted invocations banked in the checkpoint: they never
        // reached `record_time`, so this session's time alone would undercount the stage.
        let banked_s = if resume { crate::train::read_checkpoint_meta(&mt::checkpoint_dir(dir))?.elapsed_s } else { 0.0 };
        let spec = RunSpec {
            mode,
            options: PipelineConfig::model_options(section),
            data: self.data_config(),
            label_smoothing: 0.1,
            train: self.cfg.train_config(section, seed),
            out: dir.to_path_buf(),
            resume,
            tokenizer: Some(self.tok_path.clone()),
            verbose: false,
        };
        let s = mt::run(&spec)?;
        let last = s.valid.last().map(|(_, m)| format!("{m:?}")).unwrap_or_default();
        say(format!("{}: {} updates in {:.0} s ({:.0} tokens/s); valid {last}", dir.display(), section.updates, s.wall_s, s.tokens_per_s));
        let stage = Timings::stage_name(self.out, dir);
        self.timings.borrow_mut().record(self.out, &stage, banked_s + start.elapsed().as_secs_f64(), false)?;
        write_atomic(&dir.join(DONE), b"done\n")
    }

    /// Stage 2: the weight-sharing supernet.
    pub fn train_supernet(&self) -> Result<PathBuf> {
        let dir = self.dirs().supernet();
        if !trained(&dir) {
            say(format!("supernet: {} updates over space `{}`", self.cfg.supernet.updates, self.space.name));
        }
        self.train(&dir, Mode::Supernet { space: self.space.clone() }, &self.cfg.supernet, self.cfg.seed)?;
        Ok(dir)
    }

    /// Stage 3: measured latencies of sampled subnets, and the predictor trained on them.
    pub fn latency_predictor(&self, supernet_dir: &Path) -> Result<LatencyPredictor> {
        let dir = self.dirs().latency();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let pred_path = self.dirs().predictor();
        if pred_path.exists() {
            say(format!("latency predictor: {} exists, kept", pred_path.display()));
            return LatencyPredictor::load(&pred_path);
        }
        let ds_path = self.dirs().latency_dataset();
        let ds = if ds_path.exists() {
            LatencyDataset::load_json(&ds_path)?
        } else {
            let start = Instant::now();
            let (net, _) = load_supernet(&mt::checkpoint_dir(supernet_dir))?;
            let l = &self.cfg.latency;
            let mut meter = self.latency_meter(&net, l.dataset_protocol.protocol())?;
            let how = if l.interleave { ", interleaved" } else { "" };
            say(format!("latency: measuring {} subnets ({}{how})", l.samples, meter.describe()));
            let ds = if l.interleave {
                LatencyDataset::build_interleaved(&net.space, &meter, l.samples, self.cfg.seed, |_| {})?
            } else {
                LatencyDataset::build(&net.space, &mut meter, l.samples, self.cfg.seed, |_| {})?
            };
            ds.save_json(&ds_path)?;
            ds.save_csv(&dir.join("dataset.csv"))?;
            self.record_time(&dir, start, false)?;
            ds
        };
        let start = Instant::now();
        let (train, test) = split_records(&ds.records, self.cfg.latency.holdout, self.cfg.seed)?;
        let config = self.cfg.predictor_config();
        let pred = LatencyPredictor::train(&ds, &train, config, |_| {})?;
        let baseline = train.iter().map(|r| r.latency.total_ms()).sum::<f64>() / train.len().max(1) as f64;
        let report = pred.evaluate(&test, baseline)?;
        say(format!("latency predictor on {} held-out subnets: {report}", test.len()));
        write_atomic(&dir.join("predictor_report.txt"), format!("{report}\n").as_bytes())?;
        pred.save(&pred_path)?;
        self.record_time(&dir, start, true)?;
        Ok(pred)
    }

    /// Validation pairs for the search's fitness, tokenised.
    fn fitness_pairs(&self, tok: &Tokenizer) -> Result<Vec<crate::data::TokenizedPair>> {
        let (_, valid) = read_source(&self.source)?;
        let (mut pairs, _) = filter_pairs(&valid, &LengthFilter::default(), |s| tok.encode(s))?;
        pairs.truncate(self.cfg.search.valid_sentences);
        Ok(pairs)
    }

    /// One evolutionary search into its directory (skipped when its `population.json` exists):
    /// over the whole space, its one-expert part (`Search::Dense`), or its homogeneous MoE subnets.
    fn run_search(&self, which: Search, supernet_dir: &Path, predictor: &LatencyPredictor, budget_ms: Option<f64>) -> Result<SearchResult> {
        let dir = &self.dirs().search(which);
        let space = &match which {
            Search::Dense => SearchSpace { name: format!("{}-dense", self.space.name), max_experts: 1, ..self.space.clone() },
            Search::AutoMoe | Search::Homogeneous => self.space.clone(),
        };
        let pop = RunDir::population(dir);
        if pop.exists() {
            say(format!("search: {} exists, kept", pop.display()));
            return from_json(&pop);
        }
        let start = Instant::now();
        let (net, _) = load_supernet(&mt::checkpoint_dir(supernet_dir))?;
        let tok = Tokenizer::load(&self.tok_path)?;
        let pairs = self.fitness_pairs(&tok)?;
        let mut fitness = SupernetLoss::new(&net, &pairs, self.cfg.data.max_tokens)?;
        let mut meter = predictor.clone();
        let s = &self.cfg.search;
        let constraints = Constraints { latency_ms: budget_ms, gflops: s.gflops, active_params: s.active_params };
        let config =
            SearchConfig { homogeneous_experts: which == Search::Homogeneous, ..self.cfg.search_config(net.vocab, net.options.pre_norm) };
        let only = if config.homogeneous_experts { " (homogeneous experts only)" } else { "" };
        say(format!(
            "search in `{}`{only}: {}, population {} for {} iterations",
            space.name,
            constraints.describe(),
            config.population(),
            config.iterations
        ));
        let mut result = search(space, config, constraints, &mut fitness, Some(&mut meter as &mut dyn LatencyMeter), |_, _| {})?;
        if s.verify_latency > 0 && result.constraints.latency_ms.is_some() {
            let mut measured = self.latency_meter(&net, LatencyProtocol::paper())?;
            verify_latency(&mut result, &mut measured, s.verify_latency)?;
            if let Some(v) = &result.verification {
                say(format!(
                    "{}: latency of the best candidates measured against {:.1} ms: {}",
                    which.describe(),
                    v.budget_ms,
                    v.summary()
                ));
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        save_search(&result, dir)?;
        self.record_time(dir, start, false)?;
        Ok(result)
    }

    /// Stage 4: the searched AutoMoE subnet, the HAT-style dense search (experts fixed to 1) under
    /// the same budget, the fixed baselines, and (`search.homogeneous_baseline`) the search over
    /// homogeneous MoE subnets.
    pub fn choose_systems(&self, supernet_dir: &Path, predictor: &LatencyPredictor) -> Result<Chosen> {
        let dense = self.space.dense();
        let budget = self.cfg.latency_budget(|| Ok(predictor.predict(&dense)?.total_ms()))?;
        let budget_note = budget.map(|b| format!("predicted latency <= {b:.1} ms")).unwrap_or_else(|| "no latency budget".into());
        let (mut systems, mut searches) = (Vec::new(), Vec::new());
        for kind in SystemKind::all(self.cfg) {
            let config = match kind.choice() {
                Choice::Search(which) => {
                    let result = self.run_search(which, supernet_dir, predictor, budget)?;
                    let config = result.best.config.clone();
                    searches.push((which, result));
                    config
                }
                Choice::LargestDense => dense.clone(),
                Choice::LargestMoe => self.space.largest(),
            };
            systems.push(System { name: kind.name().into(), description: kind.describe(&budget_note, self.space.max_experts), config });
        }
        Ok(Chosen { systems, searches })
    }

    /// The training runs of every system, in order.
    pub fn replicates(&self) -> Vec<Replicate> {
        Replicate::all(self.cfg)
    }

    /// Stage 5: trains one replicate of a system from scratch; returns its exported model directory.
    pub fn train_system(&self, sys: &System, rep: Replicate) -> Result<PathBuf> {
        let dir = self.dirs().system(&rep.label(&sys.name));
        if !trained(&dir) {
            say(format!("{}: training from scratch, seed {} ({})", sys.name, rep.seed, sys.description));
        }
        self.train(&dir, Mode::Subnet { config: sys.config.clone() }, &self.cfg.final_train, rep.seed)?;
        Ok(mt::model_dir(&dir))
    }

    /// What can be known to fail before the supernet is trained: a GFLOPs or active-parameter
    /// bound that even the space's smallest subnet exceeds, and the test split (see
    /// [`Context::check_test_split`]).
    pub fn check_before_training(&self) -> Result<()> {
        // The latency device is first used after the supernet's training: a missing GPU is said now.
        let device = self.cfg.latency.device;
        if device.is_cuda() {
            crate::cuda::Gpu::of(device).map_err(|e| Error::invalid("[latency] device", format!("{device} cannot be used: {e}")))?;
        }
        let s = &self.cfg.search;
        let tok = Tokenizer::load(&self.tok_path)?;
        let pre_norm = PipelineConfig::model_options(&self.cfg.supernet).pre_norm;
        Constraints { latency_ms: None, gflops: s.gflops, active_params: s.active_params }.check_reachable(
            &self.space,
            tok.vocab_size(),
            pre_norm,
        )?;
        self.check_test_split(&tok)
    }

    /// Reads the test split now and checks every source sentence fits the translator, so that a
    /// misnamed `data.test`, an unreadable file or an over-long line fails before the training
    /// stages rather than after them.
    fn check_test_split(&self, tok: &Tokenizer) -> Result<()> {
        let (src, _) = self.test_files()?;
        let max = self.cfg.decode_args().max_source_len;
        let text = std::fs::read_to_string(&src).map_err(|e| Error::io(&src, e))?;
        for (i, line) in text.lines().enumerate() {
            if let Err(n) = encode_source(tok, line, max, false)? {
                return Err(Error::Format {
                    path: src.clone(),
                    msg: format!("line {}: {n} tokens, more than the translator's maximum source length {max}", i + 1),
                });
            }
        }
        Ok(())
    }

    /// The test split as two files under the run directory (truncated to `eval.max_sentences`).
    fn test_files(&self) -> Result<(PathBuf, PathBuf)> {
        let dir = self.dirs().data();
        let (s, t) = (dir.join("test.src"), dir.join("test.ref"));
        if s.exists() && t.exists() {
            return Ok((s, t));
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let d = &self.cfg.data;
        let mut pairs = match &d.dir {
            Some(dir) => {
                let (s, t) = split_paths(dir, &d.test, &d.src, &d.tgt);
                read_parallel(s, t)?
            }
            None => synthetic_corpus(self.cfg.seed, d.synthetic_train, d.synthetic_valid, d.synthetic_test)?.test,
        };
        if self.cfg.eval.max_sentences > 0 {
            pairs.truncate(self.cfg.eval.max_sentences);
        }
        let join = |side: fn(&(String, String)) -> &String| pairs.iter().map(|p| format!("{}\n", side(p))).collect::<String>();
        write_atomic(&s, join(|p| &p.0).as_bytes())?;
        write_atomic(&t, join(|p| &p.1).as_bytes())?;
        Ok((s, t))
    }

    /// The first system's first run against every other system's first run on the test split,
    /// by paired bootstrap resampling (the report's test-set noise). A system without kept
    /// translations (`eval/<name>.hyp`, absent in run directories older than them) is left out.
    pub fn test_set_comparisons(&self, systems: &[System]) -> Result<Vec<(String, PairedBootstrap)>> {
        let hyps = |name: &str| -> Result<Option<Vec<String>>> {
            let p = self.dirs().eval_translations(name);
            if p.exists() {
                read_lines(&p).map(Some)
            } else {
                Ok(None)
            }
        };
        let Some((first, others)) = systems.split_first() else { return Ok(Vec::new()) };
        let Some(system) = hyps(&first.name)? else { return Ok(Vec::new()) };
        let refs = read_lines(self.test_files()?.1)?;
        let mut out = Vec::new();
        for other in others {
            if let Some(baseline) = hyps(&other.name)? {
                out.push((other.name.clone(), paired_bootstrap(&baseline, &system, &refs, DEFAULT_RESAMPLES, DEFAULT_SEED)?));
            }
        }
        Ok(out)
    }

    /// Stage 6: BLEU and chrF on the test split, latency by the AutoMoE protocol (incremental
    /// decoder, fixed thread count), GFLOPs and parameters.
    pub fn evaluate_system(&self, sys: &System, rep: Replicate, model_dir: &Path) -> Result<SystemResult> {
        let label = rep.label(&sys.name);
        let path = self.dirs().eval_result(&label);
        if path.exists() {
            let mut r: SystemResult = from_json(&path)?;
            // Results written before replicates existed were all of the first one.
            r.seed.get_or_insert(rep.seed);
            return Ok(r);
        }
        let start = Instant::now();
        let (src, reference) = self.test_files()?;
        let decode = self.cfg.decode_args();
        let args = EvalArgs {
            model: model_dir.to_path_buf(),
            src,
            reference,
            hyp_out: Some(self.dirs().eval_translations(&label)),
            json: None,
            decode,
        };
        let eval_dir = self.dirs().eval();
        std::fs::create_dir_all(&eval_dir).map_err(|e| Error::io(&eval_dir, e))?;
        let e = evaluate(&args)?;
        if let Some(h) = &args.hyp_out {
            crate::cli::translate::write_output(Some(h), &e.hypotheses)?;
        }
        // The latency is timed later, with every other system (`time_systems`).
        let model = load_model_dir(model_dir)?.0;
        let params = param_report(&model.config, model.vocab, model.options.pre_norm, &Routing::Uniform)?;
        let flops = flop_report(&model.config, model.vocab, PAPER_SRC_LEN, PAPER_TGT_LEN, &Routing::Uniform)?;
        let r = SystemResult {
            name: sys.name.clone(),
            description: sys.description.clone(),
            seed: Some(rep.seed),
            bleu: e.bleu.score,
            chrf: e.chrf.score,
            bleu_signature: e.bleu.signature(),
            test_sentences: e.sentences,
            latency: None,
            gflops: flops.paper_gflops(),
            active_params: params.active_without_embedding(),
            total_params: params.total_without_embedding(),
            routed_gflops: e.routed.as_ref().map(|c| c.gflops),
            routed_active_params: e.routed.as_ref().map(|c| c.active_params),
            expert_shares: e.routed.as_ref().map_or_else(Vec::new, |c| c.share_lines(&model.config)),
            max_expert_share: e.routed.as_ref().and_then(|c| c.max_expert_share(&model.config)),
            experts: model.config.experts_per_layer(),
            config: model.config.clone(),
        };
        write_atomic(&path, to_json(&r)?.as_bytes())?;
        self.record_time(&path, start, false)?;
        say(format!("{label}: BLEU {:.2}, chrF {:.2}, {:.3} GFLOPs", r.bleu, r.chrf, r.gflops));
        Ok(r)
    }

    /// Stage 6b: every trained system run's latency by the AutoMoE protocol on the search's target
    /// hardware (`[latency]` device, threads and clock, as the predictor's dataset was timed),
    /// timed together in rounds (`decode::measure_in_rounds`) so that a load drifting over the
    /// measurement hits every system alike instead of favouring whichever was timed in a quiet
    /// moment. `runs` are (label, model directory) in report order, as are `results`, whose
    /// latency this fills in. Kept from an earlier invocation when it holds exactly these runs;
    /// any change in the runs (a replicate or a system added) times them all again, together.
    /// Returns what was timed and where, for the report.
    pub fn time_systems(&self, runs: &[(String, PathBuf)], results: &mut [SystemResult]) -> Result<String> {
        let path = self.dirs().systems_latency();
        let labels: Vec<&str> = runs.iter().map(|(label, _)| label.as_str()).collect();
        let kept = SystemsLatency::load_for(&path, &labels)?;
        if kept.is_none() && path.exists() {
            say(format!("{}: timed for other system runs; timing these {} together again", path.display(), runs.len()));
        }
        let timed = match kept {
            Some(t) => t,
            None => {
                let start = Instant::now();
                let l = &self.cfg.latency;
                let threads = l.threads.max(1);
                let proto = LatencyProtocol { clock: l.clock, threads: Some(threads), ..LatencyProtocol::paper() };
                let dirs: Vec<PathBuf> = runs.iter().map(|(_, dir)| dir.clone()).collect();
                say(format!("timing {} system run(s) together: {} rounds", runs.len(), proto.runs));
                let reports = measure_model_dirs_together(&dirs, l.device, &proto)?;
                let systems = runs.iter().zip(reports).map(|((label, _), latency)| TimedRun { label: label.clone(), latency }).collect();
                let t = SystemsLatency { meter: proto.describe(l.device, threads), systems };
                write_atomic(&path, to_json(&t)?.as_bytes())?;
                self.record_time(&path, start, false)?;
                for s in &t.systems {
                    say(format!("{}: latency {:.1} ms", s.label, s.latency.total_ms));
                }
                t
            }
        };
        for (r, s) in results.iter_mut().zip(&timed.systems) {
            r.latency = Some(s.latency.clone());
        }
        Ok(timed.meter)
    }

    /// Stage 7: the AutoMoE model directory (its first replicate) as the C ABI and
    /// `automoe translate` load it.
    pub fn export(&self, sys: &System) -> Result<PathBuf> {
        let from = mt::model_dir(&self.dirs().system(&sys.name));
        let to = self.dirs().export();
        std::fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))?;
        for entry in std::fs::read_dir(&from).map_err(|e| Error::io(&from, e))? {
            let entry = entry.map_err(|e| Error::io(&from, e))?;
            let bytes = std::fs::read(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            write_atomic(&to.join(entry.file_name()), &bytes)?;
        }
        Ok(to)
    }
}
