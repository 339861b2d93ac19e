//! Greedy and beam search over the incremental decoder ([`crate::model::ModelView`]), batched
//! across sentences, recording nothing on any tape.
//!
//! The beam search follows fairseq's `SequenceGenerator` (AutoMoE evaluates with fairseq):
//! * a hypothesis's score is the sum of its tokens' log-probabilities (log-softmax of the logits,
//!   computed in f64);
//! * each step takes, per sentence, the best `2 * beam` (hypothesis, token) candidates; an eos
//!   among the first `beam` of them finishes that hypothesis, and the first `beam` other
//!   candidates continue as the new beam;
//! * a finished hypothesis is ranked by `score / len^lenpen`, `len` = its tokens including the eos
//!   (fairseq's length penalty, not GNMT's `((5 + len) / 6)^lp`);
//! * a sentence is done once it holds `beam` finished hypotheses (fairseq's early stop), or at its
//!   maximum length, where only eos is allowed: at most `max_len_a * src_len + max_len_b` tokens
//!   before the eos, `src_len` counting the source's own eos, as fairseq's `max_len_a/b` — but
//!   per sentence, where fairseq takes the padded width of the whole batch (which would make a
//!   translation depend on the sentences it is batched with);
//! * `<pad>` and `<s>` are never generated; eos is forbidden before `min_len` tokens.
//!
//! The first step expands each sentence from one hypothesis (fairseq starts `beam` identical
//! copies and reads only the first; one row computes the same thing). Finished sentences leave
//! the batch (their rows are dropped from the decoder state), as in fairseq. Ties between equal
//! scores go to the lower (hypothesis, token) index, in greedy search and beam search alike, so
//! a beam of 1 is exactly greedy search.

use super::candidates::{merge_rows, step_candidates, Allowed};
use crate::data::tokenizer::{BOS_ID, EOS_ID, PAD_ID};
use crate::model::{ModelView, SourceBatch};
use crate::{Error, Result};

/// The longest source (tokens including its eos) and target (tokens before the eos) the decoder
/// accepts by default. Sinusoidal positions have no hard limit; this bounds memory and time, and
/// the CLI reports longer lines by number (or truncates them with `--truncate`).
pub const MAX_POSITIONS: usize = 1024;

/// The widest beam the search accepts. Translation beams are 4-12; every step scores
/// `beam x vocab` candidates per sentence, so a beam in the thousands is a typo that would exhaust
/// memory rather than a setting.
pub const MAX_BEAM: usize = 1024;

/// Search settings. The defaults are AutoMoE's evaluation setting (beam 4, length penalty 0.6)
/// with a maximum length of `1.2 * src_len + 10`.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchOptions {
    /// Hypotheses kept per sentence (1 = greedy).
    pub beam: usize,
    /// Exponent of fairseq's length normalisation `score / len^lenpen` (0: raw log-probabilities).
    pub len_penalty: f64,
    /// Maximum target length `floor(max_len_a * src_len + max_len_b)`, capped at `max_len_cap`.
    pub max_len_a: f64,
    pub max_len_b: usize,
    /// Upper bound of the maximum length whatever the source length.
    pub max_len_cap: usize,
    /// Tokens generated before eos may end a hypothesis. fairseq's default, 1, so a translation is
    /// never empty: an empty hypothesis is scored `log p(eos) / 1^lenpen`, with no length
    /// normalisation to pay, and an undertrained model would otherwise often pick it.
    pub min_len: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions { beam: 4, len_penalty: 0.6, max_len_a: 1.2, max_len_b: 10, max_len_cap: MAX_POSITIONS - 1, min_len: 1 }
    }
}

impl SearchOptions {
    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid("SearchOptions", msg));
        if self.beam == 0 || self.beam > MAX_BEAM {
            return bad(format!("beam {} must be between 1 and {MAX_BEAM}", self.beam));
        }
        if !self.len_penalty.is_finite() {
            return bad(format!("length penalty {} is not finite", self.len_penalty));
        }
        if !self.max_len_a.is_finite() || self.max_len_a < 0.0 {
            return bad(format!("max_len_a {} must be a non-negative number", self.max_len_a));
        }
        if self.min_len > self.max_len_cap {
            return bad(format!("min_len {} exceeds the maximum length cap {}", self.min_len, self.max_len_cap));
        }
        // With a = 0 the maximum is b for every source: a larger minimum contradicts it (fairseq
        // refuses this too). With a > 0 a short source's maximum can still fall below min_len;
        // the minimum then wins (`max_len`).
        if self.max_len_a == 0.0 && self.min_len > self.max_len_b {
            return bad(format!(
                "min_len {} exceeds max_len_b {} (with max_len_a 0, the maximum length of every translation)",
                self.min_len, self.max_len_b
            ));
        }
        Ok(())
    }

    /// Tokens a hypothesis of a `src_len`-token source may have before its eos.
    pub fn max_len(&self, src_len: usize) -> usize {
        let l = (self.max_len_a * src_len as f64 + self.max_len_b as f64).floor() as usize;
        l.clamp(self.min_len, self.max_len_cap)
    }

    /// fairseq's normalised score of a finished hypothesis of `tokens` tokens before its eos.
    pub fn normalize(&self, log_prob: f64, tokens: usize) -> f64 {
        log_prob / ((tokens + 1) as f64).powf(self.len_penalty)
    }
}

/// A finished translation.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Target ids, without bos and eos.
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of the tokens and the eos.
    pub log_prob: f64,
    /// `log_prob / (tokens + 1)^lenpen`: what hypotheses are ranked by.
    pub score: f64,
}

/// Sentences with no tokens get an empty translation without running the model.
fn empty_hypothesis() -> Hypothesis {
    Hypothesis { tokens: Vec::new(), log_prob: 0.0, score: 0.0 }
}

/// One live hypothesis of a sentence.
struct Live {
    tokens: Vec<u32>,
    score: f64,
    /// Its row in the decoder state.
    row: usize,
}

struct Sentence {
    index: usize,
    max_len: usize,
    live: Vec<Live>,
    done: Vec<Hypothesis>,
}

/// Beam search of every source sentence (token ids ending in eos); returns each sentence's
/// finished hypotheses, best first (at most `beam`). Empty sources give one empty hypothesis.
pub fn beam_search(model: &ModelView, sources: &[Vec<u32>], opts: &SearchOptions) -> Result<Vec<Vec<Hypothesis>>> {
    opts.check()?;
    let mut out: Vec<Vec<Hypothesis>> = vec![Vec::new(); sources.len()];
    let run: Vec<usize> = (0..sources.len()).filter(|&i| !sources[i].is_empty()).collect();
    for i in (0..sources.len()).filter(|i| sources[*i].is_empty()) {
        out[i] = vec![empty_hypothesis()];
    }
    if run.is_empty() {
        return Ok(out);
    }
    let src: Vec<Vec<u32>> = run.iter().map(|&i| sources[i].clone()).collect();
    let enc = model.encode(&SourceBatch::from_sentences(&src, PAD_ID)?)?;
    let mut state = model.start(&enc)?;
    let beam = opts.beam;
    let mut sents: Vec<Sentence> = run
        .iter()
        .enumerate()
        .map(|(row, &index)| Sentence {
            index,
            max_len: opts.max_len(sources[index].len()),
            live: vec![Live { tokens: Vec::new(), score: 0.0, row }],
            done: Vec::new(),
        })
        .collect();
    let mut step = 0usize;
    while !sents.is_empty() {
        let tokens: Vec<u32> = sents.iter().flat_map(|s| s.live.iter().map(|l| l.tokens.last().copied().unwrap_or(BOS_ID))).collect();
        let logits = model.step(&mut state, &tokens)?;
        let sent_allowed: Vec<Allowed> = sents.iter().map(|s| Allowed::for_step(step, s.max_len, opts.min_len)).collect();
        let (mut bases, mut allowed) = (vec![0.0; tokens.len()], vec![Allowed::EosOnly; tokens.len()]);
        for (s, &a) in sents.iter().zip(&sent_allowed) {
            for l in &s.live {
                bases[l.row] = l.score;
                allowed[l.row] = a;
            }
        }
        let per_row = step_candidates(&logits, &bases, &allowed, 2 * beam)?;
        let mut keep_rows: Vec<u32> = Vec::new();
        let mut next = Vec::with_capacity(sents.len());
        for (mut s, allowed) in sents.into_iter().zip(sent_allowed) {
            let rows: Vec<usize> = s.live.iter().map(|l| l.row).collect();
            let mut live = Vec::with_capacity(beam);
            for (rank, c) in merge_rows(&per_row, &rows, 2 * beam).into_iter().enumerate() {
                let parent = &s.live[c.hyp];
                if c.token == EOS_ID {
                    if rank < beam && s.done.len() < beam {
                        let n = parent.tokens.len();
                        s.done.push(Hypothesis { tokens: parent.tokens.clone(), log_prob: c.score, score: opts.normalize(c.score, n) });
                    }
                } else if live.len() < beam {
                    let mut t = parent.tokens.clone();
                    t.push(c.token);
                    live.push(Live { tokens: t, score: c.score, row: parent.row });
                }
            }
            if s.done.len() >= beam || allowed == Allowed::EosOnly || live.is_empty() {
                out[s.index] = finish(s.done, &s.live, opts);
                continue;
            }
            for l in &mut live {
                keep_rows.push(l.row as u32);
                l.row = keep_rows.len() - 1;
            }
            s.live = live;
            next.push(s);
        }
        sents = next;
        if !sents.is_empty() {
            state.reorder(&keep_rows)?;
        }
        step += 1;
    }
    Ok(out)
}

/// The finished hypotheses best first; should nothing have finished (every extension was
/// forbidden or non-finite), the best live hypothesis stands in, unterminated.
fn finish(mut done: Vec<Hypothesis>, live: &[Live], opts: &SearchOptions) -> Vec<Hypothesis> {
    if done.is_empty() {
        if let Some(l) = live.iter().max_by(|a, b| a.score.total_cmp(&b.score)) {
            done.push(Hypothesis { tokens: l.tokens.clone(), log_prob: l.score, score: opts.normalize(l.score, l.tokens.len()) });
        } else {
            done.push(empty_hypothesis());
        }
    }
    // Stable: equal scores keep the order they finished in.
    done.sort_by(|a, b| b.score.total_cmp(&a.score));
    done
}

/// Greedy search (the most probable token at every step), batched; the same stopping rules and
/// scores as [`beam_search`] with a beam of 1.
pub fn greedy(model: &ModelView, sources: &[Vec<u32>], opts: &SearchOptions) -> Result<Vec<Hypothesis>> {
    opts.check()?;
    let mut out: Vec<Option<Hypothesis>> = vec![None; sources.len()];
    let mut active: Vec<usize> = (0..sources.len()).filter(|&i| !sources[i].is_empty()).collect();
    for i in (0..sources.len()).filter(|i| sources[*i].is_empty()) {
        out[i] = Some(empty_hypothesis());
    }
    if !active.is_empty() {
        let src: Vec<Vec<u32>> = active.iter().map(|&i| sources[i].clone()).collect();
        let enc = model.encode(&SourceBatch::from_sentences(&src, PAD_ID)?)?;
        let mut state = model.start(&enc)?;
        let mut hyps: Vec<(Vec<u32>, f64)> = vec![(Vec::new(), 0.0); active.len()];
        let mut step = 0usize;
        while !active.is_empty() {
            let tokens: Vec<u32> = hyps.iter().map(|(t, _)| t.last().copied().unwrap_or(BOS_ID)).collect();
            let logits = model.step(&mut state, &tokens)?;
            let bases: Vec<f64> = hyps.iter().map(|(_, s)| *s).collect();
            let allowed: Vec<Allowed> =
                active.iter().map(|&i| Allowed::for_step(step, opts.max_len(sources[i].len()), opts.min_len)).collect();
            let per_row = step_candidates(&logits, &bases, &allowed, 1)?;
            let (mut keep, mut next_active, mut next_hyps) = (Vec::new(), Vec::new(), Vec::new());
            for (r, (&i, (mut toks, score))) in active.iter().zip(hyps).enumerate() {
                match per_row[r].first().map(|c| (c.token, c.score)) {
                    Some((tok, s)) if tok != EOS_ID => {
                        toks.push(tok);
                        keep.push(r as u32);
                        next_active.push(i);
                        next_hyps.push((toks, s));
                    }
                    Some((_, s)) => {
                        let n = toks.len();
                        out[i] = Some(Hypothesis { tokens: toks, log_prob: s, score: opts.normalize(s, n) });
                    }
                    None => {
                        let n = toks.len();
                        out[i] = Some(Hypothesis { tokens: toks, log_prob: score, score: opts.normalize(score, n) });
                    }
                }
            }
            active = next_active;
            hyps = next_hyps;
            if !active.is_empty() {
                state.reorder(&keep)?;
            }
            step += 1;
        }
    }
    Ok(out.into_iter().map(|h| h.unwrap_or_else(empty_hypothesis)).collect())
}

/// The `nbest` best translations of every source, best first, for `1 <= nbest <= beam`: beam
/// search's finished hypotheses (a sentence can have fewer than `nbest`, never none). `nbest = 1`
/// is [`translate_ids`] (greedy search for a beam of 1).
pub fn translate_nbest(model: &ModelView, sources: &[Vec<u32>], opts: &SearchOptions, nbest: usize) -> Result<Vec<Vec<Hypothesis>>> {
    opts.check()?;
    if nbest == 0 || nbest > opts.beam {
        return Err(Error::invalid("nbest", format!("{nbest} translations per sentence: must be 1 to the beam size ({})", opts.beam)));
    }
    if nbest == 1 {
        return Ok(translate_ids(model, sources, opts)?.into_iter().map(|h| vec![h]).collect());
    }
    Ok(beam_search(model, sources, opts)?
        .into_iter()
        .map(|mut hyps| {
            hyps.truncate(nbest);
            hyps
        })
        .collect())
}

/// The best translation of every source: greedy search for a beam of 1, beam search otherwise.
pub fn translate_ids(model: &ModelView, sources: &[Vec<u32>], opts: &SearchOptions) -> Result<Vec<Hypothesis>> {
    if opts.beam == 1 {
        return greedy(model, sources, opts);
    }
    Ok(beam_search(model, sources, opts)?.into_iter().map(|mut n| n.swap_remove(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fairseq_length_rules() {
        let o = SearchOptions::default();
        assert_eq!(o.max_len(10), 22); // floor(1.2 * 10 + 10)
        assert_eq!(SearchOptions { max_len_cap: 15, ..o.clone() }.max_len(10), 15);
        // score / len^0.6 with len counting the eos.
        assert!((o.normalize(-3.0, 2) - (-3.0 / 3f64.powf(0.6))).abs() < 1e-15);
        assert!(SearchOptions { beam: 0, ..o.clone() }.check().is_err());
        assert!(SearchOptions { beam: MAX_BEAM + 1, ..o.clone() }.check().unwrap_err().to_string().contains("beam 1025"));
        assert!(SearchOptions { beam: MAX_BEAM, ..o.clone() }.check().is_ok());
        assert!(SearchOptions { max_len_a: f64::NAN, ..o }.check().is_err());
    }
}
