//! Corpus chrF, reproducing sacreBLEU 2.6.0's `CHRF()` defaults: character n-grams of order 1..=6,
//! no word n-grams (plain chrF, not chrF++), beta = 2, whitespace removed, case kept, and
//! `eps_smoothing=False`.
//!
//! With `eps_smoothing=False` sacreBLEU does *not* average per-order F-scores (that is the
//! chrF++.py / `eps_smoothing=True` variant). It averages precision and recall separately over the
//! "effective" orders (those where both hypothesis and reference have n-grams) and computes one
//! F-beta from the two averages. Corpus chrF sums the per-order statistics over all segments
//! first, so the effective orders are decided on corpus totals.

use std::collections::HashMap;

use super::bleu::{is_py_whitespace, SACREBLEU_VERSION};
use crate::{Error, Result};

/// Character n-gram order (sacreBLEU's `CHRF.CHAR_ORDER`).
pub const CHAR_ORDER: usize = 6;
/// Recall is weighted `BETA` times as much as precision (sacreBLEU's `CHRF.BETA`).
pub const BETA: usize = 2;

/// A chrF score with its statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct ChrfScore {
    /// chrF in [0, 100].
    pub score: f64,
    /// Per order n = 1..=6: `[hypothesis n-grams, reference n-grams, matches]`, summed over the
    /// corpus (hypothesis n-grams count as 0 for a segment whose reference has none of that order).
    pub stats: [[usize; 3]; CHAR_ORDER],
}

impl ChrfScore {
    /// sacreBLEU's reproducibility signature: `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0`.
    pub fn signature(&self) -> String {
        chrf_signature()
    }
}

/// sacreBLEU's chrF signature for this implementation's (only) settings.
pub fn chrf_signature() -> String {
    format!("nrefs:1|case:mixed|eff:yes|nc:{CHAR_ORDER}|nw:0|space:no|version:{SACREBLEU_VERSION}")
}

/// Character n-gram counts per order, after deleting all (Python) whitespace, as sacreBLEU's
/// `extract_all_char_ngrams(line, 6, include_whitespace=False)`. n-grams are code-point slices.
fn char_ngrams(chars: &[char]) -> Vec<HashMap<&[char], usize>> {
    (1..=CHAR_ORDER)
        .map(|n| {
            let mut m = HashMap::new();
            for w in chars.windows(n) {
                *m.entry(w).or_insert(0) += 1;
            }
            m
        })
        .collect()
}

fn strip_ws(s: &str) -> Vec<char> {
    s.chars().filter(|&c| !is_py_whitespace(c)).collect()
}

/// sacreBLEU's `_get_match_statistics` for every order of one segment.
pub(crate) fn segment_stats(hyp: &str, reference: &str) -> [[usize; 3]; CHAR_ORDER] {
    let (h, r) = (strip_ws(hyp), strip_ws(reference));
    let (hg, rg) = (char_ngrams(&h), char_ngrams(&r));
    let mut out = [[0; 3]; CHAR_ORDER];
    for (n, (hm, rm)) in hg.iter().zip(&rg).enumerate() {
        let mut hyp_count = 0;
        let mut matches = 0;
        for (g, &c) in hm {
            hyp_count += c;
            if let Some(&rc) = rm.get(g) {
                matches += c.min(rc);
            }
        }
        // sacreBLEU: "Don't count hits if no reference exists for that n-gram" order.
        out[n] = [if rm.is_empty() { 0 } else { hyp_count }, rm.values().sum(), matches];
    }
    out
}

/// sacreBLEU's `CHRF._compute_f_score` with `eps_smoothing=False`, in the same operation order.
pub(crate) fn f_score(stats: &[[usize; 3]; CHAR_ORDER]) -> f64 {
    let factor = (BETA * BETA) as f64;
    let (mut avg_prec, mut avg_rec) = (0.0f64, 0.0f64);
    let mut effective_order = 0usize;
    for &[n_hyp, n_ref, n_match] in stats {
        if n_hyp > 0 && n_ref > 0 {
            avg_prec += n_match as f64 / n_hyp as f64;
            avg_rec += n_match as f64 / n_ref as f64;
            effective_order += 1;
        }
    }
    if effective_order == 0 {
        return 0.0;
    }
    avg_prec /= effective_order as f64;
    avg_rec /= effective_order as f64;
    if avg_prec + avg_rec == 0.0 {
        return 0.0;
    }
    let mut score = (1.0 + factor) * avg_prec * avg_rec;
    score /= factor * avg_prec + avg_rec;
    100.0 * score
}

/// Corpus chrF of `hyps` against one reference each, as `sacrebleu.corpus_chrf(hyps, [refs])`.
/// Empty lines are allowed on either side.
pub fn corpus_chrf<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R]) -> Result<ChrfScore> {
    if hyps.len() != refs.len() {
        return Err(Error::invalid(
            "corpus_chrf",
            format!("{} hypotheses but {} references; each hypothesis needs exactly one reference", hyps.len(), refs.len()),
        ));
    }
    let mut stats = [[0usize; 3]; CHAR_ORDER];
    for (h, r) in hyps.iter().zip(refs) {
        for (acc, s) in stats.iter_mut().zip(segment_stats(h.as_ref(), r.as_ref())) {
            for k in 0..3 {
                acc[k] += s[k];
            }
        }
    }
    Ok(ChrfScore { score: f_score(&stats), stats })
}

/// Sentence chrF, as `sacrebleu.sentence_chrf(hyp, [reference])`.
pub fn sentence_chrf(hyp: &str, reference: &str) -> f64 {
    f_score(&segment_stats(hyp, reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_empty() {
        let s = corpus_chrf(&["The cat sat."], &["The cat sat."]).unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
        assert_eq!(s.signature(), "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0");
        assert_eq!(sentence_chrf("", "The cat sat."), 0.0);
        // Whitespace is removed before n-gram extraction, so spacing does not matter.
        assert!((sentence_chrf("Thecat  sat.", "The cat sat.") - 100.0).abs() < 1e-9);
    }

    #[test]
    fn mismatched_lengths_error() {
        let e = corpus_chrf(&["a"], &["a", "b"]).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { op: "corpus_chrf", .. }), "{e}");
    }

    // Expected values from sacreBLEU 2.6.0.
    #[test]
    fn matches_sacrebleu() {
        // Short reference: orders 4..6 have no reference n-grams and drop out of the average.
        assert!((sentence_chrf("abcdef", "abc") - 75.657_894_736_842_1).abs() < 1e-9);
        assert!((sentence_chrf("the cat", "the hat") - 28.055_555_555_555_557).abs() < 1e-9);
        let s = corpus_chrf(&["the cat", "abcdef", ""], &["the hat", "abc", "xyz"]).unwrap();
        assert!((s.score - 25.427_350_427_350_426).abs() < 1e-9, "{}", s.score);
    }
}
