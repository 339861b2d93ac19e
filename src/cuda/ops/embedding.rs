//! Launchers of cuda/embedding.cu: the embedding lookup (a row gather) and its backward, a
//! deterministic scatter-add (positions sorted stably by id on the host, each vocabulary row summed
//! in that order by one warp), as src/cpu/embedding.rs computes them.

use super::{check_buf, grid_for, to_i32, BLOCK};
use crate::cuda::abi::{automoe_dptr, EmbeddingParams};
use crate::cuda::gpu::{GBuf, Gpu};
use crate::cuda::moe_exec::Exec;
use crate::cuda::moe_ops::{Geometry, KernelFloat};
use crate::{Error, Result};

/// Vocabulary rows per block of the backward (one warp each).
const BWD_WARPS: u32 = BLOCK / 32;

/// Ids as the kernels' i32, each checked against `vocab`.
fn checked_ids(op: &'static str, ids: &[u32], vocab: usize) -> Result<Vec<i32>> {
    ids.iter()
        .map(|&id| if (id as usize) < vocab { Ok(id as i32) } else { Err(Error::IndexOutOfRange { op, index: id as usize, limit: vocab }) })
        .collect()
}

/// Gathers `out[i, :] = table[ids[i], :d]`, `[ids.len(), d]`.
///
/// `table` holds `vocab` rows `ld` elements apart starting at element `offset` (a front slice of a
/// wider table is read in place); out is [ids.len(), d].
pub fn embedding_fwd<T: KernelFloat>(
    gpu: &Gpu,
    table: &GBuf<T>,
    offset: usize,
    ld: usize,
    vocab: usize,
    d: usize,
    ids: &[u32],
) -> Result<GBuf<T>> {
    const OP: &str = "embedding_fwd";
    if ld < d {
        return Err(Error::invalid(OP, format!("row stride ld = {ld} is smaller than the row width d = {d}")));
    }
    let idx = checked_ids(OP, ids, vocab)?;
    let n = ids.len();
    let (ni, di, ldi, vi) = (to_i32(OP, "ids.len()", n)?, to_i32(OP, "d", d)?, to_i32(OP, "ld", ld)?, to_i32(OP, "vocab", vocab)?);
    if vocab > 0 {
        let need = (vocab - 1).checked_mul(ld).and_then(|x| x.checked_add(offset + d));
        let need = need.ok_or_else(|| Error::invalid(OP, "offset + (vocab - 1) * ld + d overflows"))?;
        check_buf(OP, "table", table, need)?;
    }
    let total = n.checked_mul(d).ok_or_else(|| Error::invalid(OP, "ids.len() * d overflows"))?;
    let mut out = gpu.uninit(total, T::poison())?;
    if total == 0 {
        return Ok(out);
    }
    let ids_buf = gpu.upload(&idx)?;
    let p = EmbeddingParams {
        table: gpu.addr(table) + (offset * std::mem::size_of::<T>()) as automoe_dptr,
        ids: gpu.addr(&ids_buf),
        out: gpu.addr_mut(&mut out),
        n: ni,
        d: di,
        ld: ldi,
        vocab: vi,
        ..Default::default()
    };
    let g = Geometry { grid: grid_for(total), block: BLOCK, smem_bytes: 0 };
    // SAFETY: every id is < vocab and the table was checked to hold offset + (vocab - 1) * ld + d
    // elements, so each read table[offset + id * ld + j], j < d, is in bounds; ids holds n i32 and
    // out n * d elements; all buffers come from `gpu`.
    unsafe { gpu.enqueue("embedding.cu", &format!("embedding_fwd_{}", T::SUFFIX), g, &p)? };
    Ok(out)
}

/// Stable counting sort of positions by id: `(order, starts)` with `starts` the CSR offsets
/// (`vocab + 1`) and `order[starts[v]..starts[v + 1]]` the positions of id `v`, ascending.
fn sort_by_id(ids: &[i32], vocab: usize) -> (Vec<i32>, Vec<i32>) {
    let mut starts = vec![0i32; vocab + 1];
    for &id in ids {
        starts[id as usize + 1] += 1;
    }
    for v in 0..vocab {
        starts[v + 1] += starts[v];
    }
    let mut next = starts.clone();
    let mut order = vec![0i32; ids.len()];
    for (pos, &id) in ids.iter().enumerate() {
        order[next[id as usize] as usize] = pos as i32;
        next[id as usize] += 1;
    }
    (order, starts)
}

/// dtable [vocab, d] from dy [ids.len(), d].
///
/// `dtable[v, :] = sum of dy[i, :]` over the positions `i` with `ids[i] == v`, added in position
/// order (deterministic); rows of unused ids are 0.
pub fn embedding_bwd<T: KernelFloat>(gpu: &Gpu, dy: &GBuf<T>, ids: &[u32], vocab: usize, d: usize) -> Result<GBuf<T>> {
    const OP: &str = "embedding_bwd";
    let idx = checked_ids(OP, ids, vocab)?;
    let n = ids.len();
    let (ni, di, vi) = (to_i32(OP, "ids.len()", n)?, to_i32(OP, "d", d)?, to_i32(OP, "vocab", vocab)?);
    to_i32(OP, "vocab + 1", vocab + 1)?;
    let dy_n = n.checked_mul(d).ok_or_else(|| Error::invalid(OP, "ids.len() * d overflows"))?;
    check_buf(OP, "dy", dy, dy_n)?;
    let total = vocab.checked_mul(d).ok_or_else(|| Error::invalid(OP, "vocab * d overflows"))?;
    if n == 0 || total == 0 {
        return gpu.zeros(total);
    }
    let (order, starts) = sort_by_id(&idx, vocab);
    let (order_buf, starts_buf) = (gpu.upload(&order)?, gpu.upload(&starts)?);
    let mut dtable = gpu.uninit(total, T::poison())?;
    let p = EmbeddingParams {
        dy: gpu.addr(dy),
        order: gpu.addr(&order_buf),
        starts: gpu.addr(&starts_buf),
        dtable: gpu.addr_mut(&mut dtable),
        n: ni,
        d: di,
        ld: di,
        vocab: vi,
        ..Default::default()
    };
    let g = Geometry { grid: vocab.div_ceil(BWD_WARPS as usize).clamp(1, 65_535) as u32, block: BLOCK, smem_bytes: 0 };
    // SAFETY: dy was checked to hold n * d elements; order holds n positions < n and starts the
    // vocab + 1 CSR offsets into it (built above); dtable was allocated with vocab * d elements;
    // all buffers come from `gpu`.
    unsafe { gpu.enqueue("embedding.cu", &format!("embedding_bwd_{}", T::SUFFIX), g, &p)? };
    Ok(dtable)
}

#[cfg(test)]
mod tests {
    use half::bf16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::test_util::{backends, rel_err};
    use super::*;
    use crate::cpu::embedding as cpu;

    /// `n` random values in ±[0.05, 2) (never 0).
    fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let x: f32 = rng.random_range(0.05..2.0);
                if rng.random_bool(0.5) {
                    x
                } else {
                    -x
                }
            })
            .collect()
    }

    fn tol<T: KernelFloat>() -> f64 {
        if T::SUFFIX == "f32" {
            1e-5
        } else {
            2e-2
        }
    }

    fn to64<T: KernelFloat>(v: &[T]) -> Vec<f64> {
        v.iter().map(|x| x.to_f32() as f64).collect()
    }

    fn check_fwd<T: KernelFloat>(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // (vocab, d, ld, offset, ids): whole table; front slice of a wider table at an offset.
        let cases: [(usize, usize, usize, usize, Vec<u32>); 3] = [
            (7, 5, 5, 0, vec![3, 0, 6, 3, 3, 1]),
            (9, 33, 48, 11, vec![8, 2, 2, 0, 5, 8, 1]),
            (40, 70, 70, 0, (0..50).map(|_| rng.random_range(0..40)).collect()),
        ];
        for gpu in backends() {
            for (c, (vocab, d, ld, offset, ids)) in cases.iter().enumerate() {
                let (vocab, d, ld, offset) = (*vocab, *d, *ld, *offset);
                let len = offset + vocab * ld + 3;
                let table: Vec<T> = random(&mut rng, len).into_iter().map(T::from_f32).collect();
                let out = embedding_fwd(&gpu, &gpu.upload(&table).unwrap(), offset, ld, vocab, d, ids).unwrap();
                let got = to64(&gpu.download(&out).unwrap());
                // The reference reads a dense [vocab, d] copy of the slice.
                let dense: Vec<f64> = (0..vocab).flat_map(|r| to64(&table[offset + r * ld..offset + r * ld + d])).collect();
                let want = cpu::gather_rows(&dense, ids, d);
                // A gather copies: exact.
                assert_eq!(rel_err(&got, &want), 0.0, "{gpu:?} {} case {c}", T::SUFFIX);
            }
        }
    }

    fn check_bwd<T: KernelFloat>(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Repeated ids and unused rows (vocab 12 with ids drawn from 0..8, plus 10), d not a
        // multiple of 32 and wider than a warp.
        let cases: [(usize, usize, Vec<u32>); 3] = [
            (12, 5, vec![3, 0, 3, 10, 3, 1, 0]),
            (12, 45, (0..30).map(|_| rng.random_range(0..8)).chain([10]).collect()),
            (70, 33, (0..90).map(|_| rng.random_range(0..60)).collect()),
        ];
        for gpu in backends() {
            for (c, (vocab, d, ids)) in cases.iter().enumerate() {
                let (vocab, d) = (*vocab, *d);
                let dy: Vec<T> = random(&mut rng, ids.len() * d).into_iter().map(T::from_f32).collect();
                let out = embedding_bwd(&gpu, &gpu.upload(&dy).unwrap(), ids, vocab, d).unwrap();
                let got = to64(&gpu.download(&out).unwrap());
                let want = cpu::scatter_add_rows(&to64(&dy), ids, vocab, d);
                for v in 0..vocab {
                    if !ids.contains(&(v as u32)) {
                        assert!(got[v * d..(v + 1) * d].iter().all(|&x| x == 0.0), "{gpu:?} case {c}: unused row {v} must be exactly 0");
                    }
                }
                let e = rel_err(&got, &want);
                assert!(e < tol::<T>(), "{gpu:?} {} case {c}: err {e:e}", T::SUFFIX);
                if T::SUFFIX == "f32" {
                    // Same order of f32 additions as the CPU kernel in f32: bit-identical.
                    let dy32: Vec<f32> = dy.iter().map(|x| x.to_f32()).collect();
                    let want32: Vec<f64> = cpu::scatter_add_rows(&dy32, ids, vocab, d).iter().map(|&x| x as f64).collect();
                    assert_eq!(got, want32, "{gpu:?} case {c}: f32 sums must match the CPU's order exactly");
                }
            }
        }
    }

    #[test]
    fn fwd_matches_cpu_f32() {
        check_fwd::<f32>(1);
    }

    #[test]
    fn fwd_matches_cpu_bf16() {
        check_fwd::<bf16>(2);
    }

    #[test]
    fn bwd_matches_cpu_f32() {
        check_bwd::<f32>(3);
    }

    #[test]
    fn bwd_matches_cpu_bf16() {
        check_bwd::<bf16>(4);
    }

    /// The scatter-add under reshuffled fiber schedules: the same bits every time.
    #[test]
    fn shuffled_schedules_give_the_same_bits() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (vocab, d) = (20, 40);
        let ids: Vec<u32> = (0..60).map(|_| rng.random_range(0..15)).collect();
        let dy = random(&mut rng, ids.len() * d);
        let run = |seed: u32| {
            let gpu = Gpu::Emu(crate::cuda::Emu { seed });
            let out = embedding_bwd(&gpu, &gpu.upload(&dy).unwrap(), &ids, vocab, d).unwrap();
            gpu.download(&out).unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        let base = run(0);
        for seed in [1, 2, 3] {
            assert!(run(seed) == base, "seed {seed} changed the result");
        }
    }

    #[test]
    fn out_of_range_id_is_an_error() {
        for gpu in backends() {
            let table = gpu.upload(&[0.5f32; 4 * 3]).unwrap();
            let e = embedding_fwd(&gpu, &table, 0, 3, 4, 3, &[0, 4, 1]).err().expect("id 4 of vocab 4 must fail");
            assert!(matches!(e, Error::IndexOutOfRange { index: 4, limit: 4, .. }), "{e}");
            let dy = gpu.upload(&[0.5f32; 2 * 3]).unwrap();
            let e = embedding_bwd(&gpu, &dy, &[9, 1], 4, 3).err().expect("id 9 of vocab 4 must fail");
            assert!(matches!(e, Error::IndexOutOfRange { index: 9, limit: 4, .. }), "{e}");
            // A table too short for its vocab rows.
            let e = embedding_fwd(&gpu, &table, 2, 3, 4, 3, &[0]).err().expect("offset past the table");
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        }
    }

    #[test]
    fn empty_ids() {
        for gpu in backends() {
            let table = gpu.upload(&[0.5f32; 4 * 3]).unwrap();
            assert!(gpu.download(&embedding_fwd(&gpu, &table, 0, 3, 4, 3, &[]).unwrap()).unwrap().is_empty());
            let dy = gpu.upload::<f32>(&[]).unwrap();
            assert_eq!(gpu.download(&embedding_bwd(&gpu, &dy, &[], 4, 3).unwrap()).unwrap(), vec![0.0; 12]);
        }
    }
}
