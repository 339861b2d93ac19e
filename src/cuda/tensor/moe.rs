//! The MoE tape ops on CUDA tensors (`src/moe/ops.rs` dispatches here when a tensor is on a CUDA
//! backend): permute, grouped expert FFN and combine, forward and backward; the top-k and the
//! device dispatch are in `routing.rs`.
//!
//! * Permute and combine launch the gather kernels of cuda/permute.cu with the routing's index
//!   arrays: read in place from a device routing ([`crate::moe::MoeRouting::Device`], the case
//!   without a capacity limit), or uploaded from a host [`Dispatch`]: `src_row [rows]` (token of
//!   each permuted row) and `pos [T * k]` (row of each pair, `-1` for a pair dropped by the capacity
//!   limit, which is [`crate::moe::DROPPED`] as an `i32`). The kernels take gates in f32, so bf16
//!   gates are cast.
//! * The grouped FFN launches one grouped GEMM (cuda/grouped_gemm.cu) per stage over all experts,
//!   its problem list built on the device from the segment offsets (again in place for a device
//!   routing), reading each expert's weights in place (front-slice views: pointer at the view's
//!   offset, leading dimension its row stride); biases go to the kernels in f32 and weight
//!   gradients come out in f32, returned in the parameters' dtype. ReLU is fused into the fc1 GEMM
//!   (forward) and the fc2 dgrad (as a mask on the saved activation). GELU is composed: the fc1
//!   GEMM without activation, then the tensor `gelu` op (and `gelu_backward` in the backward).
//!   Which experts get a gradient (those that received rows) is the one thing the backward asks the
//!   host about; a device routing's counts are downloaded once per layer for it, usually already at
//!   the end of the forward pass (the model's FLOP accounting).

use std::sync::Arc;

use super::super::abi::*;
use super::super::gpu::{GBuf, Gpu};
use super::super::grouped_gemm::{dbias, group, plan, run, GemmStage};
use super::super::moe_exec::Exec;
use super::super::moe_ops::{warp_per_item, KernelFloat};
use super::super::ops::to_i32;
use super::routing::DeviceDispatch;
use super::{by_dtype, cast_contiguous, copy_contiguous, same_gpu, storage, tensor_of, whole_buf, GpuElem};
use crate::moe::ops::ExpertVars;
use crate::moe::{Activation, MoeRouting, Segments};
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

fn as_i32(v: impl Iterator<Item = usize>) -> Vec<i32> {
    v.map(|x| x as i32).collect()
}

/// That `n` elements are addressable by the kernels' 32-bit indices.
fn check_i32(op: &'static str, n: usize) -> Result<()> {
    to_i32(op, "elements", n).map(|_| ())
}

/// An index buffer of a routing: read in place from a device routing, or uploaded from a host one.
enum Index<'a> {
    Device(&'a GBuf<i32>),
    Uploaded(GBuf<i32>),
}

impl Index<'_> {
    fn buf(&self) -> &GBuf<i32> {
        match self {
            Index::Device(b) => b,
            Index::Uploaded(b) => b,
        }
    }

    fn addr(&self, gpu: &Gpu) -> automoe_dptr {
        gpu.addr(self.buf())
    }
}

/// Which of a routing's index arrays.
#[derive(Clone, Copy)]
enum Which {
    /// `[T * k]` row of each pair (`-1` for a pair dropped by the capacity limit).
    Pos,
    /// `[rows]` token of each permuted row.
    SrcRow,
    /// `[E + 1]` segment starts.
    Offsets,
}

/// One index array of `r` for launches on `gpu`.
fn index<'a>(op: &'static str, gpu: &Gpu, r: &'a MoeRouting, which: Which) -> Result<Index<'a>> {
    match r {
        MoeRouting::Device(d) => device_index(op, gpu, d, which),
        MoeRouting::Host(dis) => {
            let v: Vec<i32> = match which {
                // A dropped pair (crate::moe::DROPPED, u32::MAX) becomes -1.
                Which::Pos => dis.pos.iter().map(|&p| p as i32).collect(),
                Which::SrcRow => as_i32(dis.src_row.iter().map(|&r| r as usize)),
                Which::Offsets => as_i32(dis.offsets.iter().copied()),
            };
            Ok(Index::Uploaded(gpu.upload(&v)?))
        }
    }
}

fn device_index<'a>(op: &'static str, gpu: &Gpu, d: &'a DeviceDispatch, which: Which) -> Result<Index<'a>> {
    if d.gpu().device() != gpu.device() {
        return Err(Error::invalid(op, format!("a routing on {} with tensors on {}", d.gpu().device(), gpu.device())));
    }
    Ok(Index::Device(match which {
        Which::Pos => d.pos_buf(),
        Which::SrcRow => d.src_row_buf(),
        Which::Offsets => d.offsets_buf(),
    }))
}

/// `xp[r] = x[src_row[r]]`: `x: [T, d]` to `[dis.rows(), d]`.
pub fn moe_permute(x: &Tensor, r: &MoeRouting) -> Result<Tensor> {
    const OP: &str = "moe_permute";
    let gpu = same_gpu(OP, &[x])?;
    let (rows, d) = (r.rows(), x.shape()[1]);
    check_i32(OP, (rows * d).max(x.numel()))?;
    by_dtype!(OP, x.dtype(), T => {
        let xb = whole_buf::<T>(OP, x)?;
        let mut out = gpu.uninit::<T>(rows * d, T::poison())?;
        if rows * d > 0 {
            let sb = index(OP, &gpu, r, Which::SrcRow)?;
            let p = PermuteFwdParams { x: gpu.addr(&*xb), src_row: sb.addr(&gpu), xp: gpu.addr_mut(&mut out), rows: rows as i32, d: d as i32 };
            // SAFETY: x is [T, d] (whole buffer), every src_row entry is < T (built by Dispatch
            // or the dispatch kernels), out is [rows, d].
            unsafe { gpu.enqueue("permute.cu", &format!("permute_fwd_{}", T::SUFFIX), warp_per_item(rows), &p)? };
        }
        Ok(tensor_of(&gpu, out, &[rows, d]))
    })
}

/// `dx[t] = sum_s g[pos[t, s]]` (dropped pairs add nothing): `g: [rows, d]` to `[T, d]`.
pub fn permute_backward(g: &Tensor, d: usize, r: &MoeRouting) -> Result<Tensor> {
    const OP: &str = "moe_permute backward";
    let gpu = same_gpu(OP, &[g])?;
    let t = r.tokens();
    check_i32(OP, (t * d).max(g.numel()))?;
    by_dtype!(OP, g.dtype(), T => {
        let gb = whole_buf::<T>(OP, g)?;
        let mut dx = gpu.uninit::<T>(t * d, T::poison())?;
        if t * d > 0 {
            let pb = index(OP, &gpu, r, Which::Pos)?;
            let p = PermuteBwdParams {
                dxp: gpu.addr(&*gb),
                pos: pb.addr(&gpu),
                dx: gpu.addr_mut(&mut dx),
                tokens: t as i32,
                k: r.k() as i32,
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
pub fn moe_combine(yp: &Tensor, gates: &Tensor, r: &MoeRouting) -> Result<Tensor> {
    const OP: &str = "moe_combine";
    let gpu = same_gpu(OP, &[yp, gates])?;
    let (t, d) = (r.tokens(), yp.shape()[1]);
    check_i32(OP, (t * d).max(yp.numel()))?;
    by_dtype!(OP, yp.dtype(), T => {
        let yb = whole_buf::<T>(OP, yp)?;
        let wb = gates_f32(gates)?;
        let mut y = gpu.uninit::<T>(t * d, T::poison())?;
        if t * d > 0 {
            let pb = index(OP, &gpu, r, Which::Pos)?;
            let p = CombineFwdParams {
                yp: gpu.addr(&*yb),
                pos: pb.addr(&gpu),
                w: gpu.addr(&*wb),
                y: gpu.addr_mut(&mut y),
                tokens: t as i32,
                k: r.k() as i32,
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
pub fn combine_backward(yp: &Tensor, gates: &Tensor, g: &Tensor, r: &MoeRouting) -> Result<(Tensor, Tensor)> {
    const OP: &str = "moe_combine backward";
    let gpu = same_gpu(OP, &[yp, gates, g])?;
    let (t, k, d, rows) = (r.tokens(), r.k(), yp.shape()[1], r.rows());
    check_i32(OP, (t * d).max(rows * d).max(t * k))?;
    let (dyp, dw) = by_dtype!(OP, yp.dtype(), T => {
        let (yb, gb, wb) = (whole_buf::<T>(OP, yp)?, whole_buf::<T>(OP, g)?, gates_f32(gates)?);
        let mut dyp = gpu.uninit::<T>(rows * d, T::poison())?;
        let mut dw = gpu.uninit::<f32>(t * k, f32::NAN)?;
        let items = t.max(rows);
        if items > 0 && d > 0 {
            let (pb, sb) = (index(OP, &gpu, r, Which::Pos)?, index(OP, &gpu, r, Which::SrcRow)?);
            let p = CombineBwdParams {
                dy: gpu.addr(&*gb),
                yp: gpu.addr(&*yb),
                pos: pb.addr(&gpu),
                w: gpu.addr(&*wb),
                src_row: sb.addr(&gpu),
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
struct Experts<'a> {
    gpu: Gpu,
    d: usize,
    rows: usize,
    widths: Vec<usize>,
    /// The widest expert: the row stride of the hidden activations `[rows, hm]`.
    hm: usize,
    w1: Vec<Mat>,
    w2: Vec<Mat>,
    /// `[E + 1]` segment starts.
    offsets: Index<'a>,
}

impl<'a> Experts<'a> {
    fn new(op: &'static str, xp: &Tensor, ex: &[ExpertVars], segments: &'a Segments) -> Result<Self> {
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
            offsets: match segments {
                Segments::Host(o) => Index::Uploaded(gpu.upload(&as_i32(o.iter().copied()))?),
                Segments::Device(d) => device_index(op, &gpu, d, Which::Offsets)?,
            },
            widths,
            gpu,
        })
    }

    fn n(&self) -> usize {
        self.widths.len()
    }

    fn offsets_buf(&self) -> &GBuf<i32> {
        self.offsets.buf()
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
            let p = plan::<Gpu, T>(&self.gpu, stage, groups, Some(self.offsets_buf()), self.rows)?;
            run::<Gpu, T>(&self.gpu, &p, flags)
        }
    }
}

/// Every expert's FFN on its segment of `xp: [rows, d]`: `(y [rows, d], saved)`, where `saved`
/// is what [`grouped_ffn_backward`] needs: `[a]` (the ReLU output, `[rows, h_max]`) for ReLU,
/// `[z, a]` (pre-activation and GELU output) for GELU; `h_max` is the widest expert's width and
/// columns past an expert's own width are zero.
pub fn grouped_ffn(xp: &Tensor, ex: &[ExpertVars], segments: &Segments, act: Activation) -> Result<(Tensor, Vec<Tensor>)> {
    const OP: &str = "grouped_ffn";
    by_dtype!(OP, xp.dtype(), T => grouped_ffn_t::<T>(xp, ex, segments, act))
}

fn grouped_ffn_t<T: GpuElem>(xp: &Tensor, ex: &[ExpertVars], segments: &Segments, act: Activation) -> Result<(Tensor, Vec<Tensor>)> {
    const OP: &str = "grouped_ffn";
    let s = Experts::new(OP, xp, ex, segments)?;
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
    segments: &Segments,
    act: Activation,
    saved: &[Tensor],
    g: &Tensor,
) -> Result<(Tensor, Vec<Option<[Tensor; 4]>>)> {
    const OP: &str = "grouped_ffn backward";
    by_dtype!(OP, xp.dtype(), T => grouped_ffn_backward_t::<T>(xp, ex, segments, act, saved, g))
}

#[allow(clippy::type_complexity)]
fn grouped_ffn_backward_t<T: GpuElem>(
    xp: &Tensor,
    ex: &[ExpertVars],
    segments: &Segments,
    act: Activation,
    saved: &[Tensor],
    g: &Tensor,
) -> Result<(Tensor, Vec<Option<[Tensor; 4]>>)> {
    const OP: &str = "grouped_ffn backward";
    let s = Experts::new(OP, xp, ex, segments)?;
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
            dbias::<Gpu, T>(gpu, &*gb, d, s.offsets_buf(), &wd, n, d, &mut gb2, d)?;
            dbias::<Gpu, T>(gpu, &*dab, hm, s.offsets_buf(), &wh, n, hm, &mut gb1, hm)?;
        }
    }
    let dtype = T::DTYPE;
    let out = |buf: GBuf<f32>, shape: &[usize]| -> Result<Tensor> { tensor_of(gpu, buf, shape).to_dtype(dtype) };
    let (gb1, gb2) = (tensor_of(gpu, gb1, &[n, hm]), tensor_of(gpu, gb2, &[n, d]));
    // Row e of a bias-gradient matrix, its first `w` columns, contiguous in `dtype`.
    let row = |m: &Tensor, e: usize, w: usize| -> Result<Tensor> {
        cast_contiguous(&m.narrow(0, e, 1)?.reshape(&[m.shape()[1]])?.narrow(0, 0, w)?, dtype)
    };
    // An expert that received no rows gets no gradient (as on the CPU): the one question the
    // backward asks the host, answered from the forward's download when the model made one.
    let counts = segments.counts()?;
    let mut grads = Vec::with_capacity(n);
    for (e, (w1, w2)) in gw1.into_iter().zip(gw2).enumerate() {
        if counts[e] == 0 {
            grads.push(None);
            continue;
        }
        grads.push(Some([out(w1, &[h[e], d])?, row(&gb1, e, h[e])?, out(w2, &[d, h[e]])?, row(&gb2, e, d)?]));
    }
    Ok((tensor_of(gpu, dx, &[rows, d]), grads))
}
