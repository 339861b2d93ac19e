//! The MoE pieces as fused tape ops: top-k gating, permute, grouped expert FFN and combine, each
//! one node with a paired forward and backward kernel.

use std::sync::Arc;

use super::dispatch::Dispatch;
use super::experts::{grouped_ffn_bwd, grouped_ffn_fwd, Activation, ExpertWeights};
use super::routing::{ExpertIds, MoeRouting, Segments};
use super::{gating, permute};
use crate::autograd::{Op, Tape, Var};
use crate::cpu::matmul::MatView;
use crate::tensor::{Element, Float, Layout, Tensor};
use crate::{DType, Error, Result};

/// One expert's weights on the tape, already sliced to the subnet: `w1 [h, d]`, `b1 [h]`,
/// `w2 [d, h]`, `b2 [d]` (front-slice views of the max-size parameters).
#[derive(Clone, Debug)]
pub struct ExpertVars {
    pub w1: Var,
    pub b1: Var,
    pub w2: Var,
    pub b2: Var,
}

/// The gates of one gating call.
#[derive(Clone, Debug)]
pub struct Gating {
    /// `[T, k]`: the gate of each token's chosen experts.
    pub gates: Var,
    /// `[T * k]`: the chosen experts, by descending probability (ties to the lower index); left
    /// on the device for CUDA probabilities.
    pub idx: ExpertIds,
}

fn tensor<T: Element>(v: Vec<T>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(v, shape)
}

fn bf16_unsupported(op: &'static str) -> Error {
    Error::invalid(op, "bf16 is a storage type on the CPU: convert with to_dtype(DType::F32) first")
}

/// Calls `$f::<T>` for the dtype of `$t` (f32 or f64).
macro_rules! by_dtype {
    ($op:expr, $t:expr, $f:ident ( $($arg:expr),* )) => {
        match $t.dtype() {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            DType::BF16 => Err(bf16_unsupported($op)),
        }
    };
}

impl Tape {
    /// Top-k gating of router probabilities `probs: [T, E]` (the softmax of the router logits).
    /// `k` larger than `E` is an error.
    pub fn topk_gating(&mut self, probs: &Var, k: usize, renormalize: bool) -> Result<Gating> {
        let [_, e] = probs.shape() else {
            return Err(Error::invalid("topk_gating", format!("probabilities must be [tokens, experts], got {:?}", probs.shape())));
        };
        let e = *e;
        if k == 0 || k > e {
            return Err(Error::invalid("topk_gating", format!("k = {k} experts per token, but the layer has {e} experts")));
        }
        fn run<T: Float + Element>(p: &Tensor, e: usize, k: usize, renorm: bool) -> Result<(Vec<u32>, Tensor)> {
            let (idx, w) = gating::topk_fwd(&p.cpu_data::<T>("topk_gating")?, e, k, renorm);
            Ok((idx, tensor(w, &[p.shape()[0], k])?))
        }
        let (idx, gates) = if probs.value().is_cuda() {
            let (ids, gates) = crate::cuda::tensor::topk_select(probs.value(), k, renormalize)?;
            (ExpertIds::Device(Arc::new(ids)), gates)
        } else {
            let (ids, gates) = by_dtype!("topk_gating", probs.value(), run(probs.value(), e, k, renormalize))?;
            (ExpertIds::Host(Arc::new(ids)), gates)
        };
        let var = match probs.node() {
            Some(id) => {
                let (pv, saved, ix) = (probs.value().clone(), gates.clone(), idx.clone());
                self.record(gates, &[probs], || Op::TopK { probs: id, probs_value: pv, idx: ix, gates: saved, k, renormalize })
            }
            None => self.constant(gates),
        };
        Ok(Gating { gates: var, idx })
    }

    /// Gathers the rows of `x: [T, d]` into expert-contiguous order: `[routing.rows(), d]`.
    pub fn moe_permute(&mut self, x: &Var, routing: impl Into<MoeRouting>) -> Result<Var> {
        let routing = routing.into();
        let [t, d] = x.shape() else {
            return Err(Error::invalid("moe_permute", format!("input must be [tokens, d], got {:?}", x.shape())));
        };
        let (t, d) = (*t, *d);
        if t != routing.tokens() {
            return Err(Error::ShapeMismatch { op: "moe_permute", lhs: x.shape().to_vec(), rhs: vec![routing.tokens()] });
        }
        fn run<T: Float + Element>(x: &Tensor, d: usize, dis: &Dispatch) -> Result<Tensor> {
            tensor(permute::permute_fwd(&x.cpu_data::<T>("moe_permute")?, d, dis), &[dis.rows(), d])
        }
        let y = if x.value().is_cuda() {
            crate::cuda::tensor::moe_permute(x.value(), &routing)?
        } else {
            by_dtype!("moe_permute", x.value(), run(x.value(), d, routing.host("moe_permute")?))?
        };
        Ok(match x.node() {
            Some(id) => self.record(y, &[x], || Op::MoePermute { x: id, d, routing }),
            None => self.constant(y),
        })
    }

    /// `y[t] = sum_s gates[t, s] * yp[pos[t, s]]`: `yp: [rows, d]`, `gates: [T, k]` to `[T, d]`.
    pub fn moe_combine(&mut self, yp: &Var, gates: &Var, routing: impl Into<MoeRouting>) -> Result<Var> {
        let routing = routing.into();
        let d = yp.shape().get(1).copied().unwrap_or(0);
        if yp.shape() != [routing.rows(), d] || gates.shape() != [routing.tokens(), routing.k()] {
            return Err(Error::ShapeMismatch { op: "moe_combine", lhs: yp.shape().to_vec(), rhs: gates.shape().to_vec() });
        }
        fn run<T: Float + Element>(yp: &Tensor, w: &Tensor, d: usize, dis: &Dispatch) -> Result<Tensor> {
            let y = permute::combine_fwd(&yp.cpu_data::<T>("moe_combine")?, &w.cpu_data::<T>("moe_combine")?, d, dis);
            tensor(y, &[dis.tokens, d])
        }
        let y = if yp.value().is_cuda() {
            crate::cuda::tensor::moe_combine(yp.value(), gates.value(), &routing)?
        } else {
            by_dtype!("moe_combine", yp.value(), run(yp.value(), gates.value(), d, routing.host("moe_combine")?))?
        };
        Ok(self.record(y, &[yp, gates], || Op::MoeCombine { yp: yp.clone(), gates: gates.clone(), routing }))
    }

    /// Every expert's FFN on its segment of `xp: [rows, d]` (segments given by `offsets [E + 1]`).
    pub fn grouped_ffn(&mut self, xp: &Var, experts: &[ExpertVars], offsets: &[usize], act: Activation) -> Result<Var> {
        self.grouped_ffn_segments(xp, experts, offsets.into(), act)
    }

    /// [`Tape::grouped_ffn`] with the segments of a routing (on the device for a device routing).
    pub fn grouped_ffn_segments(&mut self, xp: &Var, experts: &[ExpertVars], segments: Segments, act: Activation) -> Result<Var> {
        let d = check_grouped(xp, experts, &segments)?;
        let mut inputs: Vec<&Var> = vec![xp];
        for e in experts {
            inputs.extend([&e.w1, &e.b1, &e.w2, &e.b2]);
        }
        let save = self.will_record(&inputs);
        fn run<T: Float + Element>(
            xp: &Tensor,
            ex: &[ExpertVars],
            offsets: &[usize],
            d: usize,
            act: Activation,
            save: bool,
        ) -> Result<(Tensor, Vec<Tensor>)> {
            let views = expert_views::<T>(ex)?;
            let (y, z) = grouped_ffn_fwd(&xp.cpu_data::<T>("grouped_ffn")?, d, offsets, &views, act, save);
            let zs = if !save {
                Vec::new()
            } else {
                z.into_iter()
                    .zip(ex)
                    .enumerate()
                    .map(|(e, (z, v))| tensor(z, &[offsets[e + 1] - offsets[e], v.w1.shape()[0]]))
                    .collect::<Result<_>>()?
            };
            Ok((tensor(y, &[offsets[ex.len()], d])?, zs))
        }
        // On a CUDA backend `z` holds the saved hidden activations of the grouped GEMMs instead of
        // the per-expert pre-activations (see `crate::cuda::tensor::grouped_ffn`).
        let (y, z) = if xp.value().is_cuda() {
            crate::cuda::tensor::grouped_ffn(xp.value(), experts, &segments, act)?
        } else {
            by_dtype!("grouped_ffn", xp.value(), run(xp.value(), experts, segments.host("grouped_ffn")?, d, act, save))?
        };
        Ok(self.record(y, &inputs, || Op::GroupedFfn { xp: xp.clone(), experts: experts.to_vec(), segments, act, z }))
    }
}

/// Validates the shapes of a grouped FFN call; returns `d`.
fn check_grouped(xp: &Var, experts: &[ExpertVars], segments: &Segments) -> Result<usize> {
    let [rows, d] = xp.shape() else { return Err(Error::invalid("grouped_ffn", format!("input must be [rows, d], got {:?}", xp.shape()))) };
    let (rows, d) = (*rows, *d);
    match segments {
        Segments::Host(offsets) => {
            if offsets.len() != experts.len() + 1
                || offsets.windows(2).any(|w| w[0] > w[1])
                || offsets.first() != Some(&0)
                || offsets.last() != Some(&rows)
            {
                return Err(Error::invalid(
                    "grouped_ffn",
                    format!("offsets {offsets:?} do not split {rows} rows among {} experts", experts.len()),
                ));
            }
        }
        // Built by the dispatch kernels over exactly these rows; only the sizes can disagree.
        Segments::Device(dis) => {
            if dis.experts() != experts.len() || dis.rows() != rows {
                return Err(Error::invalid(
                    "grouped_ffn",
                    format!(
                        "a routing of {} rows among {} experts given {rows} rows and {} experts",
                        dis.rows(),
                        dis.experts(),
                        experts.len()
                    ),
                ));
            }
        }
    }
    for (e, v) in experts.iter().enumerate() {
        let h = v.w1.shape().first().copied().unwrap_or(0);
        if h == 0 || v.w1.shape() != [h, d] || v.b1.shape() != [h] || v.w2.shape() != [d, h] || v.b2.shape() != [d] {
            return Err(Error::invalid(
                "grouped_ffn",
                format!(
                    "expert {e}: weights {:?}, {:?}, {:?}, {:?} do not fit width {h} and d = {d}",
                    v.w1.shape(),
                    v.b1.shape(),
                    v.w2.shape(),
                    v.b2.shape()
                ),
            ));
        }
    }
    Ok(d)
}

fn mat_view(l: &Layout) -> MatView {
    MatView { offset: l.offset(), rs: l.strides()[0], cs: l.strides()[1] }
}

/// A 1-d vector as a contiguous slice (front slices of contiguous biases are).
fn vector<'a, T: Element>(t: &'a Tensor, op: &'static str) -> Result<&'a [T]> {
    let (data, l) = t.cpu_raw::<T>(op)?;
    if l.rank() != 1 || (l.shape()[0] > 1 && l.strides()[0] != 1) {
        return Err(Error::invalid(op, format!("bias must be a contiguous vector, got shape {:?} strides {:?}", l.shape(), l.strides())));
    }
    Ok(&data[l.offset()..l.offset() + l.shape()[0]])
}

fn expert_views<T: Float + Element>(ex: &[ExpertVars]) -> Result<Vec<ExpertWeights<'_, T>>> {
    ex.iter()
        .map(|v| {
            let (w1, l1) = v.w1.value().cpu_raw::<T>("grouped_ffn")?;
            let (w2, l2) = v.w2.value().cpu_raw::<T>("grouped_ffn")?;
            Ok(ExpertWeights {
                w1,
                w1v: mat_view(l1),
                b1: vector(v.b1.value(), "grouped_ffn")?,
                w2,
                w2v: mat_view(l2),
                b2: vector(v.b2.value(), "grouped_ffn")?,
                h: l1.shape()[0],
            })
        })
        .collect()
}

pub(crate) fn topk_backward(probs: &Tensor, idx: &ExpertIds, gates: &Tensor, g: &Tensor, k: usize, renorm: bool) -> Result<Tensor> {
    fn run<T: Float + Element>(p: &Tensor, idx: &[u32], w: &Tensor, g: &Tensor, k: usize, renorm: bool) -> Result<Tensor> {
        let e = p.shape()[1];
        let op = "topk_gating backward";
        let dp = gating::topk_bwd(&p.cpu_data::<T>(op)?, idx, &w.cpu_data::<T>(op)?, &g.cpu_data::<T>(op)?, e, k, renorm);
        tensor(dp, p.shape())
    }
    match idx {
        ExpertIds::Device(ids) => crate::cuda::tensor::topk_select_backward(probs, ids, gates, g, renorm),
        ExpertIds::Host(_) if probs.is_cuda() => {
            Err(Error::invalid("topk_gating backward", "CUDA probabilities with experts chosen on the host"))
        }
        ExpertIds::Host(idx) => by_dtype!("topk_gating backward", probs, run(probs, idx, gates, g, k, renorm)),
    }
}

pub(crate) fn permute_backward(g: &Tensor, d: usize, routing: &MoeRouting) -> Result<Tensor> {
    fn run<T: Float + Element>(g: &Tensor, d: usize, dis: &Dispatch) -> Result<Tensor> {
        tensor(permute::permute_bwd(&g.cpu_data::<T>("moe_permute backward")?, d, dis), &[dis.tokens, d])
    }
    if g.is_cuda() {
        return crate::cuda::tensor::permute_backward(g, d, routing);
    }
    by_dtype!("moe_permute backward", g, run(g, d, routing.host("moe_permute backward")?))
}

pub(crate) fn combine_backward(yp: &Tensor, gates: &Tensor, g: &Tensor, routing: &MoeRouting) -> Result<(Tensor, Tensor)> {
    fn run<T: Float + Element>(yp: &Tensor, w: &Tensor, g: &Tensor, dis: &Dispatch) -> Result<(Tensor, Tensor)> {
        let op = "moe_combine backward";
        let d = yp.shape()[1];
        let (dyp, dw) = permute::combine_bwd(&yp.cpu_data::<T>(op)?, &w.cpu_data::<T>(op)?, &g.cpu_data::<T>(op)?, d, dis);
        Ok((tensor(dyp, yp.shape())?, tensor(dw, w.shape())?))
    }
    if yp.is_cuda() {
        return crate::cuda::tensor::combine_backward(yp, gates, g, routing);
    }
    by_dtype!("moe_combine backward", yp, run(yp, gates, g, routing.host("moe_combine backward")?))
}

/// `(dx, per expert [dW1, db1, dW2, db2] or None when it received no rows)`.
#[allow(clippy::type_complexity)]
pub(crate) fn grouped_ffn_backward(
    xp: &Tensor,
    experts: &[ExpertVars],
    segments: &Segments,
    act: Activation,
    z: &[Tensor],
    g: &Tensor,
) -> Result<(Tensor, Vec<Option<[Tensor; 4]>>)> {
    fn run<T: Float + Element>(
        xp: &Tensor,
        ex: &[ExpertVars],
        offsets: &[usize],
        act: Activation,
        z: &[Tensor],
        g: &Tensor,
    ) -> Result<(Tensor, Vec<Option<[Tensor; 4]>>)> {
        let op = "grouped_ffn backward";
        let d = xp.shape()[1];
        let views = expert_views::<T>(ex)?;
        let zs: Vec<Vec<T>> = z.iter().map(|t| t.to_vec::<T>()).collect::<Result<_>>()?;
        let (dx, grads) = grouped_ffn_bwd(&xp.cpu_data::<T>(op)?, &g.cpu_data::<T>(op)?, d, offsets, &views, &zs, act);
        let per_expert = grads
            .into_iter()
            .zip(ex)
            .map(|(gr, v)| match gr {
                None => Ok(None),
                Some(gr) => {
                    let h = v.w1.shape()[0];
                    Ok(Some([tensor(gr.w1, &[h, d])?, tensor(gr.b1, &[h])?, tensor(gr.w2, &[d, h])?, tensor(gr.b2, &[d])?]))
                }
            })
            .collect::<Result<_>>()?;
        Ok((tensor(dx, xp.shape())?, per_expert))
    }
    if xp.is_cuda() {
        return crate::cuda::tensor::grouped_ffn_backward(xp, experts, segments, act, z, g);
    }
    by_dtype!("grouped_ffn backward", xp, run(xp, experts, segments.host("grouped_ffn backward")?, act, z, g))
}
