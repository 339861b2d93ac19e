//! The heterogeneous MoE FFN layer of a supernet: parameters at their largest size, and a forward
//! pass for any subnet choice (embed dim, expert count, per-expert widths, k).

use std::sync::Arc;

use super::dispatch::Dispatch;
use super::experts::Activation;
use super::ops::ExpertVars;
use super::routing::{ExpertIds, MoeRouting};
use crate::autograd::{ParamId, ParamStore, Tape, Var};
use crate::cuda::tensor::DeviceDispatch;
use crate::rng::Rng;
use crate::{DType, Error, Result, Tensor};

/// One expert's max-size parameters.
#[derive(Clone, Debug)]
pub struct ExpertParams {
    /// `[h_max, d_max]`
    pub fc1_w: ParamId,
    /// `[h_max]`
    pub fc1_b: ParamId,
    /// `[d_max, h_max]`
    pub fc2_w: ParamId,
    /// `[d_max]`
    pub fc2_b: ParamId,
}

/// A layer's parameters: a router over at most `n_max` experts and each expert's weights.
#[derive(Clone, Debug)]
pub struct MoeParams {
    /// `[n_max, d_max]`
    pub router_w: ParamId,
    /// `[n_max]`
    pub router_b: ParamId,
    pub experts: Vec<ExpertParams>,
    pub d_max: usize,
    pub n_max: usize,
    pub h_max: usize,
}

/// Xavier-uniform `[rows, cols]` (fairseq's initialisation of linear layers).
pub(crate) fn xavier(rows: usize, cols: usize, rng: &mut Rng) -> Result<Tensor> {
    let a = (6.0 / (rows + cols) as f64).sqrt();
    Tensor::rand_uniform(&[rows, cols], -a, a, DType::F32, rng)
}

impl MoeParams {
    /// Registers the parameters as `{prefix}.router.{weight,bias}` and
    /// `{prefix}.experts.{e}.fc{1,2}.{weight,bias}` (f32, Xavier-uniform weights, zero biases).
    pub fn new(store: &mut ParamStore, prefix: &str, d_max: usize, n_max: usize, h_max: usize, rng: &mut Rng) -> Result<Self> {
        if d_max == 0 || n_max == 0 || h_max == 0 {
            return Err(Error::invalid("MoeParams::new", format!("sizes must be positive: d_max {d_max}, n_max {n_max}, h_max {h_max}")));
        }
        let router_w = store.add(format!("{prefix}.router.weight"), xavier(n_max, d_max, rng)?)?;
        let router_b = store.add(format!("{prefix}.router.bias"), Tensor::zeros(&[n_max], DType::F32))?;
        let experts = (0..n_max)
            .map(|e| {
                let p = format!("{prefix}.experts.{e}");
                Ok(ExpertParams {
                    fc1_w: store.add(format!("{p}.fc1.weight"), xavier(h_max, d_max, rng)?)?,
                    fc1_b: store.add(format!("{p}.fc1.bias"), Tensor::zeros(&[h_max], DType::F32))?,
                    fc2_w: store.add(format!("{p}.fc2.weight"), xavier(d_max, h_max, rng)?)?,
                    fc2_b: store.add(format!("{p}.fc2.bias"), Tensor::zeros(&[d_max], DType::F32))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(MoeParams { router_w, router_b, experts, d_max, n_max, h_max })
    }
}

/// A subnet's choice for one layer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MoeSubnet {
    /// Embed dim the layer sees (front slice of `d_max`).
    pub d: usize,
    /// FFN width of each expert; the length is the expert count (1 = a dense FFN).
    pub widths: Vec<usize>,
    /// Experts per token.
    pub k: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MoeOptions {
    /// Divide the chosen gates by their sum (only matters for k > 1).
    pub renormalize: bool,
    pub activation: Activation,
    /// Capacity factor: each expert takes at most `ceil(cf * T * k / E)` pairs; `None` = unlimited
    /// (AutoMoE's default).
    pub capacity_factor: Option<f64>,
    /// Coefficient of the load-balancing loss (0 = none; 0.01 when enabled).
    pub balance_coef: f64,
}

impl Default for MoeOptions {
    fn default() -> Self {
        MoeOptions { renormalize: false, activation: Activation::Relu, capacity_factor: None, balance_coef: 0.0 }
    }
}

/// What one MoE layer call returns.
#[derive(Clone, Debug)]
pub struct MoeOutput {
    /// `[T, d]`
    pub y: Var,
    /// The load-balancing loss of this layer, already multiplied by its coefficient.
    pub balance_loss: Option<Var>,
    /// The layer's routing: on the device for CUDA inputs without a capacity limit (its counts
    /// reach the host only when asked, [`MoeRouting::counts`]).
    pub routing: MoeRouting,
}

impl MoeSubnet {
    /// Checks the choice against the layer's maximum sizes.
    pub fn validate(&self, p: &MoeParams) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid("MoE subnet", msg));
        let n = self.widths.len();
        if self.d == 0 || self.d > p.d_max {
            return bad(format!("embed dim {} is outside 1..={}", self.d, p.d_max));
        }
        if n == 0 || n > p.n_max {
            return bad(format!("{n} experts is outside 1..={}", p.n_max));
        }
        if let Some((e, &h)) = self.widths.iter().enumerate().find(|(_, &h)| h == 0 || h > p.h_max) {
            return bad(format!("expert {e} has width {h}, outside 1..={}", p.h_max));
        }
        if self.k == 0 || self.k > n {
            return bad(format!("k = {} experts per token, but the layer has {n} experts", self.k));
        }
        Ok(())
    }
}

fn expert_vars(tape: &mut Tape, store: &ParamStore, ep: &ExpertParams, d: usize, h: usize) -> Result<ExpertVars> {
    let w1 = tape.param(store, ep.fc1_w)?;
    let b1 = tape.param(store, ep.fc1_b)?;
    let w2 = tape.param(store, ep.fc2_w)?;
    let b2 = tape.param(store, ep.fc2_b)?;
    Ok(ExpertVars {
        w1: tape.front_slice(&w1, &[h, d])?,
        b1: tape.front_slice(&b1, &[h])?,
        w2: tape.front_slice(&w2, &[d, h])?,
        b2: tape.front_slice(&b2, &[d])?,
    })
}

/// Runs the layer for subnet `sub` on `x: [T, d]`. A 1-expert layer is a dense FFN with gate 1.0
/// (the router is skipped, as in AutoMoE).
pub fn moe_forward(tape: &mut Tape, store: &ParamStore, p: &MoeParams, sub: &MoeSubnet, opts: &MoeOptions, x: &Var) -> Result<MoeOutput> {
    sub.validate(p)?;
    check_input(x, sub)?;
    if sub.widths.len() > 1 {
        return moe_forward_routed(tape, store, p, sub, opts, x);
    }
    let t = x.shape()[0];
    let ev = expert_vars(tape, store, &p.experts[0], sub.d, sub.widths[0])?;
    let h = tape.linear(x, &ev.w1, Some(&ev.b1))?;
    let a = match opts.activation {
        Activation::Relu => tape.relu(&h)?,
        Activation::Gelu => tape.gelu(&h)?,
    };
    let y = tape.linear(&a, &ev.w2, Some(&ev.b2))?;
    let routing = Dispatch::new(&vec![0; t], t, 1, 1, None)?.into();
    Ok(MoeOutput { y, balance_loss: None, routing })
}

fn check_input(x: &Var, sub: &MoeSubnet) -> Result<()> {
    match x.shape() {
        [_, d] if *d == sub.d => Ok(()),
        s => Err(Error::ShapeMismatch { op: "moe layer input", lhs: s.to_vec(), rhs: vec![usize::MAX, sub.d] }),
    }
}

/// The routed path (router, top-k, permute, grouped experts, combine), used for every layer with
/// more than one expert; public so that tests can run it on a 1-expert layer too.
pub fn moe_forward_routed(
    tape: &mut Tape,
    store: &ParamStore,
    p: &MoeParams,
    sub: &MoeSubnet,
    opts: &MoeOptions,
    x: &Var,
) -> Result<MoeOutput> {
    sub.validate(p)?;
    check_input(x, sub)?;
    let (t, d, n, k) = (x.shape()[0], sub.d, sub.widths.len(), sub.k);
    let rw = tape.param(store, p.router_w)?;
    let rb = tape.param(store, p.router_b)?;
    let rw = tape.front_slice(&rw, &[n, d])?;
    let rb = tape.front_slice(&rb, &[n])?;
    let logits = tape.linear(x, &rw, Some(&rb))?;
    let probs = tape.softmax(&logits, &Default::default())?;
    let gating = tape.topk_gating(&probs, k, opts.renormalize)?;
    let capacity = opts.capacity_factor.map(|cf| Dispatch::capacity_for(cf, t, k, n));
    let routing = match (&gating.idx, capacity) {
        // CUDA without a capacity limit: the dispatch kernels, queued behind the top-k's.
        (ExpertIds::Device(ids), None) => MoeRouting::Device(Arc::new(DeviceDispatch::new(ids)?)),
        // The capacity limit is applied by the host dispatch (a download of the ids on CUDA).
        (ids, capacity) => Dispatch::new(&ids.to_host()?, t, k, n, capacity)?.into(),
    };
    let xp = tape.moe_permute(x, &routing)?;
    let experts = sub.widths.iter().zip(&p.experts).map(|(&h, ep)| expert_vars(tape, store, ep, d, h)).collect::<Result<Vec<_>>>()?;
    let yp = tape.grouped_ffn_segments(&xp, &experts, (&routing).into(), opts.activation)?;
    let y = tape.moe_combine(&yp, &gating.gates, &routing)?;
    let balance_loss = if opts.balance_coef > 0.0 { Some(balance_loss(tape, &probs, &routing, opts.balance_coef)?) } else { None };
    Ok(MoeOutput { y, balance_loss, routing })
}

/// Switch-style load balancing for one layer: `coef * n * sum_i f_i * P_i`, with `f_i` the
/// fraction of (token, slot) pairs routed to expert i (before any capacity drop) and `P_i` the
/// mean router probability of expert i. Defined per layer with that layer's own `n`, so layers
/// with different expert counts each get a loss whose minimum (uniform routing) is `coef`.
/// (`f_i` is a constant of the tape: computed on the device for a device routing.)
pub fn balance_loss(tape: &mut Tape, probs: &Var, routing: impl Into<MoeRouting>, coef: f64) -> Result<Var> {
    let routing = routing.into();
    let (t, n) = (routing.tokens(), routing.experts());
    let dtype = probs.value().dtype();
    let f = match &routing {
        MoeRouting::Device(d) => d.fractions()?.to_dtype(dtype)?,
        MoeRouting::Host(d) => {
            let pairs = (t * d.k).max(1) as f64;
            let frac: Vec<f64> = d.routed.iter().map(|&r| r as f64 / pairs).collect();
            Tensor::from_vec(frac, &[n])?.to_dtype_device(dtype, probs.value().device())?
        }
    };
    let f = tape.constant(f);
    let p_sum = tape.sum_to(probs, &[n])?;
    let fp = tape.mul(&p_sum, &f)?;
    let s = tape.sum(&fp)?;
    tape.scale(&s, coef * n as f64 / t.max(1) as f64)
}
