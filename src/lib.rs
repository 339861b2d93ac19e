//! automoe: design and run heterogeneous Mixture-of-Experts Transformers for machine translation
//! under a compute budget (AutoMoE). See `docs/ARCHITECTURE.md` for the map of the code.

pub mod cpu;
pub mod cuda;
pub mod device;
pub mod error;
pub mod moe;
pub mod rng;
pub mod tensor;

pub use device::Device;
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
