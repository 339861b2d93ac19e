//! Batching by token count.
//!
//! Pairs are sorted by length so that a batch holds sentences of similar length (little padding), cut
//! greedily so that the padded size `max(s_len, t_len) × sentences` stays within the token budget,
//! and the batch order is then shuffled with a seeded RNG (so training does not see all short batches
//! first). Ties in length are broken by a seeded shuffle too, so different seeds group different
//! sentences together while every pair still appears exactly once. Translation training
//! (`train::mt`) builds its batches once per run, as fairseq does, and the trainer shuffles their
//! order each epoch.

use rand::seq::SliceRandom;

use super::corpus::TokenizedPair;
use super::tokenizer::{BOS_ID, EOS_ID, PAD_ID};
use crate::{Error, Result};

/// One padded batch, row-major `[b, len]` matrices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Source ids `[b, s_len]` (each row ends with `</s>`, then `<pad>`).
    pub src: Vec<u32>,
    /// `[b, s_len]`, true at padding.
    pub src_pad_mask: Vec<bool>,
    /// Decoder input `[b, t_len]`: `<s>` then the target without its `</s>`, then `<pad>`.
    pub tgt_in: Vec<u32>,
    /// Decoder targets `[b, t_len]`: the target then `</s>`, `<pad>` at padding (the loss ignores
    /// `PAD_ID`).
    pub tgt_out: Vec<u32>,
    /// `[b, t_len]`, true at padding (same positions in `tgt_in` and `tgt_out`).
    pub tgt_pad_mask: Vec<bool>,
    pub b: usize,
    pub s_len: usize,
    pub t_len: usize,
    /// Number of real (non-pad) target tokens: the loss normaliser.
    pub n_tokens: usize,
    /// Index of each row's pair in the input slice, to map outputs (translations) back.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Builds one batch from the pairs at `indices` (in that row order). Targets may or may not end
    /// with `</s>`; exactly one `</s>` ends each `tgt_out` row either way.
    pub fn from_pairs(pairs: &[TokenizedPair], indices: &[usize]) -> Result<Batch> {
        if indices.is_empty() {
            return Err(Error::invalid("Batch::from_pairs", "a batch needs at least one pair"));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= pairs.len()) {
            return Err(Error::IndexOutOfRange { op: "Batch::from_pairs", index: bad, limit: pairs.len() });
        }
        let b = indices.len();
        let s_len = indices.iter().map(|&i| pairs[i].src.len()).max().unwrap_or(0).max(1);
        let t_len = indices.iter().map(|&i| tgt_body(&pairs[i].tgt).len() + 1).max().unwrap_or(1);
        let mut batch = Batch {
            src: vec![PAD_ID; b * s_len],
            src_pad_mask: vec![true; b * s_len],
            tgt_in: vec![PAD_ID; b * t_len],
            tgt_out: vec![PAD_ID; b * t_len],
            tgt_pad_mask: vec![true; b * t_len],
            b,
            s_len,
            t_len,
            n_tokens: 0,
            indices: indices.to_vec(),
        };
        for (row, &i) in indices.iter().enumerate() {
            let src = &pairs[i].src;
            let s0 = row * s_len;
            batch.src[s0..s0 + src.len()].copy_from_slice(src);
            batch.src_pad_mask[s0..s0 + src.len()].fill(false);
            let body = tgt_body(&pairs[i].tgt);
            let t0 = row * t_len;
            let n = body.len() + 1;
            batch.tgt_in[t0] = BOS_ID;
            batch.tgt_in[t0 + 1..t0 + n].copy_from_slice(body);
            batch.tgt_out[t0..t0 + body.len()].copy_from_slice(body);
            batch.tgt_out[t0 + body.len()] = EOS_ID;
            batch.tgt_pad_mask[t0..t0 + n].fill(false);
            batch.n_tokens += n;
        }
        Ok(batch)
    }

    /// Padded size in tokens, the quantity the budget bounds.
    pub fn padded_tokens(&self) -> usize {
        self.b * self.s_len.max(self.t_len)
    }
}

/// The target without its trailing `</s>` (if any).
fn tgt_body(tgt: &[u32]) -> &[u32] {
    match tgt.split_last() {
        Some((&EOS_ID, rest)) => rest,
        _ => tgt,
    }
}

/// Padded lengths (source, target) a pair occupies in a batch.
fn lens(p: &TokenizedPair) -> (usize, usize) {
    (p.src.len().max(1), tgt_body(&p.tgt).len() + 1)
}

/// Groups pair indices into batches of at most `max_tokens` padded tokens. With `Some(seed)`,
/// equal-length pairs are ordered randomly and the batch order is shuffled (training); with `None`
/// the order is the deterministic length order (evaluation, decoding). A pair longer than the
/// budget on its own gets a batch of its own: it is never dropped silently.
pub fn plan_batches(pairs: &[TokenizedPair], max_tokens: usize, seed: Option<u64>) -> Result<Vec<Vec<usize>>> {
    if max_tokens == 0 {
        return Err(Error::invalid("plan_batches", "max_tokens must be at least 1"));
    }
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let mut rng = seed.map(crate::rng::seeded);
    if let Some(rng) = rng.as_mut() {
        order.shuffle(rng);
    }
    // Stable sort: the shuffle above decides the order among equal keys. Sorting by the longer side
    // first (what the budget counts), then the other, keeps both sides' padding small.
    order.sort_by_key(|&i| {
        let (s, t) = lens(&pairs[i]);
        (s.max(t), s.min(t))
    });
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut cur_max = 0usize;
    for i in order {
        let (s, t) = lens(&pairs[i]);
        let new_max = cur_max.max(s).max(t);
        if !cur.is_empty() && (cur.len() + 1) * new_max > max_tokens {
            batches.push(std::mem::take(&mut cur));
            cur_max = s.max(t);
        } else {
            cur_max = new_max;
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    if let Some(rng) = rng.as_mut() {
        batches.shuffle(rng);
    }
    Ok(batches)
}

/// Plans and builds all batches (see [`plan_batches`]); the result is deterministic for a seed.
/// A caller that wants other groupings per epoch can pass another seed per epoch.
pub fn make_batches(pairs: &[TokenizedPair], max_tokens: usize, seed: Option<u64>) -> Result<Vec<Batch>> {
    plan_batches(pairs, max_tokens, seed)?.iter().map(|idx| Batch::from_pairs(pairs, idx)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Random pairs with lengths 1..=max_len per side (plus eos).
    fn pairs(n: usize, max_len: usize, seed: u64) -> Vec<TokenizedPair> {
        let mut rng = crate::rng::seeded(seed);
        (0..n)
            .map(|_| {
                let ls = rng.random_range(1..=max_len);
                let lt = rng.random_range(1..=max_len);
                let src = (0..ls).map(|_| rng.random_range(4..100)).chain([EOS_ID]).collect();
                let tgt = (0..lt).map(|_| rng.random_range(4..100)).chain([EOS_ID]).collect();
                TokenizedPair { src, tgt }
            })
            .collect()
    }

    #[test]
    fn layout_of_one_batch() {
        let p = vec![
            TokenizedPair { src: vec![10, 11, EOS_ID], tgt: vec![20, EOS_ID] },
            TokenizedPair { src: vec![12, EOS_ID], tgt: vec![21, 22, 23, EOS_ID] },
        ];
        let b = Batch::from_pairs(&p, &[0, 1]).unwrap();
        assert_eq!((b.b, b.s_len, b.t_len, b.n_tokens), (2, 3, 4, 6));
        assert_eq!(b.src, vec![10, 11, EOS_ID, 12, EOS_ID, PAD_ID]);
        assert_eq!(b.src_pad_mask, vec![false, false, false, false, false, true]);
        assert_eq!(b.tgt_in, vec![BOS_ID, 20, PAD_ID, PAD_ID, BOS_ID, 21, 22, 23]);
        assert_eq!(b.tgt_out, vec![20, EOS_ID, PAD_ID, PAD_ID, 21, 22, 23, EOS_ID]);
        assert_eq!(b.tgt_pad_mask, vec![false, false, true, true, false, false, false, false]);
        assert_eq!(b.padded_tokens(), 8);
        assert!(Batch::from_pairs(&p, &[]).is_err());
        assert!(Batch::from_pairs(&p, &[2]).is_err());
    }

    #[test]
    fn every_pair_once_within_budget() {
        let p = pairs(1000, 40, 1);
        for seed in [None, Some(7)] {
            let batches = make_batches(&p, 300, seed).unwrap();
            let mut seen = vec![0u32; p.len()];
            for b in &batches {
                assert!(b.padded_tokens() <= 300);
                for &i in &b.indices {
                    seen[i] += 1;
                }
                // Rows hold the right pairs.
                let row0 = &b.src[..p[b.indices[0]].src.len()];
                assert_eq!(row0, &p[b.indices[0]].src[..]);
            }
            assert!(seen.iter().all(|&c| c == 1));
        }
    }

    #[test]
    fn deterministic_per_seed_and_shuffled() {
        let p = pairs(500, 30, 2);
        let a = make_batches(&p, 200, Some(3)).unwrap();
        let b = make_batches(&p, 200, Some(3)).unwrap();
        let c = make_batches(&p, 200, Some(4)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Without a seed, batches come in non-decreasing length order.
        let sorted = make_batches(&p, 200, None).unwrap();
        let maxes: Vec<usize> = sorted.iter().map(|b| b.s_len.max(b.t_len)).collect();
        assert!(maxes.windows(2).all(|w| w[0] <= w[1]));
        let shuffled: Vec<usize> = a.iter().map(|b| b.s_len.max(b.t_len)).collect();
        assert!(shuffled.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn oversized_pair_gets_own_batch() {
        let mut p = pairs(50, 5, 3);
        p.push(TokenizedPair { src: vec![9; 100], tgt: vec![8, EOS_ID] });
        let batches = make_batches(&p, 40, Some(1)).unwrap();
        let big: Vec<&Batch> = batches.iter().filter(|b| b.indices.contains(&50)).collect();
        assert_eq!(big.len(), 1);
        assert_eq!(big[0].b, 1);
        assert_eq!(batches.iter().map(|b| b.b).sum::<usize>(), 51);
        assert!(make_batches(&p, 0, None).is_err());
        assert!(make_batches(&[], 10, Some(1)).unwrap().is_empty());
    }
}
