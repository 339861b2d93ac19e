//! Memory of a CUDA tensor: one buffer on a [`Gpu`] (a device, or the emulator's host memory), in
//! f32 or bf16 (the kernels' element types). Buffers are reference counted, so cloning a storage
//! shares it; in-place updates (the optimizer) go through [`CudaStorage::make_unique`], which
//! copies a shared buffer first (a fallible device copy, never a panic).

use std::sync::Arc;

use half::bf16;

use super::abi::automoe_dptr;
use super::gpu::{GBuf, Gpu};
use super::moe_exec::Exec;
use crate::tensor::{CpuStorage, DType};
use crate::{Device, Error, Result};

#[derive(Clone)]
pub enum CudaData {
    F32(Arc<GBuf<f32>>),
    BF16(Arc<GBuf<bf16>>),
}

#[derive(Clone)]
pub struct CudaStorage {
    gpu: Gpu,
    data: CudaData,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({}, {:?}, {} elements)", self.device(), self.dtype(), self.len())
    }
}

impl CudaStorage {
    pub fn f32(gpu: &Gpu, buf: GBuf<f32>) -> Self {
        CudaStorage { gpu: gpu.clone(), data: CudaData::F32(Arc::new(buf)) }
    }

    pub fn bf16(gpu: &Gpu, buf: GBuf<bf16>) -> Self {
        CudaStorage { gpu: gpu.clone(), data: CudaData::BF16(Arc::new(buf)) }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn data(&self) -> &CudaData {
        &self.data
    }

    pub fn device(&self) -> Device {
        self.gpu.device()
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            CudaData::F32(_) => DType::F32,
            CudaData::BF16(_) => DType::BF16,
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            CudaData::F32(b) => super::ops::buf_len(b),
            CudaData::BF16(b) => super::ops::buf_len(b),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A zero-filled storage of `n` elements.
    pub fn zeros(gpu: &Gpu, dtype: DType, n: usize) -> Result<Self> {
        match dtype {
            DType::F32 => Ok(Self::f32(gpu, gpu.zeros(n)?)),
            DType::BF16 => Ok(Self::bf16(gpu, gpu.zeros(n)?)),
            DType::F64 => Err(no_f64("zeros")),
        }
    }

    /// A storage for kernel outputs: undefined contents (NaN-poisoned on the emulator).
    pub fn uninit(gpu: &Gpu, dtype: DType, n: usize) -> Result<Self> {
        match dtype {
            DType::F32 => Ok(Self::f32(gpu, gpu.uninit(n, f32::NAN)?)),
            DType::BF16 => Ok(Self::bf16(gpu, gpu.uninit(n, bf16::NAN)?)),
            DType::F64 => Err(no_f64("uninit")),
        }
    }

    /// Copies host data to `gpu`.
    pub fn upload(gpu: &Gpu, host: &CpuStorage) -> Result<Self> {
        match host {
            CpuStorage::F32(v) => Ok(Self::f32(gpu, gpu.upload(v)?)),
            CpuStorage::BF16(v) => Ok(Self::bf16(gpu, gpu.upload(v)?)),
            CpuStorage::F64(_) => Err(no_f64("to_device")),
        }
    }

    /// Copies the whole buffer back to the host (waiting for queued kernels).
    pub fn download(&self) -> Result<CpuStorage> {
        Ok(match &self.data {
            CudaData::F32(b) => CpuStorage::F32(self.gpu.download(b)?),
            CudaData::BF16(b) => CpuStorage::BF16(self.gpu.download(b)?),
        })
    }

    /// Address of element `offset` (for kernels that read).
    pub fn addr_at(&self, offset: usize) -> automoe_dptr {
        match &self.data {
            CudaData::F32(b) => self.gpu.addr(b) + (offset * 4) as automoe_dptr,
            CudaData::BF16(b) => self.gpu.addr(b) + (offset * 2) as automoe_dptr,
        }
    }

    /// Makes the buffer this storage's own (copying it when another tensor shares it) and returns
    /// the address of element `offset` for kernels that write.
    pub fn make_unique(&mut self, offset: usize) -> Result<automoe_dptr> {
        let gpu = self.gpu.clone();
        Ok(match &mut self.data {
            CudaData::F32(b) => {
                if Arc::get_mut(b).is_none() {
                    *b = Arc::new(gpu.duplicate(b)?);
                }
                let b = Arc::get_mut(b).ok_or_else(|| Error::Cuda("a fresh buffer is shared".into()))?;
                gpu.addr_mut(b) + (offset * 4) as automoe_dptr
            }
            CudaData::BF16(b) => {
                if Arc::get_mut(b).is_none() {
                    *b = Arc::new(gpu.duplicate(b)?);
                }
                let b = Arc::get_mut(b).ok_or_else(|| Error::Cuda("a fresh buffer is shared".into()))?;
                gpu.addr_mut(b) + (offset * 2) as automoe_dptr
            }
        })
    }
}

fn no_f64(op: &'static str) -> Error {
    Error::invalid(op, "the CUDA kernels have no f64; convert the tensor to f32 (or bf16) first")
}
