//! Copies, casts, broadcasting binary ops, activations and dropout masks on CUDA tensors
//! (cuda/elementwise.cu).

use super::super::abi::*;
use super::super::moe_exec::Exec;
use super::super::moe_ops::Geometry;
use super::super::ops::{grid_for, BLOCK};
use super::{output, packed_dims, same_gpu, storage, suffix, wrap};
use crate::cuda::gpu::Gpu;
use crate::cuda::storage::CudaStorage;
use crate::tensor::{BinaryOp, DType, Layout, Tensor};
use crate::{Error, Result};

const FILE: &str = "elementwise.cu";

fn geometry(n: usize) -> Geometry {
    Geometry { grid: grid_for(n), block: BLOCK, smem_bytes: 0 }
}

/// dst (a layout over `dst`'s storage) (+)= src (any view), element by element, with a cast when
/// the dtypes differ.
fn copy_launch(src: &Tensor, dst: &mut CudaStorage, dst_layout: &Layout, accumulate: bool) -> Result<()> {
    const OP: &str = "copy";
    if src.shape() != dst_layout.shape() {
        return Err(Error::ShapeMismatch { op: OP, lhs: dst_layout.shape().to_vec(), rhs: src.shape().to_vec() });
    }
    let n = src.numel();
    if n == 0 {
        return Ok(());
    }
    let s = storage(OP, src)?;
    if s.device() != dst.device() {
        return Err(Error::invalid(OP, format!("copy from {} to {}", s.device(), dst.device())));
    }
    let (rank, shape, st) = packed_dims(OP, src.shape(), &[src.layout().strides(), dst_layout.strides()])?;
    let name = format!("copy_{}_{}", suffix(OP, s.dtype())?, suffix(OP, dst.dtype())?);
    let p = CopyParams {
        src: s.addr_at(0),
        dst: dst.make_unique(0)?,
        n: n as i64,
        shape,
        src_stride: st[0],
        dst_stride: st[1],
        src_offset: src.layout().offset() as i64,
        dst_offset: dst_layout.offset() as i64,
        rank,
        accumulate: accumulate as i32,
    };
    let gpu = dst.gpu().clone();
    // SAFETY: both layouts lie inside their storages (checked when the views were made; the
    // destination layout is checked by the callers), and `dst` is uniquely owned.
    unsafe { gpu.enqueue(FILE, &name, geometry(n), &p) }
}

/// A contiguous copy of any view (same dtype).
pub fn copy_contiguous(t: &Tensor) -> Result<Tensor> {
    cast_contiguous(t, t.dtype())
}

/// A contiguous copy converted to `dtype` (f32 <-> bf16 rounds to nearest even).
pub fn cast_contiguous(t: &Tensor, dtype: DType) -> Result<Tensor> {
    let s = storage("to_dtype", t)?;
    let (mut out, _) = output(s.gpu(), dtype, t.shape())?;
    copy_launch(t, &mut out, &Layout::contiguous(t.shape()), false)?;
    Ok(wrap(out, t.shape()))
}

/// Adds `g` into the elements of `acc` selected by `view` (a layout over `acc`'s contiguous
/// storage), in place when nothing else shares `acc`'s buffer: the backward of narrow and front
/// slices, which is how a subnet's gradient lands in its slice of a supernet weight.
pub fn add_into_view(acc: &mut Tensor, view: &Layout, g: &Tensor) -> Result<()> {
    const OP: &str = "add_into_view";
    let whole = { acc.layout().is_contiguous() && acc.layout().offset() == 0 && storage(OP, acc)?.len() == acc.numel() };
    if !whole {
        *acc = copy_contiguous(acc)?;
    }
    if g.dtype() != acc.dtype() {
        return Err(Error::DTypeMismatch { op: OP, expected: acc.dtype(), got: g.dtype() });
    }
    if view.storage_extent() > acc.numel() {
        return Err(Error::invalid(OP, format!("view {:?} reaches past the {} elements of the gradient", view.shape(), acc.numel())));
    }
    let shape = acc.shape().to_vec();
    let mut s = std::mem::replace(acc, Tensor::scalar(0f32)).into_cuda_storage()?;
    let r = copy_launch(g, &mut s, view, true);
    *acc = wrap(s, &shape);
    r
}

/// Concatenation along `dim` (shapes and dtypes checked by the caller).
pub fn concat(parts: &[&Tensor], dim: usize, shape: &[usize]) -> Result<Tensor> {
    let gpu = same_gpu("concat", parts)?;
    let (mut out, _) = output(&gpu, parts[0].dtype(), shape)?;
    let full = Layout::contiguous(shape);
    let mut start = 0;
    for p in parts {
        let len = p.shape()[dim];
        copy_launch(p, &mut out, &full.narrow(dim, start, len)?, false)?;
        start += len;
    }
    Ok(wrap(out, shape))
}

/// `a (op) b` with numpy broadcasting; views are read in place (a bias row through stride 0).
pub fn binary(a: &Tensor, b: &Tensor, op: BinaryOp, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "binary";
    let gpu = same_gpu(OP, &[a, b])?;
    let (la, lb) = (a.layout().broadcast_to(shape)?, b.layout().broadcast_to(shape)?);
    let n: usize = shape.iter().product();
    let (out, addr) = output(&gpu, a.dtype(), shape)?;
    if n == 0 {
        return Ok(wrap(out, shape));
    }
    let (rank, sh, st) = packed_dims(OP, shape, &[la.strides(), lb.strides()])?;
    let p = BinaryParams {
        a: storage(OP, a)?.addr_at(0),
        b: storage(OP, b)?.addr_at(0),
        out: addr,
        n: n as i64,
        shape: sh,
        a_stride: st[0],
        b_stride: st[1],
        a_offset: la.offset() as i64,
        b_offset: lb.offset() as i64,
        rank,
        op: match op {
            BinaryOp::Add => AUTOMOE_BINARY_ADD,
            BinaryOp::Sub => AUTOMOE_BINARY_SUB,
            BinaryOp::Mul => AUTOMOE_BINARY_MUL,
            BinaryOp::Div => AUTOMOE_BINARY_DIV,
        } as i32,
    };
    // SAFETY: the broadcast layouts address only elements of their operands' storages; `out` is a
    // fresh buffer of n elements.
    unsafe { gpu.enqueue(FILE, &format!("binary_{}", suffix(OP, a.dtype())?), geometry(n), &p)? };
    Ok(wrap(out, shape))
}

fn unary_launch(x: &Tensor, dy: Option<&Tensor>, op: u32, alpha: f32) -> Result<Tensor> {
    const OP: &str = "unary";
    let x = super::copy_if_strided(x)?;
    let dy = dy.map(super::copy_if_strided).transpose()?;
    if let Some(d) = &dy {
        if d.shape() != x.shape() {
            return Err(Error::ShapeMismatch { op: OP, lhs: x.shape().to_vec(), rhs: d.shape().to_vec() });
        }
    }
    let gpu = match &dy {
        Some(d) => same_gpu(OP, &[&x, d])?,
        None => storage(OP, &x)?.gpu().clone(),
    };
    let n = x.numel();
    let (out, addr) = output(&gpu, x.dtype(), x.shape())?;
    if n == 0 {
        return Ok(wrap(out, x.shape()));
    }
    let p = UnaryParams {
        x: super::addr(&x)?,
        dy: match &dy {
            Some(d) => super::addr(d)?,
            None => 0,
        },
        out: addr,
        n: n as i64,
        alpha,
        op: op as i32,
    };
    // SAFETY: x and dy are contiguous with n elements from their addresses; out is fresh.
    unsafe { gpu.enqueue(FILE, &format!("unary_{}", suffix(OP, x.dtype())?), geometry(n), &p)? };
    Ok(wrap(out, x.shape()))
}

pub fn scale(x: &Tensor, s: f64) -> Result<Tensor> {
    unary_launch(x, None, AUTOMOE_UNARY_SCALE, s as f32)
}
pub fn relu(x: &Tensor) -> Result<Tensor> {
    unary_launch(x, None, AUTOMOE_UNARY_RELU, 0.0)
}
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    unary_launch(x, None, AUTOMOE_UNARY_GELU, 0.0)
}
pub fn relu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    unary_launch(x, Some(dy), AUTOMOE_UNARY_RELU_BWD, 0.0)
}
pub fn gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    unary_launch(x, Some(dy), AUTOMOE_UNARY_GELU_BWD, 0.0)
}

/// A tensor of `shape` filled with `value`.
pub fn full(gpu: &Gpu, shape: &[usize], value: f64, dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let (out, addr) = output(gpu, dtype, shape)?;
    if n > 0 {
        let p = UnaryParams { x: 0, dy: 0, out: addr, n: n as i64, alpha: value as f32, op: AUTOMOE_UNARY_FILL as i32 };
        // SAFETY: out is a fresh buffer of n elements; FILL reads nothing.
        unsafe { gpu.enqueue(FILE, &format!("unary_{}", suffix("full", dtype)?), geometry(n), &p)? };
    }
    Ok(wrap(out, shape))
}

/// The inverted-dropout mask of `Tensor::dropout_mask`, drawn on the device from the same hash.
pub fn dropout_mask(gpu: &Gpu, shape: &[usize], p: f64, seed: u64, dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let (out, addr) = output(gpu, dtype, shape)?;
    if n > 0 {
        let params = DropoutParams {
            out: addr,
            seed,
            threshold: (p * (1u64 << 32) as f64) as u64,
            n: n as i64,
            keep_scale: (1.0 / (1.0 - p)) as f32,
            reserved: 0,
        };
        // SAFETY: out is a fresh buffer of n elements.
        unsafe { gpu.enqueue(FILE, &format!("dropout_mask_{}", suffix("dropout", dtype)?), geometry(n), &params)? };
    }
    Ok(wrap(out, shape))
}
