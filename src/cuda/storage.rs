//! Device memory of a CUDA tensor. Uploads and downloads work now; arithmetic on CUDA tensors
//! arrives with the CUDA backend of the tape (issue 12) and until then is a clear `Unsupported`.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};
use half::bf16;

use crate::tensor::{CpuStorage, DType};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub enum CudaData {
    F32(CudaSlice<f32>),
    F64(CudaSlice<f64>),
    BF16(CudaSlice<bf16>),
}

#[derive(Clone, Debug)]
pub struct CudaStorage {
    ordinal: usize,
    stream: Arc<CudaStream>,
    data: CudaData,
}

fn cuda_err(e: impl std::fmt::Display) -> Error {
    Error::Cuda(e.to_string())
}

impl CudaStorage {
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            CudaData::F32(_) => DType::F32,
            CudaData::F64(_) => DType::F64,
            CudaData::BF16(_) => DType::BF16,
        }
    }

    /// Copies host data to device `ordinal` on its default stream.
    pub fn upload(ordinal: usize, host: &CpuStorage) -> Result<Self> {
        let stream = super::stream(ordinal)?;
        let data = match host {
            CpuStorage::F32(v) => CudaData::F32(stream.clone_htod(v).map_err(cuda_err)?),
            CpuStorage::F64(v) => CudaData::F64(stream.clone_htod(v).map_err(cuda_err)?),
            CpuStorage::BF16(v) => CudaData::BF16(stream.clone_htod(v).map_err(cuda_err)?),
        };
        Ok(CudaStorage { ordinal, stream, data })
    }

    /// Copies the whole buffer back to the host (synchronising the stream).
    pub fn download(&self) -> Result<CpuStorage> {
        Ok(match &self.data {
            CudaData::F32(s) => CpuStorage::F32(self.stream.clone_dtoh(s).map_err(cuda_err)?),
            CudaData::F64(s) => CpuStorage::F64(self.stream.clone_dtoh(s).map_err(cuda_err)?),
            CudaData::BF16(s) => CpuStorage::BF16(self.stream.clone_dtoh(s).map_err(cuda_err)?),
        })
    }
}
