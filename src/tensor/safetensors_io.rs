//! Tensors to and from safetensors bytes: the one encoding behind saved models
//! (`SubnetModel::save`) and training checkpoints (`train::checkpoint`).
//!
//! Reading checks what a corrupt or hand-edited file can get wrong and the safetensors crate does
//! not: the element type must be one a tensor can hold (f32, f64, bf16), and every value must be
//! finite. A NaN or infinite weight would otherwise load fine and only show up as empty or
//! garbled translations.

use std::collections::HashMap;
use std::path::Path;

use half::bf16;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::{DType, Element, Tensor};
use crate::{Error, Result};

impl DType {
    /// The safetensors name of this element type.
    pub fn to_safetensors(self) -> Dtype {
        match self {
            DType::F32 => Dtype::F32,
            DType::F64 => Dtype::F64,
            DType::BF16 => Dtype::BF16,
        }
    }
}

impl Tensor {
    /// The elements in row-major order as little-endian bytes (what safetensors stores).
    pub fn to_le_bytes(&self) -> Result<Vec<u8>> {
        Ok(match self.dtype() {
            DType::F32 => self.to_vec::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
            DType::F64 => self.to_vec::<f64>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
            DType::BF16 => self.to_vec::<bf16>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    }
}

fn format_error(path: &Path, msg: String) -> Error {
    Error::Format { path: path.to_path_buf(), msg }
}

/// Serialises named tensors, with optional header metadata, to the bytes of a safetensors file
/// (`path` only names the file in errors).
pub fn serialize_safetensors(entries: &[(&str, &Tensor)], metadata: Option<HashMap<String, String>>, path: &Path) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = entries.iter().map(|(_, t)| t.to_le_bytes()).collect::<Result<_>>()?;
    let views = entries
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            TensorView::new(t.dtype().to_safetensors(), t.shape().to_vec(), b)
                .map(|v| (*name, v))
                .map_err(|e| format_error(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata).map_err(|e| format_error(path, e.to_string()))
}

/// Parses the bytes of the safetensors file `path`.
pub fn parse_safetensors<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| format_error(path, format!("not a valid safetensors file: {e}")))
}

/// The tensor stored as `name` in the file `path` (a CPU tensor of the stored element type), after
/// checking that the type is one a tensor holds and that every value is finite.
pub fn tensor_from_safetensors(view: &TensorView<'_>, name: &str, path: &Path) -> Result<Tensor> {
    let (shape, data) = (view.shape(), view.data());
    match view.dtype() {
        Dtype::F32 => finite_tensor(decode_le(data, f32::from_le_bytes), |x: &f32| x.is_finite(), shape, name, path),
        Dtype::F64 => finite_tensor(decode_le(data, f64::from_le_bytes), |x: &f64| x.is_finite(), shape, name, path),
        Dtype::BF16 => finite_tensor(decode_le(data, bf16::from_le_bytes), |x: &bf16| x.is_finite(), shape, name, path),
        other => Err(format_error(path, format!("tensor `{name}`: element type {other:?} is not supported (f32, f64 or bf16)"))),
    }
}

fn finite_tensor<T: Element + std::fmt::Display>(
    values: Vec<T>,
    is_finite: impl Fn(&T) -> bool,
    shape: &[usize],
    name: &str,
    path: &Path,
) -> Result<Tensor> {
    if let Some(i) = values.iter().position(|x| !is_finite(x)) {
        return Err(format_error(
            path,
            format!(
                "tensor `{name}`: element {i} of {} is {}; saved tensors must hold finite values (the file is corrupt, or was saved from a diverged run)",
                values.len(),
                values[i]
            ),
        ));
    }
    Tensor::from_vec(values, shape)
}

fn decode_le<const N: usize, T>(bytes: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from(a)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> Vec<(&'static str, Tensor)> {
        vec![
            ("a", Tensor::from_vec(vec![1.0f32, -2.5, 3.25, 4.0, 5.0, 6.5], &[3, 2]).unwrap()),
            ("b", Tensor::from_vec(vec![0.5f64, -0.125], &[2]).unwrap()),
            ("c", Tensor::from_vec(crate::tensor::f32_to_bf16(&[1.5, -3.0, 0.0]), &[1, 3]).unwrap()),
        ]
    }

    #[test]
    fn every_dtype_round_trips_bit_for_bit() {
        let t = tensors();
        let entries: Vec<(&str, &Tensor)> = t.iter().map(|(n, t)| (*n, t)).collect();
        let bytes = serialize_safetensors(&entries, None, Path::new("x.safetensors")).unwrap();
        let st = parse_safetensors(&bytes, Path::new("x.safetensors")).unwrap();
        for (name, want) in &t {
            let got = tensor_from_safetensors(&st.tensor(name).unwrap(), name, Path::new("x")).unwrap();
            assert_eq!(got.dtype(), want.dtype());
            assert_eq!(got.shape(), want.shape());
            assert_eq!(got.to_le_bytes().unwrap(), want.to_le_bytes().unwrap(), "{name}");
        }
    }

    #[test]
    fn non_finite_values_and_foreign_dtypes_are_named_errors() {
        let path = Path::new("m.safetensors");
        for (dtype, bytes) in [
            (Dtype::F32, [1.0f32, f32::NAN].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()),
            (Dtype::F64, [f64::INFINITY, 0.0].iter().flat_map(|x| x.to_le_bytes()).collect()),
            (Dtype::BF16, [bf16::from_f32(2.0), bf16::NEG_INFINITY].iter().flat_map(|x| x.to_le_bytes()).collect()),
        ] {
            let view = TensorView::new(dtype, vec![2], &bytes).unwrap();
            let msg = tensor_from_safetensors(&view, "enc.w", path).unwrap_err().to_string();
            let index = if dtype == Dtype::F64 { "element 0 of 2" } else { "element 1 of 2" };
            assert!(msg.contains("m.safetensors") && msg.contains("`enc.w`") && msg.contains(index), "{dtype:?}: {msg}");
        }
        let bytes = [0u8; 8];
        let view = TensorView::new(Dtype::I64, vec![1], &bytes).unwrap();
        let msg = tensor_from_safetensors(&view, "ids", path).unwrap_err().to_string();
        assert!(msg.contains("`ids`") && msg.contains("I64"), "{msg}");
        assert!(parse_safetensors(b"garbage", path).unwrap_err().to_string().contains("m.safetensors"));
    }
}
