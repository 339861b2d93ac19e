//! Data preparation for translation training: a corpus (files or the built-in synthetic pair) ->
//! a joined BPE tokenizer (trained on the training split, or loaded) -> tokenized, length-filtered
//! pairs -> token-budget batches, plus the unigram baseline the validation loss is compared with.

use std::path::{Path, PathBuf};

use crate::data::{
    filter_pairs, make_batches, read_parallel, split_paths, synthetic_corpus, Batch, BpeConfig, FilterReport, LengthFilter, TokenizedPair,
    Tokenizer, PAD_ID,
};
use crate::model;
use crate::{Error, Result};

/// Where the sentence pairs come from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// `{dir}/train.{src}`, `{dir}/train.{tgt}`, `{dir}/val.{src}`, `{dir}/val.{tgt}`.
    Files { dir: PathBuf, src: String, tgt: String },
    /// The built-in synthetic language pair (`crate::data::synthetic`), generated from `seed`.
    Synthetic { seed: u64, n_train: usize, n_valid: usize },
}

/// How the corpus becomes batches. Recorded in checkpoints: a resumed run must batch identically.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataConfig {
    pub source: DataSource,
    /// BPE vocabulary size when the tokenizer is trained here.
    pub vocab_size: usize,
    /// Training pairs with a side longer than this many tokens (with `</s>`) are dropped.
    pub max_len: usize,
    /// Training pairs whose longer/shorter token ratio exceeds this are dropped.
    pub max_ratio: f64,
    /// Padded tokens per batch (training and validation).
    pub max_tokens: usize,
}

impl DataConfig {
    /// Defaults for a source: a 2k BPE for the small synthetic vocabulary, 8k for real text.
    pub fn new(source: DataSource) -> Self {
        let vocab_size = if matches!(source, DataSource::Synthetic { .. }) { 2000 } else { 8000 };
        DataConfig { source, vocab_size, max_len: 128, max_ratio: 3.0, max_tokens: 2048 }
    }
}

/// Everything training needs from the data.
pub struct MtData {
    pub tokenizer: Tokenizer,
    pub tokenizer_hash: String,
    /// Training batches, built once (the trainer shuffles their order per epoch).
    pub train: Vec<Batch>,
    /// Validation batches in length order (no pair is dropped but empty ones).
    pub valid: Vec<Batch>,
    pub train_report: FilterReport,
    pub valid_report: FilterReport,
    /// Real target tokens (with `</s>`) of each split.
    pub train_tokens: usize,
    pub valid_tokens: usize,
    /// Cross-entropy (nats per target token) of the validation targets under the training
    /// targets' unigram distribution: the loss of a model that ignores its input and context.
    pub unigram_nll: f64,
}

/// Sentence pairs `(source, target)` of one split.
pub type TextPairs = Vec<(String, String)>;

/// Reads the (train, valid) sentence pairs of a source.
pub fn read_source(source: &DataSource) -> Result<(TextPairs, TextPairs)> {
    match source {
        DataSource::Files { dir, src, tgt } => {
            let (ts, tt) = split_paths(dir, "train", src, tgt);
            let (vs, vt) = split_paths(dir, "val", src, tgt);
            Ok((read_parallel(ts, tt)?, read_parallel(vs, vt)?))
        }
        DataSource::Synthetic { seed, n_train, n_valid } => {
            if *n_train == 0 || *n_valid == 0 {
                return Err(Error::invalid(
                    "synthetic corpus",
                    format!("needs training and validation pairs (got {n_train} and {n_valid})"),
                ));
            }
            let c = synthetic_corpus(*seed, *n_train, *n_valid, 0)?;
            Ok((c.train, c.valid))
        }
    }
}

/// Trains a joined BPE on both sides of `train` (one vocabulary: the model shares its embeddings).
pub fn train_tokenizer(train: &[(String, String)], vocab_size: usize) -> Result<Tokenizer> {
    let texts = train.iter().flat_map(|(s, t)| [s.as_str(), t.as_str()]);
    Tokenizer::train(texts, &BpeConfig { vocab_size, ..BpeConfig::default() })
}

/// Reads the corpus, trains a tokenizer (or uses `tokenizer`) and builds the batches. `seed` only
/// decides how equal-length pairs are grouped (the trainer shuffles the batch order itself).
pub fn prepare(cfg: &DataConfig, tokenizer: Option<Tokenizer>, seed: u64) -> Result<MtData> {
    let (train_text, valid_text) = read_source(&cfg.source)?;
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => train_tokenizer(&train_text, cfg.vocab_size)?,
    };
    let encode = |s: &str| tokenizer.encode(s);
    let (train_pairs, train_report) =
        filter_pairs(&train_text, &LengthFilter { max_tokens: cfg.max_len, max_ratio: cfg.max_ratio }, encode)?;
    check_valid_lengths(&cfg.source, &valid_text, &tokenizer)?;
    // Validation keeps every non-empty pair, so its loss is over the whole split.
    let (valid_pairs, valid_report) =
        filter_pairs(&valid_text, &LengthFilter { max_tokens: usize::MAX, max_ratio: f64::INFINITY }, encode)?;
    if train_pairs.is_empty() || valid_pairs.is_empty() {
        return Err(Error::invalid(
            "training data",
            format!("no pairs left after filtering (train: {train_report}; valid: {valid_report})"),
        ));
    }
    let train = make_batches(&train_pairs, cfg.max_tokens, Some(seed))?;
    let valid = make_batches(&valid_pairs, cfg.max_tokens, None)?;
    let unigram_nll = unigram_nll(&train_pairs, &valid_pairs, tokenizer.vocab_size());
    Ok(MtData {
        tokenizer_hash: tokenizer.hash()?,
        tokenizer,
        train_tokens: train.iter().map(|b| b.n_tokens).sum(),
        valid_tokens: valid.iter().map(|b| b.n_tokens).sum(),
        train,
        valid,
        train_report,
        valid_report,
        unigram_nll,
    })
}

/// Validation keeps sentences of any length, but one of tens of thousands of tokens (two files
/// joined, a lost line break) would make an attention matrix that exhausts memory: such a
/// sentence is an error naming its file and line. Only lines at least as long in characters as the
/// limit in tokens are encoded to check (a token covers at least one character).
fn check_valid_lengths(source: &DataSource, valid: &[(String, String)], tokenizer: &Tokenizer) -> Result<()> {
    let limit = crate::decode::MAX_POSITIONS;
    for (i, (s, t)) in valid.iter().enumerate() {
        for (side, text) in [(0, s), (1, t)] {
            if text.len() < limit || text.chars().count() < limit {
                continue;
            }
            let n = tokenizer.encode(text)?.len();
            if n > limit {
                let msg = format!("line {}: {n} tokens, more than the {limit} a validation sentence may have (a lost line break?)", i + 1);
                let path = match source {
                    DataSource::Files { dir, src, tgt } => {
                        let (sp, tp) = split_paths(dir, "val", src, tgt);
                        if side == 0 {
                            sp
                        } else {
                            tp
                        }
                    }
                    DataSource::Synthetic { .. } => return Err(Error::invalid("synthetic corpus", msg)),
                };
                return Err(Error::Format { path, msg });
            }
        }
    }
    Ok(())
}

/// Mean negative log-likelihood of the validation targets (with `</s>`) under the add-one smoothed
/// unigram distribution of the training targets, in nats per token.
pub fn unigram_nll(train: &[TokenizedPair], valid: &[TokenizedPair], vocab: usize) -> f64 {
    let mut counts = vec![1.0f64; vocab.max(1)];
    counts[PAD_ID as usize] = 0.0; // never a target
    for p in train {
        for &id in &p.tgt {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += 1.0;
            }
        }
    }
    let total: f64 = counts.iter().sum();
    let (mut nll, mut n) = (0.0, 0usize);
    for p in valid {
        for &id in &p.tgt {
            let c = counts.get(id as usize).copied().unwrap_or(1.0);
            nll -= (c / total).ln();
            n += 1;
        }
    }
    nll / n.max(1) as f64
}

/// The model's view of a data batch: the decoder reads `tgt_in`; the loss compares with `tgt_out`.
pub fn model_batch(b: &Batch) -> Result<model::Batch> {
    model::Batch::new(b.b, b.s_len, b.t_len, b.src.clone(), b.src_pad_mask.clone(), b.tgt_in.clone(), b.tgt_pad_mask.clone())
}

/// `tokenizer.json` in `dir`.
pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unigram_baseline_is_the_entropy_of_a_known_distribution() {
        // Targets 4 and 5 equally often in training; vocab 6 (add-one over ids 1..6, pad excluded).
        let pair = |t: Vec<u32>| TokenizedPair { src: vec![4], tgt: t };
        let train = vec![pair(vec![4; 98]), pair(vec![5; 98])];
        let valid = vec![pair(vec![4, 5])];
        // counts: ids 1,2,3 -> 1 each, 4 -> 99, 5 -> 99; total 201.
        let want = -(99.0f64 / 201.0).ln();
        assert!((unigram_nll(&train, &valid, 6) - want).abs() < 1e-12);
    }

    #[test]
    fn synthetic_data_prepares_batches_within_budget() {
        let cfg = DataConfig {
            max_tokens: 256,
            vocab_size: 300,
            ..DataConfig::new(DataSource::Synthetic { seed: 3, n_train: 300, n_valid: 40 })
        };
        let d = prepare(&cfg, None, 1).unwrap();
        assert_eq!(d.valid_report.kept, 40);
        assert!(d.train.iter().all(|b| b.padded_tokens() <= 256 || b.b == 1));
        assert!(d.unigram_nll > 1.0 && d.unigram_nll < (300f64).ln());
        let mb = model_batch(&d.train[0]).unwrap();
        assert_eq!(mb.tgt, d.train[0].tgt_in);
    }

    #[test]
    fn an_overlong_validation_line_is_named_not_batched() {
        let dir = tempfile::tempdir().unwrap();
        let words = ["a man rides a bike", "two dogs play", "a woman reads a book"];
        for (lang, lines) in [("en", words.to_vec()), ("de", words.to_vec())] {
            std::fs::write(dir.path().join(format!("train.{lang}")), lines.join("\n") + "\n").unwrap();
        }
        let long = vec!["a man"; 1500].join(" ");
        std::fs::write(dir.path().join("val.en"), "two dogs play\na woman reads\n").unwrap();
        std::fs::write(dir.path().join("val.de"), format!("two dogs play\n{long}\n")).unwrap();
        let source = DataSource::Files { dir: dir.path().to_path_buf(), src: "en".into(), tgt: "de".into() };
        let cfg = DataConfig { vocab_size: 40, ..DataConfig::new(source) };
        let err = prepare(&cfg, None, 0).err().unwrap().to_string();
        assert!(err.contains("val.de") && err.contains("line 2") && err.contains("tokens"), "{err}");
        // The same sentence within the limit is validated as usual.
        std::fs::write(dir.path().join("val.de"), "two dogs play\na woman reads\n").unwrap();
        prepare(&cfg, None, 0).unwrap();
    }
}
