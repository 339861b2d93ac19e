//! Matrix multiplication through the `gemm` crate, which takes arbitrary row and column strides:
//! transposed and front-sliced views are multiplied where they lie, without a copy.

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
    let mut out = vec![T::zero(); batch * m * n];
    if out.is_empty() {
        return Ok((out, out_shape));
    }

    // A stacked lhs times one rhs matrix is one tall product when lhs's batch rows are evenly spaced.
    if sb.len() == 2 && rows_fold(la) {
        let (rs, cs) = (la.strides()[la.rank() - 2], la.strides()[la.rank() - 1]);
        let view = MatView { offset: la.offset(), rs, cs };
        let bv = MatView { offset: lb.offset(), rs: lb.strides()[0], cs: lb.strides()[1] };
        gemm_into(&mut out, batch * m, n, k, a, view, b, bv, gemm::Parallelism::Rayon(0));
        return Ok((out, out_shape));
    }

    let lab = la.broadcast_to(&[batch_shape.clone(), vec![m, k]].concat())?;
    let lbb = lb.broadcast_to(&[batch_shape.clone(), vec![k, n]].concat())?;
    let a_offsets = batch_offsets(&lab);
    let b_offsets = batch_offsets(&lbb);
    let av = |i: usize| MatView { offset: a_offsets[i], rs: lab.strides()[lab.rank() - 2], cs: lab.strides()[lab.rank() - 1] };
    let bv = |i: usize| MatView { offset: b_offsets[i], rs: lbb.strides()[lbb.rank() - 2], cs: lbb.strides()[lbb.rank() - 1] };
    if batch > 1 && m * n * k < SMALL_GEMM_FMAS {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| gemm_into(o, m, n, k, a, av(i), b, bv(i), gemm::Parallelism::None));
    } else {
        for (i, o) in out.chunks_mut(m * n).enumerate() {
            gemm_into(o, m, n, k, a, av(i), b, bv(i), gemm::Parallelism::Rayon(0));
        }
    }
    Ok((out, out_shape))
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
    assert!(out_rs >= n, "gemm output rows overlap");
    if m == 0 || n == 0 {
        return;
    }
    assert!(out.len() >= (m - 1) * out_rs + n, "gemm output buffer too small");
    if (2..=ROWWISE_MAX_ROWS).contains(&m) && k > 0 && av.cs == 1 && bv.rs == 1 && bv.cs != 1 {
        for (i, row) in out.chunks_mut(out_rs).take(m).enumerate() {
            let ai = MatView { offset: av.offset + i * av.rs, ..av };
            gemm_acc_rows(row, out_rs, 1, n, k, a, ai, b, bv, accumulate, par);
        }
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in out.chunks_mut(out_rs).take(m) {
                row[..n].fill(T::zero());
            }
        }
        return;
    }
    // The last element each view touches must lie inside its slice: the gemm call reads raw pointers.
    assert!(av.offset + (m - 1) * av.rs + (k - 1) * av.cs < a.len(), "lhs view exceeds its storage");
    assert!(bv.offset + (k - 1) * bv.rs + (n - 1) * bv.cs < b.len(), "rhs view exceeds its storage");
    // SAFETY: the asserts above keep every index gemm computes from (offset, rs, cs) inside `a`
    // and `b`, and every output index (i * out_rs + j) inside `out`, a distinct, exclusively
    // borrowed buffer.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
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
}
