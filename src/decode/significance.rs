//! Paired bootstrap resampling between two systems' translations of one test set (Koehn, 2004),
//! with the statistic `sacrebleu --paired-bs` reports, for BLEU and chrF.
//!
//! Each resample draws the test set's sentences with replacement; both systems are scored on the
//! same draw from their per-sentence sufficient statistics (corpus BLEU and chrF of the resampled
//! corpus, not an average of sentence scores). Reported per system: the corpus score, the mean over
//! the resamples and the half-width of the 95 % interval (the 2.5th and 97.5th percentiles of the
//! sorted resample scores, as sacreBLEU's `estimate_ci`). The p-value is sacreBLEU's: with `d` the
//! absolute difference of the two corpus scores and `d_i` that of resample `i`, it is the share of
//! resamples whose centred difference `d_i - mean(d)` exceeds `d`, with the usual +1 in numerator
//! and denominator; it estimates how often a difference as large as the observed one would show
//! up if the systems were equally good.
//!
//! Differences from sacreBLEU: resample indices come from the crate's seeded ChaCha stream, not
//! numpy's, so p-values and intervals agree in distribution, not digit for digit; and two systems
//! with identical translations get p = 1 (sacreBLEU's formula gives 1 / (resamples + 1) there,
//! since no centred difference exceeds zero).
//!
//! The test answers "would another test set of the same kind rank the two translations the same
//! way". It says nothing about training noise: two models trained from different seeds differ by
//! more than this interval (`docs/RESULTS.md`), which is what the pipeline's replicates measure.

use rand::Rng as _;
use serde::Serialize;

use super::bleu::{self, compute_bleu};
use super::chrf::{self, f_score, CHAR_ORDER};
use crate::{Error, Result};

/// sacreBLEU's default number of bootstrap resamples.
pub const DEFAULT_RESAMPLES: usize = 1000;
/// sacreBLEU's default seed (`SACREBLEU_SEED`); here it seeds the crate's generator.
pub const DEFAULT_SEED: u64 = 12345;
/// Most resamples one test draws (each costs one pass over the test set per system and metric).
pub const MAX_RESAMPLES: usize = 1_000_000;

/// One system's score on one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreInterval {
    /// The corpus score on the whole test set.
    pub score: f64,
    /// The mean of the resample scores.
    pub mean: f64,
    /// Half the width of the 95 % interval of the resample scores.
    pub ci: f64,
}

/// The two systems compared on one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricTest {
    pub baseline: ScoreInterval,
    pub system: ScoreInterval,
    /// `system.score - baseline.score`.
    pub difference: f64,
    /// sacreBLEU's paired-bootstrap p-value (module docs); small means the difference is unlikely
    /// to be the test set's sampling noise.
    pub p_value: f64,
}

/// A paired bootstrap test of `system` against `baseline` on one test set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedBootstrap {
    pub bleu: MetricTest,
    pub chrf: MetricTest,
    pub sentences: usize,
    pub resamples: usize,
    pub seed: u64,
}

type ChrfStats = [[usize; 3]; CHAR_ORDER];

/// Per-sentence statistics of one system.
struct SystemStats {
    bleu: Vec<bleu::Stats>,
    chrf: Vec<ChrfStats>,
}

impl SystemStats {
    fn of<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R]) -> SystemStats {
        let pairs = || hyps.iter().zip(refs).map(|(h, r)| (h.as_ref(), r.as_ref()));
        SystemStats {
            bleu: pairs().map(|(h, r)| bleu::segment_stats(h, r)).collect(),
            chrf: pairs().map(|(h, r)| chrf::segment_stats(h, r)).collect(),
        }
    }

    /// Corpus (BLEU, chrF) of the sentences `draw` names (with repeats).
    fn scores(&self, draw: impl Iterator<Item = usize> + Clone) -> (f64, f64) {
        let mut b = bleu::Stats::default();
        let mut c: ChrfStats = [[0; 3]; CHAR_ORDER];
        for i in draw {
            b.add(&self.bleu[i]);
            for (acc, s) in c.iter_mut().zip(&self.chrf[i]) {
                for k in 0..3 {
                    acc[k] += s[k];
                }
            }
        }
        (compute_bleu(&b, false).score, f_score(&c))
    }
}

/// The resamples' sentence indices: `resamples` draws of `n` indices with replacement.
fn draws(n: usize, resamples: usize, seed: u64) -> impl Iterator<Item = Vec<usize>> {
    let mut rng = crate::rng::seeded(seed);
    (0..resamples).map(move |_| (0..n).map(|_| rng.random_range(0..n)).collect())
}

/// Mean and 95 % half-width of resample scores, as sacreBLEU's `estimate_ci`.
fn interval(score: f64, resampled: &[f64]) -> ScoreInterval {
    let mut sorted = resampled.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let lower = n / 40;
    let upper = n - lower - 1;
    ScoreInterval { score, mean: sorted.iter().sum::<f64>() / n as f64, ci: 0.5 * (sorted[upper] - sorted[lower]) }
}

fn metric_test(scores: (f64, f64), baseline: &[f64], system: &[f64]) -> MetricTest {
    let real = (scores.1 - scores.0).abs();
    let diffs: Vec<f64> = baseline.iter().zip(system).map(|(b, s)| (s - b).abs()).collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let p_value = if real == 0.0 && diffs.iter().all(|&d| d == 0.0) {
        1.0
    } else {
        let exceed = diffs.iter().filter(|&&d| d - mean > real).count();
        (exceed + 1) as f64 / (diffs.len() + 1) as f64
    };
    MetricTest { baseline: interval(scores.0, baseline), system: interval(scores.1, system), difference: scores.1 - scores.0, p_value }
}

/// Paired bootstrap resampling of `system` against `baseline`, both line-aligned with `refs`
/// (module docs). `resamples` must be in 1..=[`MAX_RESAMPLES`]; the same seed gives the same result.
pub fn paired_bootstrap<H: AsRef<str>, G: AsRef<str>, R: AsRef<str>>(
    baseline: &[H],
    system: &[G],
    refs: &[R],
    resamples: usize,
    seed: u64,
) -> Result<PairedBootstrap> {
    let bad = |m: String| Err(Error::invalid("paired_bootstrap", m));
    if baseline.len() != refs.len() || system.len() != refs.len() {
        return bad(format!(
            "{} baseline and {} system translations for {} references; each needs one line per reference",
            baseline.len(),
            system.len(),
            refs.len()
        ));
    }
    if refs.is_empty() {
        return bad("the test set is empty".into());
    }
    if !(1..=MAX_RESAMPLES).contains(&resamples) {
        return bad(format!("resamples = {resamples} is outside 1..={MAX_RESAMPLES}"));
    }
    let (bl, sys) = (SystemStats::of(baseline, refs), SystemStats::of(system, refs));
    let n = refs.len();
    let (bl_real, sys_real) = (bl.scores(0..n), sys.scores(0..n));
    let (mut bl_bleu, mut sys_bleu, mut bl_chrf, mut sys_chrf) = (vec![], vec![], vec![], vec![]);
    for draw in draws(n, resamples, seed) {
        let (b, c) = bl.scores(draw.iter().copied());
        bl_bleu.push(b);
        bl_chrf.push(c);
        let (b, c) = sys.scores(draw.iter().copied());
        sys_bleu.push(b);
        sys_chrf.push(c);
    }
    Ok(PairedBootstrap {
        bleu: metric_test((bl_real.0, sys_real.0), &bl_bleu, &sys_bleu),
        chrf: metric_test((bl_real.1, sys_real.1), &bl_chrf, &sys_chrf),
        sentences: n,
        resamples,
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::bleu::corpus_bleu;
    use crate::decode::chrf::corpus_chrf;

    const WORDS: [&str; 12] = ["a", "dog", "runs", "on", "the", "green", "grass", "man", "with", "hat", "red", "ball"];

    /// Random sentences of 3..12 words over a small vocabulary.
    fn sentences(n: usize, seed: u64) -> Vec<String> {
        let mut rng = crate::rng::seeded(seed);
        (0..n)
            .map(|_| {
                let len = rng.random_range(3..12);
                (0..len).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect::<Vec<_>>().join(" ")
            })
            .collect()
    }

    /// `refs` with each word replaced by a random one with probability `noise`.
    fn corrupt(refs: &[String], noise: f64, seed: u64) -> Vec<String> {
        let mut rng = crate::rng::seeded(seed);
        refs.iter()
            .map(|r| {
                r.split(' ')
                    .map(|w| if rng.random_bool(noise) { WORDS[rng.random_range(0..WORDS.len())] } else { w })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn every_resample_score_is_the_corpus_score_of_the_resampled_lines() {
        let refs = sentences(40, 1);
        let hyps = corrupt(&refs, 0.4, 2);
        let stats = SystemStats::of(&hyps, &refs);
        assert_eq!(stats.scores(0..refs.len()), (corpus_bleu(&hyps, &refs).unwrap().score, corpus_chrf(&hyps, &refs).unwrap().score));
        for draw in draws(refs.len(), 25, 7) {
            let h: Vec<&String> = draw.iter().map(|&i| &hyps[i]).collect();
            let r: Vec<&String> = draw.iter().map(|&i| &refs[i]).collect();
            let want = (corpus_bleu(&h, &r).unwrap().score, corpus_chrf(&h, &r).unwrap().score);
            assert_eq!(stats.scores(draw.iter().copied()), want);
        }
    }

    #[test]
    fn draws_are_uniform_with_replacement_and_seeded() {
        let all: Vec<Vec<usize>> = draws(10, 2000, 3).collect();
        assert_eq!(all, draws(10, 2000, 3).collect::<Vec<_>>());
        assert_ne!(all, draws(10, 2000, 4).collect::<Vec<_>>());
        let mut counts = [0usize; 10];
        all.iter().flatten().for_each(|&i| counts[i] += 1);
        // 20000 draws: each index 2000 ± ~42 (sd); 5 sd either way.
        assert!(counts.iter().all(|&c| (1790..=2210).contains(&c)), "{counts:?}");
        // With replacement: a draw of 10 from 10 almost never is a permutation (p = 10!/10^10).
        assert!(all.iter().filter(|d| d.iter().collect::<std::collections::HashSet<_>>().len() < 10).count() > 1990);
    }

    #[test]
    fn a_clearly_better_system_is_significant_and_a_tie_is_not() {
        let refs = sentences(300, 11);
        let (weak, strong) = (corrupt(&refs, 0.6, 12), corrupt(&refs, 0.2, 13));
        let t = paired_bootstrap(&weak, &strong, &refs, 500, DEFAULT_SEED).unwrap();
        assert!(t.bleu.difference > 10.0 && t.chrf.difference > 10.0, "{t:?}");
        assert_eq!((t.bleu.p_value, t.chrf.p_value), (1.0 / 501.0, 1.0 / 501.0));
        for m in [&t.bleu, &t.chrf] {
            for s in [&m.baseline, &m.system] {
                assert!(s.ci > 0.0 && (s.mean - s.score).abs() < s.ci, "{s:?}");
            }
        }
        // Two draws of the same noise level: equally good systems. Over several such pairs the
        // p-values are spread over (0, 1], not piled near 0.
        let ps: Vec<f64> = (0..8)
            .map(|k| {
                let (a, b) = (corrupt(&refs, 0.4, 100 + k), corrupt(&refs, 0.4, 200 + k));
                paired_bootstrap(&a, &b, &refs, 300, k).unwrap().bleu.p_value
            })
            .collect();
        assert!(ps.iter().filter(|&&p| p > 0.05).count() >= 5, "{ps:?}");
        // Identical translations: no evidence of a difference.
        let same = paired_bootstrap(&weak, &weak, &refs, 100, 1).unwrap();
        assert_eq!((same.bleu.difference, same.bleu.p_value, same.chrf.p_value), (0.0, 1.0, 1.0));
    }

    #[test]
    fn intervals_narrow_as_the_test_set_grows() {
        let ci = |n: usize| {
            let refs = sentences(n, 21);
            let hyps = corrupt(&refs, 0.4, 22);
            paired_bootstrap(&hyps, &hyps, &refs, 400, 5).unwrap().bleu.system.ci
        };
        // The half-width shrinks like 1/sqrt(n): 16x the sentences, about a quarter.
        let (small, large) = (ci(50), ci(800));
        assert!(large < 0.4 * small, "{small} -> {large}");
    }

    #[test]
    fn bad_input_is_an_error_that_says_what() {
        let refs = sentences(5, 1);
        let err = |r: Result<PairedBootstrap>| r.unwrap_err().to_string();
        assert!(err(paired_bootstrap(&refs[..4], &refs, &refs, 10, 1)).contains("4 baseline and 5 system"));
        assert!(err(paired_bootstrap::<&str, &str, &str>(&[], &[], &[], 10, 1)).contains("empty"));
        assert!(err(paired_bootstrap(&refs, &refs, &refs, 0, 1)).contains("resamples = 0"));
    }
}
