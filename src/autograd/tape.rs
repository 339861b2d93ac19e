//! The tape: a Wengert list of [`Op`]s. Forward methods (in `ops.rs`) compute a value and, when any
//! input needs a gradient, push one node; [`Tape::backward`] walks the list in reverse with one
//! `match` arm per op (`backward.rs`). No closures: every node is plain data that can be printed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::params::{ParamId, ParamStore};
use crate::moe::{Activation, ExpertVars};
use crate::tensor::{BinaryOp, Tensor};
use crate::{Error, Result};

/// A value on the tape: its tensor and, when it needs a gradient, the index of the node that
/// produced it on the tape `tape` (node indices mean nothing on another tape).
#[derive(Clone, Debug)]
pub struct Var {
    pub(crate) id: Option<usize>,
    pub(crate) value: Tensor,
    tape: u64,
}

/// Identities of tapes, so that a `Var` of one tape used on another is caught.
static NEXT_TAPE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Var {
    pub fn value(&self) -> &Tensor {
        &self.value
    }
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
    pub fn requires_grad(&self) -> bool {
        self.id.is_some()
    }
    /// The node index, if this value is recorded.
    pub fn node(&self) -> Option<usize> {
        self.id
    }
}

/// One recorded operation with what its backward needs. Inputs that need no gradient are kept only
/// where their value is needed (e.g. the other operand of a product).
#[derive(Debug)]
pub enum Op {
    /// A value with no inputs: a parameter (its gradient goes to the store) or a plain input.
    Leaf {
        param: Option<ParamId>,
    },
    Matmul {
        a: Var,
        b: Var,
    },
    Binary {
        op: BinaryOp,
        a: Var,
        b: Var,
    },
    /// `x[.., n] + bias[n]`.
    AddBias {
        x: Option<usize>,
        bias: Option<usize>,
        n: usize,
    },
    Scale {
        x: usize,
        s: f64,
    },
    Relu {
        x: Var,
    },
    Gelu {
        x: Var,
    },
    LayerNorm {
        x: Var,
        gamma: Var,
        beta: Option<usize>,
        mean: Tensor,
        rstd: Tensor,
    },
    /// Softmax over the last dim, masked or not: the backward needs only the output.
    Softmax {
        x: usize,
        y: Tensor,
    },
    Dropout {
        x: usize,
        mask: Tensor,
    },
    Embedding {
        table: usize,
        ids: Arc<Vec<u32>>,
        vocab: usize,
    },
    /// Mean label-smoothed cross-entropy over the counted rows.
    CrossEntropy {
        logits: Var,
        targets: Arc<Vec<u32>>,
        eps: f64,
        ignore: Option<u32>,
        count: usize,
    },
    /// Reduction of `x` (of shape `from`) to the shape of the output by summing broadcast dims.
    SumTo {
        x: usize,
        from: Vec<usize>,
    },
    /// The output's elements are a strided sub-block of `x` (narrow, front slice): the gradient is
    /// added into that block of a zero gradient of `x`'s full shape.
    Slice {
        x: usize,
        full: Vec<usize>,
        starts: Vec<usize>,
    },
    Concat {
        parts: Vec<(Option<usize>, usize)>,
        dim: usize,
    },
    Reshape {
        x: usize,
        from: Vec<usize>,
    },
    Permute {
        x: usize,
        perm: Vec<usize>,
    },
    /// A dtype conversion (mixed precision reads f32 master weights as bf16): the gradient is
    /// converted back.
    Cast {
        x: usize,
        from: crate::DType,
    },
    /// Top-k selection from router probabilities `[T, E]` (the output of a softmax node): the
    /// output is the gates `[T, k]`.
    TopK {
        probs: usize,
        probs_value: Tensor,
        idx: crate::moe::ExpertIds,
        gates: Tensor,
        k: usize,
        renormalize: bool,
    },
    /// Rows of `x: [T, d]` gathered into expert-contiguous order `[rows, d]`.
    MoePermute {
        x: usize,
        d: usize,
        routing: crate::moe::MoeRouting,
    },
    /// Each token's expert rows, weighted by its gates, summed back to `[T, d]`.
    MoeCombine {
        yp: Var,
        gates: Var,
        routing: crate::moe::MoeRouting,
    },
    /// Every expert's FFN on its segment of the permuted rows. `z` saves the per-expert
    /// pre-activations on the CPU; on a CUDA backend, the hidden activations of all experts as
    /// `[rows, h_max]` matrices (see `crate::cuda::tensor::grouped_ffn`).
    GroupedFfn {
        xp: Var,
        experts: Vec<ExpertVars>,
        segments: crate::moe::Segments,
        act: Activation,
        z: Vec<Tensor>,
    },
}

impl Op {
    /// Short name for printing and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Leaf { .. } => "leaf",
            Op::Matmul { .. } => "matmul",
            Op::Binary { .. } => "binary",
            Op::AddBias { .. } => "add_bias",
            Op::Scale { .. } => "scale",
            Op::Relu { .. } => "relu",
            Op::Gelu { .. } => "gelu",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Softmax { .. } => "softmax",
            Op::Dropout { .. } => "dropout",
            Op::Embedding { .. } => "embedding",
            Op::CrossEntropy { .. } => "cross_entropy",
            Op::SumTo { .. } => "sum_to",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Cast { .. } => "cast",
            Op::TopK { .. } => "topk_gating",
            Op::MoePermute { .. } => "moe_permute",
            Op::MoeCombine { .. } => "moe_combine",
            Op::GroupedFfn { .. } => "grouped_ffn",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Node {
    pub op: Op,
    pub shape: Vec<usize>,
}

/// The recorder. A tape with recording off (see [`Tape::inference`] and [`Tape::no_grad`]) computes
/// values only: nothing is kept for a backward pass.
#[derive(Debug)]
pub struct Tape {
    pub(crate) nodes: Vec<Node>,
    recording: bool,
    /// This tape's identity (see [`Var`]).
    uid: u64,
    /// The first op that was given a recorded `Var` of another tape: its graph is wrong, so
    /// [`Tape::backward`] refuses it. (Ops return no error for it, to keep every forward infallible
    /// in this respect; the backward is where a wrong graph would do harm.)
    foreign_input: Option<&'static str>,
    /// Mixed precision: parameters are read as copies in this dtype (their f32 master weights
    /// stay in the store and receive f32 gradients through [`Op::Cast`]).
    param_dtype: Option<crate::DType>,
}

impl Default for Tape {
    fn default() -> Self {
        Self::new()
    }
}

impl Tape {
    /// A recording tape (training).
    pub fn new() -> Self {
        Tape { nodes: Vec::new(), recording: true, param_dtype: None, uid: Self::next_uid(), foreign_input: None }
    }

    fn next_uid() -> u64 {
        NEXT_TAPE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A tape that never records (inference, search).
    pub fn inference() -> Self {
        Tape { nodes: Vec::new(), recording: false, param_dtype: None, uid: Self::next_uid(), foreign_input: None }
    }

    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Runs `f` with recording off; values computed inside carry no gradient.
    pub fn no_grad<R>(&mut self, f: impl FnOnce(&mut Tape) -> R) -> R {
        let was = std::mem::replace(&mut self.recording, false);
        let r = f(self);
        self.recording = was;
        r
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The op names in recording order (for inspection and tests).
    pub fn op_names(&self) -> Vec<&'static str> {
        self.nodes.iter().map(|n| n.op.name()).collect()
    }

    /// A value that needs no gradient (data, masks).
    pub fn constant(&self, value: Tensor) -> Var {
        Var { id: None, value, tape: self.uid }
    }

    /// A value whose gradient is wanted but that is not a stored parameter (tests, probes).
    pub fn input(&mut self, value: Tensor) -> Var {
        self.push_leaf(value, None)
    }

    /// Reads parameters as `dtype` copies (mixed precision: bf16 compute over f32 master weights,
    /// on a CUDA backend); `None` reads them as stored.
    pub fn set_param_dtype(&mut self, dtype: Option<crate::DType>) {
        self.param_dtype = dtype;
    }

    pub fn param_dtype(&self) -> Option<crate::DType> {
        self.param_dtype
    }

    /// A parameter of the store. Its gradient is collected by [`Gradients::param_grads`]. Under
    /// [`Tape::set_param_dtype`] the value is a converted copy whose gradient converts back; a
    /// conversion that fails (e.g. out of device memory) is an error, never a silent fall back to
    /// the stored dtype.
    pub fn param(&mut self, store: &ParamStore, id: ParamId) -> Result<Var> {
        let leaf = self.push_leaf(store.value(id).clone(), Some(id));
        match self.param_dtype {
            Some(dt) if dt != leaf.value.dtype() => self.cast(&leaf, dt),
            _ => Ok(leaf),
        }
    }

    /// `x` converted to `dtype` (its gradient is converted back).
    pub fn cast(&mut self, x: &Var, dtype: crate::DType) -> Result<Var> {
        if x.value.dtype() == dtype {
            return Ok(x.clone());
        }
        let from = x.value.dtype();
        let y = x.value.to_dtype(dtype)?;
        Ok(match x.id {
            Some(id) => self.record(y, &[x], || Op::Cast { x: id, from }),
            None => self.constant(y),
        })
    }

    fn push_leaf(&mut self, value: Tensor, param: Option<ParamId>) -> Var {
        if !self.recording {
            return Var { id: None, value, tape: self.uid };
        }
        let id = self.nodes.len();
        self.nodes.push(Node { op: Op::Leaf { param }, shape: value.shape().to_vec() });
        Var { id: Some(id), value, tape: self.uid }
    }

    /// Records `op` producing `value` if any of `inputs` needs a gradient.
    /// Whether an op on `inputs` will be recorded (so a forward should keep what its backward needs).
    pub(crate) fn will_record(&self, inputs: &[&Var]) -> bool {
        self.recording && inputs.iter().any(|v| v.id.is_some())
    }

    pub(crate) fn record(&mut self, value: Tensor, inputs: &[&Var], op: impl FnOnce() -> Op) -> Var {
        if !self.will_record(inputs) {
            return Var { id: None, value, tape: self.uid };
        }
        let op = op();
        if self.foreign_input.is_none() && inputs.iter().any(|v| v.id.is_some() && v.tape != self.uid) {
            self.foreign_input = Some(op.name());
        }
        let id = self.nodes.len();
        self.nodes.push(Node { op, shape: value.shape().to_vec() });
        Var { id: Some(id), value, tape: self.uid }
    }

    /// Reverse pass from a one-element `loss`. Consumes the recorded graph's intermediate
    /// gradients as it goes; returns the gradients of every leaf.
    pub fn backward(&self, loss: &Var) -> Result<Gradients> {
        let root = loss
            .id
            .ok_or_else(|| Error::invalid("backward", "the loss was not recorded (no input needs a gradient, or recording was off)"))?;
        if loss.tape != self.uid {
            return Err(Error::invalid("backward", "the loss was recorded on another tape"));
        }
        if let Some(op) = self.foreign_input {
            return Err(Error::invalid("backward", format!("op `{op}` was given a value recorded on another tape")));
        }
        if loss.value.numel() != 1 {
            return Err(Error::invalid("backward", format!("the loss must have one element, got shape {:?}", loss.shape())));
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; root + 1];
        grads[root] = Some(Tensor::ones_on(loss.shape(), loss.value.dtype(), loss.value.device())?);
        let mut leaves = BTreeMap::new();
        for i in (0..=root).rev() {
            let node = &self.nodes[i];
            if let Op::Leaf { param } = node.op {
                if let Some(g) = grads[i].take() {
                    leaves.insert(i, (param, g));
                }
                continue;
            }
            let Some(g) = grads[i].take() else { continue };
            super::backward::backward_node(node, &g, &mut grads)?;
        }
        Ok(Gradients { leaves, tape: self.uid })
    }
}

/// Gradients of the leaves of one backward pass.
#[derive(Debug)]
pub struct Gradients {
    leaves: BTreeMap<usize, (Option<ParamId>, Tensor)>,
    /// The tape they came from: a `Var` of another tape has no gradient here.
    tape: u64,
}

impl Gradients {
    /// The gradient of a recorded leaf (`None` when the loss does not depend on it).
    pub fn wrt(&self, v: &Var) -> Option<&Tensor> {
        v.id.filter(|_| v.tape == self.tape).and_then(|id| self.leaves.get(&id)).map(|(_, g)| g)
    }

    /// The gradient of each parameter, summed over all the places it was used.
    pub fn param_grads(&self) -> Result<Vec<(ParamId, Tensor)>> {
        let mut by_param: BTreeMap<ParamId, Tensor> = BTreeMap::new();
        for (param, g) in self.leaves.values() {
            if let Some(p) = param {
                let sum = match by_param.remove(p) {
                    None => g.clone(),
                    Some(acc) => acc.add(g)?,
                };
                by_param.insert(*p, sum);
            }
        }
        Ok(by_param.into_iter().collect())
    }
}

/// Adds `g` into slot `id` of the gradient list.
pub(crate) fn accumulate(grads: &mut [Option<Tensor>], id: Option<usize>, g: Tensor) -> Result<()> {
    let Some(id) = id else { return Ok(()) };
    grads[id] = Some(match grads[id].take() {
        None => g,
        Some(acc) => acc.add(&g)?,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
    }

    #[test]
    fn backward_refuses_an_unrecorded_loss_and_one_of_several_elements() {
        let mut tape = Tape::new();
        // A constant was never recorded: there is nothing to differentiate.
        let c = tape.constant(t(&[2.0]));
        let e = tape.backward(&c).unwrap_err().to_string();
        assert!(e.contains("not recorded"), "{e}");
        // A recorded value with two elements is not a loss.
        let x = tape.input(t(&[1.0, 2.0]));
        let y = tape.scale(&x, 3.0).unwrap();
        let e = tape.backward(&y).unwrap_err().to_string();
        assert!(e.contains("one element") && e.contains("[2]"), "{e}");
        // The same graph reduced to one element is fine.
        let loss = tape.sum(&y).unwrap();
        assert_eq!(tape.backward(&loss).unwrap().wrt(&x).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 3.0]);
    }

    #[test]
    fn no_grad_records_nothing_and_then_resumes() {
        let mut tape = Tape::new();
        let x = tape.input(t(&[1.0, -2.0]));
        let before = tape.len();
        let (frozen, inner_recording) = tape.no_grad(|tp| {
            let y = tp.scale(&x, 2.0).unwrap();
            (tp.sum(&y).unwrap(), tp.is_recording())
        });
        assert!(!inner_recording);
        assert_eq!(tape.len(), before, "no node may be recorded under no_grad");
        assert_eq!(frozen.value().to_vec::<f32>().unwrap(), vec![-2.0], "the value is still computed");
        let e = tape.backward(&frozen).unwrap_err().to_string();
        assert!(e.contains("not recorded"), "{e}");
        // Recording is back on afterwards, and a value from inside enters as a constant.
        assert!(tape.is_recording());
        let y = tape.mul(&x, &frozen).unwrap();
        let loss = tape.sum(&y).unwrap();
        assert_eq!(tape.backward(&loss).unwrap().wrt(&x).unwrap().to_vec::<f32>().unwrap(), vec![-2.0, -2.0]);
        // An inference tape stays off after no_grad too.
        let mut inf = Tape::inference();
        inf.no_grad(|_| ());
        assert!(!inf.is_recording());
    }

    #[test]
    fn values_of_another_tape_are_refused_at_backward() {
        let (mut a, mut b) = (Tape::new(), Tape::new());
        let x = a.input(t(&[1.0, 2.0]));
        let y = b.input(t(&[3.0, 4.0]));
        // A loss recorded on another tape.
        let lb = b.sum(&y).unwrap();
        let e = a.backward(&lb).unwrap_err().to_string();
        assert!(e.contains("another tape"), "{e}");
        // A graph mixing the two: its node indices would route gradients to the wrong leaves.
        let mixed = a.mul(&x, &y).unwrap();
        let loss = a.sum(&mixed).unwrap();
        let e = a.backward(&loss).unwrap_err().to_string();
        assert!(e.contains("`binary`") && e.contains("another tape"), "{e}");
        // The clean tape still works, and its gradients do not answer for the other tape's values.
        let ly = b.sum(&y).unwrap();
        let g = b.backward(&ly).unwrap();
        assert_eq!(g.wrt(&y).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
        assert!(g.wrt(&x).is_none(), "x is a leaf of tape a with the same node index as y");
    }
}
