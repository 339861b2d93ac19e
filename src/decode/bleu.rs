//! Corpus and sentence BLEU, reproducing sacreBLEU 2.6.0 (`sacrebleu.corpus_bleu` and
//! `sacrebleu.sentence_bleu` with their defaults: `13a` tokenizer, mixed case, n-gram order 4,
//! one reference, `exp` smoothing; `effective_order` off for corpus and on for sentence scores).
//!
//! Why reimplement rather than call out: evaluation runs inside training/search loops, and the
//! numbers must be directly comparable with published sacreBLEU scores. `tests/bleu_golden.rs`
//! checks every statistic against sacreBLEU's own output.
//!
//! Deviation: sacreBLEU silently truncates to the shorter of hypothesis/reference lists (it
//! `zip`s them); we return [`Error::InvalidArgument`] because a length mismatch is always a bug.

mod tok13a;

use std::collections::HashMap;

use crate::{Error, Result};

pub use tok13a::tokenize_13a;
pub(crate) use tok13a::{is_py_whitespace, py_split};

/// The maximum n-gram order (sacreBLEU's `MAX_NGRAM_ORDER`).
pub const MAX_ORDER: usize = 4;

/// The sacreBLEU release whose behaviour (and signature string) this module reproduces.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// A BLEU score with its sufficient statistics, mirroring sacreBLEU's `BLEUScore`.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    /// BLEU in [0, 100].
    pub score: f64,
    /// Clipped n-gram matches, n = 1..=4.
    pub counts: [usize; MAX_ORDER],
    /// Hypothesis n-grams, n = 1..=4.
    pub totals: [usize; MAX_ORDER],
    /// n-gram precisions in percent (after smoothing).
    pub precisions: [f64; MAX_ORDER],
    /// Brevity penalty.
    pub bp: f64,
    /// Hypothesis length in tokens.
    pub sys_len: usize,
    /// Reference length in tokens.
    pub ref_len: usize,
    /// Whether orders with no hypothesis n-grams were dropped (sentence BLEU); shows in the signature.
    pub effective_order: bool,
}

impl BleuScore {
    /// sacreBLEU's reproducibility signature for this configuration, e.g.
    /// `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
    pub fn signature(&self) -> String {
        bleu_signature(self.effective_order)
    }
}

/// sacreBLEU's BLEU signature for this implementation's settings: corpus BLEU has
/// `effective_order` false, sentence BLEU true.
pub fn bleu_signature(effective_order: bool) -> String {
    let eff = if effective_order { "yes" } else { "no" };
    format!("nrefs:1|case:mixed|eff:{eff}|tok:13a|smooth:exp|version:{SACREBLEU_VERSION}")
}

/// Per-segment statistics (sacreBLEU's `[hyp_len, ref_len, correct..., total...]`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    sys_len: usize,
    ref_len: usize,
    correct: [usize; MAX_ORDER],
    total: [usize; MAX_ORDER],
}

impl Stats {
    pub(crate) fn add(&mut self, o: &Stats) {
        self.sys_len += o.sys_len;
        self.ref_len += o.ref_len;
        for n in 0..MAX_ORDER {
            self.correct[n] += o.correct[n];
            self.total[n] += o.total[n];
        }
    }
}

/// sacreBLEU's BLEU `_preprocess_segment`: `rstrip()` then tokenize (no lowercasing by default).
fn preprocess(sent: &str) -> String {
    tokenize_13a(sent.trim_end_matches(is_py_whitespace))
}

/// All n-grams of order 1..=4 with their counts; keys are token slices, so order is implied by length.
fn ngrams<'a>(toks: &'a [&'a str]) -> HashMap<&'a [&'a str], usize> {
    let mut m = HashMap::new();
    for n in 1..=MAX_ORDER {
        for w in toks.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

pub(crate) fn segment_stats(hyp: &str, reference: &str) -> Stats {
    let (hyp, reference) = (preprocess(hyp), preprocess(reference));
    let h: Vec<&str> = py_split(&hyp).collect();
    let r: Vec<&str> = py_split(&reference).collect();
    let ref_ngrams = ngrams(&r);
    let mut st = Stats { sys_len: h.len(), ref_len: r.len(), ..Stats::default() };
    for (g, count) in ngrams(&h) {
        let n = g.len() - 1;
        st.total[n] += count;
        if let Some(&rc) = ref_ngrams.get(g) {
            st.correct[n] += count.min(rc);
        }
    }
    st
}

/// sacreBLEU's `my_log`: log with log(0) floored to -9999999999 so a zero precision gives ~0 BLEU.
fn floored_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// sacreBLEU's `BLEU.compute_bleu` with `smooth_method='exp'`, operation for operation so the
/// floating-point result agrees to the last few ulps.
pub(crate) fn compute_bleu(st: &Stats, effective_order: bool) -> BleuScore {
    let mut bp = 1.0;
    if st.sys_len < st.ref_len {
        bp = if st.sys_len > 0 { (1.0 - st.ref_len as f64 / st.sys_len as f64).exp() } else { 0.0 };
    }
    let mut precisions = [0.0f64; MAX_ORDER];
    let mut out = BleuScore {
        score: 0.0,
        counts: st.correct,
        totals: st.total,
        precisions,
        bp,
        sys_len: st.sys_len,
        ref_len: st.ref_len,
        effective_order,
    };
    // Early stop if there are no matches at all (sacreBLEU issue #141).
    if st.correct.iter().all(|&c| c == 0) {
        return out;
    }
    let mut smooth_mteval = 1.0f64;
    let mut eff_order = MAX_ORDER;
    for (n, (p, (&correct, &total))) in precisions.iter_mut().zip(st.correct.iter().zip(&st.total)).enumerate() {
        if total == 0 {
            break;
        }
        if effective_order {
            eff_order = n + 1;
        }
        if correct == 0 {
            // 'exp' smoothing (mteval-v13a / NIST): halve the pseudo-count for each zero order.
            smooth_mteval *= 2.0;
            *p = 100.0 / (smooth_mteval * total as f64);
        } else {
            *p = 100.0 * correct as f64 / total as f64;
        }
    }
    let log_sum: f64 = precisions[..eff_order].iter().map(|&p| floored_log(p)).fold(0.0, |a, b| a + b);
    out.score = bp * (log_sum / eff_order as f64).exp();
    out.precisions = precisions;
    out
}

/// Corpus BLEU of `hyps` against one reference each, as `sacrebleu.corpus_bleu(hyps, [refs])`.
/// Statistics are summed over segments before the score is computed (corpus-level, not an
/// average of sentence scores). Empty lines are allowed on either side.
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R]) -> Result<BleuScore> {
    if hyps.len() != refs.len() {
        return Err(Error::invalid(
            "corpus_bleu",
            format!("{} hypotheses but {} references; each hypothesis needs exactly one reference", hyps.len(), refs.len()),
        ));
    }
    let mut total = Stats::default();
    for (h, r) in hyps.iter().zip(refs) {
        total.add(&segment_stats(h.as_ref(), r.as_ref()));
    }
    Ok(compute_bleu(&total, false))
}

/// Sentence BLEU with its statistics, as `sacrebleu.sentence_bleu(hyp, [reference])`
/// (`exp` smoothing, `effective_order=True`, so short sentences are not zeroed by missing 4-grams).
pub fn sentence_bleu_score(hyp: &str, reference: &str) -> BleuScore {
    compute_bleu(&segment_stats(hyp, reference), true)
}

/// Sentence BLEU in [0, 100]; see [`sentence_bleu_score`].
pub fn sentence_bleu(hyp: &str, reference: &str) -> f64 {
    sentence_bleu_score(hyp, reference).score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_match_is_100() {
        let s = corpus_bleu(&["The cat sat on the mat."], &["The cat sat on the mat."]).unwrap();
        assert!((s.score - 100.0).abs() < 1e-9, "{}", s.score);
        assert_eq!(s.bp, 1.0);
        assert!((sentence_bleu("a b c d e", "a b c d e") - 100.0).abs() < 1e-9);
    }

    #[test]
    fn empty_hypothesis_is_zero() {
        let s = corpus_bleu(&[""], &["The cat sat."]).unwrap();
        assert_eq!((s.score, s.bp, s.sys_len, s.ref_len), (0.0, 0.0, 0, 4));
        assert_eq!(sentence_bleu("", "The cat sat."), 0.0);
        // Empty lines on both sides are fine too.
        let s = corpus_bleu(&["", "a b c d"], &["", "a b c d"]).unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
    }

    #[test]
    fn mismatched_lengths_error() {
        let e = corpus_bleu(&["a", "b"], &["a"]).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { op: "corpus_bleu", .. }), "{e}");
        assert!(e.to_string().contains("2 hypotheses but 1 references"), "{e}");
    }

    // Expected values from sacreBLEU 2.6.0.
    #[test]
    fn smoothing_and_effective_order() {
        // Only unigrams and bigrams exist: effective order 2 for sentence BLEU.
        let s = sentence_bleu_score("the cat", "the cat sat");
        assert_eq!((s.counts, s.totals), ([2, 1, 0, 0], [2, 1, 0, 0]));
        assert!((s.score - 60.653_065_971_263_366).abs() < 1e-9, "{}", s.score);
        // Zero 3- and 4-gram counts get the exp pseudo-counts 1/2 and 1/4 of a match.
        let s = sentence_bleu_score("a b c d", "a b x d");
        assert_eq!((s.counts, s.totals), ([3, 1, 0, 0], [4, 3, 2, 1]));
        assert!((s.score - 35.355_339_059_327_37).abs() < 1e-9, "{}", s.score);
        // Corpus BLEU has no effective order: a missing order floors the score to ~0.
        let s = corpus_bleu(&["the cat"], &["the cat"]).unwrap();
        assert_eq!(s.score, 0.0);
        assert_eq!(s.signature(), "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
        assert_eq!(sentence_bleu_score("a", "a").signature(), "nrefs:1|case:mixed|eff:yes|tok:13a|smooth:exp|version:2.6.0");
    }
}
