//! `automoe pipeline --config FILE` and `automoe demo`: the whole AutoMoE method in one command.

use std::path::{Path, PathBuf};

use crate::pipeline::{self, PipelineConfig};
use crate::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pipeline configuration (TOML; see configs/pipeline_*.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Run directory: every stage's outputs; rerunning resumes where a run stopped.
    #[arg(long, default_value = "runs/pipeline")]
    pub out: PathBuf,
    /// Worker threads for training and search (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print what a run would do in --out (each stage kept, resumed or to run) and do nothing.
    #[arg(long)]
    pub plan: bool,
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Run directory (rerunning resumes).
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print what a run would do in --out and do nothing.
    #[arg(long)]
    pub plan: bool,
}

/// Prints the plan of a run of `cfg` in `out`.
fn print_plan(cfg: &PipelineConfig, out: &Path) -> Result<()> {
    let steps = pipeline::plan(cfg, out)?;
    print!("{}", pipeline::plan::describe(out, &steps));
    Ok(())
}

fn with_threads(threads: Option<usize>, f: impl FnOnce() -> Result<()> + Send) -> Result<()> {
    match threads {
        None => f(),
        Some(n) => crate::device::cpu_pool(n.max(1), "--threads")?.install(f),
    }
}

pub fn run(args: Args) -> Result<()> {
    let cfg = PipelineConfig::from_file(&args.config)?;
    cfg.check_inputs(&args.config)?;
    if args.plan {
        return print_plan(&cfg, &args.out);
    }
    with_threads(args.threads, || pipeline::run(&cfg, &args.out).map(|_| ()))
}

pub fn run_demo(args: DemoArgs) -> Result<()> {
    let cfg = PipelineConfig::demo()?;
    if args.plan {
        return print_plan(&cfg, &args.out);
    }
    with_threads(args.threads, || pipeline::run(&cfg, &args.out).map(|_| ()))
}
