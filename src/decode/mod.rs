//! Decoding and its evaluation. For now: sacreBLEU-compatible BLEU and chrF, so that scores
//! reported by this crate can be compared with published numbers without leaving Rust.

pub mod bleu;
pub mod chrf;
