//! The encoder–decoder forward pass, shared by the supernet and standalone models.
//!
//! Source and target tokens share one embedding over the joined vocabulary (scaled by √d), plus
//! sinusoidal positions; post-LayerNorm by default (`x = LN(x + sublayer(x))`), pre-LayerNorm as
//! an option (`x = x + sublayer(LN(x))`, with a final LN per stack); every FFN sub-layer is the
//! MoE layer (dense = 1 expert); decoder layers attend to the last 1–3 encoder layers'
//! outputs (AutoMoE's arbitrary encoder–decoder attention); the output projection is the shared
//! embedding. Activations are `[B*len, d]` row matrices throughout.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::layers::{
    attention, cross_attention_memory, ffn, sinusoidal_positions_on, AttnDims, Ctx, FlopCount, LayerRouting, Part, PendingRouting,
};
use super::params::{LnParams, NetParams};
use super::space::{span_layers, SubnetConfig};
use crate::autograd::{ParamStore, Tape, Var};
use crate::moe::{Activation, MoeOptions};
use crate::tensor::MaskSpec;
use crate::{Error, Result};

/// FFN activation (serialisable mirror of [`crate::moe::Activation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FfnActivation {
    Relu,
    Gelu,
}

/// Architecture options that are not search genes: fixed for a supernet and kept by the
/// standalone models extracted from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOptions {
    /// Pre-LayerNorm instead of the default post-LayerNorm.
    pub pre_norm: bool,
    /// Residual and embedding dropout at the largest width; a subnet of width `d` uses
    /// `dropout * d / d_max`.
    pub dropout: f64,
    /// Dropout on attention probabilities.
    pub attention_dropout: f64,
    pub activation: FfnActivation,
    /// Renormalise the top-k gate probabilities to sum to 1.
    pub renormalize_gates: bool,
    /// Expert capacity factor (`None`: no limit, no token dropped).
    pub capacity_factor: Option<f64>,
    /// Weight of the load-balancing loss (0: none).
    pub balance_coef: f64,
}

impl Default for ModelOptions {
    /// AutoMoE's recipe: post-LN, dropout 0.3, attention dropout 0.1, ReLU, no capacity limit,
    /// no balance loss.
    fn default() -> Self {
        ModelOptions {
            pre_norm: false,
            dropout: 0.3,
            attention_dropout: 0.1,
            activation: FfnActivation::Relu,
            renormalize_gates: false,
            capacity_factor: None,
            balance_coef: 0.0,
        }
    }
}

impl ModelOptions {
    pub fn check(&self) -> Result<()> {
        for (name, p) in [("dropout", self.dropout), ("attention_dropout", self.attention_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::invalid("ModelOptions", format!("{name} = {p} is not in [0, 1)")));
            }
        }
        if let Some(c) = self.capacity_factor.filter(|c| c.is_nan() || *c <= 0.0) {
            return Err(Error::invalid("ModelOptions", format!("capacity_factor = {c} must be positive")));
        }
        if !self.balance_coef.is_finite() || self.balance_coef < 0.0 {
            return Err(Error::invalid("ModelOptions", format!("balance_coef = {} must be finite and non-negative", self.balance_coef)));
        }
        Ok(())
    }

    pub(crate) fn moe(&self) -> MoeOptions {
        MoeOptions {
            renormalize: self.renormalize_gates,
            activation: match self.activation {
                FfnActivation::Relu => Activation::Relu,
                FfnActivation::Gelu => Activation::Gelu,
            },
            capacity_factor: self.capacity_factor,
            balance_coef: self.balance_coef,
        }
    }
}

/// A batch of source and target-input token ids, right-padded: `[B, S]` and `[B, T]` row-major,
/// with padding masks (true = pad). The target input is the decoder's input (the shifted
/// targets); the loss compares the logits with the caller's target ids.
#[derive(Clone, Debug)]
pub struct Batch {
    pub batch: usize,
    pub src_len: usize,
    pub tgt_len: usize,
    pub src: Vec<u32>,
    pub src_pad: Vec<bool>,
    pub tgt: Vec<u32>,
    pub tgt_pad: Vec<bool>,
}

impl Batch {
    /// Checks the lengths of the flat arrays.
    pub fn new(
        batch: usize,
        src_len: usize,
        tgt_len: usize,
        src: Vec<u32>,
        src_pad: Vec<bool>,
        tgt: Vec<u32>,
        tgt_pad: Vec<bool>,
    ) -> Result<Self> {
        if batch == 0 || src_len == 0 || tgt_len == 0 {
            return Err(Error::invalid("Batch", format!("empty batch: B = {batch}, S = {src_len}, T = {tgt_len}")));
        }
        for (what, len, want) in [
            ("src", src.len(), batch * src_len),
            ("src_pad", src_pad.len(), batch * src_len),
            ("tgt", tgt.len(), batch * tgt_len),
            ("tgt_pad", tgt_pad.len(), batch * tgt_len),
        ] {
            if len != want {
                return Err(Error::invalid("Batch", format!("{what} has {len} entries, expected {want}")));
            }
        }
        Ok(Batch { batch, src_len, tgt_len, src, src_pad, tgt, tgt_pad })
    }

    /// Right-pads sentences with `pad` to the longest of each side.
    pub fn from_sentences(src: &[Vec<u32>], tgt: &[Vec<u32>], pad: u32) -> Result<Self> {
        if src.len() != tgt.len() {
            return Err(Error::invalid("Batch", format!("{} source but {} target sentences", src.len(), tgt.len())));
        }
        fn side(rows: &[Vec<u32>], pad: u32) -> (usize, Vec<u32>, Vec<bool>) {
            let len = rows.iter().map(Vec::len).max().unwrap_or(0);
            let mut ids = Vec::with_capacity(rows.len() * len);
            let mut mask = Vec::with_capacity(rows.len() * len);
            for r in rows {
                ids.extend(r.iter().copied().chain(std::iter::repeat_n(pad, len - r.len())));
                mask.extend((0..len).map(|i| i >= r.len()));
            }
            (len, ids, mask)
        }
        let (s, src_ids, src_pad) = side(src, pad);
        let (t, tgt_ids, tgt_pad) = side(tgt, pad);
        Batch::new(src.len(), s, t, src_ids, src_pad, tgt_ids, tgt_pad)
    }
}

/// Training (dropout on, seeded) or inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunMode {
    pub train: bool,
    /// Seeds every dropout mask of the pass (each site draws `hash64(seed, site)`).
    pub seed: u64,
}

impl RunMode {
    pub fn inference() -> Self {
        RunMode { train: false, seed: 0 }
    }
    pub fn train(seed: u64) -> Self {
        RunMode { train: true, seed }
    }
}

/// Routing of every FFN layer in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRouting {
    pub encoder: Vec<LayerRouting>,
    pub decoder: Vec<LayerRouting>,
}

impl PassRouting {
    /// Adds another pass's routing of the same subnet (measuring the routing over a data set).
    pub fn merge(&mut self, other: &PassRouting) -> Result<()> {
        if self.encoder.is_empty() && self.decoder.is_empty() {
            *self = other.clone();
            return Ok(());
        }
        for (side, mine, theirs) in [("encoder", &mut self.encoder, &other.encoder), ("decoder", &mut self.decoder, &other.decoder)] {
            if mine.len() != theirs.len() {
                return Err(Error::invalid(
                    "PassRouting::merge",
                    format!("{} vs {} {side} layers: not the same subnet", mine.len(), theirs.len()),
                ));
            }
            for (i, (a, b)) in mine.iter_mut().zip(theirs).enumerate() {
                if a.counts.len() != b.counts.len() || a.k != b.k {
                    return Err(Error::invalid("PassRouting::merge", format!("{side} layer {i}: different expert count or k")));
                }
                a.tokens += b.tokens;
                for (x, y) in a.counts.iter_mut().zip(&b.counts) {
                    *x += y;
                }
            }
        }
        Ok(())
    }

    /// Mean over the MoE layers (more than one expert, some tokens) of the most loaded expert's
    /// share of the layer's (token, slot) pairs: `1/E` when a router spreads evenly, 1 when it
    /// sends everything to one expert. `None` when the pass has no MoE layer. A router that
    /// collapses during training shows here, where the loss alone does not say it.
    pub fn mean_max_share(&self) -> Option<f64> {
        let shares: Vec<f64> = self
            .encoder
            .iter()
            .chain(&self.decoder)
            .filter(|l| l.counts.len() > 1 && l.tokens > 0)
            .map(|l| l.counts.iter().copied().max().unwrap_or(0) as f64 / (l.tokens * l.k).max(1) as f64)
            .collect();
        (!shares.is_empty()).then(|| shares.iter().sum::<f64>() / shares.len() as f64)
    }
}

/// What a forward pass returns.
pub struct ModelOutput {
    /// `[B*T, V]`.
    pub logits: Var,
    /// Sum of the MoE layers' balance losses (already weighted), when any layer produced one.
    pub balance_loss: Option<Var>,
    /// Matrix-product FLOPs this pass executed (see `layers.rs` for what counts).
    pub flops: FlopCount,
    pub routing: PassRouting,
}

/// Row indices of the non-pad positions, or `None` when nothing is padded.
fn real_rows(pad: &[bool]) -> Option<Vec<u32>> {
    pad.iter().any(|&p| p).then(|| pad.iter().enumerate().filter(|(_, &p)| !p).map(|(i, _)| i as u32).collect())
}

/// `scale * E[ids, :d] + positions`, then dropout: the input of a stack.
pub(crate) fn embed(ctx: &mut Ctx, net: &NetParams, ids: &[u32], batch: usize, len: usize, d: usize, dropout: f64) -> Result<Var> {
    let table = ctx.tape.param(ctx.store, net.embed)?;
    // Gather whole rows, then take the front `d` columns: cheaper than gathering from a strided
    // `[V, d]` view of the table, and the gradient lands in the same place.
    let rows = ctx.tape.embedding(&table, ids)?;
    let x = ctx.tape.front_slice(&rows, &[ids.len(), d])?;
    let x = ctx.tape.scale(&x, (d as f64).sqrt())?;
    let pos = sinusoidal_positions_on(len, d, ctx.dtype, ctx.device)?;
    let pos = ctx.tape.constant(pos.broadcast_to(&[batch, len, d])?.reshape(&[batch * len, d])?);
    let x = ctx.tape.add(&x, &pos)?;
    ctx.dropout(&x, dropout)
}

/// `x + dropout(f(x))` then LN (post-norm), or `x + dropout(f(LN(x)))` (pre-norm).
pub(crate) fn residual(
    ctx: &mut Ctx,
    x: &Var,
    ln: &LnParams,
    d: usize,
    pre_norm: bool,
    p: f64,
    f: impl FnOnce(&mut Ctx, &Var) -> Result<Var>,
) -> Result<Var> {
    let inp = if pre_norm { ctx.layer_norm(x, ln, d)? } else { x.clone() };
    let h = f(ctx, &inp)?;
    let h = ctx.dropout(&h, p)?;
    let y = ctx.tape.add(x, &h)?;
    if pre_norm {
        Ok(y)
    } else {
        ctx.layer_norm(&y, ln, d)
    }
}

fn add_loss(tape: &mut Tape, acc: Option<Var>, l: Option<Var>) -> Result<Option<Var>> {
    Ok(match (acc, l) {
        (Some(a), Some(b)) => Some(tape.add(&a, &b)?),
        (a, b) => a.or(b),
    })
}

pub(crate) fn check_ids(ids: &[u32], vocab: usize, side: &str) -> Result<()> {
    match ids.iter().find(|&&i| i as usize >= vocab) {
        Some(&bad) => Err(Error::invalid("model forward", format!("{side} token id {bad} is outside the vocabulary of {vocab}"))),
        None => Ok(()),
    }
}

/// Checks that `net` (in `store`) can run `cfg` with `opts`; returns the vocabulary size.
pub(crate) fn check_model(store: &ParamStore, net: &NetParams, opts: &ModelOptions, cfg: &SubnetConfig) -> Result<usize> {
    net.check_fits(store, cfg)?;
    if opts.pre_norm != (net.encoder_ln.is_some() && net.decoder_ln.is_some()) {
        return Err(Error::invalid(
            "model forward",
            format!("pre_norm = {} but the parameters were built for the other layout", opts.pre_norm),
        ));
    }
    Ok(store.value(net.embed).shape()[0])
}

/// What the encoder stack hands the decoder.
pub(crate) struct EncoderStates {
    /// Every encoder layer's output `[B*S, d_enc]`, oldest first; in pre-norm models the last
    /// `cfg.max_span_layers()` of them have been through the final encoder LN (only those are read).
    pub states: Vec<Var>,
    pub balance: Option<Var>,
    /// Resolved by the caller once the pass is queued ([`PendingRouting::resolve`]).
    pub routing: Vec<PendingRouting>,
}

/// The encoder stack on a right-padded source batch (`src_pad` true at padding).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_stack(
    ctx: &mut Ctx,
    net: &NetParams,
    opts: &ModelOptions,
    cfg: &SubnetConfig,
    src: &[u32],
    src_pad: &[bool],
    batch: usize,
    src_len: usize,
) -> Result<EncoderStates> {
    let (de, qkv) = (cfg.encoder_embed_dim, cfg.qkv_dim);
    let moe_opts = opts.moe();
    let mut balance = None;
    let mut routing = Vec::with_capacity(cfg.encoder.len());
    ctx.part = Part::Encoder;
    let p_enc = opts.dropout * de as f64 / net.encoder_d_max as f64;
    let src_real = real_rows(src_pad);
    let src_mask = MaskSpec { causal: false, key_padding: src_real.as_ref().map(|_| Arc::new(src_pad.to_vec())) };
    let mut x = embed(ctx, net, src, batch, src_len, de, p_enc)?;
    let mut states = Vec::with_capacity(cfg.encoder.len());
    for (l, p) in cfg.encoder.iter().zip(&net.encoder) {
        let dims = AttnDims { batch, tq: src_len, tk: src_len, heads: l.self_heads, qkv, d_q: de };
        x = residual(ctx, &x, &p.self_ln, de, opts.pre_norm, p_enc, |c, h| {
            attention(c, &p.self_attn, h, h, &dims, &src_mask, opts.attention_dropout)
        })?;
        let mut loss = None;
        let mut route = None;
        x = residual(ctx, &x, &p.ffn_ln, de, opts.pre_norm, p_enc, |c, h| {
            let (y, l_bal, r) = ffn(c, &p.ffn, h, &l.expert_widths, cfg.k_for(l.experts), &moe_opts, src_real.as_deref())?;
            loss = l_bal;
            route = Some(r);
            Ok(y)
        })?;
        balance = add_loss(ctx.tape, balance, loss)?;
        routing.extend(route);
        states.push(x.clone());
    }
    if let Some(ln) = &net.encoder_ln {
        // Pre-norm residual streams are unnormalised; every encoder output the decoder reads goes
        // through the final encoder LN (the last `max span` of them).
        let first = states.len() - cfg.max_span_layers();
        for s in &mut states[first..] {
            *s = ctx.layer_norm(s, ln, de)?;
        }
    }
    Ok(EncoderStates { states, balance, routing })
}

/// The forward pass of `cfg` on the parameters `net` (which must fit it; see
/// [`NetParams::check_fits`]).
pub(crate) fn forward(
    tape: &mut Tape,
    store: &ParamStore,
    net: &NetParams,
    opts: &ModelOptions,
    cfg: &SubnetConfig,
    b: &Batch,
    run: RunMode,
) -> Result<ModelOutput> {
    let vocab = check_model(store, net, opts, cfg)?;
    check_ids(&b.src, vocab, "source")?;
    check_ids(&b.tgt, vocab, "target")?;
    let dtype = tape.param_dtype().unwrap_or(store.value(net.embed).dtype());
    let device = store.value(net.embed).device();
    let (dd, qkv) = (cfg.decoder_embed_dim, cfg.qkv_dim);
    let moe_opts = opts.moe();
    let mut ctx = Ctx::new(tape, store, run.train, run.seed, dtype, device);
    let mut pending_decoder = Vec::with_capacity(cfg.decoder.len());

    // ---- encoder ----
    let enc = encode_stack(&mut ctx, net, opts, cfg, &b.src, &b.src_pad, b.batch, b.src_len)?;
    let (states, mut balance, pending_encoder) = (enc.states, enc.balance, enc.routing);
    let src_real = real_rows(&b.src_pad);

    // ---- decoder ----
    ctx.part = Part::Decoder;
    let p_dec = opts.dropout * dd as f64 / net.decoder_d_max as f64;
    let tgt_real = real_rows(&b.tgt_pad);
    let self_mask = MaskSpec { causal: true, key_padding: tgt_real.as_ref().map(|_| Arc::new(b.tgt_pad.clone())) };
    let mut memories: HashMap<usize, (Var, MaskSpec)> = HashMap::new();
    let mut y = embed(&mut ctx, net, &b.tgt, b.batch, b.tgt_len, dd, p_dec)?;
    for (l, p) in cfg.decoder.iter().zip(&net.decoder) {
        let self_dims = AttnDims { batch: b.batch, tq: b.tgt_len, tk: b.tgt_len, heads: l.self_heads, qkv, d_q: dd };
        y = residual(&mut ctx, &y, &p.self_ln, dd, opts.pre_norm, p_dec, |c, h| {
            attention(c, &p.self_attn, h, h, &self_dims, &self_mask, opts.attention_dropout)
        })?;
        let m = span_layers(l.cross_span).ok_or_else(|| Error::invalid("SubnetConfig", format!("bad cross_span {}", l.cross_span)))?;
        // Layers with the same span share one memory (the concatenation is built once).
        let (mem, mask) = match memories.entry(m) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let (mem, mask) = cross_attention_memory(ctx.tape, &states, &b.src_pad, b.batch, b.src_len, m)?;
                e.insert((mem, MaskSpec { causal: false, key_padding: src_real.as_ref().map(|_| mask) }))
            }
        };
        let (mem, mask) = (&*mem, &*mask);
        let cross_dims = AttnDims { batch: b.batch, tq: b.tgt_len, tk: m * b.src_len, heads: l.cross_heads, qkv, d_q: dd };
        y = residual(&mut ctx, &y, &p.cross_ln, dd, opts.pre_norm, p_dec, |c, h| {
            attention(c, &p.cross_attn, h, mem, &cross_dims, mask, opts.attention_dropout)
        })?;
        let mut loss = None;
        let mut route = None;
        y = residual(&mut ctx, &y, &p.ffn_ln, dd, opts.pre_norm, p_dec, |c, h| {
            let (out, l_bal, r) = ffn(c, &p.ffn, h, &l.expert_widths, cfg.k_for(l.experts), &moe_opts, tgt_real.as_deref())?;
            loss = l_bal;
            route = Some(r);
            Ok(out)
        })?;
        balance = add_loss(ctx.tape, balance, loss)?;
        pending_decoder.extend(route);
    }
    if let Some(ln) = &net.decoder_ln {
        y = ctx.layer_norm(&y, ln, dd)?;
    }

    // ---- output projection through the shared embedding ----
    ctx.part = Part::Output;
    let logits = ctx.linear(&y, net.embed, None, vocab)?;
    // Every layer is queued: now the routing counts may come to the host (one short wait on a
    // device, where the MoE layers themselves never waited).
    let mut flops = ctx.flops;
    let mut resolve = |p: Vec<PendingRouting>| p.into_iter().map(|r| r.resolve(&mut flops)).collect::<Result<Vec<_>>>();
    let routing = PassRouting { encoder: resolve(pending_encoder)?, decoder: resolve(pending_decoder)? };
    Ok(ModelOutput { logits, balance_loss: balance, flops, routing })
}
