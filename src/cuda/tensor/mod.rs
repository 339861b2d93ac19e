//! The CUDA half of the tensor ops: `src/tensor/ops.rs` dispatches here when a tensor's storage is
//! [`Storage::Cuda`]. Each function checks what the CPU side checks, makes strided inputs
//! contiguous where its kernel needs that, and launches the kernels of `cuda/` through
//! [`super::ops`] (or cuBLAS for products, `matmul.rs`). The same code runs on a device and on the
//! emulator ([`crate::Device::Emu`]), which is how CI tests it.

mod elementwise;
mod matmul;
mod moe;
mod nn;
mod optim;
mod reduce;
mod routing;

pub use elementwise::*;
pub use matmul::matmul;
pub use moe::*;
pub use nn::*;
pub use optim::{adam_step, sum_squares, sum_squares_many, AdamStep};
pub use reduce::{sum_all, sum_to};
pub use routing::{topk_select, topk_select_backward, DeviceDispatch, DeviceIds};

use std::sync::Arc;

use half::bf16;

use super::abi::automoe_dptr;
use super::gpu::{GBuf, Gpu};
use super::moe_ops::KernelFloat;
use super::storage::{CudaData, CudaStorage};
use crate::tensor::{DType, Layout, Storage, Tensor};
use crate::{Error, Result};

/// The CUDA storage of `t`, or an error naming `op` (a CPU tensor given to a CUDA op).
pub(crate) fn storage<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a CudaStorage> {
    match t.storage() {
        Storage::Cuda(c) => Ok(c),
        Storage::Cpu(_) => Err(Error::invalid(op, format!("a CPU tensor was mixed with CUDA tensors (shape {:?})", t.shape()))),
    }
}

/// The backend shared by every operand of an op; operands on different devices are an error.
pub(crate) fn same_gpu(op: &'static str, ts: &[&Tensor]) -> Result<Gpu> {
    let first = storage(op, ts[0])?;
    for t in &ts[1..] {
        let s = storage(op, t)?;
        if s.device() != first.device() {
            return Err(Error::invalid(op, format!("operands on {} and {}", first.device(), s.device())));
        }
        if s.dtype() != first.dtype() {
            return Err(Error::DTypeMismatch { op, expected: first.dtype(), got: s.dtype() });
        }
    }
    Ok(first.gpu().clone())
}

/// A new contiguous CUDA tensor of `shape` whose contents the caller's kernel writes, with the
/// address to write to.
pub(crate) fn output(gpu: &Gpu, dtype: DType, shape: &[usize]) -> Result<(CudaStorage, automoe_dptr)> {
    let mut s = CudaStorage::uninit(gpu, dtype, shape.iter().product())?;
    let a = s.make_unique(0)?;
    Ok((s, a))
}

pub(crate) fn wrap(s: CudaStorage, shape: &[usize]) -> Tensor {
    Tensor::from_parts(Storage::Cuda(s), Layout::contiguous(shape))
}

/// Address of the first element of a contiguous tensor.
pub(crate) fn addr(t: &Tensor) -> Result<automoe_dptr> {
    let s = storage("addr", t)?;
    Ok(s.addr_at(t.layout().offset()))
}

/// `t` itself when its elements are contiguous (any offset), else a contiguous copy.
pub(crate) fn copy_if_strided(t: &Tensor) -> Result<Tensor> {
    if t.layout().is_contiguous() {
        Ok(t.clone())
    } else {
        copy_contiguous(t)
    }
}

/// Entry-point suffix of a dtype.
pub(crate) fn suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F64 => Err(Error::invalid(op, "the CUDA kernels have no f64")),
    }
}

/// The kernels' element types as stored in a [`CudaStorage`].
pub trait GpuElem: KernelFloat {
    const DTYPE: DType;
    fn buf_of(d: &CudaData) -> Option<&Arc<GBuf<Self>>>;
    fn storage(gpu: &Gpu, buf: GBuf<Self>) -> CudaStorage;
    /// The storage's typed buffer, or a dtype mismatch error.
    fn buf_of_storage(s: &CudaStorage) -> Result<Arc<GBuf<Self>>> {
        Self::buf_of(s.data()).cloned().ok_or(Error::DTypeMismatch { op: "buffer", expected: Self::DTYPE, got: s.dtype() })
    }
}

impl GpuElem for f32 {
    const DTYPE: DType = DType::F32;
    fn buf_of(d: &CudaData) -> Option<&Arc<GBuf<f32>>> {
        match d {
            CudaData::F32(b) => Some(b),
            _ => None,
        }
    }
    fn storage(gpu: &Gpu, buf: GBuf<f32>) -> CudaStorage {
        CudaStorage::f32(gpu, buf)
    }
}

impl GpuElem for bf16 {
    const DTYPE: DType = DType::BF16;
    fn buf_of(d: &CudaData) -> Option<&Arc<GBuf<bf16>>> {
        match d {
            CudaData::BF16(b) => Some(b),
            _ => None,
        }
    }
    fn storage(gpu: &Gpu, buf: GBuf<bf16>) -> CudaStorage {
        CudaStorage::bf16(gpu, buf)
    }
}

/// The tensor's whole typed buffer when it holds exactly the tensor's elements in order (the
/// launchers of `super::ops` take whole buffers), else a contiguous copy's.
pub(crate) fn whole_buf<T: GpuElem>(op: &'static str, t: &Tensor) -> Result<Arc<GBuf<T>>> {
    let s = storage(op, t)?;
    let exact = t.layout().is_contiguous() && t.layout().offset() == 0 && s.len() == t.numel();
    let c;
    let s = if exact {
        s
    } else {
        c = copy_contiguous(t)?;
        storage(op, &c)?
    };
    T::buf_of(s.data()).cloned().ok_or(Error::DTypeMismatch { op, expected: T::DTYPE, got: s.dtype() })
}

/// A tensor of `shape` around a launcher's output buffer.
pub(crate) fn tensor_of<T: GpuElem>(gpu: &Gpu, buf: GBuf<T>, shape: &[usize]) -> Tensor {
    wrap(T::storage(gpu, buf), shape)
}

/// Runs `$body` with `$T` the Rust element type of `$dtype` (f32 or bf16).
macro_rules! by_dtype {
    ($op:expr, $dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            crate::tensor::DType::F32 => {
                type $T = f32;
                $body
            }
            crate::tensor::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            crate::tensor::DType::F64 => Err(crate::Error::invalid($op, "the CUDA kernels have no f64")),
        }
    };
}
pub(crate) use by_dtype;

/// Pads shape and strides to the kernels' fixed rank, merging dimensions that are contiguous in
/// every given layout and dropping size-1 ones, so views of any rank up to that after merging fit.
pub(crate) fn packed_dims(op: &'static str, shape: &[usize], strides: &[&[usize]]) -> Result<(i32, [i64; 6], Vec<[i64; 6]>)> {
    const MAX: usize = super::abi::AUTOMOE_MAX_RANK as usize;
    let mut dims: Vec<(usize, Vec<usize>)> =
        (0..shape.len()).filter(|&d| shape[d] != 1).map(|d| (shape[d], strides.iter().map(|s| s[d]).collect())).collect();
    let mut merged: Vec<(usize, Vec<usize>)> = Vec::with_capacity(dims.len());
    for (size, st) in dims.drain(..) {
        if let Some((psize, pst)) = merged.last_mut() {
            if pst.iter().zip(&st).all(|(&p, &s)| p == s * size) {
                *psize *= size;
                *pst = st;
                continue;
            }
        }
        merged.push((size, st));
    }
    if merged.len() > MAX {
        return Err(Error::invalid(
            op,
            format!("a view of shape {shape:?} needs {} strided dimensions; the kernels take {MAX}", merged.len()),
        ));
    }
    let mut sh = [1i64; 6];
    let mut out = vec![[0i64; 6]; strides.len()];
    for (d, (size, st)) in merged.iter().enumerate() {
        sh[d] = *size as i64;
        for (o, &s) in out.iter_mut().zip(st) {
            o[d] = s as i64;
        }
    }
    Ok((merged.len() as i32, sh, out))
}
