//! Hardware-aware search (AutoMoE): latency measurement by the paper's protocol ([`latency`]), a
//! latency dataset and an MLP predictor over architecture features ([`dataset`], [`mod@features`],
//! [`predictor`]), and the evolutionary search under latency / FLOPs / active-parameter
//! constraints with supernet validation loss as fitness ([`evolution`], [`fitness`]), with its
//! outputs and Pareto plot ([`report`]), and the measured check of its latency ([`verify`]). See `docs/ARCHITECTURE.md` ("Search").

pub mod dataset;
pub mod evolution;
pub mod features;
pub mod fitness;
pub mod latency;
pub mod predictor;
pub mod report;
pub mod verify;

pub use dataset::{LatencyDataset, LatencyRecord};
pub use evolution::{search, Candidate, Constraints, SearchConfig, SearchResult};
pub use features::{feature_names, features, FEATURE_VERSION};
pub use fitness::{load_supernet, Fitness, SupernetLoss, SupernetMeta};
#[allow(deprecated)]
pub use latency::CpuLatencyMeter;
pub use latency::{trimmed_mean, Clock, Latency, LatencyMeter, LatencyProtocol, SubnetLatencyMeter};
pub use predictor::{kendall_tau, split_records, LatencyPredictor, PredictorConfig, PredictorReport};
pub use verify::{verify_latency, LatencyCheck, Verification};
