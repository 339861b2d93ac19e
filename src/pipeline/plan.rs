//! `automoe pipeline --plan`: what a run would do in its directory, stage by stage, without doing
//! any of it — which outputs exist and are kept, which training runs resume from their
//! checkpoint (and at which update), what is still to compute. The settings check of a real run
//! comes first, so a plan that prints is the one the run would follow; each kept stage shows the
//! wall time it took (`timings.json`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::config::PipelineConfig;
use super::freshness;
use super::layout::{resumable, system_names, trained, RunDir, Search};
use super::stages::Replicate;
use super::systems_latency::SystemsLatency;
use super::timings::Timings;
use crate::train::checkpoint::read_checkpoint_meta;
use crate::train::mt;
use crate::Result;

/// What a run would do with one stage's output.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// It exists and is reused.
    Kept,
    /// A training run that stopped: it resumes from its checkpoint, at this update.
    Resumes { update: u64 },
    /// Part of it exists (the latency dataset without its predictor): this part is kept.
    Partial(String),
    /// To compute.
    ToRun,
    /// Rewritten by every run (the export and the report).
    EveryRun,
}

/// One stage's output in the plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// Relative to the run directory.
    pub output: PathBuf,
    pub what: String,
    pub status: Status,
    /// The wall time it took, where recorded.
    pub seconds: Option<f64>,
}

/// A training directory's state.
fn training(dir: &Path) -> Result<Status> {
    if trained(dir) {
        Ok(Status::Kept)
    } else if resumable(dir) {
        Ok(Status::Resumes { update: read_checkpoint_meta(&mt::checkpoint_dir(dir))?.update })
    } else {
        Ok(Status::ToRun)
    }
}

fn exists(path: &Path) -> Status {
    if path.exists() {
        Status::Kept
    } else {
        Status::ToRun
    }
}

/// The plan of `pipeline::run(cfg, out)`; errors where that run would refuse to start
/// (settings changed under existing outputs, an unreadable recorded configuration).
pub fn plan(cfg: &PipelineConfig, out: &Path) -> Result<Vec<Step>> {
    crate::fsio::check_output_dir(out)?;
    freshness::check(out, cfg)?;
    let timings = Timings::load(out)?;
    let d = RunDir(out);
    let mut steps = Vec::new();
    let mut push = |path: PathBuf, what: String, status: Status| {
        let seconds = timings.seconds(&Timings::stage_name(out, &path));
        let output = path.strip_prefix(out).unwrap_or(&path).to_path_buf();
        steps.push(Step { output, what, status, seconds });
    };
    push(d.tokenizer(), format!("joined BPE tokenizer, {} entries", cfg.data.vocab_size), exists(&d.tokenizer()));
    push(d.supernet(), format!("supernet training over space `{}`, {} updates", cfg.space, cfg.supernet.updates), training(&d.supernet())?);
    let latency = if d.predictor().exists() {
        Status::Kept
    } else if d.latency_dataset().exists() {
        Status::Partial("the measured dataset is kept; the predictor is to train".into())
    } else {
        Status::ToRun
    };
    push(d.latency(), format!("latency of {} sampled subnets and the predictor trained on them", cfg.latency.samples), latency);
    let s = &cfg.search;
    for which in Search::all(cfg) {
        let dir = d.search(which);
        push(dir.clone(), format!("{}, {} iterations", which.describe(), s.iterations), exists(&RunDir::population(&dir)));
    }
    let replicates = Replicate::all(cfg);
    for name in system_names(cfg) {
        for rep in &replicates {
            let label = rep.label(name);
            let dir = d.system(&label);
            push(
                dir.clone(),
                format!("{name} trained from scratch, seed {}, {} updates", rep.seed, cfg.final_train.updates),
                training(&dir)?,
            );
            let result = d.eval_result(&label);
            push(result.clone(), format!("{label}: BLEU, chrF and costs on the test split"), exists(&result));
        }
    }
    let labels: Vec<String> = system_names(cfg).into_iter().flat_map(|name| replicates.iter().map(move |rep| rep.label(name))).collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let timed = match SystemsLatency::load_for(&d.systems_latency(), &labels)? {
        Some(_) => Status::Kept,
        None => Status::ToRun,
    };
    push(d.systems_latency(), format!("latency of the {} system run(s), timed together in rounds", labels.len()), timed);
    push(d.export(), "the AutoMoE model (its first run) for translate and the C ABI".into(), Status::EveryRun);
    push(out.join(super::REPORT_FILE), "the report".into(), Status::EveryRun);
    Ok(steps)
}

/// The plan as `automoe pipeline --plan` prints it.
pub fn describe(out: &Path, steps: &[Step]) -> String {
    let recorded = out.join(freshness::CONFIG_FILE);
    let mut s = if recorded.exists() {
        format!("{}: settings as recorded in {}\n", out.display(), recorded.display())
    } else {
        format!("{}: a new run\n", out.display())
    };
    let status = |st: &Step| match &st.status {
        Status::Kept => "kept".to_string(),
        Status::Resumes { update } => format!("resumes at update {update}"),
        Status::Partial(_) => "partly kept".to_string(),
        Status::ToRun => "to run".to_string(),
        Status::EveryRun => "rewritten".to_string(),
    };
    let status_width = steps.iter().map(|st| status(st).len()).max().unwrap_or(0);
    let width = steps.iter().map(|st| st.output.display().to_string().len()).max().unwrap_or(0);
    for st in steps {
        let took = st.seconds.filter(|_| st.status == Status::Kept).map_or_else(String::new, |t| format!(" (took {t:.0} s)"));
        let note = match &st.status {
            Status::Partial(n) => format!(": {n}"),
            _ => String::new(),
        };
        let _ = writeln!(s, "  {:<status_width$}  {:<width$}  {}{took}{note}", status(st), st.output.display(), st.what);
    }
    let to_run = steps.iter().filter(|st| matches!(st.status, Status::ToRun | Status::Resumes { .. } | Status::Partial(_))).count();
    let _ = writeln!(s, "{to_run} stage(s) to run or finish.");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::checkpoint::{CheckpointMeta, META_FILE};
    use crate::train::{AdamConfig, LrSchedule};

    fn status_of<'a>(steps: &'a [Step], output: &str) -> &'a Status {
        &steps.iter().find(|s| s.output == Path::new(output)).unwrap_or_else(|| panic!("{output} not planned")).status
    }

    #[test]
    fn an_interrupted_training_resumes_and_a_measured_dataset_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        let cfg = PipelineConfig::demo().unwrap();
        let d = RunDir(out);
        let ckpt = mt::checkpoint_dir(&d.supernet());
        std::fs::create_dir_all(&ckpt).unwrap();
        let meta = CheckpointMeta::new(37, 1, LrSchedule::Constant { lr: 1e-3 }, AdamConfig::default());
        std::fs::write(ckpt.join(META_FILE), serde_json::to_vec(&meta).unwrap()).unwrap();
        std::fs::create_dir_all(d.latency()).unwrap();
        std::fs::write(d.latency_dataset(), "{}").unwrap();
        let steps = plan(&cfg, out).unwrap();
        assert_eq!(status_of(&steps, "supernet"), &Status::Resumes { update: 37 });
        assert!(matches!(status_of(&steps, "latency"), Status::Partial(_)));
        assert_eq!(status_of(&steps, "tokenizer.json"), &Status::ToRun);
        assert_eq!(status_of(&steps, "export"), &Status::EveryRun);
        let text = describe(out, &steps);
        assert!(text.contains("resumes at update 37") && text.contains("partly kept") && text.contains("a new run"), "{text}");
        // Every system of the run, each with its evaluation.
        for name in system_names(&cfg) {
            assert_eq!(status_of(&steps, &format!("systems/{name}")), &Status::ToRun);
            assert_eq!(status_of(&steps, &format!("eval/{name}.json")), &Status::ToRun);
        }
        assert!(text.contains(&format!("{} stage(s) to run or finish", 2 + 1 + 2 + 2 * 4 + 1)), "{text}");
        // A file where the run directory should be is refused as the run refuses it.
        let file = out.join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(plan(&cfg, &file).unwrap_err().to_string().contains("exists and is not a directory"));
        // A damaged checkpoint is the error resuming it would give, by name.
        std::fs::write(ckpt.join(META_FILE), "{").unwrap();
        assert!(plan(&cfg, out).unwrap_err().to_string().contains(META_FILE));
    }
}
