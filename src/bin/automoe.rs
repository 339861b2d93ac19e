//! The `automoe` command line: the researcher's entry point to the whole AutoMoE workflow.

use clap::{Parser, Subcommand};

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
    Devices,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            use clap::CommandFactory;
            // A bare `automoe` prints help rather than doing something surprising.
            let _ = Cli::command().print_help();
            std::process::ExitCode::SUCCESS
        }
        Some(Command::Devices) => {
            println!("cpu: {} threads (rayon)", rayon::current_num_threads());
            match automoe::cuda::device_count() {
                Ok(n) => {
                    for i in 0..n {
                        println!("cuda:{i}");
                    }
                }
                Err(e) => println!("cuda: unavailable ({e})"),
            }
            std::process::ExitCode::SUCCESS
        }
    }
}
