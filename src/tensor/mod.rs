//! Tensors: a shared storage plus a strided layout. Views (narrow, transpose, permute, broadcast)
//! share storage; arithmetic lives in `ops.rs` and dispatches once on the storage's backend.

mod dtype;
mod layout;
mod ops;
mod safetensors_io;
mod storage;

use std::borrow::Cow;
use std::sync::Arc;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

pub use dtype::{f32_to_bf16, DType, Float};
pub use layout::{broadcast_shape, checked_numel, contiguous_strides, Layout};
pub use ops::{BinaryOp, MaskSpec};
pub use safetensors_io::{parse_safetensors, serialize_safetensors, tensor_from_safetensors};
pub use storage::{CpuStorage, Element, Storage};

use crate::{Device, Error, Result};

#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    layout: Layout,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?}, {})", self.shape(), self.dtype(), self.device())
    }
}

/// The element count of a shape given to an infallible constructor.
fn numel_or_panic(shape: &[usize]) -> usize {
    checked_numel("Tensor", shape).unwrap_or_else(|e| panic!("{e}"))
}

/// `n` copies of `value`, or an error when the allocation fails (`vec!` would abort the process).
/// An all-zero `value` is allocated zeroed, as `vec![0.0; n]` is: the backward pass asks for a
/// full-size zero gradient of every sliced parameter on every update, and a zeroed allocation
/// lets the allocator hand out fresh zero pages instead of writing every element.
fn try_filled<T: bytemuck::Pod>(n: usize, value: T) -> Result<Vec<T>> {
    let refused = |why: String| {
        let bytes = n.saturating_mul(std::mem::size_of::<T>());
        Error::invalid(
            "Tensor::full_on",
            format!("{n} elements ({:.1} GiB) cannot be allocated: {why}", bytes as f64 / (1u64 << 30) as f64),
        )
    };
    if bytemuck::bytes_of(&value).iter().all(|&b| b == 0) {
        let layout = std::alloc::Layout::array::<T>(n).map_err(|e| refused(e.to_string()))?;
        if layout.size() == 0 {
            return Ok(vec![value; n]);
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
        if ptr.is_null() {
            return Err(refused("memory allocation failed".into()));
        }
        // SAFETY: `ptr` was allocated by the global allocator with the layout of `[T; n]`, and all
        // its bytes are zero, a valid `T` (Pod) equal to `value`.
        return Ok(unsafe { Vec::from_raw_parts(ptr, n, n) });
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| refused(e.to_string()))?;
    v.resize(n, value);
    Ok(v)
}

/// Elements of a view in row-major order: borrowed when the view is contiguous, gathered otherwise.
pub(crate) fn view_data<'a, T: Copy>(data: &'a [T], layout: &Layout) -> Cow<'a, [T]> {
    if layout.is_contiguous() {
        let o = layout.offset();
        Cow::Borrowed(&data[o..o + layout.numel()])
    } else {
        let mut out = Vec::with_capacity(layout.numel());
        layout.for_each_run(|start, stride, len| {
            if stride == 1 {
                out.extend_from_slice(&data[start..start + len]);
            } else {
                out.extend((0..len).map(|i| data[start + i * stride]));
            }
        });
        Cow::Owned(out)
    }
}

impl Tensor {
    pub(crate) fn from_parts(storage: Storage, layout: Layout) -> Self {
        Tensor { storage: Arc::new(storage), layout }
    }

    /// A contiguous CPU tensor from a vector (f32, f64 or bf16).
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let numel = checked_numel("from_vec", shape)?;
        if numel != data.len() {
            return Err(Error::BadReshape {
                op: "from_vec",
                from: vec![data.len()],
                from_numel: data.len(),
                to: shape.to_vec(),
                to_numel: numel,
            });
        }
        Ok(Self::from_parts(Storage::Cpu(T::into_storage(data)), Layout::contiguous(shape)))
    }

    /// A 0-d tensor.
    pub fn scalar<T: Element>(v: T) -> Self {
        Self::from_parts(Storage::Cpu(T::into_storage(vec![v])), Layout::contiguous(&[]))
    }

    /// # Panics
    /// When the shape's element count overflows `usize` (as `Vec::with_capacity` does); use
    /// [`Tensor::full_on`] for an error instead.
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Self {
        let n = numel_or_panic(shape);
        let s = match dtype {
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::BF16 => CpuStorage::BF16(vec![half::bf16::from_f64(value); n]),
        };
        Self::from_parts(Storage::Cpu(s), Layout::contiguous(shape))
    }

    /// [`Tensor::full`] on `device`, with an error instead of a panic or abort when the element
    /// count overflows or the memory cannot be had.
    pub fn full_on(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Self> {
        let n = checked_numel("full", shape)?;
        if device.is_cuda() {
            return crate::cuda::tensor::full(&crate::cuda::Gpu::of(device)?, shape, value, dtype);
        }
        let s = match dtype {
            DType::F32 => CpuStorage::F32(try_filled(n, value as f32)?),
            DType::F64 => CpuStorage::F64(try_filled(n, value)?),
            DType::BF16 => CpuStorage::BF16(try_filled(n, half::bf16::from_f64(value))?),
        };
        Ok(Self::from_parts(Storage::Cpu(s), Layout::contiguous(shape)))
    }

    pub fn zeros_on(shape: &[usize], dtype: DType, device: Device) -> Result<Self> {
        Self::full_on(shape, 0.0, dtype, device)
    }

    pub fn ones_on(shape: &[usize], dtype: DType, device: Device) -> Result<Self> {
        Self::full_on(shape, 1.0, dtype, device)
    }

    pub fn zeros(shape: &[usize], dtype: DType) -> Self {
        Self::full(shape, 0.0, dtype)
    }

    pub fn ones(shape: &[usize], dtype: DType) -> Self {
        Self::full(shape, 1.0, dtype)
    }

    /// Normal(0, std) samples.
    ///
    /// # Panics
    /// When the shape's element count overflows `usize`.
    pub fn randn(shape: &[usize], std: f64, dtype: DType, rng: &mut impl Rng) -> Self {
        let n = numel_or_panic(shape);
        let v: Vec<f64> = (0..n).map(|_| std * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, rng)).collect();
        Self::from_f64_vec(v, shape, dtype)
    }

    /// Uniform samples in `[lo, hi)`; the bounds must be finite with `lo < hi`.
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, dtype: DType, rng: &mut impl Rng) -> Result<Self> {
        let n = checked_numel("rand_uniform", shape)?;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::invalid("rand_uniform", format!("[{lo}, {hi}) is not a finite, non-empty range")));
        }
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        Ok(Self::from_f64_vec(v, shape, dtype))
    }

    fn from_f64_vec(v: Vec<f64>, shape: &[usize], dtype: DType) -> Self {
        let s = match dtype {
            DType::F32 => CpuStorage::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F64 => CpuStorage::F64(v),
            DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| half::bf16::from_f64(x)).collect()),
        };
        Self::from_parts(Storage::Cpu(s), Layout::contiguous(shape))
    }

    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
    /// Whether the tensor lives on a CUDA backend (a device or the emulator).
    pub fn is_cuda(&self) -> bool {
        matches!(&*self.storage, Storage::Cuda(_))
    }

    pub fn device(&self) -> Device {
        self.storage.device()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// Whether two tensors share one storage (a view and its parent do).
    pub fn shares_storage_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// Size of dimension `dim`, with a clear error when it does not exist.
    pub fn dim(&self, dim: usize) -> Result<usize> {
        self.shape().get(dim).copied().ok_or(Error::DimOutOfRange { op: "dim", dim, rank: self.rank() })
    }

    pub(crate) fn cpu_storage(&self, op: &'static str) -> Result<&CpuStorage> {
        match &*self.storage {
            Storage::Cpu(c) => Ok(c),
            Storage::Cuda(_) => Err(Error::Unsupported { op, device: self.device() }),
        }
    }

    /// The raw host storage of dtype `T` and this tensor's layout over it (kernels that read
    /// strided views in place, e.g. front slices of weights).
    pub(crate) fn cpu_raw<T: Element>(&self, op: &'static str) -> Result<(&[T], &Layout)> {
        let data = T::slice_of(self.cpu_storage(op)?).ok_or(Error::DTypeMismatch { op, expected: T::DTYPE, got: self.dtype() })?;
        Ok((data, &self.layout))
    }

    /// The elements in row-major order, borrowed when the tensor is contiguous.
    pub(crate) fn cpu_data<T: Element>(&self, op: &'static str) -> Result<Cow<'_, [T]>> {
        let (data, layout) = self.cpu_raw::<T>(op)?;
        Ok(view_data(data, layout))
    }

    /// The CUDA storage of this tensor, taken out without copying when nothing else shares it.
    pub(crate) fn into_cuda_storage(self) -> Result<crate::cuda::CudaStorage> {
        let device = self.device();
        match Arc::try_unwrap(self.storage).unwrap_or_else(|shared| (*shared).clone()) {
            Storage::Cuda(c) => Ok(c),
            Storage::Cpu(_) => Err(Error::invalid("into_cuda_storage", format!("the tensor is on {device}"))),
        }
    }

    fn view(&self, layout: Layout) -> Tensor {
        Tensor { storage: self.storage.clone(), layout }
    }

    /// The elements in row-major order as `T` (which must be the tensor's dtype).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let host;
        let cpu = match &*self.storage {
            Storage::Cpu(c) => c,
            Storage::Cuda(c) => {
                host = c.download()?;
                &host
            }
        };
        let data = T::slice_of(cpu).ok_or(Error::DTypeMismatch { op: "to_vec", expected: T::DTYPE, got: self.dtype() })?;
        Ok(view_data(data, &self.layout).into_owned())
    }

    /// Mutable access to the elements (row-major) of a CPU tensor of dtype `T`, for in-place updates
    /// (optimizers). Copies first when the storage is shared with another tensor or is a view.
    pub fn data_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch { op: "data_mut", expected: T::DTYPE, got: self.dtype() });
        }
        let owns_exactly = match &*self.storage {
            Storage::Cpu(c) => c.len() == self.numel(),
            Storage::Cuda(_) => return Err(Error::Unsupported { op: "data_mut", device: self.device() }),
        };
        if !self.layout.is_contiguous() || self.layout.offset() != 0 || !owns_exactly {
            *self = if T::DTYPE == DType::BF16 {
                let c = self.contiguous()?;
                Tensor::from_vec(c.to_vec::<T>()?, self.shape())?
            } else {
                self.contiguous_owned()?
            };
        }
        match Arc::make_mut(&mut self.storage) {
            Storage::Cpu(c) => T::slice_of_mut(c).ok_or(Error::DTypeMismatch { op: "data_mut", expected: T::DTYPE, got: DType::F32 }),
            Storage::Cuda(_) => Err(Error::Unsupported { op: "data_mut", device: Device::Emu }),
        }
    }

    /// The elements converted to f64 whatever the dtype (tests and reporting).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(match self.dtype() {
            DType::F32 => self.to_vec::<f32>()?.into_iter().map(f64::from).collect(),
            DType::F64 => self.to_vec::<f64>()?,
            DType::BF16 => self.to_vec::<half::bf16>()?.into_iter().map(f64::from).collect(),
        })
    }

    /// The elements converted to f32 whatever the dtype.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(match self.dtype() {
            DType::F32 => self.to_vec::<f32>()?,
            _ => self.to_f64_vec()?.into_iter().map(|x| x as f32).collect(),
        })
    }

    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid("to_scalar", format!("tensor of shape {:?} has {} elements", self.shape(), self.numel())));
        }
        Ok(self.to_f64_vec()?[0])
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if self.is_cuda() {
            return crate::cuda::tensor::cast_contiguous(self, dtype);
        }
        Ok(Self::from_f64_vec(self.to_f64_vec()?, self.shape(), dtype))
    }

    /// A copy on `device` (the same tensor when it is already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let shape = self.shape().to_vec();
        match (self.is_cuda(), device.is_cuda()) {
            (false, true) => {
                let c = self.contiguous()?;
                let host = slice_cpu_storage(c.cpu_storage("to_device")?, c.layout.offset(), c.numel());
                let gpu = crate::cuda::Gpu::of(device)?;
                Ok(Self::from_parts(Storage::Cuda(crate::cuda::CudaStorage::upload(&gpu, &host)?), Layout::contiguous(&shape)))
            }
            (true, false) => {
                let host = match self.dtype() {
                    DType::F32 => CpuStorage::F32(self.to_vec()?),
                    DType::F64 => CpuStorage::F64(self.to_vec()?),
                    DType::BF16 => CpuStorage::BF16(self.to_vec()?),
                };
                Ok(Self::from_parts(Storage::Cpu(host), Layout::contiguous(&shape)))
            }
            _ => self.to_device(Device::Cpu)?.to_device(device),
        }
    }

    /// A copy with `dtype` on `device` (host data is converted before an upload, so f64 host
    /// values reach a CUDA device as f32 or bf16 without a detour through an unsupported dtype).
    pub fn to_dtype_device(&self, dtype: DType, device: Device) -> Result<Tensor> {
        if self.is_cuda() || !device.is_cuda() {
            return self.to_device(device)?.to_dtype(dtype);
        }
        self.to_dtype(dtype)?.to_device(device)
    }

    // ---- views: no data is copied ----

    /// Elements `start..start + len` along `dim` (a view).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        Ok(self.view(self.layout.narrow(dim, start, len)?))
    }

    /// The front slice `[..sizes[0], ..sizes[1], …]`: how a subnet takes its part of a supernet
    /// weight. A view.
    pub fn front_slice(&self, sizes: &[usize]) -> Result<Tensor> {
        if sizes.len() != self.rank() {
            return Err(Error::ShapeMismatch { op: "front_slice", lhs: self.shape().to_vec(), rhs: sizes.to_vec() });
        }
        let mut l = self.layout.clone();
        for (d, &s) in sizes.iter().enumerate() {
            l = l.narrow(d, 0, s)?;
        }
        Ok(self.view(l))
    }

    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        Ok(self.view(self.layout.transpose(a, b)?))
    }

    /// Swaps the last two dimensions.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::invalid("t", format!("needs rank >= 2, got shape {:?}", self.shape())));
        }
        self.transpose(self.rank() - 2, self.rank() - 1)
    }

    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        Ok(self.view(self.layout.permute(perm)?))
    }

    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.view(self.layout.broadcast_to(shape)?))
    }

    /// A row-major copy, or the same tensor when it already is contiguous.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.layout.is_contiguous() {
            return Ok(self.clone());
        }
        if self.is_cuda() {
            return crate::cuda::tensor::copy_contiguous(self);
        }
        let s = match self.cpu_storage("contiguous")? {
            CpuStorage::F32(v) => CpuStorage::F32(view_data(v, &self.layout).into_owned()),
            CpuStorage::F64(v) => CpuStorage::F64(view_data(v, &self.layout).into_owned()),
            CpuStorage::BF16(v) => CpuStorage::BF16(view_data(v, &self.layout).into_owned()),
        };
        Ok(Self::from_parts(Storage::Cpu(s), Layout::contiguous(self.shape())))
    }

    /// Same elements, new shape. A view when contiguous, a copy otherwise. One dimension may be
    /// given as `usize::MAX` to be inferred.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel = self.numel();
        let mut shape = shape.to_vec();
        let known_dims: Vec<usize> = shape.iter().copied().filter(|&d| d != usize::MAX).collect();
        let known = checked_numel("reshape", &known_dims)?;
        let bad = |to: Vec<usize>| Error::BadReshape { op: "reshape", from: self.shape().to_vec(), from_numel: numel, to, to_numel: known };
        let inferred: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] == usize::MAX).collect();
        match inferred.len() {
            0 => {}
            1 if known > 0 && numel % known == 0 => shape[inferred[0]] = numel / known,
            _ => return Err(bad(shape)),
        }
        if checked_numel("reshape", &shape)? != numel {
            return Err(bad(shape));
        }
        let c = self.contiguous()?;
        Ok(Tensor { storage: c.storage, layout: Layout::new(shape.clone(), contiguous_strides(&shape), c.layout.offset()) })
    }

    /// Concatenation along `dim`; all other dimensions must agree.
    pub fn concat(parts: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = parts.first().ok_or_else(|| Error::invalid("concat", "no tensors given"))?;
        let rank = first.rank();
        if dim >= rank {
            return Err(Error::DimOutOfRange { op: "concat", dim, rank });
        }
        for p in parts {
            let same = p.rank() == rank && (0..rank).all(|d| d == dim || p.shape()[d] == first.shape()[d]);
            if !same {
                return Err(Error::ShapeMismatch { op: "concat", lhs: first.shape().to_vec(), rhs: p.shape().to_vec() });
            }
            if p.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch { op: "concat", expected: first.dtype(), got: p.dtype() });
            }
        }
        let mut shape = first.shape().to_vec();
        shape[dim] = parts.iter().map(|p| p.shape()[dim]).sum();
        if first.is_cuda() {
            return crate::cuda::tensor::concat(parts, dim, &shape);
        }
        // Row-major: the output is, for each outer index, the parts' inner blocks one after another.
        let outer: usize = shape[..dim].iter().product();
        macro_rules! cat {
            ($variant:ident) => {{
                let datas: Vec<_> = parts
                    .iter()
                    .map(|p| match p.cpu_storage("concat")? {
                        CpuStorage::$variant(v) => Ok(view_data(v, &p.layout)),
                        _ => unreachable!("dtypes checked above"),
                    })
                    .collect::<Result<_>>()?;
                let blocks: Vec<usize> = parts.iter().map(|p| p.shape()[dim..].iter().product()).collect();
                let mut out = Vec::with_capacity(shape.iter().product());
                for o in 0..outer {
                    for (d, &b) in datas.iter().zip(&blocks) {
                        out.extend_from_slice(&d[o * b..(o + 1) * b]);
                    }
                }
                CpuStorage::$variant(out)
            }};
        }
        let s = match first.dtype() {
            DType::F32 => cat!(F32),
            DType::F64 => cat!(F64),
            DType::BF16 => cat!(BF16),
        };
        Ok(Self::from_parts(Storage::Cpu(s), Layout::contiguous(&shape)))
    }
}

fn slice_cpu_storage(s: &CpuStorage, offset: usize, n: usize) -> CpuStorage {
    match s {
        CpuStorage::F32(v) => CpuStorage::F32(v[offset..offset + n].to_vec()),
        CpuStorage::F64(v) => CpuStorage::F64(v[offset..offset + n].to_vec()),
        CpuStorage::BF16(v) => CpuStorage::BF16(v[offset..offset + n].to_vec()),
    }
}
