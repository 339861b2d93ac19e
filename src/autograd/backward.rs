//! The reverse pass: one match arm per op, each turning the output gradient `g` into gradients of
//! the op's inputs (accumulated, since a value may feed several ops).

use super::tape::{accumulate, Node, Op};
use crate::moe;
use crate::tensor::{BinaryOp, Layout, Tensor};
use crate::{Error, Result};

pub(crate) fn backward_node(node: &Node, g: &Tensor, grads: &mut [Option<Tensor>]) -> Result<()> {
    if g.shape() != node.shape.as_slice() {
        return Err(Error::ShapeMismatch { op: node.op.name(), lhs: node.shape.clone(), rhs: g.shape().to_vec() });
    }
    match &node.op {
        Op::Leaf { .. } => {}
        Op::Matmul { a, b } => {
            let (av, bv) = (&a.value, &b.value);
            if a.id.is_some() {
                let da = g.matmul(&bv.t()?)?.sum_to(av.shape())?;
                accumulate(grads, a.id, da)?;
            }
            if b.id.is_some() {
                let db = if bv.rank() == 2 && av.rank() > 2 {
                    // One tall product instead of a batch of small ones summed afterwards.
                    let k = av.shape()[av.rank() - 1];
                    let n = g.shape()[g.rank() - 1];
                    av.reshape(&[usize::MAX, k])?.t()?.matmul(&g.reshape(&[usize::MAX, n])?)?
                } else {
                    av.t()?.matmul(g)?.sum_to(bv.shape())?
                };
                accumulate(grads, b.id, db)?;
            }
        }
        Op::Binary { op, a, b } => {
            let (ga, gb) = match op {
                BinaryOp::Add => (g.clone(), g.clone()),
                BinaryOp::Sub => (g.clone(), g.scale(-1.0)?),
                BinaryOp::Mul => (g.mul(&b.value)?, g.mul(&a.value)?),
                BinaryOp::Div => {
                    let ga = g.div(&b.value)?;
                    let gb = ga.mul(&a.value)?.div(&b.value)?.scale(-1.0)?;
                    (ga, gb)
                }
            };
            if a.id.is_some() {
                accumulate(grads, a.id, ga.sum_to(a.value.shape())?)?;
            }
            if b.id.is_some() {
                accumulate(grads, b.id, gb.sum_to(b.value.shape())?)?;
            }
        }
        Op::AddBias { x, bias, n } => {
            accumulate(grads, *x, g.clone())?;
            if bias.is_some() {
                accumulate(grads, *bias, g.sum_to(&[*n])?)?;
            }
        }
        Op::Scale { x, s } => accumulate(grads, Some(*x), g.scale(*s)?)?,
        Op::Relu { x } => accumulate(grads, x.id, Tensor::relu_backward(&x.value, g)?)?,
        Op::Gelu { x } => accumulate(grads, x.id, Tensor::gelu_backward(&x.value, g)?)?,
        Op::LayerNorm { x, gamma, beta, mean, rstd } => {
            let (dx, dgamma, dbeta) = Tensor::layer_norm_backward(&x.value, &gamma.value, mean, rstd, g)?;
            accumulate(grads, x.id, dx)?;
            accumulate(grads, gamma.id, dgamma)?;
            accumulate(grads, *beta, dbeta)?;
        }
        Op::Softmax { x, y } => accumulate(grads, Some(*x), Tensor::softmax_backward(y, g)?)?,
        Op::Dropout { x, mask } => accumulate(grads, Some(*x), g.mul(mask)?)?,
        Op::Embedding { table, ids, vocab } => accumulate(grads, Some(*table), Tensor::embedding_backward(g, ids, *vocab)?)?,
        Op::CrossEntropy { logits, targets, eps, ignore, count } => {
            let scale = g.to_scalar()? / (*count).max(1) as f64;
            accumulate(grads, logits.id, logits.value.cross_entropy_backward(targets, *eps, *ignore, scale)?)?;
        }
        Op::SumTo { x, from } => accumulate(grads, Some(*x), g.broadcast_to(from)?)?,
        Op::Slice { x, full, starts } => {
            // Add the slice's gradient in place into the full-shape gradient of x.
            let mut view = Layout::contiguous(full);
            for (d, (&s, &len)) in starts.iter().zip(g.shape()).enumerate() {
                view = view.narrow(d, s, len)?;
            }
            let mut acc = match grads[*x].take() {
                Some(t) => t,
                None => Tensor::zeros_on(full, g.dtype(), g.device())?,
            };
            acc.add_into_view(&view, g)?;
            grads[*x] = Some(acc);
        }
        Op::Concat { parts, dim } => {
            let mut start = 0;
            for &(id, len) in parts {
                if id.is_some() {
                    accumulate(grads, id, g.narrow(*dim, start, len)?)?;
                }
                start += len;
            }
        }
        Op::Reshape { x, from } => accumulate(grads, Some(*x), g.reshape(from)?)?,
        Op::Permute { x, perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            accumulate(grads, Some(*x), g.permute(&inv)?)?;
        }
        Op::Cast { x, from } => accumulate(grads, Some(*x), g.to_dtype(*from)?)?,
        Op::TopK { probs, probs_value, idx, gates, k, renormalize } => {
            accumulate(grads, Some(*probs), moe::ops::topk_backward(probs_value, idx, gates, g, *k, *renormalize)?)?;
        }
        Op::MoePermute { x, d, routing } => accumulate(grads, Some(*x), moe::ops::permute_backward(g, *d, routing)?)?,
        Op::MoeCombine { yp, gates, routing } => {
            let (dyp, dgates) = moe::ops::combine_backward(&yp.value, &gates.value, g, routing)?;
            accumulate(grads, yp.id, dyp)?;
            accumulate(grads, gates.id, dgates)?;
        }
        Op::GroupedFfn { xp, experts, segments, act, z } => {
            let (dx, dws) = moe::ops::grouped_ffn_backward(&xp.value, experts, segments, *act, z, g)?;
            accumulate(grads, xp.id, dx)?;
            for (ev, dw) in experts.iter().zip(dws) {
                if let Some([w1, b1, w2, b2]) = dw {
                    accumulate(grads, ev.w1.id, w1)?;
                    accumulate(grads, ev.b1.id, b1)?;
                    accumulate(grads, ev.w2.id, w2)?;
                    accumulate(grads, ev.b2.id, b2)?;
                }
            }
        }
    }
    Ok(())
}
