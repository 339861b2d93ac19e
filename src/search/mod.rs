//! Hardware-aware search (AutoMoE): latency measurement by the paper's protocol ([`latency`]), a
//! latency dataset and an MLP predictor over architecture features ([`dataset`], [`features`],
//! [`predictor`]), and the evolutionary search under latency / FLOPs / active-parameter
//! constraints with supernet validation loss as fitness ([`evolution`], [`fitness`]), with its
//! outputs and Pareto plot ([`report`]). See `docs/ARCHITECTURE.md` ("Search").

pub mod dataset;
pub mod evolution;
pub mod features;
pub mod fitness;
pub mod latency;
pub mod predictor;
pub mod report;

pub use dataset::{LatencyDataset, LatencyRecord};
pub use evolution::{search, Candidate, Constraints, SearchConfig, SearchResult};
pub use features::{feature_names, features, FEATURE_VERSION};
pub use fitness::{load_supernet, Fitness, SupernetLoss, SupernetMeta};
pub use latency::{trimmed_mean, Clock, CpuLatencyMeter, Latency, LatencyMeter, LatencyProtocol};
pub use predictor::{kendall_tau, split_records, LatencyPredictor, PredictorConfig, PredictorReport};

use std::path::Path;

/// Writes a file atomically (temporary file + rename), creating its directory first.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    }
    crate::data::tokenizer::write_atomic(path, bytes)
}
