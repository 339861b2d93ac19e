//! The `automoe` command line: the researcher's entry point to the whole AutoMoE workflow.
//! Subcommands live in `automoe::cli`; this file only parses and dispatches.

use clap::{Parser, Subcommand};

use automoe::cli;

#[derive(Parser)]
#[command(
    name = "automoe",
    version,
    about = "Search, train and run heterogeneous Mixture-of-Experts translation models under a compute budget (AutoMoE)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The whole AutoMoE method on the built-in synthetic corpus, sized for about 10 minutes on 2 cores:
    /// supernet, latency predictor, search, final training, baselines, evaluation, report.
    Demo(cli::pipeline::DemoArgs),
    /// The whole AutoMoE method as a configuration file describes it (configs/pipeline_*.toml).
    Pipeline(cli::pipeline::Args),
    /// Print the devices this build can use (the CPU always; CUDA when a driver and GPU exist).
    Devices(cli::devices::Args),
    /// Train a subnet from scratch (`--subnet-config FILE.json`, `--largest`, `--smallest` or
    /// `--dense`) and export it as a standalone model.
    Train(cli::train::Args),
    /// Train the weight-sharing supernet of a search space (one random subnet per update).
    TrainSupernet(cli::train_supernet::Args),
    /// Translate text (stdin or --input) with a saved model directory (model + tokenizer.json).
    Translate(cli::translate::Args),
    /// Translate a test set and score it with BLEU and chrF (sacreBLEU-compatible).
    Evaluate(cli::evaluate::Args),
    /// Describe a model directory or a subnet configuration: every layer's heads, experts and
    /// expert widths, the parameter counts and GFLOPs.
    Inspect(cli::inspect::Args),
    /// Score translation files against a reference with BLEU and chrF; with two or more, compare
    /// each with the first by paired bootstrap resampling (p-values and 95 % intervals).
    Score(cli::score::Args),
    /// Measure a subnet's or a trained model directory's latency (AutoMoE protocol), or build the
    /// latency dataset of N sampled subnets.
    Latency(cli::latency::Args),
    /// Train and evaluate the latency predictor (MLP) on a latency dataset.
    Predictor(cli::predictor::Args),
    /// Evolutionary search over a trained supernet under latency / GFLOPs / active-parameter constraints.
    Search(cli::search::Args),
    /// The search's fitness (validation loss with the supernet's weights) of given subnets and of
    /// subnets drawn uniformly from the space, without searching: the supernet's ranking, to check
    /// against the same subnets trained from scratch
    Fitness(cli::fitness::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    automoe::cpu::alloc::retain_freed_memory();
    let result = match cli.command {
        None => {
            use clap::CommandFactory;
            // A bare `automoe` prints help rather than doing something surprising.
            let _ = Cli::command().print_help();
            Ok(())
        }
        Some(Command::Devices(a)) => cli::devices::run(a),
        Some(Command::Demo(a)) => cli::pipeline::run_demo(a),
        Some(Command::Pipeline(a)) => cli::pipeline::run(a),
        Some(Command::Train(a)) => cli::train::run(a),
        Some(Command::TrainSupernet(a)) => cli::train_supernet::run(a),
        Some(Command::Translate(a)) => cli::translate::run(a),
        Some(Command::Evaluate(a)) => cli::evaluate::run(a),
        Some(Command::Score(a)) => cli::score::run(a),
        Some(Command::Inspect(a)) => cli::inspect::run(a),
        Some(Command::Latency(a)) => cli::latency::run(a),
        Some(Command::Predictor(a)) => cli::predictor::run(a),
        Some(Command::Search(a)) => cli::search::run(a),
        Some(Command::Fitness(a)) => cli::fitness::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
