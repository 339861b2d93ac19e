//! The grouped variable-width expert FFN on the CPU: every expert of a layer in one call, each with
//! its own width `h_e`, on its own segment of the permuted rows:
//! `y_e = act(x_e W1_e^T + b1_e) W2_e^T + b2_e`, where `W1_e = fc1_e[:h_e, :d]` and
//! `W2_e = fc2_e[:d, :h_e]` are front-slice views of the expert's max-size weights (read in place).
//!
//! Work is split into (expert, row tile) tasks run by rayon, each calling the single-threaded fast
//! GEMM; weight gradients are per-expert GEMMs over the whole segment (threaded inside), so every
//! gradient element has one fixed summation order.

use rayon::prelude::*;

use crate::cpu::matmul::{gemm_acc, gemm_into, MatView};
use crate::tensor::Float;

/// Rows per task: large enough that packing each expert's weights is amortised (512 measured ~7 %
/// faster than 256 at 512 rows per expert), small enough to balance threads.
pub const ROW_TILE: usize = 512;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    Gelu,
}

impl Activation {
    fn apply<T: Float>(self, z: T) -> T {
        match self {
            Activation::Relu => crate::cpu::elementwise::relu(z),
            Activation::Gelu => crate::cpu::elementwise::gelu(z),
        }
    }
    fn grad<T: Float>(self, z: T) -> T {
        match self {
            Activation::Relu => {
                if z > T::zero() {
                    T::one()
                } else {
                    T::zero()
                }
            }
            Activation::Gelu => crate::cpu::elementwise::gelu_grad(z),
        }
    }
}

/// One expert's weights as views into their storages.
#[derive(Clone, Copy)]
pub struct ExpertWeights<'a, T> {
    /// `W1: [h, d]`.
    pub w1: &'a [T],
    pub w1v: MatView,
    /// `b1: [h]`, contiguous.
    pub b1: &'a [T],
    /// `W2: [d, h]`.
    pub w2: &'a [T],
    pub w2v: MatView,
    /// `b2: [d]`, contiguous.
    pub b2: &'a [T],
    pub h: usize,
}

fn transposed(v: MatView) -> MatView {
    MatView { offset: v.offset, rs: v.cs, cs: v.rs }
}

/// One task: an expert's row tile, with the output rows it owns.
struct Tile<'o, T> {
    e: usize,
    row0: usize,
    out: &'o mut [T],
    hidden: &'o mut [T],
}

/// Splits `out: [rows, d]` by expert segment and row tile, pairing each tile with its rows of the
/// per-expert hidden buffers `hidden[e]: [r_e, h_e]`.
fn tiles<'o, T>(out: &'o mut [T], d: usize, offsets: &[usize], hidden: &'o mut [Vec<T>], widths: &[usize]) -> Vec<Tile<'o, T>> {
    let mut tasks = Vec::new();
    let mut rest = out;
    for (e, hid) in hidden.iter_mut().enumerate() {
        let rows = offsets[e + 1] - offsets[e];
        let (seg, tail) = std::mem::take(&mut rest).split_at_mut(rows * d);
        rest = tail;
        let h = widths[e].max(1);
        for (i, (o, hb)) in seg.chunks_mut(ROW_TILE * d.max(1)).zip(hid.chunks_mut(ROW_TILE * h)).enumerate() {
            tasks.push(Tile { e, row0: offsets[e] + i * ROW_TILE, out: o, hidden: hb });
        }
    }
    tasks
}

/// Forward. Returns `y: [rows, d]` and each expert's pre-activation `z_e: [r_e, h_e]` (saved for
/// the backward).
pub fn grouped_ffn_fwd<T: Float>(
    xp: &[T],
    d: usize,
    offsets: &[usize],
    experts: &[ExpertWeights<T>],
    act: Activation,
) -> (Vec<T>, Vec<Vec<T>>) {
    let rows = offsets[experts.len()];
    let widths: Vec<usize> = experts.iter().map(|w| w.h).collect();
    let mut y = vec![T::zero(); rows * d];
    let mut z: Vec<Vec<T>> = (0..experts.len()).map(|e| vec![T::zero(); (offsets[e + 1] - offsets[e]) * widths[e]]).collect();
    tiles(&mut y, d, offsets, &mut z, &widths).into_par_iter().for_each(|t| {
        let w = &experts[t.e];
        let rt = t.out.len() / d.max(1);
        let xv = MatView { offset: t.row0 * d, rs: d, cs: 1 };
        gemm_into(t.hidden, rt, w.h, d, xp, xv, w.w1, transposed(w.w1v), gemm::Parallelism::None);
        let mut a = vec![T::zero(); t.hidden.len()];
        for (zr, ar) in t.hidden.chunks_mut(w.h).zip(a.chunks_mut(w.h)) {
            for j in 0..w.h {
                zr[j] = zr[j] + w.b1[j];
                ar[j] = act.apply(zr[j]);
            }
        }
        let av = MatView { offset: 0, rs: w.h, cs: 1 };
        gemm_into(t.out, rt, d, w.h, &a, av, w.w2, transposed(w.w2v), gemm::Parallelism::None);
        for yr in t.out.chunks_mut(d) {
            for j in 0..d {
                yr[j] = yr[j] + w.b2[j];
            }
        }
    });
    (y, z)
}

/// Gradients of one expert's weights: `dW1 [h, d]`, `db1 [h]`, `dW2 [d, h]`, `db2 [d]`.
pub struct ExpertGrads<T> {
    pub w1: Vec<T>,
    pub b1: Vec<T>,
    pub w2: Vec<T>,
    pub b2: Vec<T>,
}

/// Backward. Returns `dx: [rows, d]` and, per expert, its weight gradients (`None` for an expert
/// that received no rows: it contributed nothing, so it gets no gradient).
pub fn grouped_ffn_bwd<T: Float>(
    xp: &[T],
    dy: &[T],
    d: usize,
    offsets: &[usize],
    experts: &[ExpertWeights<T>],
    z: &[Vec<T>],
    act: Activation,
) -> (Vec<T>, Vec<Option<ExpertGrads<T>>>) {
    let rows = offsets[experts.len()];
    let widths: Vec<usize> = experts.iter().map(|w| w.h).collect();
    let mut dx = vec![T::zero(); rows * d];
    // da_e = (dy_e W2_e) * act'(z_e), tile by tile; then dx_e = da_e W1_e.
    let mut da: Vec<Vec<T>> = z.to_vec();
    tiles(&mut dx, d, offsets, &mut da, &widths).into_par_iter().for_each(|t| {
        let w = &experts[t.e];
        let rt = t.out.len() / d.max(1);
        let local0 = (t.row0 - offsets[t.e]) * w.h;
        let zt = &z[t.e][local0..local0 + rt * w.h];
        let dyv = MatView { offset: t.row0 * d, rs: d, cs: 1 };
        gemm_into(t.hidden, rt, w.h, d, dy, dyv, w.w2, w.w2v, gemm::Parallelism::None);
        for (g, &zv) in t.hidden.iter_mut().zip(zt) {
            *g = *g * act.grad(zv);
        }
        let dav = MatView { offset: 0, rs: w.h, cs: 1 };
        gemm_into(t.out, rt, d, w.h, t.hidden, dav, w.w1, w.w1v, gemm::Parallelism::None);
    });
    let grads = experts
        .iter()
        .enumerate()
        .map(|(e, w)| {
            let r = offsets[e + 1] - offsets[e];
            if r == 0 {
                return None;
            }
            let h = w.h;
            let a: Vec<T> = z[e].iter().map(|&v| act.apply(v)).collect();
            let par = gemm::Parallelism::Rayon(0);
            // dW2 = dy_e^T a_e, dW1 = da_e^T x_e: one GEMM each over the whole segment.
            let mut w2 = vec![T::zero(); d * h];
            let dyt = MatView { offset: offsets[e] * d, rs: 1, cs: d };
            gemm_acc(&mut w2, d, h, r, dy, dyt, &a, MatView { offset: 0, rs: h, cs: 1 }, false, par);
            let mut w1 = vec![T::zero(); h * d];
            let dat = MatView { offset: 0, rs: 1, cs: h };
            gemm_acc(&mut w1, h, d, r, &da[e], dat, xp, MatView { offset: offsets[e] * d, rs: d, cs: 1 }, false, par);
            let b2 = crate::cpu::elementwise::sum_rows(&dy[offsets[e] * d..offsets[e + 1] * d], d);
            let b1 = crate::cpu::elementwise::sum_rows(&da[e], h);
            Some(ExpertGrads { w1, b1, w2, b2 })
        })
        .collect();
    (dx, grads)
}
