//! automoe: design and run heterogeneous Mixture-of-Experts Transformers for machine translation
//! under a compute budget (AutoMoE). See `docs/ARCHITECTURE.md` for the map of the code.

// Numeric kernels index several arrays with one loop variable; iterator zips would hide that.
#![allow(clippy::needless_range_loop)]

pub mod autograd;
pub mod capi;
pub mod cli;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod decode;
pub mod device;
pub mod error;
pub mod fsio;
pub mod model;
pub mod moe;
pub mod pipeline;
pub mod rng;
pub mod search;
pub mod tensor;
pub mod train;

/// The README's Rust examples, compiled (and those not marked `no_run` run) by `cargo test`, so
/// that the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

pub use device::Device;
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
