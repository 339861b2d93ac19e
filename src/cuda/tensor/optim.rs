//! The optimizer's device side: the Adam(W) step on f32 master weights (cuda/optim.cu) and the
//! squared sums behind global-norm clipping (cuda/reduce.cu).

use super::super::abi::*;
use super::super::moe_exec::Exec;
use super::super::moe_ops::Geometry;
use super::super::ops::{grid_for, BLOCK};
use super::{copy_if_strided, storage, suffix, wrap};
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// Hyper-parameters of one step (see `AdamParams` in cuda/abi.h).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled: bool,
    /// The step number (from 1), for the bias corrections.
    pub step: u64,
    /// Gradient multiplier (global-norm clipping), 1 otherwise.
    pub grad_scale: f64,
}

fn take_unique(t: &mut Tensor, op: &'static str) -> Result<(crate::cuda::CudaStorage, automoe_dptr)> {
    if t.dtype() != DType::F32 {
        return Err(Error::invalid(op, format!("optimizer tensors must be f32 master copies, got {:?}", t.dtype())));
    }
    if !t.layout().is_contiguous() || t.layout().offset() != 0 || storage(op, t)?.len() != t.numel() {
        *t = super::copy_contiguous(t)?;
    }
    let mut s = std::mem::replace(t, Tensor::scalar(0f32)).into_cuda_storage()?;
    let a = s.make_unique(0)?;
    Ok((s, a))
}

/// One Adam(W) step in place on `w` with moments `m` and `v` (all f32, same shape, one device).
pub fn adam_step(w: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, h: AdamStep) -> Result<()> {
    const OP: &str = "adam";
    for t in [&*m, &*v, g] {
        if t.shape() != w.shape() {
            return Err(Error::ShapeMismatch { op: OP, lhs: w.shape().to_vec(), rhs: t.shape().to_vec() });
        }
    }
    let g = if g.dtype() == DType::F32 { copy_if_strided(g)? } else { super::cast_contiguous(g, DType::F32)? };
    let gpu = super::same_gpu(OP, &[w, &g, m, v])?;
    let shape = w.shape().to_vec();
    let n = w.numel();
    let (ws, wa) = take_unique(w, OP)?;
    let (ms, ma) = take_unique(m, OP)?;
    let (vs, va) = take_unique(v, OP)?;
    let p = AdamParams {
        w: wa,
        g: super::addr(&g)?,
        m: ma,
        v: va,
        n: n as i64,
        lr: h.lr as f32,
        beta1: h.beta1 as f32,
        beta2: h.beta2 as f32,
        eps: h.eps as f32,
        weight_decay: h.weight_decay as f32,
        grad_scale: h.grad_scale as f32,
        bc1: crate::train::optim::bias_corrections(h.beta1, h.beta2, h.step).0 as f32,
        bc2: crate::train::optim::bias_corrections(h.beta1, h.beta2, h.step).1 as f32,
        decoupled: h.decoupled as i32,
        reserved: 0,
    };
    let r = if n == 0 {
        Ok(())
    } else {
        // SAFETY: w, m, v are uniquely owned contiguous f32 buffers of n elements, g a contiguous
        // f32 tensor of n elements, all on this backend.
        unsafe { gpu.enqueue("optim.cu", "adam_f32", Geometry { grid: grid_for(n), block: BLOCK, smem_bytes: 0 }, &p) }
    };
    *w = wrap(ws, &shape);
    *m = wrap(ms, &shape);
    *v = wrap(vs, &shape);
    r
}

/// Blocks of the squared-sum kernel: fixed, so the summation order never depends on the device.
const SUMSQ_BLOCKS: usize = 64;

/// Sum of squares of every element, in f64 from fixed-order f32 partial sums.
pub fn sum_squares(x: &Tensor) -> Result<f64> {
    Ok(sum_squares_many(&[x])?[0])
}

/// [`sum_squares`] of several tensors of one backend with a single download (a gradient norm
/// over every parameter waits for the device once, not once per parameter).
pub fn sum_squares_many(xs: &[&Tensor]) -> Result<Vec<f64>> {
    const OP: &str = "sum_squares";
    let Some(first) = xs.first() else { return Ok(vec![]) };
    let gpu = storage(OP, first)?.gpu().clone();
    let blocks: Vec<usize> = xs.iter().map(|x| SUMSQ_BLOCKS.min(x.numel().div_ceil(256))).collect();
    let total: usize = blocks.iter().sum();
    let mut partial = gpu.uninit(total.max(1), f32::NAN)?;
    let base = gpu.addr_mut(&mut partial);
    let mut at = 0;
    for (x, &b) in xs.iter().zip(&blocks) {
        if b > 0 {
            let x = copy_if_strided(x)?;
            if storage(OP, &x)?.device() != gpu.device() {
                return Err(Error::invalid(OP, format!("tensors on {} and {}", gpu.device(), x.device())));
            }
            let p = SumSquaresParams {
                x: super::addr(&x)?,
                partial: base + (at * std::mem::size_of::<f32>()) as automoe_dptr,
                n: x.numel() as i64,
                blocks: b as i32,
                reserved: 0,
            };
            let name = format!("sumsq_partial_{}", suffix(OP, x.dtype())?);
            // SAFETY: x is contiguous with n elements; partial[at..at + b] lies inside the buffer.
            unsafe { gpu.enqueue("reduce.cu", &name, Geometry { grid: b as u32, block: 256, smem_bytes: 0 }, &p)? };
        }
        at += b;
    }
    let host = gpu.download(&partial)?;
    let mut at = 0;
    Ok(blocks
        .iter()
        .map(|&b| {
            let s = host[at..at + b].iter().map(|&v| v as f64).sum();
            at += b;
            s
        })
        .collect())
}
