//! Decoding and its evaluation: greedy and beam search over the incremental decoder
//! (`search`), translation latency by AutoMoE's protocol (`latency`), and sacreBLEU-compatible
//! BLEU and chrF with the paired bootstrap test between two systems (`significance`), so that scores reported by this crate can be compared with published numbers
//! without leaving Rust. The incremental decoder itself is `crate::model::incremental`.

pub mod bleu;
mod candidates;
pub mod chrf;
pub mod latency;
pub mod search;
pub mod significance;

pub use candidates::{set_candidate_selection, CandidateSelection};
pub use latency::{measure, measure_in_rounds, time_one_run, LatencyProtocol, LatencyReport};
pub use search::{beam_search, greedy, translate_ids, translate_nbest, Hypothesis, SearchOptions, MAX_POSITIONS};
