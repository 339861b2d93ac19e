//! Embedding lookup (row gather) and its backward (a deterministic scatter-add).

use rayon::prelude::*;

use crate::tensor::Float;

/// `out[i, :] = weight[ids[i], :]`. Ids are validated by the caller.
pub fn gather_rows<T: Float>(weight: &[T], ids: &[u32], d: usize) -> Vec<T> {
    let mut out = vec![T::zero(); ids.len() * d];
    out.par_chunks_mut(d.max(1)).zip(ids.par_iter()).for_each(|(o, &id)| {
        let s = id as usize * d;
        o.copy_from_slice(&weight[s..s + d]);
    });
    out
}

/// `dweight[ids[i], :] += dy[i, :]` into a zeroed `[vocab, d]`. Rows are added in the order of
/// `ids`, whatever the thread count: each vocabulary row is owned by one task.
pub fn scatter_add_rows<T: Float>(dy: &[T], ids: &[u32], vocab: usize, d: usize) -> Vec<T> {
    // Counting sort of positions by id (stable), so each row's contributions are summed in order.
    let mut counts = vec![0usize; vocab + 1];
    for &id in ids {
        counts[id as usize + 1] += 1;
    }
    for i in 0..vocab {
        counts[i + 1] += counts[i];
    }
    let mut order = vec![0usize; ids.len()];
    let mut next = counts.clone();
    for (pos, &id) in ids.iter().enumerate() {
        order[next[id as usize]] = pos;
        next[id as usize] += 1;
    }
    let mut dw = vec![T::zero(); vocab * d];
    dw.par_chunks_mut(d.max(1)).enumerate().for_each(|(row, out)| {
        for &pos in &order[counts[row]..counts[row + 1]] {
            for (o, &g) in out.iter_mut().zip(&dy[pos * d..(pos + 1) * d]) {
                *o = *o + g;
            }
        }
    });
    dw
}
