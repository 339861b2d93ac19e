//! Forward methods of the tape: compute with the tensor ops, record what the backward needs.

use std::sync::Arc;

use super::tape::{Op, Tape, Var};
use crate::tensor::{BinaryOp, MaskSpec, Tensor};
use crate::{Error, Result};

/// What a loss op returns besides the recorded loss: totals for reporting.
#[derive(Clone, Copy, Debug)]
pub struct LossStats {
    /// Mean label-smoothed loss over counted tokens (the value of the loss var).
    pub loss: f64,
    /// Mean plain negative log-likelihood over counted tokens.
    pub nll: f64,
    /// Tokens counted (targets not equal to the ignored index).
    pub count: usize,
}

impl Tape {
    /// `a @ b` with batch broadcasting; transposed or sliced views are fine.
    pub fn matmul(&mut self, a: &Var, b: &Var) -> Result<Var> {
        let y = a.value.matmul(&b.value)?;
        Ok(self.record(y, &[a, b], || Op::Matmul { a: a.clone(), b: b.clone() }))
    }

    fn binary(&mut self, a: &Var, b: &Var, op: BinaryOp) -> Result<Var> {
        let y = a.value.binary(&b.value, op)?;
        Ok(self.record(y, &[a, b], || Op::Binary { op, a: a.clone(), b: b.clone() }))
    }

    pub fn add(&mut self, a: &Var, b: &Var) -> Result<Var> {
        self.binary(a, b, BinaryOp::Add)
    }
    pub fn sub(&mut self, a: &Var, b: &Var) -> Result<Var> {
        self.binary(a, b, BinaryOp::Sub)
    }
    pub fn mul(&mut self, a: &Var, b: &Var) -> Result<Var> {
        self.binary(a, b, BinaryOp::Mul)
    }
    /// `a / b`; a zero in `b` gives inf or NaN, as the IEEE division does.
    pub fn div(&mut self, a: &Var, b: &Var) -> Result<Var> {
        self.binary(a, b, BinaryOp::Div)
    }

    /// `x[.., n] + bias[n]`.
    pub fn add_bias(&mut self, x: &Var, bias: &Var) -> Result<Var> {
        let n = *x.shape().last().unwrap_or(&0);
        if bias.shape() != [n] {
            return Err(Error::ShapeMismatch { op: "add_bias", lhs: x.shape().to_vec(), rhs: bias.shape().to_vec() });
        }
        let y = x.value.add(&bias.value)?;
        Ok(self.record(y, &[x, bias], || Op::AddBias { x: x.id, bias: bias.id, n }))
    }

    /// `x W^T + b` for a weight stored `[out, in]` (PyTorch's convention); `b` optional.
    pub fn linear(&mut self, x: &Var, w: &Var, b: Option<&Var>) -> Result<Var> {
        let wt = self.transpose(w, 0, 1)?;
        let y = self.matmul(x, &wt)?;
        match b {
            Some(b) => self.add_bias(&y, b),
            None => Ok(y),
        }
    }

    pub fn scale(&mut self, x: &Var, s: f64) -> Result<Var> {
        let y = x.value.scale(s)?;
        Ok(match x.id {
            Some(id) => self.record(y, &[x], || Op::Scale { x: id, s }),
            None => self.constant(y),
        })
    }

    pub fn relu(&mut self, x: &Var) -> Result<Var> {
        let y = x.value.relu()?;
        Ok(self.record(y, &[x], || Op::Relu { x: x.clone() }))
    }

    pub fn gelu(&mut self, x: &Var) -> Result<Var> {
        let y = x.value.gelu()?;
        Ok(self.record(y, &[x], || Op::Gelu { x: x.clone() }))
    }

    /// Layer norm over the last dimension.
    pub fn layer_norm(&mut self, x: &Var, gamma: &Var, beta: &Var, eps: f64) -> Result<Var> {
        let (y, mean, rstd) = x.value.layer_norm(&gamma.value, &beta.value, eps)?;
        Ok(self.record(y, &[x, gamma, beta], || Op::LayerNorm { x: x.clone(), gamma: gamma.clone(), beta: beta.id, mean, rstd }))
    }

    /// Softmax over the last dimension, with optional causal / key-padding masks.
    pub fn softmax(&mut self, x: &Var, mask: &MaskSpec) -> Result<Var> {
        let y = x.value.softmax(mask)?;
        Ok(match x.id {
            Some(id) => {
                let saved = y.clone();
                self.record(y, &[x], || Op::Softmax { x: id, y: saved })
            }
            None => self.constant(y),
        })
    }

    /// Inverted dropout with drop probability `p`, reproducible from `seed`. `p == 0` is the identity.
    pub fn dropout(&mut self, x: &Var, p: f64, seed: u64) -> Result<Var> {
        if p == 0.0 {
            return Ok(x.clone());
        }
        let mask = Tensor::dropout_mask_on(x.shape(), p, seed, x.value.dtype(), x.value.device())?;
        let y = x.value.mul(&mask)?;
        Ok(match x.id {
            Some(id) => self.record(y, &[x], || Op::Dropout { x: id, mask }),
            None => self.constant(y),
        })
    }

    /// Rows of `table: [vocab, d]` picked by `ids`: `[ids.len(), d]`.
    pub fn embedding(&mut self, table: &Var, ids: &[u32]) -> Result<Var> {
        let y = table.value.embedding(ids)?;
        let vocab = table.shape()[0];
        Ok(match table.id {
            Some(id) => self.record(y, &[table], || Op::Embedding { table: id, ids: Arc::new(ids.to_vec()), vocab }),
            None => self.constant(y),
        })
    }

    /// Mean label-smoothed cross-entropy of `logits: [rows, vocab]` against `targets`, over the
    /// rows whose target is not `ignore`. Zero (with zero gradient) when every row is ignored.
    pub fn cross_entropy(&mut self, logits: &Var, targets: &[u32], eps: f64, ignore: Option<u32>) -> Result<(Var, LossStats)> {
        if !(0.0..1.0).contains(&eps) {
            return Err(Error::invalid("cross_entropy", format!("label smoothing {eps} is not in [0, 1)")));
        }
        let t = logits.value.cross_entropy_totals(targets, eps, ignore)?;
        let n = t.count.max(1) as f64;
        let stats = LossStats { loss: t.loss_sum / n, nll: t.nll_sum / n, count: t.count };
        let y = Tensor::full_on(&[], stats.loss, logits.value.dtype(), logits.value.device())?;
        let var = self.record(y, &[logits], || Op::CrossEntropy {
            logits: logits.clone(),
            targets: Arc::new(targets.to_vec()),
            eps,
            ignore,
            count: t.count,
        });
        Ok((var, stats))
    }

    /// Sum of every element (a 0-d result).
    pub fn sum(&mut self, x: &Var) -> Result<Var> {
        self.sum_to(x, &[])
    }

    /// Mean of every element (a 0-d result).
    pub fn mean(&mut self, x: &Var) -> Result<Var> {
        let n = x.value.numel().max(1) as f64;
        let s = self.sum(x)?;
        self.scale(&s, 1.0 / n)
    }

    /// Sums `x` down to `shape`, which `x`'s shape must be a broadcast of (e.g. `[T, E] -> [E]`).
    pub fn sum_to(&mut self, x: &Var, shape: &[usize]) -> Result<Var> {
        let y = if shape.is_empty() { x.value.sum_all()? } else { x.value.sum_to(shape)? };
        Ok(match x.id {
            Some(id) => self.record(y, &[x], || Op::SumTo { x: id, from: x.shape().to_vec() }),
            None => self.constant(y),
        })
    }

    /// Elements `start..start + len` along `dim`: a view, no copy.
    pub fn narrow(&mut self, x: &Var, dim: usize, start: usize, len: usize) -> Result<Var> {
        let y = x.value.narrow(dim, start, len)?;
        let mut starts = vec![0; x.value.rank()];
        starts[dim] = start;
        Ok(self.record_slice(x, y, starts))
    }

    /// The front slice `[..sizes[0], ..sizes[1], ..]`: a subnet's part of a supernet weight.
    /// A view; its gradient lands in the same slice of the full parameter's gradient.
    pub fn front_slice(&mut self, x: &Var, sizes: &[usize]) -> Result<Var> {
        if sizes == x.shape() {
            return Ok(x.clone());
        }
        let y = x.value.front_slice(sizes)?;
        Ok(self.record_slice(x, y, vec![0; sizes.len()]))
    }

    fn record_slice(&mut self, x: &Var, y: Tensor, starts: Vec<usize>) -> Var {
        match x.id {
            Some(id) => self.record(y, &[x], || Op::Slice { x: id, full: x.shape().to_vec(), starts }),
            None => self.constant(y),
        }
    }

    pub fn concat(&mut self, parts: &[&Var], dim: usize) -> Result<Var> {
        let values: Vec<&Tensor> = parts.iter().map(|p| &p.value).collect();
        let y = Tensor::concat(&values, dim)?;
        let spans = parts.iter().map(|p| (p.id, p.shape()[dim])).collect();
        Ok(self.record(y, parts, || Op::Concat { parts: spans, dim }))
    }

    /// Same elements, new shape (`usize::MAX` infers one dimension).
    pub fn reshape(&mut self, x: &Var, shape: &[usize]) -> Result<Var> {
        let y = x.value.reshape(shape)?;
        Ok(match x.id {
            Some(id) => self.record(y, &[x], || Op::Reshape { x: id, from: x.shape().to_vec() }),
            None => self.constant(y),
        })
    }

    /// A permuted view: output dim `i` is input dim `perm[i]`.
    pub fn permute(&mut self, x: &Var, perm: &[usize]) -> Result<Var> {
        let y = x.value.permute(perm)?;
        Ok(match x.id {
            Some(id) => self.record(y, &[x], || Op::Permute { x: id, perm: perm.to_vec() }),
            None => self.constant(y),
        })
    }

    pub fn transpose(&mut self, x: &Var, a: usize, b: usize) -> Result<Var> {
        let mut perm: Vec<usize> = (0..x.value.rank()).collect();
        if a >= perm.len() || b >= perm.len() {
            return Err(Error::DimOutOfRange { op: "transpose", dim: a.max(b), rank: perm.len() });
        }
        perm.swap(a, b);
        self.permute(x, &perm)
    }
}
