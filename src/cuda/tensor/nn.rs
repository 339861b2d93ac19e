//! Layer norm, masked softmax, embedding and cross-entropy on CUDA tensors: shape checks live in
//! `src/tensor/ops.rs` (shared with the CPU); here only the buffers are prepared and the
//! launchers of `super::super::ops` called.

use super::super::moe_exec::Exec;
pub use super::super::ops::decode::RowTopLogits;
use super::super::ops::{decode, embedding as emb, loss, norm, softmax as sm};
use super::{by_dtype, same_gpu, storage, tensor_of, whole_buf, GpuElem};
use crate::cpu::loss::CeTotals;
use crate::tensor::{MaskSpec, Tensor};
use crate::Result;

/// Layer norm over the last dimension: `(y, mean, rstd)`, the statistics in f32.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layer_norm";
    let gpu = same_gpu(OP, &[x, gamma, beta])?;
    let d = gamma.numel();
    let rows = x.numel() / d.max(1);
    by_dtype!(OP, x.dtype(), T => {
        let out = norm::layer_norm_fwd::<T>(&gpu, &*whole_buf::<T>(OP, x)?, &*whole_buf::<T>(OP, gamma)?, &*whole_buf::<T>(OP, beta)?, rows, d, eps as f32)?;
        Ok((tensor_of(&gpu, out.y, x.shape()), tensor_of(&gpu, out.mean, &[rows]), tensor_of(&gpu, out.rstd, &[rows])))
    })
}

/// `(dx, dgamma, dbeta)` from the statistics the forward saved.
pub fn layer_norm_backward(x: &Tensor, gamma: &Tensor, mean: &Tensor, rstd: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layer_norm_backward";
    let gpu = same_gpu(OP, &[x, gamma, dy])?;
    let d = gamma.numel();
    let rows = x.numel() / d.max(1);
    let (mean, rstd) = (whole_buf::<f32>(OP, mean)?, whole_buf::<f32>(OP, rstd)?);
    by_dtype!(OP, x.dtype(), T => {
        let out = norm::layer_norm_bwd::<T>(&gpu, &*whole_buf::<T>(OP, x)?, &*whole_buf::<T>(OP, gamma)?, &mean, &rstd, &*whole_buf::<T>(OP, dy)?, rows, d)?;
        Ok((tensor_of(&gpu, out.dx, x.shape()), tensor_of(&gpu, out.dgamma, &[d]), tensor_of(&gpu, out.dbeta, &[d])))
    })
}

/// Masked softmax over the last dimension (the caller checked shapes and the mask's length).
pub fn softmax(x: &Tensor, mask: &MaskSpec, tk: usize, tq: usize, rows_per_batch: usize) -> Result<Tensor> {
    const OP: &str = "softmax";
    let gpu = storage(OP, x)?.gpu().clone();
    let rows = x.numel() / tk.max(1);
    let pad = match &mask.key_padding {
        Some(p) => Some(gpu.upload(&p.iter().map(|&b| b as u8).collect::<Vec<u8>>())?),
        None => None,
    };
    by_dtype!(OP, x.dtype(), T => {
        let y = sm::softmax_fwd::<T>(&gpu, &*whole_buf::<T>(OP, x)?, rows, tk, tq, rows_per_batch, mask.causal, pad.as_ref())?;
        Ok(tensor_of(&gpu, y, x.shape()))
    })
}

pub fn softmax_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax_backward";
    let gpu = same_gpu(OP, &[y, dy])?;
    let tk = *y.shape().last().unwrap_or(&1);
    let rows = y.numel() / tk.max(1);
    by_dtype!(OP, y.dtype(), T => {
        let dx = sm::softmax_bwd::<T>(&gpu, &*whole_buf::<T>(OP, y)?, &*whole_buf::<T>(OP, dy)?, rows, tk)?;
        Ok(tensor_of(&gpu, dx, y.shape()))
    })
}

/// Rows of a `[vocab, d]` table (a front slice of a wider table is read in place).
pub fn embedding(table: &Tensor, ids: &[u32]) -> Result<Tensor> {
    const OP: &str = "embedding";
    let s = storage(OP, table)?;
    let gpu = s.gpu().clone();
    let (vocab, d) = (table.shape()[0], table.shape()[1]);
    let l = table.layout();
    // Rows must be unit-stride inside; anything else (a transposed table) is copied first.
    let c;
    let (t, ld) = if l.strides()[1] == 1 || d <= 1 {
        (table, if vocab > 1 { l.strides()[0] } else { d })
    } else {
        c = super::copy_contiguous(table)?;
        (&c, d)
    };
    let s = storage(OP, t)?;
    by_dtype!(OP, t.dtype(), T => {
        let buf = T::buf_of_storage(s)?;
        let out = emb::embedding_fwd::<T>(&gpu, &*buf, t.layout().offset(), ld, vocab, d, ids)?;
        Ok(tensor_of(&gpu, out, &[ids.len(), d]))
    })
}

/// `[vocab, d]` gradient of a table from `dy: [ids.len(), d]`, summed per id in a fixed order.
pub fn embedding_backward(dy: &Tensor, ids: &[u32], vocab: usize) -> Result<Tensor> {
    const OP: &str = "embedding_backward";
    let gpu = storage(OP, dy)?.gpu().clone();
    let d = *dy.shape().last().unwrap_or(&0);
    by_dtype!(OP, dy.dtype(), T => {
        let out = emb::embedding_bwd::<T>(&gpu, &*whole_buf::<T>(OP, dy)?, ids, vocab, d)?;
        Ok(tensor_of(&gpu, out, &[vocab, d]))
    })
}

/// Label-smoothed cross-entropy totals (per-row values summed on the host in f64, in row order).
pub fn cross_entropy_totals(logits: &Tensor, targets: &[u32], eps: f64, ignore: Option<u32>) -> Result<CeTotals> {
    const OP: &str = "cross_entropy";
    let gpu = storage(OP, logits)?.gpu().clone();
    let (rows, v) = (logits.shape()[0], logits.shape()[1]);
    let r = by_dtype!(OP, logits.dtype(), T => loss::cross_entropy_fwd::<T>(&gpu, &*whole_buf::<T>(OP, logits)?, targets, rows, v, eps as f32, ignore))?;
    let (l, n) = (gpu.download(&r.loss)?, gpu.download(&r.nll)?);
    let count = targets.iter().filter(|&&t| Some(t) != ignore).count();
    Ok(CeTotals { loss_sum: l.iter().map(|&x| x as f64).sum(), nll_sum: n.iter().map(|&x| x as f64).sum(), count })
}

/// `scale * (softmax - q)` for each counted row.
pub fn cross_entropy_backward(logits: &Tensor, targets: &[u32], eps: f64, ignore: Option<u32>, scale: f64) -> Result<Tensor> {
    const OP: &str = "cross_entropy_backward";
    let gpu = storage(OP, logits)?.gpu().clone();
    let (rows, v) = (logits.shape()[0], logits.shape()[1]);
    by_dtype!(OP, logits.dtype(), T => {
        let d = loss::cross_entropy_bwd::<T>(&gpu, &*whole_buf::<T>(OP, logits)?, targets, rows, v, eps as f32, ignore, scale as f32)?;
        Ok(tensor_of(&gpu, d, logits.shape()))
    })
}

/// A beam-search step's candidates of `logits: [rows, v]` (`src/decode/candidates.rs`): each row's
/// log-sum-exp and its `n` (at most 64) largest permitted logits, selected on the device.
pub fn row_top_logits(logits: &Tensor, n: usize, allowed: &[i32]) -> Result<RowTopLogits> {
    const OP: &str = "row_top_logits";
    let gpu = storage(OP, logits)?.gpu().clone();
    let (rows, v) = match logits.shape() {
        [r, v] => (*r, *v),
        s => return Err(crate::Error::invalid(OP, format!("expects [rows, vocab] logits, got {s:?}"))),
    };
    by_dtype!(OP, logits.dtype(), T => decode::row_top::<T>(&gpu, &*whole_buf::<T>(OP, logits)?, rows, v, n, allowed))
}
