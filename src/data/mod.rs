//! Data: parallel corpora, the joined BPE tokenizer, token-count batching and the built-in synthetic
//! corpus. Text flows `corpus` (read, filter) -> `tokenizer` (ids) -> `batch` (padded matrices).
//! See `docs/DATA.md`.

pub mod batch;
pub mod corpus;
pub mod synthetic;
pub mod tokenizer;

pub use batch::{make_batches, plan_batches, Batch};
pub use corpus::{filter_pairs, read_lines, read_parallel, split_paths, FilterReport, LengthFilter, TokenizedPair};
pub use synthetic::{synthetic_corpus, SyntheticCorpus};
pub use tokenizer::{BpeConfig, Tokenizer, BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID};
