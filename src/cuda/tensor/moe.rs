//! The MoE tape ops on CUDA tensors (`src/moe/ops.rs` dispatches here when a tensor is on a CUDA
//! backend): top-k gating, permute, grouped expert FFN and combine, forward and backward.
//!
//! * Gating runs on the host: the tape keeps the routing as a host [`Dispatch`], so the chosen
//!   expert ids must reach the host anyway. The small `[T, E]` probabilities are downloaded, the
//!   CPU code chooses (the very same selection and tie-breaking as the CPU path), and the `[T, k]`
//!   gates are uploaded in the probabilities' dtype. Its backward (as small) does the same.
//! * Permute and combine launch the gather kernels of cuda/permute.cu with the index arrays of the
//!   host [`Dispatch`] uploaded: `src_row [rows]` (token of each permuted row) and `pos [T * k]`
//!   (row of each pair, `-1` for a pair dropped by the capacity limit, which is
//!   [`crate::moe::DROPPED`] as an `i32`). The kernels take gates in f32, so bf16 gates are cast.
//! * The grouped FFN launches one grouped GEMM (cuda/grouped_gemm.cu) per stage over all experts,
//!   reading each expert's weights in place (front-slice views: pointer at the view's offset,
//!   leading dimension its row stride); biases go to the kernels in f32 and weight gradients
//!   come out in f32, returned in the parameters' dtype. ReLU is fused into the fc1 GEMM (forward)
//!   and the fc2 dgrad (as a mask on the saved activation). GELU is composed: the fc1 GEMM without
//!   activation, then the tensor `gelu` op (and `gelu_backward` in the backward).

use std::sync::Arc;

use super::super::abi::*;
use super::super::gpu::{GBuf, Gpu};
use super::super::grouped_gemm::{dbias, group, plan, run, GemmStage};
use super::super::moe_exec::Exec;
use super::super::moe_ops::{warp_per_item, KernelFloat};
use super::super::ops::to_i32;
use super::{by_dtype, cast_contiguous, copy_contiguous, same_gpu, storage, tensor_of, whole_buf, GpuElem};
use crate::moe::ops::ExpertVars;
use crate::moe::{gating, Activation, Dispatch};
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// A host f32 vector as a tensor of `like`'s device and dtype.
fn upload_like(v: Vec<f32>, shape: &[usize], like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, shape)?.to_dtype_device(like.dtype(), like.device())
}

fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    storage(op, t)?;
    match t.dtype() {
        DType::F64 => Err(Error::invalid(op, "the CUDA kernels have no f64")),
        _ => Ok(()),
    }
}

/// Top-k gating of `probs: [T, E]` on the host: `(idx [T * k], gates [T, k])`, the gates on the
/// probabilities' device and in their dtype.
pub fn topk_gating(probs: &Tensor, k: usize, renormalize: bool) -> Result<(Vec<u32>, Tensor)> {
    check_float("topk_gating", probs)?;
    let (t, e) = (probs.shape()[0], probs.shape()[1]);
    // Host round trip by design (see the module comment): the dispatch is a host structure.
    let (idx, w) = gating::topk_fwd(&probs.to_f32_vec()?, e, k, renormalize);
    Ok((idx, upload_like(w, &[t, k], probs)?))
}

/// Gradient of the probabilities from the gates' gradient `g: [T, k]` (on the host, like the
/// forward: `[T, k]` and `[T, E]` are small).
pub fn topk_backward(probs: &Tensor, idx: &[u32], gates: &Tensor, g: &Tensor, k: usize, renormalize: bool) -> Result<Tensor> {
    check_float("topk_gating backward", probs)?;
    let e = probs.shape()[1];
    let dp = gating::topk_bwd(&probs.to_f32_vec()?, idx, &gates.to_f32_vec()?, &g.to_f32_vec()?, e, k, renormalize);
    upload_like(dp, probs.shape(), probs)
}

fn as_i32(v: impl Iterator<Item = usize>) -> Vec<i32> {
    v.map(|x| x as i32).collect()
}

/// That `n` elements are addressable by the kernels' 32-bit indices.
fn check_i32(op: &'static str, n: usize) -> Result<()> {
    to_i32(op, "elements", n).map(|_| ())
}

/// `pos [T * k]` as the kernels take it: a dropped pair ([`crate::moe::DROPPED`]) becomes `-1`.
fn pos_i32(dis: &Dispatch) -> Vec<i32> {
    dis.pos.iter().map(|&p| p as i32).collect()
}

/// `xp[r] = x[src_row[r]]`: `x: [T, d]` to `[dis.rows(), d]`.
pub fn moe_permute(x: &Tensor, dis: &Dispatch) -> Result<Tensor> {
    const OP: &str = "moe_permute";
    let gpu = same_gpu(OP, &[x])?;
    let (rows, d) = (dis.rows(), x.shape()[1]);
    check_i32(OP, (rows * d).max(x.numel()))?;
    by_dtype!(OP, x.dtype(), T => {
        let xb = whole_buf::<T>(OP, x)?;
        let mut out = gpu.uninit::<T>(rows * d, T::poison())?;
        if rows * d > 0 {
            let sb = gpu.upload(&as_i32(dis.src_row.iter().map(|&r| r as usize)))?;
            let p = PermuteFwdParams { x: gpu.addr(&*xb), src_row: gpu.addr(&sb), xp: gpu.addr_mut(&mut out), rows: rows as i32, d: d as i32 };
            // SAFETY: x is [T, d] (whole buffer), every src_row entry is < T (built by Dispatch),
            // out is [rows, d].
            unsafe { gpu.enqueue("permute.cu", &format!("permute_fwd_{}", T::SUFFIX), warp_per_item(rows), &p)? };
        }
        Ok(tensor_of(&gpu, out, &[rows, d]))
    })
}

/// `dx[t] = sum_s g[pos[t, s]]` (dropped pairs add nothing): `g: [rows, d]` to `[T, d]`.
pub fn permute_backward(g: &Tensor, d: usize, dis: &Dispatch) -> Result<Tensor> {
    const OP: &str = "moe_permute backward";
    let gpu = same_gpu(OP, &[g])?;
    let t = dis.tokens;
    check_i32(OP, (t * d).max(g.numel()))?;
    by_dtype!(OP, g.dtype(), T => {
        let gb = whole_buf::<T>(OP, g)?;
        let mut dx = gpu.uninit::<T>(t * d, T::poison())?;
        if t * d > 0 {
            let pb = gpu.upload(&pos_i32(dis))?;
            let p = PermuteBwdParams {
                dxp: gpu.addr(&*gb),
                pos: gpu.addr(&pb),
                dx: gpu.addr_mut(&mut dx),
                tokens: t as i32,
                k: dis.k as i32,
                d: d as i32,
                reserved: 0,
            };
            // SAFETY: g is [rows, d] with every kept pos < rows, pos is [T * k], dx is [T, d].
            unsafe { gpu.enqueue("permute.cu", &format!("permute_bwd_{}", T::SUFFIX), warp_per_item(t), &p)? };
        }
        Ok(tensor_of(&gpu, dx, &[t, d]))
    })
}

/// The gates as the kernels read them: a contiguous f32 buffer.
fn gates_f32(gates: &Tensor) -> Result<Arc<GBuf<f32>>> {
    let g32 = if gates.dtype() == DType::F32 { gates.clone() } else { cast_contiguous(gates, DType::F32)? };
    whole_buf::<f32>("moe_combine", &g32)
}

/// `y[t] = sum_s gates[t, s] * yp[pos[t, s]]`: `[T, d]`.
pub fn moe_combine(yp: &Tensor, gates: &Tensor, dis: &Dispatch) -> Result<Tensor> {
    const OP: &str = "moe_combine";
    let gpu = same_gpu(OP, &[yp, gates])?;
    let (t, d) = (dis.tokens, yp.shape()[1]);
    check_i32(OP, (t * d).max(yp.numel()))?;
    by_dtype!(OP, yp.dtype(), T => {
        let yb = whole_buf::<T>(OP, yp)?;
        let wb = gates_f32(gates)?;
        let mut y = gpu.uninit::<T>(t * d, T::poison())?;
        if t * d > 0 {
            let pb = gpu.upload(&pos_i32(dis))?;
            let p = CombineFwdParams {
                yp: gpu.addr(&*yb),
                pos: gpu.addr(&pb),
                w: gpu.addr(&*wb),
                y: gpu.addr_mut(&mut y),
                tokens: t as i32,
                k: dis.k as i32,
                d: d as i32,
                reserved: 0,
            };
            // SAFETY: yp is [rows, d] with every kept pos < rows, pos and w are [T * k], y is [T, d].
            unsafe { gpu.enqueue("permute.cu", &format!("combine_fwd_{}", T::SUFFIX), warp_per_item(t), &p)? };
        }
        Ok(tensor_of(&gpu, y, &[t, d]))
    })
}

/// `(dyp [rows, d], dgates [T, k])` of the combine from `g: [T, d]`; `dgates` in the gates' dtype.
pub fn combine_backward(yp: &Tensor, gates: &Tensor, g: &Tensor, dis: &Dispatch) -> Result<(Tensor, Tensor)> {
    const OP: &str = "moe_combine backward";
    let gpu = same_gpu(OP, &[yp, gates, g])?;
    let (t, k, d, rows) = (dis.tokens, dis.k, yp.shape()[1], dis.rows());
    check_i32(OP, (t * d).max(rows * d).max(t * k))?;
    let (dyp, dw) = by_dtype!(OP, yp.dtype(), T => {
        let (yb, gb, wb) = (whole_buf::<T>(OP, yp)?, whole_buf::<T>(OP, g)?, gates_f32(gates)?);
        let mut dyp = gpu.uninit::<T>(rows * d, T::poison())?;
        let mut dw = gpu.uninit::<f32>(t * k, f32::NAN)?;
        let items = t.max(rows);
        if items > 0 && d > 0 {
            let pb = gpu.upload(&pos_i32(dis))?;
            let sb = gpu.upload(&as_i32(dis.src_row.iter().map(|&r| r as usize)))?;
            let p = CombineBwdParams {
                dy: gpu.addr(&*gb),
                yp: gpu.addr(&*yb),
                pos: gpu.addr(&pb),
                w: gpu.addr(&*wb),
                src_row: gpu.addr(&sb),
                dyp: gpu.addr_mut(&mut dyp),
                dw: gpu.addr_mut(&mut dw),
                tokens: t as i32,
                k: k as i32,
                d: d as i32,
                rows: rows as i32,
            };
            // SAFETY: g is [T, d], yp and dyp [rows, d] with every kept pos < rows, pos, w and dw
            // [T * k], src_row [rows]. Every dyp row belongs to exactly one kept pair, so the
            // kernel writes all of it; dropped pairs get dw = 0.
            unsafe { gpu.enqueue("permute.cu", &format!("combine_bwd_{}", T::SUFFIX), warp_per_item(items), &p)? };
        } else if t * k > 0 {
            dw = gpu.zeros::<f32>(t * k)?;
        }
        Ok::<_, Error>((tensor_of(&gpu, dyp, &[rows, d]), tensor_of(&gpu, dw, &[t, k])))
    })?;
    Ok((dyp, dw.to_dtype(gates.dtype())?))
}

// ---- Grouped expert FFN ------------------------------------------------------------------------

/// A matrix operand read in place: the tensor kept alive, the address of its first element and
/// its leading dimension (row stride). A view whose rows are not unit-stride is copied first.
struct Mat {
    _keep: Tensor,
    addr: automoe_dptr,
    ld: usize,
}

fn mat(op: &'static str, w: &Tensor) -> Result<Mat> {
    let (r, c) = (w.shape()[0], w.shape()[1]);
    let st = w.layout().strides();
    let in_place = (c <= 1 || st[1] == 1) && (r <= 1 || st[0] >= c);
    let t = if in_place { w.clone() } else { copy_contiguous(w)? };
    let ld = if in_place && r > 1 { st[0] } else { c.max(1) };
    check_i32(op, ld)?;
    let addr = storage(op, &t)?.addr_at(t.layout().offset());
    Ok(Mat { _keep: t, addr, ld })
}

/// A bias in f32 as the kernels take it (cast and/or made contiguous when needed).
fn bias_f32(op: &'static str, b: &Tensor) -> Result<Mat> {
    let unit = b.numel() <= 1 || b.layout().strides()[0] == 1;
    let t = if b.dtype() == DType::F32 && unit { b.clone() } else { cast_contiguous(b, DType::F32)? };
    let addr = storage(op, &t)?.addr_at(t.layout().offset());
    Ok(Mat { _keep: t, addr, ld: 1 })
}

/// The experts' operands, checked against `xp`'s backend and dtype.
struct Experts {
    gpu: Gpu,
    d: usize,
    rows: usize,
    widths: Vec<usize>,
    /// The widest expert: the row stride of the hidden activations `[rows, hm]`.
    hm: usize,
    w1: Vec<Mat>,
    w2: Vec<Mat>,
    offsets: GBuf<i32>,
}

impl Experts {
    fn new(op: &'static str, xp: &Tensor, ex: &[ExpertVars], offsets: &[usize]) -> Result<Self> {
        let mut ts: Vec<&Tensor> = vec![xp];
        for e in ex {
            ts.extend([e.w1.value(), e.w2.value()]);
        }
        let gpu = same_gpu(op, &ts)?;
        for e in ex {
            for b in [e.b1.value(), e.b2.value()] {
                if storage(op, b)?.device() != gpu.device() {
                    return Err(Error::invalid(op, format!("a bias on {} with inputs on {}", b.device(), gpu.device())));
                }
            }
        }
        if ex.len() > super::super::grouped_gemm::MAX_GROUPS {
            return Err(Error::invalid(
                op,
                format!("{} experts: the grouped GEMMs take at most {}", ex.len(), super::super::grouped_gemm::MAX_GROUPS),
            ));
        }
        let (rows, d) = (xp.shape()[0], xp.shape()[1]);
        let widths: Vec<usize> = ex.iter().map(|e| e.w1.shape()[0]).collect();
        let hm = widths.iter().copied().max().unwrap_or(1);
        check_i32(op, rows * hm.max(d))?;
        Ok(Experts {
            d,
            rows,
            hm,
            w1: ex.iter().map(|e| mat(op, e.w1.value())).collect::<Result<_>>()?,
            w2: ex.iter().map(|e| mat(op, e.w2.value())).collect::<Result<_>>()?,
            offsets: gpu.upload(&as_i32(offsets.iter().copied()))?,
            widths,
            gpu,
        })
    }

    fn n(&self) -> usize {
        self.widths.len()
    }

    /// Plans `groups` over the segments and runs them with `flags`.
    ///
    /// # Safety
    /// Every group's addresses must be live buffers large enough for its segment of the
    /// `self.rows` rows (token operands) and for its weight or gradient block.
    unsafe fn run<T: GpuElem>(&self, stage: GemmStage, groups: &[GemmGroupParams], flags: u32) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        // SAFETY: forwarded from this function's contract; the offsets are the dispatch's [E + 1]
        // non-decreasing segment starts, each segment within `rows`.
        unsafe {
            let p = plan::<Gpu, T>(&self.gpu, stage, groups, Some(&self.offsets), self.rows)?;
            run::<Gpu, T>(&self.gpu, &p, flags)
        }
    }
}

/// Every expert's FFN on its segment of `xp: [rows, d]`: `(y [rows, d], saved)`, where `saved`
/// is what [`grouped_ffn_backward`] needs: `[a]` (the ReLU output, `[rows, h_max]`) for ReLU,
/// `[z, a]` (pre-activation and GELU output) for GELU; `h_max` is the widest expert's width and
/// columns past an expert's own width are zero.
pub fn grouped_ffn(xp: &Tensor, ex: &[ExpertVars], offsets: &[usize], act: Activation) -> Result<(Tensor, Vec<Tensor>)> {
    const OP: &str = "grouped_ffn";
    by_dtype!(OP, xp.dtype(), T => grouped_ffn_t::<T>(xp, ex, offsets, act))
}

fn grouped_ffn_t<T: GpuElem>(xp: &Tensor, ex: &[ExpertVars], offsets: &[usize], act: Activation) -> Result<(Tensor, Vec<Tensor>)> {
    const OP: &str = "grouped_ffn";
    let s = Experts::new(OP, xp, ex, offsets)?;
    let (gpu, d, rows, hm, n) = (&s.gpu, s.d, s.rows, s.hm, s.n());
    let b1: Vec<Mat> = ex.iter().map(|e| bias_f32(OP, e.b1.value())).collect::<Result<_>>()?;
    let b2: Vec<Mat> = ex.iter().map(|e| bias_f32(OP, e.b2.value())).collect::<Result<_>>()?;
    let xb = whole_buf::<T>(OP, xp)?;
    // Zero-filled: the columns past each expert's width stay zero.
    let mut hidden = gpu.zeros::<T>(rows * hm)?;
    let mut y = gpu.uninit::<T>(rows * d, T::poison())?;
    let (xa, ha) = (gpu.addr(&*xb), gpu.addr_mut(&mut hidden));
    // fc1: hidden[:, :h_e] = xp_e W1_e^T + b1_e (ReLU fused), W1_e [h_e, d] stored [N, K].
    let fc1: Vec<_> =
        (0..n).map(|e| GemmGroupParams { bias: b1[e].addr, ..group(xa, d, s.w1[e].addr, s.w1[e].ld, ha, hm, 0, s.widths[e], d) }).collect();
    let relu = act == Activation::Relu;
    // SAFETY: xp and hidden have `rows` rows of d and hm; W1_e and b1_e hold [h_e, d] and [h_e].
    unsafe { s.run::<T>(GemmStage::Fwd, &fc1, if relu { AUTOMOE_GEMM_RELU } else { 0 })? };
    let hidden = tensor_of(gpu, hidden, &[rows, hm]);
    let saved = if relu { vec![hidden] } else { vec![hidden.clone(), hidden.gelu()?] };
    let a = saved.last().expect("one saved activation at least");
    let aa = super::addr(a)?;
    let ya = gpu.addr_mut(&mut y);
    // fc2: y_e = a_e[:, :h_e] W2_e^T + b2_e, W2_e [d, h_e] stored [N, K].
    let fc2: Vec<_> =
        (0..n).map(|e| GemmGroupParams { bias: b2[e].addr, ..group(aa, hm, s.w2[e].addr, s.w2[e].ld, ya, d, 0, d, s.widths[e]) }).collect();
    // SAFETY: a and y have `rows` rows of hm and d; W2_e and b2_e hold [d, h_e] and [d].
    unsafe { s.run::<T>(GemmStage::Fwd, &fc2, 0)? };
    Ok((tensor_of(gpu, y, &[rows, d]), saved))
}

/// `(dxp, per expert [dW1, db1, dW2, db2] or None when it received no rows)` from `g: [rows, d]`
/// and the state `saved` of [`grouped_ffn`]; gradients in the parameters' dtype.
#[allow(clippy::type_complexity)]
pub fn grouped_ffn_backward(
    xp: &Tensor,
    ex: &[ExpertVars],
    offsets: &[usize],
    act: Activation,
    saved: &[Tensor],
    g: &Tensor,
) -> Result<(Tensor, Vec<Option<[Tensor; 4]>>)> {
    const OP: &str = "grouped_ffn backward";
    by_dtype!(OP, xp.dtype(), T => grouped_ffn_backward_t::<T>(xp, ex, offsets, act, saved, g))
}

#[allow(clippy::type_complexity)]
fn grouped_ffn_backward_t<T: GpuElem>(
    xp: &Tensor,
    ex: &[ExpertVars],
    offsets: &[usize],
    act: Activation,
    saved: &[Tensor],
    g: &Tensor,
) -> Result<(Tensor, Vec<Option<[Tensor; 4]>>)> {
    const OP: &str = "grouped_ffn backward";
    let s = Experts::new(OP, xp, ex, offsets)?;
    let (gpu, d, rows, hm, n) = (&s.gpu, s.d, s.rows, s.hm, s.n());
    let relu = act == Activation::Relu;
    if saved.len() != if relu { 1 } else { 2 } || saved.iter().any(|t| t.shape() != [rows, hm]) {
        return Err(Error::invalid(OP, "the saved activations do not come from the CUDA forward"));
    }
    let a = whole_buf::<T>(OP, &saved[saved.len() - 1])?;
    let (xb, gb) = (whole_buf::<T>(OP, xp)?, whole_buf::<T>(OP, g)?);
    let (xa, ga, aa) = (gpu.addr(&*xb), gpu.addr(&*gb), gpu.addr(&*a));
    let h = &s.widths;

    // da = (g W2) * act'(z): ReLU's mask fused into the dgrad, GELU's derivative a tensor op.
    let mut da = gpu.zeros::<T>(rows * hm)?;
    let daw = gpu.addr_mut(&mut da);
    let fc2_dgrad: Vec<_> = (0..n)
        .map(|e| GemmGroupParams { aux: if relu { aa } else { 0 }, ..group(ga, d, s.w2[e].addr, s.w2[e].ld, daw, hm, 0, h[e], d) })
        .collect();
    // SAFETY: g and da have `rows` rows of d and hm, a (the mask) is laid out like da; W2_e
    // [d, h_e] is read as B [K, N].
    unsafe { s.run::<T>(GemmStage::Dgrad, &fc2_dgrad, if relu { AUTOMOE_GEMM_RELU_MASK } else { 0 })? };
    let da = tensor_of(gpu, da, &[rows, hm]);
    let da = if relu { da } else { Tensor::gelu_backward(&saved[0], &da)? };
    let dab = whole_buf::<T>(OP, &da)?;
    let daa = gpu.addr(&*dab);

    // Weight gradients in f32, one zeroed buffer per expert, accumulated by wgrad.
    let mut gw1: Vec<GBuf<f32>> = h.iter().map(|&he| gpu.zeros::<f32>(he * d)).collect::<Result<_>>()?;
    let mut gw2: Vec<GBuf<f32>> = h.iter().map(|&he| gpu.zeros::<f32>(d * he)).collect::<Result<_>>()?;
    // dW2_e [d, h_e] += g_e^T a_e; dW1_e [h_e, d] += da_e^T xp_e.
    let fc2_wgrad: Vec<_> = (0..n).map(|e| group(ga, d, aa, hm, gpu.addr_mut(&mut gw2[e]), h[e], d, h[e], 0)).collect();
    let fc1_wgrad: Vec<_> = (0..n).map(|e| group(daa, hm, xa, d, gpu.addr_mut(&mut gw1[e]), d, h[e], d, 0)).collect();
    // dxp_e = da_e W1_e, W1_e [h_e, d] read as B [K, N].
    let mut dx = gpu.uninit::<T>(rows * d, T::poison())?;
    let dxw = gpu.addr_mut(&mut dx);
    let fc1_dgrad: Vec<_> = (0..n).map(|e| group(daa, hm, s.w1[e].addr, s.w1[e].ld, dxw, d, 0, d, h[e])).collect();
    let mut gb1 = gpu.zeros::<f32>(n * hm)?;
    let mut gb2 = gpu.zeros::<f32>(n * d)?;
    let wh = gpu.upload(&as_i32(h.iter().copied()))?;
    let wd = gpu.upload(&vec![d as i32; n])?;
    // SAFETY: token operands have `rows` rows of their ld; each gradient buffer holds its
    // expert's block with the ld given; bias sums write [n, hm] and [n, d] with widths <= those.
    unsafe {
        s.run::<T>(GemmStage::Wgrad, &fc2_wgrad, AUTOMOE_GEMM_ACCUMULATE)?;
        s.run::<T>(GemmStage::Wgrad, &fc1_wgrad, AUTOMOE_GEMM_ACCUMULATE)?;
        s.run::<T>(GemmStage::Dgrad, &fc1_dgrad, 0)?;
        if rows > 0 {
            dbias::<Gpu, T>(gpu, &*gb, d, &s.offsets, &wd, n, d, &mut gb2, d)?;
            dbias::<Gpu, T>(gpu, &*dab, hm, &s.offsets, &wh, n, hm, &mut gb1, hm)?;
        }
    }
    let dtype = T::DTYPE;
    let out = |buf: GBuf<f32>, shape: &[usize]| -> Result<Tensor> { tensor_of(gpu, buf, shape).to_dtype(dtype) };
    let (gb1, gb2) = (tensor_of(gpu, gb1, &[n, hm]), tensor_of(gpu, gb2, &[n, d]));
    // Row e of a bias-gradient matrix, its first `w` columns, contiguous in `dtype`.
    let row = |m: &Tensor, e: usize, w: usize| -> Result<Tensor> {
        cast_contiguous(&m.narrow(0, e, 1)?.reshape(&[m.shape()[1]])?.narrow(0, 0, w)?, dtype)
    };
    let mut grads = Vec::with_capacity(n);
    for (e, (w1, w2)) in gw1.into_iter().zip(gw2).enumerate() {
        if offsets[e + 1] == offsets[e] {
            grads.push(None);
            continue;
        }
        grads.push(Some([out(w1, &[h[e], d])?, row(&gb1, e, h[e])?, out(w2, &[d, h[e]])?, row(&gb2, e, d)?]));
    }
    Ok((tensor_of(gpu, dx, &[rows, d]), grads))
}
