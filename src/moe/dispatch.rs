//! Dispatch: which permuted row each (token, slot) pair goes to. A stable counting sort by expert,
//! so the order inside an expert's segment is the pairs' flat order `t * k + s` — deterministic,
//! whatever the thread count, and the same on every backend.

use crate::{Error, Result};

/// Marks a (token, slot) pair dropped by the capacity limit: it gets no expert row.
pub const DROPPED: u32 = u32::MAX;

/// The routing of one MoE call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub tokens: usize,
    pub k: usize,
    pub experts: usize,
    /// Pairs kept for each expert `[E]`.
    pub counts: Vec<usize>,
    /// Start row of each expert's segment `[E + 1]` (exclusive scan of `counts`).
    pub offsets: Vec<usize>,
    /// Permuted row of pair `t * k + s`, or [`DROPPED`] `[T * k]`.
    pub pos: Vec<u32>,
    /// Token of each permuted row `[rows]` (the gather index of the permute).
    pub src_row: Vec<u32>,
    /// Pairs routed to each expert before the capacity limit `[E]` (for the balance loss and stats).
    pub routed: Vec<usize>,
}

impl Dispatch {
    /// Builds the dispatch of `idx: [T * k]` (expert of each pair). With `capacity`, each expert
    /// keeps at most that many pairs, the earliest in flat order; the rest are dropped (their FFN
    /// output is zero and the residual connection carries the token).
    pub fn new(idx: &[u32], tokens: usize, k: usize, experts: usize, capacity: Option<usize>) -> Result<Self> {
        if idx.len() != tokens * k {
            return Err(Error::ShapeMismatch { op: "dispatch", lhs: vec![tokens, k], rhs: vec![idx.len()] });
        }
        if let Some(&bad) = idx.iter().find(|&&e| e as usize >= experts) {
            return Err(Error::IndexOutOfRange { op: "dispatch expert", index: bad as usize, limit: experts });
        }
        let mut routed = vec![0usize; experts];
        for &e in idx {
            routed[e as usize] += 1;
        }
        let cap = capacity.unwrap_or(usize::MAX);
        let counts: Vec<usize> = routed.iter().map(|&r| r.min(cap)).collect();
        let mut offsets = vec![0usize; experts + 1];
        for e in 0..experts {
            offsets[e + 1] = offsets[e] + counts[e];
        }
        let mut next = offsets[..experts].to_vec();
        let mut pos = vec![DROPPED; idx.len()];
        let mut src_row = vec![0u32; offsets[experts]];
        for (p, &e) in idx.iter().enumerate() {
            let e = e as usize;
            if next[e] < offsets[e + 1] {
                pos[p] = next[e] as u32;
                src_row[next[e]] = (p / k) as u32;
                next[e] += 1;
            }
        }
        Ok(Dispatch { tokens, k, experts, counts, offsets, pos, src_row, routed })
    }

    /// Rows of the permuted (expert-contiguous) matrix.
    pub fn rows(&self) -> usize {
        self.offsets[self.experts]
    }

    /// The capacity for a capacity factor: `ceil(factor * T * k / E)`.
    pub fn capacity_for(factor: f64, tokens: usize, k: usize, experts: usize) -> usize {
        ((factor * (tokens * k) as f64) / experts.max(1) as f64).ceil() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_counting_sort() {
        // T = 4, k = 2, E = 3.
        let idx = [2, 0, 0, 2, 1, 0, 2, 1];
        let d = Dispatch::new(&idx, 4, 2, 3, None).unwrap();
        assert_eq!(d.counts, vec![3, 2, 3]);
        assert_eq!(d.offsets, vec![0, 3, 5, 8]);
        assert_eq!(d.pos, vec![5, 0, 1, 6, 3, 2, 7, 4]);
        assert_eq!(d.src_row, vec![0, 1, 2, 2, 3, 0, 1, 3]);
    }

    #[test]
    fn capacity_drops_the_latest_pairs() {
        let idx = [0, 0, 0, 1];
        let d = Dispatch::new(&idx, 4, 1, 2, Some(2)).unwrap();
        assert_eq!(d.counts, vec![2, 1]);
        assert_eq!(d.routed, vec![3, 1]);
        assert_eq!(d.pos, vec![0, 1, DROPPED, 2]);
        assert_eq!(Dispatch::capacity_for(1.25, 4, 1, 2), 3);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(Dispatch::new(&[0, 3], 2, 1, 3, None).is_err());
        assert!(Dispatch::new(&[0], 2, 1, 3, None).is_err());
    }
}
