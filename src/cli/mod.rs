//! The `automoe` command line's subcommands, as library code (`src/bin/automoe.rs` only parses and
//! dispatches). Each subcommand is a module with a clap `Args` struct and a `run(args) -> Result<()>`.

pub mod devices;
pub mod evaluate;
pub mod fitness;
pub mod inspect;
pub mod latency;
pub mod pipeline;
pub mod predictor;
pub mod score;
pub mod search;
pub mod train;
pub mod train_supernet;
pub mod translate;
