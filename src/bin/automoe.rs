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
    /// Print the devices this build can use (the CPU always; CUDA when a driver and GPU exist).
    Devices(cli::devices::Args),
    /// Measure a subnet's latency (AutoMoE protocol) or build the latency dataset of N sampled subnets.
    Latency(cli::latency::Args),
    /// Train and evaluate the latency predictor (MLP) on a latency dataset.
    Predictor(cli::predictor::Args),
    /// Evolutionary search over a trained supernet under latency / GFLOPs / active-parameter constraints.
    Search(cli::search::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => {
            use clap::CommandFactory;
            // A bare `automoe` prints help rather than doing something surprising.
            let _ = Cli::command().print_help();
            Ok(())
        }
        Some(Command::Devices(a)) => cli::devices::run(a),
        Some(Command::Latency(a)) => cli::latency::run(a),
        Some(Command::Predictor(a)) => cli::predictor::run(a),
        Some(Command::Search(a)) => cli::search::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
