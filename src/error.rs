//! The crate's one error type. Every variant carries the values that went wrong, so a message
//! names what was wrong and where without a debugger.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch: {lhs:?} vs {rhs:?}")]
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },

    #[error("{op}: dimension {dim} is out of range for a tensor of rank {rank}")]
    DimOutOfRange { op: &'static str, dim: usize, rank: usize },

    #[error("{op}: range {start}..{end} is out of bounds for dimension {dim} of size {size}")]
    RangeOutOfBounds { op: &'static str, dim: usize, start: usize, end: usize, size: usize },

    #[error("{op}: cannot reshape {from:?} ({from_numel} elements) into {to:?} ({to_numel} elements)")]
    BadReshape { op: &'static str, from: Vec<usize>, from_numel: usize, to: Vec<usize>, to_numel: usize },

    #[error("{op}: expected dtype {expected:?}, got {got:?}")]
    DTypeMismatch { op: &'static str, expected: crate::DType, got: crate::DType },

    #[error("{op}: tensors live on different devices: {lhs} and {rhs}")]
    DeviceMismatch { op: &'static str, lhs: crate::Device, rhs: crate::Device },

    #[error("{op}: index {index} is out of range 0..{limit}")]
    IndexOutOfRange { op: &'static str, index: usize, limit: usize },

    #[error("{op}: invalid argument: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    #[error("{op} is not implemented on {device}")]
    Unsupported { op: &'static str, device: crate::Device },

    #[error("no CUDA device: {reason}")]
    NoCudaDevice { reason: String },

    #[error("CUDA error: {0}")]
    Cuda(String),

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },

    #[error("non-finite value: {0}")]
    NonFinite(String),

    /// Training hit a non-finite loss or gradient; nothing of that update was applied.
    #[error("training stopped at update {update}: non-finite {what}; {last_checkpoint}")]
    TrainingDiverged { update: u64, what: String, last_checkpoint: String },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
