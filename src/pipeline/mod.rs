//! The end-to-end AutoMoE pipeline: tokenizer → supernet training → latency dataset + predictor →
//! evolutionary search under the latency budget → training the found subnet (and the baselines)
//! from scratch → evaluation (BLEU, chrF, GFLOPs, params) → every system's latency, timed
//! together → export → report.
//!
//! Every stage writes its outputs under the run directory and is skipped when they exist, so an
//! interrupted run resumes where it stopped (a training stage resumes from its checkpoint). A
//! rerun with changed settings whose stages already have outputs is refused (`freshness`).

pub mod config;
mod freshness;
mod layout;
pub mod plan;
mod report;
mod stages;
mod systems_latency;
mod timings;

use std::path::{Path, PathBuf};

pub use config::PipelineConfig;
pub use plan::plan;
pub use report::{mean_and_sd, SystemResult, COLLAPSED_SHARE, REPORT_FILE};
pub use timings::{Timings, TIMINGS_FILE};

use crate::Result;

/// Writes progress lines to stderr (the report goes to stdout).
pub(crate) fn say(msg: impl AsRef<str>) {
    eprintln!("[pipeline] {}", msg.as_ref());
}

/// Runs every stage for `cfg` in `out`; returns the evaluated systems (AutoMoE first), each
/// system's replicates together in seed order.
pub fn run(cfg: &PipelineConfig, out: &Path) -> Result<Vec<SystemResult>> {
    crate::fsio::create_output_dir(out)?;
    freshness::check(out, cfg)?;
    for w in cfg.warnings() {
        say(format!("warning: {w}"));
    }
    let cfg_path = out.join(freshness::CONFIG_FILE);
    let text = toml::to_string(cfg).map_err(|e| crate::Error::invalid("pipeline", e.to_string()))?;
    crate::fsio::write_atomic(&cfg_path, text.as_bytes())?;
    let t0 = std::time::Instant::now();
    let ctx = stages::Context::new(cfg, out)?;
    ctx.check_before_training()?;
    let supernet_dir = ctx.train_supernet()?;
    let predictor = ctx.latency_predictor(&supernet_dir)?;
    let chosen = ctx.choose_systems(&supernet_dir, &predictor)?;
    let systems = &chosen.systems;
    let mut results = Vec::new();
    let mut runs = Vec::new();
    for sys in systems {
        for rep in ctx.replicates() {
            let model_dir = ctx.train_system(sys, rep)?;
            results.push(ctx.evaluate_system(sys, rep, &model_dir)?);
            runs.push((rep.label(&sys.name), model_dir));
        }
    }
    let latency_meter = ctx.time_systems(&runs, &mut results)?;
    let export = ctx.export(&systems[0])?;
    let comparisons = ctx.test_set_comparisons(systems)?;
    let timings = ctx.timings();
    let report = report::Report {
        cfg,
        results: &results,
        comparisons: &comparisons,
        searches: &chosen.searches,
        latency_meter: &latency_meter,
        export: &export,
        timings: &timings,
        seconds: t0.elapsed().as_secs_f64(),
    };
    report::write(out, &report)?;
    Ok(results)
}

/// The run directory's exported model (what the C ABI and `automoe translate` load).
pub fn export_dir(out: &Path) -> PathBuf {
    layout::RunDir(out).export()
}
