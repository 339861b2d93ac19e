//! Matrix multiplication through the `gemm` crate, which takes arbitrary row and column strides:
//! transposed and front-sliced views are multiplied where they lie, without a copy.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::tensor::{broadcast_shape, Float, Layout};
use crate::{Error, Result};

/// Below this many multiply-adds per matrix, a batch is split across threads one matrix per task
/// (attention heads) instead of threading inside each product.
const SMALL_GEMM_FMAS: usize = 1 << 18;

/// `a @ b` for `a: [..., m, k]`, `b: [..., k, n]` with numpy broadcasting over the batch dims.
/// Returns the contiguous result and its shape.
pub fn matmul<T: Float>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Result<(Vec<T>, Vec<usize>)> {
    let (sa, sb) = (la.shape(), lb.shape());
    if sa.len() < 2 || sb.len() < 2 || sa[sa.len() - 1] != sb[sb.len() - 2] {
        return Err(Error::ShapeMismatch { op: "matmul", lhs: sa.to_vec(), rhs: sb.to_vec() });
    }
    let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let batch_shape = broadcast_shape("matmul", &sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    let batch: usize = batch_shape.iter().product();
    let mut out_shape = batch_shape.clone();
    out_shape.extend([m, n]);
    let total = batch * m * n;
    // Not zero-filled: the products write every element (gemm_into_uninit), and a fill they
    // overwrite cost ~5 % of a training step, serially, before the parallel product.
    let mut out: Vec<T> = Vec::with_capacity(total);
    if total == 0 {
        return Ok((out, out_shape));
    }
    fill_products(&mut out.spare_capacity_mut()[..total], a, la, b, lb, &batch_shape, (m, k, n))?;
    // SAFETY: fill_products wrote all `total` elements (each product writes its whole [m, n]
    // block, and the blocks tile the buffer).
    unsafe { out.set_len(total) };
    Ok((out, out_shape))
}

/// The products of [`matmul`] into `out` (`[batch, m, n]`, not necessarily initialised).
fn fill_products<T: Float>(
    out: &mut [MaybeUninit<T>],
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    batch_shape: &[usize],
    (m, k, n): (usize, usize, usize),
) -> Result<()> {
    let sb = lb.shape();
    let batch: usize = batch_shape.iter().product();
    // A stacked lhs times one rhs matrix is one tall product when lhs's batch rows are evenly spaced.
    if sb.len() == 2 && rows_fold(la) {
        let (rs, cs) = (la.strides()[la.rank() - 2], la.strides()[la.rank() - 1]);
        let view = MatView { offset: la.offset(), rs, cs };
        let bv = MatView { offset: lb.offset(), rs: lb.strides()[0], cs: lb.strides()[1] };
        gemm_into_uninit(out, batch * m, n, k, a, view, b, bv, gemm::Parallelism::Rayon(0));
        return Ok(());
    }

    let lab = la.broadcast_to(&[batch_shape, &[m, k]].concat())?;
    let lbb = lb.broadcast_to(&[batch_shape, &[k, n]].concat())?;
    let a_offsets = batch_offsets(&lab);
    let b_offsets = batch_offsets(&lbb);
    let av = |i: usize| MatView { offset: a_offsets[i], rs: lab.strides()[lab.rank() - 2], cs: lab.strides()[lab.rank() - 1] };
    let bv = |i: usize| MatView { offset: b_offsets[i], rs: lbb.strides()[lbb.rank() - 2], cs: lbb.strides()[lbb.rank() - 1] };
    if batch > 1 && m * n * k < SMALL_GEMM_FMAS {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| gemm_into_uninit(o, m, n, k, a, av(i), b, bv(i), gemm::Parallelism::None));
    } else {
        for (i, o) in out.chunks_mut(m * n).enumerate() {
            gemm_into_uninit(o, m, n, k, a, av(i), b, bv(i), gemm::Parallelism::Rayon(0));
        }
    }
    Ok(())
}

/// Whether all leading dims of `l` fold into its row dim (row i+1 starts one row-stride after row i).
fn rows_fold(l: &Layout) -> bool {
    let r = l.rank();
    let mut expected = l.strides()[r - 2];
    for d in (0..r - 2).rev() {
        expected *= l.shape()[d + 1];
        if l.shape()[d] != 1 && l.strides()[d] != expected {
            return false;
        }
    }
    true
}

/// Storage offset of each matrix in a (broadcast) batch, in row-major batch order.
fn batch_offsets(l: &Layout) -> Vec<usize> {
    let r = l.rank();
    let batch = Layout::new(l.shape()[..r - 2].to_vec(), l.strides()[..r - 2].to_vec(), l.offset());
    batch.offsets()
}

/// Where one matrix sits in a slice: element (i, j) is at `offset + i*rs + j*cs`.
#[derive(Clone, Copy)]
pub struct MatView {
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl MatView {
    /// The same storage read as the transposed matrix.
    pub fn transposed(self) -> MatView {
        MatView { offset: self.offset, rs: self.cs, cs: self.rs }
    }
}

/// `out[m, n] (contiguous) = A[m, k] @ B[k, n]`, overwriting `out`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into<T: Float>(
    out: &mut [T],
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    av: MatView,
    b: &[T],
    bv: MatView,
    par: gemm::Parallelism,
) {
    gemm_acc(out, m, n, k, a, av, b, bv, false, par)
}

/// `out[m, n] (contiguous) (+)= A @ B`: with `accumulate`, adds to what `out` holds.
#[allow(clippy::too_many_arguments)]
pub fn gemm_acc<T: Float>(
    out: &mut [T],
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    av: MatView,
    b: &[T],
    bv: MatView,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    gemm_acc_rows(out, n, m, n, k, a, av, b, bv, accumulate, par)
}

/// Up to this many rows, a product whose rhs is read transposed (`B = W^T` for a row-major
/// `W: [n, k]`, as in every linear layer) runs as one matrix-vector product per row: `gemm` reads
/// `W` directly for a single row, but for two or more it first gathers `W`, element by element
/// with its row stride, into its packed layout. For a `[2048, 512]` weight: 2 rows took 0.73 ms
/// gathered and 0.07 ms row by row; the two meet at about 16 rows. Incremental decoding (a few
/// beams at a time) lives in this regime.
pub const ROWWISE_MAX_ROWS: usize = 12;

/// From this many rows up, a product whose rhs is read transposed gets a contiguous copy of it
/// first (see [`transpose_rhs`]) when both its dims are at least `TRANSPOSED_RHS_MIN`.
const TRANSPOSED_RHS_MIN: usize = 16;

/// Contiguous rhs copies up to this many elements (4 MiB of f32) use the per-thread scratch;
/// larger ones (an output projection onto a big vocabulary) a fresh buffer.
const SCRATCH_MAX_ELEMS: usize = 1 << 20;

/// Copies `B = W^T` (read in place from a row-major `W: [n, k]`) into `bt: [k, n]`, contiguous.
/// `gemm` would otherwise gather `W` element by element, with its row stride, into its packed
/// layout, and its AVX-512 kernel packs 64 rows at once, so that with a power-of-two row stride
/// the 64 lines it reads per column fall into two L1 sets and evict each other: for
/// `[30, 512] x [512, 512]^T` the product took 231 us gathering and 59 us from a contiguous copy.
/// With `Parallelism::Rayon` and a large matrix the copy is split over row blocks of `bt`.
fn transpose_rhs<T: Float>(b: &[T], bv: MatView, k: usize, n: usize, bt: &mut [T], par: gemm::Parallelism) {
    use crate::cpu::transpose::transpose_view;
    // `W` as a row-major view (B's row stride is 1): element (j, l) = B(l, j).
    let w = bv.transposed();
    let bt = &mut bt[..k * n];
    if matches!(par, gemm::Parallelism::Rayon(_)) && k * n >= crate::cpu::PAR_MIN_ELEMS * 8 {
        // Rows l0.. of `bt` are columns l0.. of `W`: contiguous, disjoint output blocks.
        let block = 64;
        bt.par_chunks_mut(block * n).enumerate().for_each(|(i, chunk)| {
            let l0 = i * block;
            transpose_view(b, MatView { offset: w.offset + l0, ..w }, n, chunk.len() / n, chunk);
        });
    } else {
        transpose_view(b, w, n, k, bt);
    }
}

/// [`gemm_acc`] into rows of `out` that are `out_rs` apart (`out_rs >= n`): a column block of a
/// wider row-major matrix.
#[allow(clippy::too_many_arguments)]
pub fn gemm_acc_rows<T: Float>(
    out: &mut [T],
    out_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    av: MatView,
    b: &[T],
    bv: MatView,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    // SAFETY: `out` is an exclusively borrowed, initialised slice of `out.len()` elements.
    unsafe { gemm_raw(out.as_mut_ptr(), out.len(), out_rs, m, n, k, a, av, b, bv, accumulate, par) }
}

/// `out[m, n] (contiguous) = A @ B` into memory that need not be initialised: every element is
/// written and none is read (the `gemm` crate reads its destination only when told to
/// accumulate), so an output buffer needs no zero fill first.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into_uninit<T: Float>(
    out: &mut [MaybeUninit<T>],
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    av: MatView,
    b: &[T],
    bv: MatView,
    par: gemm::Parallelism,
) {
    // SAFETY: `out` is exclusively borrowed and writable for `out.len()` elements; without
    // accumulation gemm_raw only writes them.
    unsafe { gemm_raw(out.as_mut_ptr().cast::<T>(), out.len(), n, m, n, k, a, av, b, bv, false, par) }
}

/// The product behind [`gemm_acc_rows`] and [`gemm_into_uninit`]: element (i, j) of the result
/// goes to `out + i * out_rs + j`.
///
/// # Safety
/// `out` must be valid for writes of `out_len` elements and used by nothing else during the call;
/// with `accumulate` those elements must also be initialised (they are read). Without it none is
/// read, so they may be uninitialised.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw<T: Float>(
    out: *mut T,
    out_len: usize,
    out_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    av: MatView,
    b: &[T],
    bv: MatView,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    assert!(out_rs >= n, "gemm output rows overlap");
    if m == 0 || n == 0 {
        return;
    }
    assert!(out_len >= (m - 1) * out_rs + n, "gemm output buffer too small");
    // B = W^T read in place from a row-major W (a linear layer's weight).
    let rhs_transposed = bv.rs == 1 && bv.cs != 1;
    if (2..=ROWWISE_MAX_ROWS).contains(&m) && k > 0 && av.cs == 1 && rhs_transposed {
        for i in 0..m {
            let ai = MatView { offset: av.offset + i * av.rs, ..av };
            // SAFETY: row i starts i * out_rs elements in, inside the asserted length; the rows
            // are disjoint (out_rs >= n).
            unsafe { gemm_raw(out.add(i * out_rs), out_len - i * out_rs, out_rs, 1, n, k, a, ai, b, bv, accumulate, par) };
        }
        return;
    }
    if m > ROWWISE_MAX_ROWS && k >= TRANSPOSED_RHS_MIN && n >= TRANSPOSED_RHS_MIN && rhs_transposed {
        let run = |bt: &mut [T]| {
            transpose_rhs(b, bv, k, n, bt, par);
            // SAFETY: forwarded from this function's contract.
            unsafe { gemm_raw(out, out_len, out_rs, m, n, k, a, av, bt, MatView { offset: 0, rs: n, cs: 1 }, accumulate, par) }
        };
        if k * n <= SCRATCH_MAX_ELEMS {
            crate::cpu::with_scratch::<T, _>(k * n, run);
        } else {
            run(&mut vec![T::zero(); k * n]);
        }
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: inside the asserted length.
                    unsafe { out.add(i * out_rs + j).write(T::zero()) };
                }
            }
        }
        return;
    }
    // The last element each view touches must lie inside its slice: the gemm call reads raw pointers.
    assert!(av.offset + (m - 1) * av.rs + (k - 1) * av.cs < a.len(), "lhs view exceeds its storage");
    assert!(bv.offset + (k - 1) * bv.rs + (n - 1) * bv.cs < b.len(), "rhs view exceeds its storage");
    // SAFETY: the asserts above keep every index gemm computes from (offset, rs, cs) inside `a`
    // and `b`, and every output index (i * out_rs + j) inside the `out_len` elements this
    // function's contract makes writable; gemm reads them only when `accumulate` is set.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            1,
            out_rs as isize,
            accumulate,
            a.as_ptr().add(av.offset),
            av.cs as isize,
            av.rs as isize,
            b.as_ptr().add(bv.offset),
            bv.cs as isize,
            bv.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Few-row products (the row-by-row path) and larger ones, with a transposed or plain rhs,
    /// accumulating or not, into a wider output, against a naive triple loop.
    #[test]
    fn gemm_acc_rows_matches_naive_for_few_and_many_rows() {
        let mut rng = crate::rng::seeded(11);
        for m in [1usize, 2, 5, ROWWISE_MAX_ROWS, ROWWISE_MAX_ROWS + 1, 40] {
            for transposed_rhs in [true, false] {
                for accumulate in [false, true] {
                    let (n, k) = (rng.random_range(1..50), rng.random_range(1..50));
                    let out_rs = n + rng.random_range(0..4);
                    let a: Vec<f64> = (0..m * k + 3).map(|_| rng.random::<f64>() - 0.5).collect();
                    let b: Vec<f64> = (0..n * k + 2).map(|_| rng.random::<f64>() - 0.5).collect();
                    let av = MatView { offset: 3, rs: k, cs: 1 };
                    // B = W^T for W: [n, k] (rs 1), or a row-major [k, n].
                    let bv = if transposed_rhs { MatView { offset: 2, rs: 1, cs: k } } else { MatView { offset: 2, rs: n, cs: 1 } };
                    let init: Vec<f64> = (0..(m - 1) * out_rs + n).map(|_| rng.random::<f64>()).collect();
                    let mut out = init.clone();
                    gemm_acc_rows(&mut out, out_rs, m, n, k, &a, av, &b, bv, accumulate, gemm::Parallelism::None);
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k).map(|l| a[av.offset + i * av.rs + l] * b[bv.offset + l * bv.rs + j * bv.cs]).sum();
                            let want = dot + if accumulate { init[i * out_rs + j] } else { 0.0 };
                            let got = out[i * out_rs + j];
                            assert!((got - want).abs() < 1e-12, "m={m} T={transposed_rhs} acc={accumulate} ({i},{j}): {got} vs {want}");
                        }
                        // The gap between output rows is left alone.
                        for j in n..out_rs.min(out.len() - i * out_rs) {
                            assert_eq!(out[i * out_rs + j], init[i * out_rs + j]);
                        }
                    }
                }
            }
        }
    }

    /// The uninitialised-output entry point on every path (row by row, the transposed-rhs copy,
    /// plain, k = 0) over a buffer full of NaN: a product that read its destination would show it.
    #[test]
    fn gemm_into_uninit_writes_every_element_and_reads_none() {
        let mut rng = crate::rng::seeded(13);
        for (m, k, n, transposed_rhs) in [(5, 40, 30, true), (40, 32, 24, true), (40, 7, 9, false), (1, 50, 3, true), (6, 0, 4, false)] {
            let a: Vec<f64> = (0..m * k + 1).map(|_| rng.random::<f64>() - 0.5).collect();
            let b: Vec<f64> = (0..n * k + 1).map(|_| rng.random::<f64>() - 0.5).collect();
            let av = MatView { offset: 1, rs: k, cs: 1 };
            let bv = if transposed_rhs { MatView { offset: 1, rs: 1, cs: k } } else { MatView { offset: 1, rs: n, cs: 1 } };
            let mut out = vec![MaybeUninit::new(f64::NAN); m * n];
            gemm_into_uninit(&mut out, m, n, k, &a, av, &b, bv, gemm::Parallelism::None);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|l| a[1 + i * k + l] * b[bv.offset + l * bv.rs + j * bv.cs]).sum();
                    // SAFETY: the buffer was initialised (with NaN) before the call.
                    let got = unsafe { out[i * n + j].assume_init() };
                    assert!((got - want).abs() < 1e-12, "{m}x{k}x{n} T={transposed_rhs} ({i},{j}): {got} vs {want}");
                }
            }
        }
    }

    /// A transposed rhs big enough that its contiguous copy is made by parallel row blocks (the
    /// last one partial), inside a wider storage.
    #[test]
    fn large_transposed_rhs_is_copied_in_parallel_blocks() {
        let mut rng = crate::rng::seeded(12);
        let (m, k, n, w_rs) = (20usize, 600usize, 500usize, 613usize);
        let a: Vec<f64> = (0..m * k).map(|_| rng.random::<f64>() - 0.5).collect();
        let w: Vec<f64> = (0..n * w_rs + 5).map(|_| rng.random::<f64>() - 0.5).collect();
        // B = W[:, :k]^T for W: [n, w_rs] starting at offset 5.
        let bv = MatView { offset: 5, rs: 1, cs: w_rs };
        let mut out = vec![0.0; m * n];
        gemm_acc_rows(&mut out, n, m, n, k, &a, MatView { offset: 0, rs: k, cs: 1 }, &w, bv, false, gemm::Parallelism::Rayon(2));
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|l| a[i * k + l] * w[5 + j * w_rs + l]).sum();
                assert!((out[i * n + j] - want).abs() < 1e-11, "({i},{j})");
            }
        }
    }
}
