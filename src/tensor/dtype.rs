//! Element types. f32 is the working type; f64 exists so that gradient checks can run with an
//! exact-enough reference; bf16 is a storage type (converted to f32 for CPU arithmetic, used by
//! the CUDA tensor-core paths).

use half::bf16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    F64,
    BF16,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::BF16 => 2,
        }
    }
}

/// A float type the CPU kernels compute in. Implemented for f32 and f64 only: bf16 tensors are
/// converted before arithmetic.
pub trait Float:
    num_traits::Float + bytemuck::Pod + Copy + Send + Sync + Default + std::fmt::Debug + std::iter::Sum + crate::cpu::rowmath::RowMath + 'static
{
    const DTYPE: DType;
    fn of_f64(v: f64) -> Self;
    fn as_f64(self) -> f64;
}

impl Float for f32 {
    const DTYPE: DType = DType::F32;
    fn of_f64(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    const DTYPE: DType = DType::F64;
    fn of_f64(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
}

/// Round-to-nearest-even conversion of an f32 slice to bf16 (what `half` does).
pub fn f32_to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}
