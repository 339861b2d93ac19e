//! placeholder
pub struct SyntheticCorpus;
pub fn synthetic_corpus() {}
