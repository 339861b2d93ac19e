//! Elementwise maps, broadcasting binary ops and reductions over broadcast dimensions.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::PAR_MIN_ELEMS;
use crate::tensor::Float;

/// Elements per parallel task of [`fill_chunked`]: plain slice loops the compiler vectorises, and
/// few enough tasks that rayon's splitting costs nothing next to them.
const CHUNK: usize = 1 << 14;

/// Writes `values` into `out` and zeros into whatever `values` leaves, so every element ends up
/// initialised whatever the iterator yields.
#[inline(always)]
fn write_all<T: Float>(out: &mut [MaybeUninit<T>], values: impl Iterator<Item = T>) {
    let mut n = 0;
    for (o, v) in out.iter_mut().zip(values) {
        o.write(v);
        n += 1;
    }
    for o in &mut out[n..] {
        o.write(T::zero());
    }
}

/// A vector of `len` elements filled by `body(start, chunk)` over pieces of up to [`CHUNK`]
/// elements (`chunk` is elements `start..start + chunk.len()`), in parallel for large `len`. The
/// buffer is written once: no zero fill first (which ran serially, before the parallel work, and
/// cost ~5 % of a training step on two threads).
///
/// # Safety
/// `body` must initialise every element of each chunk it is given.
unsafe fn fill_chunked_uninit<T: Send>(len: usize, body: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    if len >= PAR_MIN_ELEMS {
        spare.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| body(c * CHUNK, o));
    } else {
        body(0, spare);
    }
    // SAFETY: the caller's `body` initialised every element of every chunk, and the chunks cover
    // 0..len.
    unsafe { out.set_len(len) };
    out
}

/// A vector of `len` elements whose elements `start..start + n` are `body(start, n)`, evaluated
/// over pieces of up to `CHUNK` elements, in parallel for large `len`, written once.
pub fn fill_chunked<T: Float, I: Iterator<Item = T>>(len: usize, body: impl Fn(usize, usize) -> I + Sync) -> Vec<T> {
    // SAFETY: write_all initialises every element of the chunk whatever the iterator yields.
    unsafe { fill_chunked_uninit(len, |start, o| write_all(o, body(start, o.len()))) }
}

/// A dropout mask of `len` elements: element `i` is `keep` where the top 32 bits of
/// `hash64(seed, i)` are at least `threshold`, else 0 (the CUDA kernel's rule, bit for bit). Its own
/// loop, compiled for AVX-512 (whose `vpmullq` does the hash's 64-bit multiplies eight at a time)
/// and AVX2 besides the baseline: drawn through [`fill_chunked`]'s iterator it was ~3.5 % of a
/// training step.
pub fn dropout_mask<T: Float>(len: usize, seed: u64, threshold: u64, keep: T) -> Vec<T> {
    #[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512vl+avx2", "x86_64+avx2"))]
    fn draw<T: Float>(out: &mut [MaybeUninit<T>], seed: u64, start: u64, threshold: u64, keep: T) {
        for (i, o) in out.iter_mut().enumerate() {
            let bits = crate::rng::hash64(seed, start + i as u64) >> 32;
            o.write(if bits >= threshold { keep } else { T::zero() });
        }
    }
    // SAFETY: `draw` writes every element of the chunk it is given.
    unsafe { fill_chunked_uninit(len, |start, o| draw(o, seed, start as u64, threshold, keep)) }
}

/// `out[i] = f(x[i])`, parallel for large inputs.
pub fn map<T: Float>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    fill_chunked(x.len(), |s, n| x[s..s + n].iter().map(|&a| f(a)))
}

/// `out[i] = f(x[i], y[i])` for equal-length inputs, parallel for large inputs.
pub fn zip_map<T: Float>(x: &[T], y: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    debug_assert_eq!(x.len(), y.len());
    fill_chunked(x.len(), |s, n| x[s..s + n].iter().zip(&y[s..s + n]).map(|(&a, &b)| f(a, b)))
}

/// `out[r, j] = f(x[r, j], row[j])`: a row vector broadcast over the rows of `x` (bias add).
pub fn zip_rows<T: Float>(x: &[T], row: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let n = row.len().max(1);
    let mut out: Vec<T> = Vec::with_capacity(x.len());
    let spare = &mut out.spare_capacity_mut()[..x.len()];
    let body = |(o, xr): (&mut [MaybeUninit<T>], &[T])| write_all(o, xr.iter().zip(row).map(|(&a, &b)| f(a, b)));
    if x.len() >= PAR_MIN_ELEMS {
        spare.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(body);
    } else {
        spare.chunks_mut(n).zip(x.chunks(n)).for_each(body);
    }
    // SAFETY: write_all initialised every element of every chunk, and the chunks cover the buffer.
    unsafe { out.set_len(x.len()) };
    out
}

/// `per_block` of consecutive 4096-element blocks of `x`, in parallel, added in block order: the
/// total does not depend on the thread count.
fn blocked_sum<T: Float>(x: &[T], per_block: impl Fn(&[T]) -> f64 + Sync) -> f64 {
    const BLOCK: usize = 4096;
    x.par_chunks(BLOCK).map(&per_block).collect::<Vec<f64>>().iter().sum()
}

/// Sum of all elements in f64 (thread-count independent: a fixed blocking of the sum).
pub fn sum_all<T: Float>(x: &[T]) -> f64 {
    blocked_sum(x, T::row_sum)
}

/// `sum x^2` in f64 (the global gradient norm; thread-count independent: a fixed blocking of the sum).
pub fn sum_squares<T: Float>(x: &[T]) -> f64 {
    blocked_sum(x, |c| {
        super::rowmath::lane_sum(c, |v| {
            let v = v.as_f64();
            v * v
        })
    })
}

/// Sums `x` (row-major, shape `from`) down to `to`, where `from` is `to` broadcast (numpy rules):
/// the backward of every broadcasting op.
pub fn sum_to<T: Float>(x: &[T], from: &[usize], to: &[usize]) -> Vec<T> {
    let lead = from.len() - to.len();
    // Output index of each input element: drop leading dims, zero the dims where `to` has size 1.
    let mut out = vec![0f64; to.iter().product()];
    let to_strides = crate::tensor::contiguous_strides(to);
    let mut idx = vec![0usize; from.len()];
    for &v in x {
        let mut o = 0;
        for d in 0..to.len() {
            if to[d] != 1 {
                o += idx[lead + d] * to_strides[d];
            }
        }
        out[o] += v.as_f64();
        for d in (0..from.len()).rev() {
            idx[d] += 1;
            if idx[d] < from[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out.into_iter().map(T::of_f64).collect()
}

/// Column sums of a row-major `[rows, cols]` matrix (bias gradients), f64 accumulation.
pub fn sum_rows<T: Float>(x: &[T], cols: usize) -> Vec<T> {
    let cols = cols.max(1);
    let chunk = super::rows_per_task(cols).max(64);
    let partials: Vec<Vec<f64>> = x
        .par_chunks(chunk * cols)
        .map(|block| {
            let mut acc = vec![0f64; cols];
            for r in block.chunks(cols) {
                for (a, &v) in acc.iter_mut().zip(r) {
                    *a += v.as_f64();
                }
            }
            acc
        })
        .collect();
    let mut acc = vec![0f64; cols];
    for p in &partials {
        for (a, v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
    acc.into_iter().map(T::of_f64).collect()
}

pub fn relu<T: Float>(x: T) -> T {
    if x > T::zero() {
        x
    } else {
        T::zero()
    }
}

/// The tanh approximation of GELU (as in GPT-2 and BERT's reference code).
pub fn gelu<T: Float>(x: T) -> T {
    let x = x.as_f64();
    let c = (2.0 / std::f64::consts::PI).sqrt();
    T::of_f64(0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh()))
}

/// d gelu(x) / dx for the tanh approximation.
pub fn gelu_grad<T: Float>(x: T) -> T {
    let x = x.as_f64();
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let u = c * (x + 0.044715 * x * x * x);
    let t = u.tanh();
    let du = c * (1.0 + 3.0 * 0.044715 * x * x);
    T::of_f64(0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised, chunked mask against the rule applied one element at a time, across chunk
    /// boundaries and at sizes below the parallel threshold.
    #[test]
    fn dropout_mask_follows_the_hash_rule() {
        for (len, p, seed) in [(0usize, 0.1, 1u64), (1, 0.5, 2), (37, 0.3, 3), (PAR_MIN_ELEMS + 5, 0.1, 4), (3 * CHUNK + 11, 0.7, 5)] {
            let threshold = (p * (1u64 << 32) as f64) as u64;
            let keep = (1.0 / (1.0 - p)) as f32;
            let got = dropout_mask(len, seed, threshold, keep);
            assert_eq!(got.len(), len);
            for (i, &g) in got.iter().enumerate() {
                let want = if crate::rng::hash64(seed, i as u64) >> 32 >= threshold { keep } else { 0.0 };
                assert_eq!(g.to_bits(), want.to_bits(), "len {len}, element {i}");
            }
            if len > 10_000 {
                let kept = got.iter().filter(|&&g| g != 0.0).count() as f64 / len as f64;
                assert!((kept - (1.0 - p)).abs() < 0.01, "kept fraction {kept} for p = {p}");
            }
        }
    }
}
