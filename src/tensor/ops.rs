//! Tensor arithmetic: each op checks shapes, dispatches once on backend and dtype, and calls a
//! kernel in `crate::cpu`, or for CUDA tensors (a device or the emulator) to `crate::cuda::tensor`.

use std::sync::Arc;

use super::{view_data, CpuStorage, Element, Float, Layout, Storage, Tensor};
use crate::cpu;
use crate::{Error, Result};

/// Which keys a softmax row may not attend to.
#[derive(Clone, Debug, Default)]
pub struct MaskSpec {
    /// Hide keys after the query's own position (decoder self-attention).
    pub causal: bool,
    /// `[batch, tk]`, true where the key is padding.
    pub key_padding: Option<Arc<Vec<bool>>>,
}

/// Elementwise backward ops need the gradient in the shape of their input.
fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch { op, lhs: a.shape().to_vec(), rhs: b.shape().to_vec() });
    }
    Ok(())
}

fn bf16_arith(op: &'static str) -> Error {
    Error::invalid(op, "bf16 is a storage type on the CPU: convert with to_dtype(DType::F32) first")
}

/// Runs `$body` with `$v` bound to the tensor's row-major data and type alias `$T` to its element type.
macro_rules! float_op {
    ($op:expr, $t:expr, |$v:ident : $T:ident| $body:expr) => {
        match $t.cpu_storage($op)? {
            CpuStorage::F32(raw) => {
                #[allow(dead_code)]
                type $T = f32;
                let $v = view_data(raw, $t.layout());
                $body
            }
            CpuStorage::F64(raw) => {
                #[allow(dead_code)]
                type $T = f64;
                let $v = view_data(raw, $t.layout());
                $body
            }
            CpuStorage::BF16(_) => Err(bf16_arith($op)),
        }
    };
}

/// The same for two tensors of one dtype (raw storages and layouts are passed, not gathered).
macro_rules! float_op2 {
    ($op:expr, $a:expr, $b:expr, |$x:ident, $y:ident : $T:ident| $body:expr) => {
        match ($a.cpu_storage($op)?, $b.cpu_storage($op)?) {
            (CpuStorage::F32($x), CpuStorage::F32($y)) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            (CpuStorage::F64($x), CpuStorage::F64($y)) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            (CpuStorage::BF16(_), _) | (_, CpuStorage::BF16(_)) => Err(bf16_arith($op)),
            _ => Err(Error::DTypeMismatch { op: $op, expected: $a.dtype(), got: $b.dtype() }),
        }
    };
}

fn cpu_tensor<T: Element>(v: Vec<T>, shape: &[usize]) -> Tensor {
    Tensor::from_parts(Storage::Cpu(T::into_storage(v)), Layout::contiguous(shape))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

fn check_ids(op: &'static str, ids: &[u32], limit: usize) -> Result<()> {
    match ids.iter().find(|&&i| i as usize >= limit) {
        Some(&bad) => Err(Error::IndexOutOfRange { op, index: bad as usize, limit }),
        None => Ok(()),
    }
}

impl Tensor {
    /// Elementwise `self (op) other` with numpy broadcasting.
    pub fn binary(&self, other: &Tensor, op: BinaryOp) -> Result<Tensor> {
        let name = op.name();
        let shape = super::broadcast_shape(name, self.shape(), other.shape())?;
        if self.is_cuda() || other.is_cuda() {
            return crate::cuda::tensor::binary(self, other, op, &shape);
        }
        float_op2!(name, self, other, |x, y: T| {
            // One monomorphised loop per operator: a `match op` inside the element closure would
            // keep the loops from vectorising.
            let out = match op {
                BinaryOp::Add => self.binary_cpu(x, other, y, &shape, |a: T, b: T| a + b)?,
                BinaryOp::Sub => self.binary_cpu(x, other, y, &shape, |a: T, b: T| a - b)?,
                BinaryOp::Mul => self.binary_cpu(x, other, y, &shape, |a: T, b: T| a * b)?,
                BinaryOp::Div => self.binary_cpu(x, other, y, &shape, |a: T, b: T| a / b)?,
            };
            Ok(cpu_tensor(out, &shape))
        })
    }

    /// `f(self, other)` broadcast to `shape` on CPU data `x` (self's) and `y` (other's).
    fn binary_cpu<T: Float>(&self, x: &[T], other: &Tensor, y: &[T], shape: &[usize], f: impl Fn(T, T) -> T + Sync) -> Result<Vec<T>> {
        let trailing = other.shape().iter().skip_while(|&&d| d == 1).count();
        Ok(if self.shape() == other.shape() {
            cpu::elementwise::zip_map(&view_data(x, self.layout()), &view_data(y, other.layout()), f)
        } else if self.shape() == shape && other.shape()[other.rank() - trailing..] == shape[shape.len() - trailing..] {
            // `other` is a row repeated over the leading dims (bias-like): no broadcast copy.
            cpu::elementwise::zip_rows(&view_data(x, self.layout()), &view_data(y, other.layout()), f)
        } else {
            let xa = view_data(x, &self.layout().broadcast_to(shape)?).into_owned();
            let yb = view_data(y, &other.layout().broadcast_to(shape)?).into_owned();
            cpu::elementwise::zip_map(&xa, &yb, f)
        })
    }

    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Add)
    }
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Sub)
    }
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Mul)
    }
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, BinaryOp::Div)
    }

    /// `self * s`.
    pub fn scale(&self, s: f64) -> Result<Tensor> {
        if self.is_cuda() {
            return crate::cuda::tensor::scale(self, s);
        }
        float_op!("scale", self, |x: T| Ok(cpu_tensor(cpu::elementwise::map(&x, |v| v * T::of_f64(s)), self.shape())))
    }

    pub fn relu(&self) -> Result<Tensor> {
        if self.is_cuda() {
            return crate::cuda::tensor::relu(self);
        }
        float_op!("relu", self, |x: T| Ok(cpu_tensor(cpu::elementwise::map(&x, cpu::elementwise::relu), self.shape())))
    }

    /// `dy * [x > 0]`.
    pub fn relu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        same_shape("relu_backward", x, dy)?;
        if x.is_cuda() {
            return crate::cuda::tensor::relu_backward(x, dy);
        }
        float_op2!("relu_backward", x, dy, |a, b: T| {
            let out = cpu::elementwise::zip_map(&view_data(a, x.layout()), &view_data(b, dy.layout()), |v, g| {
                if v > T::of_f64(0.0) {
                    g
                } else {
                    T::of_f64(0.0)
                }
            });
            Ok(cpu_tensor(out, x.shape()))
        })
    }

    pub fn gelu(&self) -> Result<Tensor> {
        if self.is_cuda() {
            return crate::cuda::tensor::gelu(self);
        }
        float_op!("gelu", self, |x: T| Ok(cpu_tensor(cpu::elementwise::map(&x, cpu::elementwise::gelu), self.shape())))
    }

    pub fn gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        same_shape("gelu_backward", x, dy)?;
        if x.is_cuda() {
            return crate::cuda::tensor::gelu_backward(x, dy);
        }
        float_op2!("gelu_backward", x, dy, |a, b: T| {
            let out =
                cpu::elementwise::zip_map(&view_data(a, x.layout()), &view_data(b, dy.layout()), |v, g| cpu::elementwise::gelu_grad(v) * g);
            Ok(cpu_tensor(out, x.shape()))
        })
    }

    /// Sum of all elements as a 0-d tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        if self.is_cuda() {
            return crate::cuda::tensor::sum_all(self);
        }
        float_op!("sum_all", self, |x: T| Ok(cpu_tensor(vec![T::of_f64(cpu::elementwise::sum_all(&x))], &[])))
    }

    /// Sum of the squares of all elements, in f64 (bf16 is widened first; CUDA tensors are reduced
    /// on their device).
    pub fn sum_squares(&self) -> Result<f64> {
        if self.is_cuda() {
            return crate::cuda::tensor::sum_squares(self);
        }
        if self.dtype() == super::DType::BF16 {
            return Ok(self.to_f64_vec()?.iter().map(|x| x * x).sum());
        }
        float_op!("sum_squares", self, |x: T| Ok(cpu::elementwise::sum_squares(&x)))
    }

    /// Sums this tensor down to `shape`, which it must be a broadcast of.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        if super::broadcast_shape("sum_to", shape, self.shape())? != self.shape() {
            return Err(Error::ShapeMismatch { op: "sum_to", lhs: self.shape().to_vec(), rhs: shape.to_vec() });
        }
        let (from, to) = (self.shape().to_vec(), shape.to_vec());
        if self.is_cuda() {
            return crate::cuda::tensor::sum_to(self, &to);
        }
        float_op!("sum_to", self, |x: T| {
            let trailing = to.iter().skip_while(|&&d| d == 1).count();
            let out = if to[to.len() - trailing..] == from[from.len() - trailing..] && trailing > 0 {
                cpu::elementwise::sum_rows(&x, from[from.len() - trailing..].iter().product())
            } else {
                cpu::elementwise::sum_to(&x, &from, &to)
            };
            Ok(cpu_tensor(out, &to))
        })
    }

    /// `self @ other` for `[..., m, k] @ [..., k, n]`, batch dims broadcast. Views (transposes,
    /// front slices) are read in place.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        if self.is_cuda() || other.is_cuda() {
            return crate::cuda::tensor::matmul(self, other);
        }
        float_op2!("matmul", self, other, |a, b: T| {
            let (out, shape) = cpu::matmul::matmul(a, self.layout(), b, other.layout())?;
            Ok(cpu_tensor(out, &shape))
        })
    }

    /// Softmax over the last dimension with masks; see [`MaskSpec`].
    pub fn softmax(&self, mask: &MaskSpec) -> Result<Tensor> {
        let shape = self.shape().to_vec();
        let tk = *shape.last().ok_or_else(|| Error::invalid("softmax", "a 0-d tensor has no last dimension"))?;
        let tq = if shape.len() >= 2 { shape[shape.len() - 2] } else { 1 };
        let batch = if shape.len() >= 2 { shape[0] } else { 1 };
        let rows_per_batch = self.numel() / (tk * batch).max(1);
        if mask.causal && shape.len() < 2 {
            return Err(Error::invalid("softmax", "a causal mask needs [.., tq, tk] scores"));
        }
        if let Some(pad) = &mask.key_padding {
            if pad.len() != batch * tk {
                return Err(Error::ShapeMismatch { op: "softmax key padding", lhs: vec![batch, tk], rhs: vec![pad.len()] });
            }
        }
        if self.numel() == 0 {
            // No keys (or no rows): nothing to normalise, and the kernels' row chunks need tk > 0.
            return Tensor::zeros_on(&shape, self.dtype(), self.device());
        }
        if self.is_cuda() {
            return crate::cuda::tensor::softmax(self, mask, tk, tq, rows_per_batch);
        }
        float_op!("softmax", self, |x: T| Ok(cpu_tensor(cpu::softmax::softmax_fwd(&x, tk, tq, rows_per_batch, mask), &shape)))
    }

    /// Backward of softmax given its output `y`.
    pub fn softmax_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        same_shape("softmax_backward", y, dy)?;
        if y.numel() == 0 {
            return Tensor::zeros_on(y.shape(), y.dtype(), y.device());
        }
        if y.is_cuda() {
            return crate::cuda::tensor::softmax_backward(y, dy);
        }
        let tk = *y.shape().last().unwrap_or(&1);
        float_op2!("softmax_backward", y, dy, |a, b: T| {
            Ok(cpu_tensor(cpu::softmax::softmax_bwd(&view_data(a, y.layout()), &view_data(b, dy.layout()), tk), y.shape()))
        })
    }

    /// Layer norm over the last dimension. Returns `(y, mean, rstd)`; the last two are `[rows]`.
    pub fn layer_norm(&self, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
        let d = *self.shape().last().ok_or_else(|| Error::invalid("layer_norm", "a 0-d tensor has no last dimension"))?;
        if d == 0 {
            return Err(Error::invalid("layer_norm", format!("the last dimension of {:?} is empty: nothing to normalise", self.shape())));
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::invalid("layer_norm", format!("eps = {eps} must be finite and >= 0")));
        }
        for p in [gamma, beta] {
            if p.shape() != [d] {
                return Err(Error::ShapeMismatch { op: "layer_norm", lhs: self.shape().to_vec(), rhs: p.shape().to_vec() });
            }
        }
        if self.is_cuda() {
            return crate::cuda::tensor::layer_norm(self, gamma, beta, eps);
        }
        let rows = self.numel() / d.max(1);
        float_op2!("layer_norm", self, gamma, |xs, gs: T| {
            let (CpuStorage::F32(_) | CpuStorage::F64(_)) = beta.cpu_storage("layer_norm")? else { return Err(bf16_arith("layer_norm")) };
            let g = view_data(gs, gamma.layout());
            let b: Vec<T> = beta.to_f64_vec()?.into_iter().map(<T as Float>::of_f64).collect();
            let (y, st) = cpu::norm::layer_norm_fwd(&view_data(xs, self.layout()), &g, &b, d, eps);
            Ok((cpu_tensor(y, self.shape()), cpu_tensor(st.mean, &[rows]), cpu_tensor(st.rstd, &[rows])))
        })
    }

    /// Layer norm gradients `(dx, dgamma, dbeta)`.
    pub fn layer_norm_backward(x: &Tensor, gamma: &Tensor, mean: &Tensor, rstd: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        same_shape("layer_norm_backward", x, dy)?;
        let d = *x.shape().last().ok_or_else(|| Error::invalid("layer_norm_backward", "a 0-d tensor has no last dimension"))?;
        let rows = x.numel() / d.max(1);
        for (what, t, want) in [("gamma", gamma, d), ("mean", mean, rows), ("rstd", rstd, rows)] {
            if d == 0 || t.shape() != [want] {
                return Err(Error::invalid(
                    "layer_norm_backward",
                    format!("{what} has shape {:?}, x {:?} needs [{want}]", t.shape(), x.shape()),
                ));
            }
        }
        if x.is_cuda() {
            return crate::cuda::tensor::layer_norm_backward(x, gamma, mean, rstd, dy);
        }
        let d = gamma.numel();
        float_op2!("layer_norm_backward", x, dy, |xs, gs: T| {
            let conv = |t: &Tensor| -> Result<Vec<T>> { Ok(t.to_f64_vec()?.into_iter().map(<T as Float>::of_f64).collect()) };
            let stats = cpu::norm::LayerNormStats { mean: conv(mean)?, rstd: conv(rstd)? };
            let (dx, dg, db) = cpu::norm::layer_norm_bwd(&view_data(xs, x.layout()), &conv(gamma)?, &stats, &view_data(gs, dy.layout()), d);
            Ok((cpu_tensor(dx, x.shape()), cpu_tensor(dg, &[d]), cpu_tensor(db, &[d])))
        })
    }

    /// Rows of this `[vocab, d]` table picked by `ids`: shape `[ids.len(), d]`.
    pub fn embedding(&self, ids: &[u32]) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::invalid("embedding", format!("table must be [vocab, d], got {:?}", self.shape())));
        }
        let (vocab, d) = (self.shape()[0], self.shape()[1]);
        check_ids("embedding", ids, vocab)?;
        if self.is_cuda() {
            return crate::cuda::tensor::embedding(self, ids);
        }
        float_op!("embedding", self, |w: T| Ok(cpu_tensor(cpu::embedding::gather_rows(&w, ids, d), &[ids.len(), d])))
    }

    /// Gradient of an embedding table `[vocab, d]` from `dy: [ids.len(), d]`.
    pub fn embedding_backward(dy: &Tensor, ids: &[u32], vocab: usize) -> Result<Tensor> {
        let d = *dy.shape().last().ok_or_else(|| Error::invalid("embedding_backward", "a 0-d gradient has no row width"))?;
        if dy.numel() != ids.len() * d {
            return Err(Error::invalid("embedding_backward", format!("{} ids for a gradient of shape {:?}", ids.len(), dy.shape())));
        }
        check_ids("embedding_backward", ids, vocab)?;
        if dy.is_cuda() {
            return crate::cuda::tensor::embedding_backward(dy, ids, vocab);
        }
        float_op!("embedding_backward", dy, |g: T| Ok(cpu_tensor(cpu::embedding::scatter_add_rows(&g, ids, vocab, d), &[vocab, d])))
    }

    /// Label-smoothed cross-entropy totals of `[rows, vocab]` logits.
    pub fn cross_entropy_totals(&self, targets: &[u32], eps: f64, ignore: Option<u32>) -> Result<cpu::loss::CeTotals> {
        let v = self.ce_check(targets, ignore)?;
        if self.is_cuda() {
            return crate::cuda::tensor::cross_entropy_totals(self, targets, eps, ignore);
        }
        float_op!("cross_entropy", self, |x: T| Ok(cpu::loss::cross_entropy_fwd(&x, targets, v, eps, ignore)))
    }

    /// `scale * (softmax - q)` for each counted row.
    pub fn cross_entropy_backward(&self, targets: &[u32], eps: f64, ignore: Option<u32>, scale: f64) -> Result<Tensor> {
        let v = self.ce_check(targets, ignore)?;
        if self.is_cuda() {
            return crate::cuda::tensor::cross_entropy_backward(self, targets, eps, ignore, scale);
        }
        float_op!("cross_entropy_backward", self, |x: T| Ok(cpu_tensor(
            cpu::loss::cross_entropy_bwd(&x, targets, v, eps, ignore, scale),
            self.shape()
        )))
    }

    fn ce_check(&self, targets: &[u32], ignore: Option<u32>) -> Result<usize> {
        if self.rank() != 2 || self.shape()[0] != targets.len() {
            return Err(Error::ShapeMismatch { op: "cross_entropy", lhs: self.shape().to_vec(), rhs: vec![targets.len()] });
        }
        let v = self.shape()[1];
        // The ignored index may lie outside the vocabulary; every other target must not.
        if let Some(&bad) = targets.iter().find(|&&t| t as usize >= v && Some(t) != ignore) {
            return Err(Error::IndexOutOfRange { op: "cross_entropy target", index: bad as usize, limit: v });
        }
        Ok(v)
    }

    /// Adds `g` into the elements of this tensor selected by `view` (a layout over this tensor's
    /// contiguous storage), in place when this tensor's storage is not shared. The backward of
    /// narrow and front slices: the gradient of a view lands in its slice of the full gradient.
    pub fn add_into_view(&mut self, view: &Layout, g: &Tensor) -> Result<()> {
        if view.shape() != g.shape() {
            return Err(Error::ShapeMismatch { op: "add_into_view", lhs: view.shape().to_vec(), rhs: g.shape().to_vec() });
        }
        if self.is_cuda() {
            return crate::cuda::tensor::add_into_view(self, view, g);
        }
        if !self.layout.is_contiguous() || self.layout.offset() != 0 || view.storage_extent() > self.numel() {
            *self = self.contiguous_owned()?;
        }
        let storage = Arc::make_mut(&mut self.storage);
        let Storage::Cpu(cpu) = storage else { return Err(Error::Unsupported { op: "add_into_view", device: g.device() }) };
        match cpu {
            CpuStorage::F32(dst) => add_at(dst, view, &g.to_vec::<f32>()?),
            CpuStorage::F64(dst) => add_at(dst, view, &g.to_vec::<f64>()?),
            CpuStorage::BF16(_) => return Err(bf16_arith("add_into_view")),
        }
        Ok(())
    }

    /// A contiguous tensor with offset 0 that owns a storage of exactly its elements.
    pub(crate) fn contiguous_owned(&self) -> Result<Tensor> {
        if self.is_cuda() {
            return crate::cuda::tensor::copy_contiguous(self);
        }
        float_op!("contiguous", self, |x: T| Ok(cpu_tensor(x.into_owned(), self.shape())))
    }

    /// A 0/scale mask for inverted dropout with keep probability `1 - p`, from a counter-based
    /// hash of (seed, element index): the same seed gives the same mask on every backend.
    pub fn dropout_mask(shape: &[usize], p: f64, seed: u64, dtype: super::DType) -> Result<Tensor> {
        Self::dropout_mask_on(shape, p, seed, dtype, crate::Device::Cpu)
    }

    /// [`Tensor::dropout_mask`] drawn on `device` (the same mask on every backend).
    pub fn dropout_mask_on(shape: &[usize], p: f64, seed: u64, dtype: super::DType, device: crate::Device) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("dropout", format!("probability {p} is not in [0, 1)")));
        }
        if device.is_cuda() {
            return crate::cuda::tensor::dropout_mask(&crate::cuda::Gpu::of(device)?, shape, p, seed, dtype);
        }
        let n: usize = shape.iter().product();
        let keep_scale = 1.0 / (1.0 - p);
        let threshold = (p * (1u64 << 32) as f64) as u64;
        // Drawn straight in the element type (bf16 through f32, as the CUDA kernel rounds it).
        use cpu::elementwise::dropout_mask;
        match dtype {
            super::DType::F64 => Tensor::from_vec(dropout_mask(n, seed, threshold, keep_scale), shape),
            super::DType::F32 => Tensor::from_vec(dropout_mask(n, seed, threshold, keep_scale as f32), shape),
            super::DType::BF16 => Tensor::from_vec(dropout_mask(n, seed, threshold, keep_scale as f32), shape)?.to_dtype(dtype),
        }
    }
}

fn add_at<T: Float>(dst: &mut [T], view: &Layout, g: &[T]) {
    let mut i = 0;
    view.for_each_run(|start, stride, len| {
        for k in 0..len {
            dst[start + k * stride] = dst[start + k * stride] + g[i + k];
        }
        i += len;
    });
}
