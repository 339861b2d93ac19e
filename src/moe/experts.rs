//! The grouped variable-width expert FFN on the CPU: every expert of a layer in one call, each with
//! its own width `h_e`, on its own segment of the permuted rows:
//! `y_e = act(x_e W1_e^T + b1_e) W2_e^T + b2_e`, where `W1_e = fc1_e[:h_e, :d]` and
//! `W2_e = fc2_e[:d, :h_e]` are front-slice views of the expert's max-size weights (read in place).
//!
//! Work is split into (expert, row tile) tasks run by rayon, each calling the single-threaded fast
//! GEMM; weight gradients are per-expert GEMMs over the whole segment (threaded inside), so every
//! gradient element has one fixed summation order.

use rayon::prelude::*;

use crate::cpu::matmul::{gemm_acc, gemm_acc_rows, gemm_into, MatView, ROWWISE_MAX_ROWS};
use crate::cpu::transpose::transpose_view;
use crate::tensor::Float;

/// Rows per task. Every task reads (and, in the forward, transposes) its expert's whole weights, so
/// a tile should hold all of a typical expert's rows: at 4096 tokens over 8 experts, 1024 was 5 %
/// faster than 512 at top-1 (a few experts got 520-odd rows and so a second tile) and 8 % at top-2.
/// Larger experts still split into several tasks so that threads balance.
pub const ROW_TILE: usize = 1024;

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

/// One task: an expert's row tile, with the output rows it owns.
struct Tile<'o, T> {
    e: usize,
    row0: usize,
    out: &'o mut [T],
    hidden: &'o mut [T],
}

/// Splits `out: [rows, d]` by expert segment and row tile, pairing each tile with its rows of the
/// per-expert hidden buffers `hidden[e]: [r_e, h_e]` (an empty buffer gives empty slices).
fn tiles<'o, T>(out: &'o mut [T], d: usize, offsets: &[usize], hidden: &'o mut [Vec<T>], widths: &[usize]) -> Vec<Tile<'o, T>> {
    let mut tasks = Vec::new();
    let mut rest = out;
    for (e, hid) in hidden.iter_mut().enumerate() {
        let rows = offsets[e + 1] - offsets[e];
        let (seg, tail) = std::mem::take(&mut rest).split_at_mut(rows * d);
        rest = tail;
        let h = widths[e].max(1);
        let mut hidden_tiles = hid.chunks_mut(ROW_TILE * h);
        for (i, o) in seg.chunks_mut(ROW_TILE * d.max(1)).enumerate() {
            tasks.push(Tile { e, row0: offsets[e] + i * ROW_TILE, out: o, hidden: hidden_tiles.next().unwrap_or_default() });
        }
    }
    tasks
}

/// Hidden units per weight block in the forward. Each tile walks its expert's hidden dim in blocks:
/// the block's rows of `W1` and columns of `W2` are transposed into contiguous buffers (2 x 512 KiB
/// at d = 512, so they stay in L2), then `z[:, blk] = x W1[blk]^T` and `y += act(z[:, blk]) W2[:, blk]^T`.
/// With the output dim contiguous the GEMM streams the weights; handed the front-slice views in place
/// it gathers them element by element with a 2 KiB stride, which measured about 2x slower when the
/// weights come from memory. Blocking keeps the transposed copies out of memory.
pub const H_BLOCK: usize = 256;

/// `a[r, j] = act(z[r, j] + b[j])` over the rows of a `[rows, b.len()]` block, writing `z + b`
/// back to `z` (the saved pre-activation); `z` rows are `z_rs` apart, `a` rows `b.len()` apart.
/// When `a` is `None` the activation overwrites `z` instead. The activation is chosen once per
/// block so the inner loops stay branch-free.
fn bias_act<T: Float>(z: &mut [T], z_rs: usize, a: Option<&mut [T]>, b: &[T], act: Activation) {
    fn run<T: Float>(z: &mut [T], z_rs: usize, a: Option<&mut [T]>, b: &[T], f: impl Fn(T) -> T) {
        let n = b.len();
        match a {
            Some(a) => {
                for (zr, ar) in z.chunks_mut(z_rs).zip(a.chunks_mut(n)) {
                    for ((zv, av), &bv) in zr[..n].iter_mut().zip(ar.iter_mut()).zip(b) {
                        *zv = *zv + bv;
                        *av = f(*zv);
                    }
                }
            }
            None => {
                for zr in z.chunks_mut(z_rs) {
                    for (zv, &bv) in zr[..n].iter_mut().zip(b) {
                        *zv = f(*zv + bv);
                    }
                }
            }
        }
    }
    match act {
        Activation::Relu => run(z, z_rs, a, b, crate::cpu::elementwise::relu),
        Activation::Gelu => run(z, z_rs, a, b, crate::cpu::elementwise::gelu),
    }
}

/// `g *= act'(z)` elementwise, the activation chosen once so the loop is branch-free (a ReLU
/// mask branch on random signs mispredicted often enough to cost 10 % of the backward).
fn mul_act_grad<T: Float>(g: &mut [T], z: &[T], act: Activation) {
    match act {
        Activation::Relu => {
            for (gv, &zv) in g.iter_mut().zip(z) {
                *gv = if zv > T::zero() { *gv } else { T::zero() };
            }
        }
        Activation::Gelu => {
            for (gv, &zv) in g.iter_mut().zip(z) {
                *gv = *gv * crate::cpu::elementwise::gelu_grad(zv);
            }
        }
    }
}

/// Forward. Returns `y: [rows, d]` and, when `save_hidden`, each expert's pre-activation
/// `z_e: [r_e, h_e]` for the backward (empty vectors otherwise: inference needs no 4 x rows x h
/// bytes of hidden state, only a tile's block of it at a time).
pub fn grouped_ffn_fwd<T: Float>(
    xp: &[T],
    d: usize,
    offsets: &[usize],
    experts: &[ExpertWeights<T>],
    act: Activation,
    save_hidden: bool,
) -> (Vec<T>, Vec<Vec<T>>) {
    let rows = offsets[experts.len()];
    let widths: Vec<usize> = experts.iter().map(|w| w.h).collect();
    let mut y = vec![T::zero(); rows * d];
    let z_len = |e: usize| if save_hidden { (offsets[e + 1] - offsets[e]) * widths[e] } else { 0 };
    let mut z: Vec<Vec<T>> = (0..experts.len()).map(|e| vec![T::zero(); z_len(e)]).collect();
    tiles(&mut y, d, offsets, &mut z, &widths).into_par_iter().for_each(|t| {
        let w = &experts[t.e];
        let rt = t.out.len() / d.max(1);
        let xv = MatView { offset: t.row0 * d, rs: d, cs: 1 };
        // One hidden block `h0..h0 + hb` of the expert, given its weights as `B` operands:
        // `z[:, blk] = x W1blk^T + b1` (kept in the saved buffer when training), `a = act(z)` in
        // `a`, and `y (+)= a W2blk^T` (the first block overwrites `y`).
        let mut hidden_block = |hidden: &mut [T], a: &mut [T], h0: usize, hb: usize, w1: &[T], w1v: MatView, w2: &[T], w2v: MatView| {
            let (a, b1) = (&mut a[..rt * hb], &w.b1[h0..h0 + hb]);
            if save_hidden {
                let zb = &mut hidden[h0..];
                gemm_acc_rows(zb, w.h, rt, hb, d, xp, xv, w1, w1v, false, gemm::Parallelism::None);
                bias_act(zb, w.h, Some(&mut *a), b1, act);
            } else {
                gemm_acc_rows(a, hb, rt, hb, d, xp, xv, w1, w1v, false, gemm::Parallelism::None);
                bias_act(a, hb, None, b1, act);
            }
            gemm_acc(t.out, rt, d, hb, a, MatView { offset: 0, rs: hb, cs: 1 }, w2, w2v, h0 > 0, gemm::Parallelism::None);
        };
        if rt <= ROWWISE_MAX_ROWS {
            // A few rows (incremental decoding): one block, the weights read in place (one
            // matrix-vector product per row, faster than transposing them).
            crate::cpu::with_scratch::<T, _>(rt * w.h, |a| {
                hidden_block(t.hidden, a, 0, w.h, w.w1, w.w1v.transposed(), w.w2, w.w2v.transposed());
            });
        } else {
            let hb_max = H_BLOCK.min(w.h);
            crate::cpu::with_scratch::<T, _>(2 * d * hb_max + rt * hb_max, |scratch| {
                let (w1t, rest) = scratch.split_at_mut(d * hb_max);
                let (w2t, a) = rest.split_at_mut(hb_max * d);
                for h0 in (0..w.h).step_by(H_BLOCK) {
                    let hb = H_BLOCK.min(w.h - h0);
                    // W1[h0..h0+hb, :] -> [d, hb]; W2[:, h0..h0+hb] -> [hb, d].
                    transpose_view(w.w1, MatView { offset: w.w1v.offset + h0 * w.w1v.rs, ..w.w1v }, hb, d, w1t);
                    transpose_view(w.w2, MatView { offset: w.w2v.offset + h0 * w.w2v.cs, ..w.w2v }, d, hb, w2t);
                    let (w1v, w2v) = (MatView { offset: 0, rs: hb, cs: 1 }, MatView { offset: 0, rs: d, cs: 1 });
                    hidden_block(t.hidden, a, h0, hb, w1t, w1v, w2t, w2v);
                }
            });
        }
        add_bias_rows(t.out, w.b2);
    });
    (y, z)
}

/// Adds `b` to every row of the row-major `y: [_, b.len()]`.
fn add_bias_rows<T: Float>(y: &mut [T], b: &[T]) {
    for yr in y.chunks_mut(b.len().max(1)) {
        for (yv, &bv) in yr.iter_mut().zip(b) {
            *yv = *yv + bv;
        }
    }
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
    let mut da: Vec<Vec<T>> = z.iter().map(|ze| vec![T::zero(); ze.len()]).collect();
    tiles(&mut dx, d, offsets, &mut da, &widths).into_par_iter().for_each(|t| {
        let w = &experts[t.e];
        let rt = t.out.len() / d.max(1);
        let local0 = (t.row0 - offsets[t.e]) * w.h;
        let zt = &z[t.e][local0..local0 + rt * w.h];
        let dyv = MatView { offset: t.row0 * d, rs: d, cs: 1 };
        gemm_into(t.hidden, rt, w.h, d, dy, dyv, w.w2, w.w2v, gemm::Parallelism::None);
        mul_act_grad(t.hidden, zt, act);
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
