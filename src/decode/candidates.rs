//! The candidates of one decoding step. For each row of the logits `[rows, V]` (one row per live
//! hypothesis), its best `n` permitted extensions, scored `base + log_softmax(row)[token]` with
//! the log-softmax in f64 (the crate's softmax convention: exponentials in the element type, their
//! sum in f64); then, per sentence, the best `n` of its rows' lists.
//!
//! Taking each row's best `n` first gives the same result as scanning all `rows x V` extensions of
//! a sentence: an extension among the sentence's best `n` is among its own row's best `n` (same
//! order: score, then token). It avoids materialising `rows x V` log-probabilities, and on a
//! CUDA tensor (a device or the emulator) a kernel (`cuda/decode.cu`) selects the rows' candidates
//! so that `rows x n` of them, not `rows x V` logits, come back to the host at every step.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::data::tokenizer::{BOS_ID, EOS_ID, PAD_ID};
use crate::tensor::Float;
use crate::{DType, Error, Result, Tensor};

/// Which tokens a step may produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// Anything but pad, bos and (when `eos` is false) eos.
    Tokens { eos: bool },
    /// Only eos (the maximum length is reached).
    EosOnly,
}

impl Allowed {
    pub(crate) fn for_step(step: usize, max_len: usize, min_len: usize) -> Self {
        if step >= max_len {
            Allowed::EosOnly
        } else {
            Allowed::Tokens { eos: step >= min_len }
        }
    }

    #[inline]
    pub(crate) fn permits(self, tok: u32) -> bool {
        match self {
            Allowed::EosOnly => tok == EOS_ID,
            Allowed::Tokens { eos } => tok != PAD_ID && tok != BOS_ID && (eos || tok != EOS_ID),
        }
    }

    /// The tokens to look at in a vocabulary of `v` (every other is forbidden).
    fn range(self, v: usize) -> std::ops::Range<usize> {
        match self {
            Allowed::EosOnly => (EOS_ID as usize).min(v)..(EOS_ID as usize + 1).min(v),
            Allowed::Tokens { .. } => 0..v,
        }
    }

    /// The code of `cuda/abi.h` (`AUTOMOE_ALLOW_*`).
    pub(crate) fn code(self) -> i32 {
        use crate::cuda::abi::{AUTOMOE_ALLOW_EOS_ONLY, AUTOMOE_ALLOW_TOKENS, AUTOMOE_ALLOW_TOKENS_AND_EOS};
        (match self {
            Allowed::Tokens { eos: false } => AUTOMOE_ALLOW_TOKENS,
            Allowed::Tokens { eos: true } => AUTOMOE_ALLOW_TOKENS_AND_EOS,
            Allowed::EosOnly => AUTOMOE_ALLOW_EOS_ONLY,
        }) as i32
    }
}

/// One extension of a row: its cumulative score and token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RowCandidate {
    pub score: f64,
    pub token: u32,
}

/// A (hypothesis, token) extension and its cumulative score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Candidate {
    pub score: f64,
    /// Index into the rows the candidates were merged from.
    pub hyp: usize,
    pub token: u32,
}

/// Where the candidates of logits on a CUDA backend are selected: [`Device`](Self::Device) (the
/// default; a beam of at most 32) or [`Host`](Self::Host) (the logits are downloaded, as for wider
/// beams). The results agree up to the rounding of the log-sum-exp (f32 on the device, f64 on the
/// host); the setting exists to measure the two against each other (`benches/cuda_train_translate.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateSelection {
    Device,
    Host,
}

static HOST_SELECTION: AtomicBool = AtomicBool::new(false);

/// Sets where CUDA logits' candidates are selected, for the whole process.
pub fn set_candidate_selection(s: CandidateSelection) {
    HOST_SELECTION.store(s == CandidateSelection::Host, Ordering::Relaxed);
}

/// The widest candidate list the CUDA kernel selects per row: beams up to 32. Wider lists come
/// from the logits downloaded to the host.
const DEVICE_MAX_TOP: usize = crate::cuda::abi::AUTOMOE_DECODE_MAX_TOP as usize;

/// Each row's best `n` permitted extensions with finite scores, best first (equal scores: lower
/// token first). `bases[r]` is row `r`'s hypothesis score, `allowed[r]` its permitted tokens.
pub(crate) fn step_candidates(logits: &Tensor, bases: &[f64], allowed: &[Allowed], n: usize) -> Result<Vec<Vec<RowCandidate>>> {
    let (rows, v) = match logits.shape() {
        [r, v] if *v > 0 => (*r, *v),
        s => return Err(Error::invalid("step_candidates", format!("expects [rows, vocab] logits, got {s:?}"))),
    };
    if bases.len() != rows || allowed.len() != rows {
        return Err(Error::invalid(
            "step_candidates",
            format!("{rows} rows of logits, {} base scores, {} permitted-token sets", bases.len(), allowed.len()),
        ));
    }
    if n == 0 || rows == 0 {
        return Ok(vec![Vec::new(); rows]);
    }
    if logits.is_cuda() && n <= DEVICE_MAX_TOP && !HOST_SELECTION.load(Ordering::Relaxed) {
        let codes: Vec<i32> = allowed.iter().map(|a| a.code()).collect();
        let top = crate::cuda::tensor::row_top_logits(logits, n, &codes)?;
        return Ok(from_device(&top, bases, n));
    }
    Ok(if logits.dtype() == DType::F64 {
        host_rows(&logits.to_vec::<f64>()?, v, bases, allowed, n)
    } else {
        host_rows(&logits.to_f32_vec()?, v, bases, allowed, n)
    })
}

/// Scores from the kernel's per-row top logits: `base + (logit - lse)` in f64.
fn from_device(top: &crate::cuda::tensor::RowTopLogits, bases: &[f64], n: usize) -> Vec<Vec<RowCandidate>> {
    bases
        .iter()
        .enumerate()
        .map(|(r, &base)| {
            let lse = top.lse[r] as f64;
            let mut out: Vec<RowCandidate> = (r * n..(r + 1) * n)
                .take_while(|&i| top.tokens[i] >= 0)
                .map(|i| RowCandidate { score: base + (top.logits[i] as f64 - lse), token: top.tokens[i] as u32 })
                .filter(|c| c.score.is_finite())
                .collect();
            // The kernel ranks by logit; equal logits give equal scores, so this only settles two
            // logits whose scores rounded to the same value.
            out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.token.cmp(&b.token)));
            out
        })
        .collect()
}

/// The host path: each row's log-sum-exp, then one pass keeping its best `n`.
fn host_rows<T: Float>(x: &[T], v: usize, bases: &[f64], allowed: &[Allowed], n: usize) -> Vec<Vec<RowCandidate>> {
    let one = |(row, (&base, &allowed)): (&[T], (&f64, &Allowed))| {
        let mx = T::row_max(row);
        let lse = mx.as_f64() + T::exp_shifted_sum(row, mx).ln();
        best_in_row(row, allowed, |x| base + (x.as_f64() - lse), n)
    };
    // Rows are independent; small steps (a single sentence's beam) are not worth the threads.
    if x.len() >= 1 << 16 {
        x.par_chunks(v).zip(bases.par_iter().zip(allowed.par_iter())).map(one).collect()
    } else {
        x.chunks(v).zip(bases.iter().zip(allowed)).map(one).collect()
    }
}

/// The best `n` permitted tokens of `row` by `score_of(logit)`, non-finite scores dropped; best
/// first, equal scores keep the lower token first. (Plain loops: with the permission test as an
/// iterator `filter`, rustc vectorised the filter's search for the next element and restarted it
/// for every element, which made a step 2-3x slower.)
fn best_in_row<T: Float>(row: &[T], allowed: Allowed, score_of: impl Fn(T) -> f64, n: usize) -> Vec<RowCandidate> {
    let mut best: Vec<RowCandidate> = Vec::with_capacity(n + 1);
    // A new candidate must beat this (the n-th best score once n are kept).
    let mut bar = f64::NEG_INFINITY;
    let mut offer = |token: u32, score: f64, best: &mut Vec<RowCandidate>| {
        if !score.is_finite() || (best.len() == n && score <= bar) {
            return;
        }
        // After every equal score already kept: earlier tokens win ties.
        let at = best.partition_point(|c| c.score >= score);
        best.insert(at, RowCandidate { score, token });
        best.truncate(n);
        if best.len() == n {
            bar = best[n - 1].score;
        }
    };
    let range = allowed.range(row.len());
    // Only the special tokens below FIRST_PLAIN can be forbidden: test them, not every token.
    let plain = range.start.max(FIRST_PLAIN.min(range.end));
    for t in range.start..plain {
        if allowed.permits(t as u32) {
            offer(t as u32, score_of(row[t]), &mut best);
        }
    }
    for (t, &x) in row.iter().enumerate().take(range.end).skip(plain) {
        offer(t as u32, score_of(x), &mut best);
    }
    best
}

/// Tokens from here on are never forbidden: past pad, bos and eos.
const FIRST_PLAIN: usize = max3(PAD_ID, BOS_ID, EOS_ID) as usize + 1;

const fn max3(a: u32, b: u32, c: u32) -> u32 {
    let ab = if a > b { a } else { b };
    if ab > c {
        ab
    } else {
        c
    }
}

/// The best `n` extensions of the hypotheses whose rows are `rows` (hypothesis `i` reads
/// `per_row[rows[i]]`), best first; equal scores keep the lower (hypothesis, token) first.
pub(crate) fn merge_rows(per_row: &[Vec<RowCandidate>], rows: &[usize], n: usize) -> Vec<Candidate> {
    let mut all: Vec<Candidate> = rows
        .iter()
        .enumerate()
        .flat_map(|(hyp, &r)| per_row[r].iter().map(move |c| Candidate { score: c.score, hyp, token: c.token }))
        .collect();
    // Stable, and the list is in (hypothesis, token-within-equal-score) order: ties keep it.
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    all.truncate(n);
    all
}

/// The plain reference: row-wise log-softmax of `logits: [rows, V]` in f64, as the search
/// computed it before the per-row selection (the tests' oracle).
#[cfg(test)]
fn log_softmax_reference(logits: &Tensor) -> Vec<f64> {
    use crate::cpu::rowmath::RowMath;
    let v = logits.shape()[1];
    let x = logits.to_f32_vec().unwrap();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(v) {
        let mx = f32::row_max(row);
        let lse = mx as f64 + f32::exp_shifted_sum(row, mx).ln();
        out.extend(row.iter().map(|&a| a as f64 - lse));
    }
    out
}

/// The plain reference of [`merge_rows`] over [`step_candidates`]: every permitted extension of
/// every hypothesis scanned in (hypothesis, token) order.
#[cfg(test)]
fn top_candidates_reference(lp: &[f64], v: usize, bases: &[f64], rows: &[usize], n: usize, allowed: &[Allowed]) -> Vec<Candidate> {
    let mut best: Vec<Candidate> = Vec::new();
    for (hyp, (&base, &row)) in bases.iter().zip(rows).enumerate() {
        for tok in 0..v {
            let score = base + lp[row * v + tok];
            if allowed[hyp].permits(tok as u32) && score.is_finite() {
                best.push(Candidate { score, hyp, token: tok as u32 });
            }
        }
    }
    best.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.hyp.cmp(&b.hyp)).then(a.token.cmp(&b.token)));
    best.truncate(n);
    best
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn run(logits: &Tensor, bases: &[f64], allowed: &[Allowed], n: usize) -> Vec<Candidate> {
        let rows: Vec<usize> = (0..bases.len()).collect();
        merge_rows(&step_candidates(logits, bases, allowed, n).unwrap(), &rows, n)
    }

    #[test]
    fn candidates_sorted_with_ties_to_the_lower_index() {
        // Two hypotheses over a vocabulary of 6 (0 pad, 1 bos, 2 eos).
        let x = vec![0.0f32, 0.0, -1.0, -2.0, -0.5, -0.5, 0.0, 0.0, -3.0, -0.5, -4.0, -0.1];
        let t = Tensor::from_vec(x, &[2, 6]).unwrap();
        let lp = log_softmax_reference(&t);
        for allowed in [Allowed::Tokens { eos: true }, Allowed::Tokens { eos: false }, Allowed::EosOnly] {
            for n in [1, 2, 4, 10] {
                let a = [allowed; 2];
                let got = run(&t, &[0.0, -0.4], &a, n);
                assert_eq!(got, top_candidates_reference(&lp, 6, &[0.0, -0.4], &[0, 1], n, &a), "{allowed:?} n={n}");
            }
        }
        let got = run(&t, &[0.0, -0.4], &[Allowed::Tokens { eos: true }; 2], 4);
        // Scores -0.4 - 0.1 - lse1 = -1.775, then row 0's tokens 4 and 5 (-0.5 - lse0 = -1.813,
        // tied: token order), then -0.4 - 0.5 - lse1 = -2.175 (lse0 = 1.313, lse1 = 1.275).
        assert_eq!(got.iter().map(|c| (c.hyp, c.token)).collect::<Vec<_>>(), vec![(1, 5), (0, 4), (0, 5), (1, 3)]);
        let eos = run(&t, &[0.0, -0.4], &[Allowed::EosOnly; 2], 4);
        assert_eq!(eos.iter().map(|c| (c.hyp, c.token)).collect::<Vec<_>>(), vec![(0, 2), (1, 2)]);
    }

    /// Random rows (ties, -inf, NaN rows, mixed permissions, rows not merged) against the full scan,
    /// bit for bit, in f32, bf16 and f64, serial and parallel sizes.
    #[test]
    fn same_as_the_full_scan_on_random_steps() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for case in 0..60 {
            let v = [3, 7, 50, 1000, 70_000][case % 5];
            let rows = 1 + rng.random_range(0..6);
            let n = [1, 2, 8, 10, 64, 200][rng.random_range(0..6)];
            let mut x: Vec<f32> = (0..rows * v).map(|_| (rng.random_range(-8..8) as f32) * 0.25).collect();
            if rng.random_bool(0.3) {
                x[rng.random_range(0..rows * v)] = f32::NEG_INFINITY;
            }
            if rng.random_bool(0.1) {
                x[rng.random_range(0..rows * v)] = f32::NAN;
            }
            let bases: Vec<f64> = (0..rows).map(|_| -rng.random_range(0.0..3.0)).collect();
            let allowed: Vec<Allowed> = (0..rows)
                .map(|_| [Allowed::Tokens { eos: true }, Allowed::Tokens { eos: false }, Allowed::EosOnly][rng.random_range(0..3)])
                .collect();
            let merged: Vec<usize> = (0..rows).filter(|_| rng.random_bool(0.8)).collect();
            let t32 = Tensor::from_vec(x, &[rows, v]).unwrap();
            let lp = log_softmax_reference(&t32);
            let want = top_candidates_reference(
                &lp,
                v,
                &merged.iter().map(|&r| bases[r]).collect::<Vec<_>>(),
                &merged,
                n,
                &merged.iter().map(|&r| allowed[r]).collect::<Vec<_>>(),
            );
            let got = merge_rows(&step_candidates(&t32, &bases, &allowed, n).unwrap(), &merged, n);
            assert_eq!(got, want, "case {case}: v={v} rows={rows} n={n}");
            // bf16 logits go through the same f32 path (these values are exact in bf16).
            let tb = t32.to_dtype(DType::BF16).unwrap();
            assert_eq!(merge_rows(&step_candidates(&tb, &bases, &allowed, n).unwrap(), &merged, n), want, "case {case} bf16");
        }
    }

    /// Logits on the emulator take the kernel's path (cuda/decode.cu) and give the host's
    /// candidates: the same tokens in the same order, scores within f32 rounding of the lse.
    #[test]
    fn device_selection_matches_the_host() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for case in 0..12 {
            let (rows, v, n) = (1 + case % 4, [5, 200, 1500][case % 3], [1, 8, 10, 64][case % 4]);
            let x: Vec<f32> = (0..rows * v).map(|_| rng.random_range(-20..20) as f32 * 0.25).collect();
            let bases: Vec<f64> = (0..rows).map(|_| -rng.random_range(0.0..3.0)).collect();
            let allowed: Vec<Allowed> = (0..rows)
                .map(|r| [Allowed::Tokens { eos: true }, Allowed::Tokens { eos: false }, Allowed::EosOnly][(r + case) % 3])
                .collect();
            let host = Tensor::from_vec(x, &[rows, v]).unwrap();
            let emu = host.to_device(crate::Device::Emu).unwrap();
            let all: Vec<usize> = (0..rows).collect();
            let want = merge_rows(&step_candidates(&host, &bases, &allowed, n).unwrap(), &all, n);
            let got = merge_rows(&step_candidates(&emu, &bases, &allowed, n).unwrap(), &all, n);
            let key = |c: &[Candidate]| c.iter().map(|c| (c.hyp, c.token)).collect::<Vec<_>>();
            assert_eq!(key(&got), key(&want), "case {case}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g.score - w.score).abs() < 1e-5, "case {case}: {g:?} against {w:?}");
            }
        }
    }

    #[test]
    fn f64_logits_and_bad_arguments() {
        let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 0.5, 0.25], &[1, 6]).unwrap();
        let got = run(&t, &[0.0], &[Allowed::Tokens { eos: true }], 2);
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp() + 4f64.exp() + 0.5f64.exp() + 0.25f64.exp()).ln();
        assert_eq!(got.iter().map(|c| c.token).collect::<Vec<_>>(), vec![3, 2]);
        assert!((got[0].score - (4.0 - lse)).abs() < 1e-12);
        let e = step_candidates(&t, &[0.0, 0.0], &[Allowed::EosOnly], 2).unwrap_err().to_string();
        assert!(e.contains("1 rows of logits, 2 base scores"), "{e}");
        let flat = Tensor::from_vec(vec![1.0f32; 4], &[4]).unwrap();
        assert!(step_candidates(&flat, &[0.0], &[Allowed::EosOnly], 1).is_err());
        assert!(step_candidates(&t, &[0.0], &[Allowed::EosOnly], 0).unwrap()[0].is_empty());
    }
}
