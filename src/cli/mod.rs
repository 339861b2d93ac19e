//! The `automoe` command line's subcommands, as library code (`src/bin/automoe.rs` only parses and
//! dispatches). Each subcommand is a module with a clap `Args` struct and a `run(args) -> Result<()>`.

pub mod devices;
pub mod latency;
pub mod predictor;
pub mod search;
