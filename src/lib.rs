//! automoe: design and run heterogeneous Mixture-of-Experts Transformers for machine translation
//! under a compute budget (AutoMoE). `docs/ARCHITECTURE.md` in the repository maps the code;
//! this page says where to start for each job.
//!
//! | to… | start at |
//! | --- | --- |
//! | compute with tensors on the CPU, a GPU or the CUDA emulator | [`Tensor`], [`Device`] |
//! | differentiate | [`autograd::Tape`], [`autograd::ParamStore`], [`autograd::gradcheck`] |
//! | run one heterogeneous MoE layer | [`moe::moe_forward`], [`moe::MoeParams`], [`moe::MoeSubnet`] |
//! | describe a search space and its subnets | [`model::SearchSpace`], [`model::SubnetConfig`], [`model::Supernet`] |
//! | count FLOPs and parameters | [`model::flop_report`], [`model::param_report`] |
//! | train a supernet or a subnet | [`train::mt::run`], [`train::Trainer`] |
//! | translate, score and time a model | [`model::SubnetModel`], [`decode::translate_ids`], [`decode::bleu`], [`decode::measure`] |
//! | search under a latency / FLOPs budget | [`search::search`], [`search::LatencyPredictor`], [`search::Constraints`] |
//! | run the whole method | [`pipeline::run`], [`pipeline::PipelineConfig`] |
//! | call the CUDA kernels directly | [`cuda`] (the kernels are `cuda/*.cu`; the emulator runs them without a GPU) |
//! | translate from C or C++ | `ffi/automoe.h` (implemented in [`capi`]) |
//!
//! Errors are [`Error`] values that name what was wrong and where. Bad input is an error, not a
//! panic; the exceptions are the infallible constructors ([`Tensor::zeros`], [`Tensor::full`],
//! [`Tensor::randn`]), which, like `vec!`, panic on a shape whose element count overflows and
//! abort when the allocation fails (`zeros_on` and `full_on` return errors instead).
//!
//! One MoE layer with three experts of different widths (the defining feature: each expert is a
//! front slice of the layer's largest expert, so a supernet shares weights across widths), top-2
//! routing, forward and backward:
//!
//! ```
//! use automoe::autograd::{ParamStore, Tape};
//! use automoe::moe::{moe_forward, MoeOptions, MoeParams, MoeSubnet};
//! use automoe::{DType, Tensor};
//!
//! let mut rng = automoe::rng::seeded(0);
//! let mut store = ParamStore::new();
//! // Room for up to 4 experts of width 512 over a 256-wide model.
//! let layer = MoeParams::new(&mut store, "enc.0.moe", 256, 4, 512, &mut rng)?;
//! // This subnet uses 3 of them, 512, 256 and 96 wide, on a 128-wide embedding.
//! let sub = MoeSubnet { d: 128, widths: vec![512, 256, 96], k: 2 };
//! let opts = MoeOptions { renormalize: true, ..MoeOptions::default() };
//!
//! let mut tape = Tape::new();
//! let x = tape.input(Tensor::randn(&[64, 128], 1.0, DType::F32, &mut rng));
//! let out = moe_forward(&mut tape, &store, &layer, &sub, &opts, &x)?;
//! assert_eq!(out.y.value().shape(), &[64, 128]);
//! // Every token went to 2 of the 3 experts.
//! assert_eq!(out.routing.counts()?.iter().sum::<usize>(), 128);
//!
//! let loss = tape.mean(&out.y)?;
//! let grads = tape.backward(&loss)?;
//! store.accumulate(&grads)?;
//! // The 96-wide expert's first weight is stored at [512, 256]; its gradient fills only the
//! // [96, 128] front slice this subnet used.
//! let g: Vec<f32> = store.grad(layer.experts[2].fc1_w).expect("expert 2 was used").to_vec()?;
//! let outside = |i: usize| i / 256 >= 96 || i % 256 >= 128;
//! assert!(g.iter().enumerate().all(|(i, &v)| v == 0.0 || !outside(i)));
//! assert!(g.iter().any(|&v| v != 0.0));
//! # Ok::<(), automoe::Error>(())
//! ```

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
