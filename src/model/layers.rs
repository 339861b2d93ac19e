//! The building blocks of the Transformer on the tape: sliced linear layers, multi-head attention,
//! layer norm, the FFN/MoE call, sinusoidal positions and the arbitrary-attention memory.
//!
//! Every weight is read as a front slice of whatever the store holds (`W[:out, :in]`), so the same
//! code runs a supernet (slices of max-size tensors) and a standalone model (whole tensors).
//!
//! FLOPs: `Ctx` counts the matrix products it executes, `2·m·n·k` each: every linear layer, the
//! attention score and context products, the output projection, and inside an MoE layer the
//! router and each expert's two products over the rows it actually received (read off the
//! layer's dispatch). Elementwise ops, softmax, layer norm, embedding lookups, bias adds and
//! dropout are not counted (they are a few percent of the total and the paper's counts omit them).

use std::sync::Arc;

use super::params::{AttnParams, LnParams};
use crate::autograd::{ParamId, ParamStore, Tape, Var};
use crate::moe::{moe_forward, MoeOptions, MoeParams, MoeRouting, MoeSubnet};
use crate::tensor::MaskSpec;
use crate::{DType, Error, Result, Tensor};

/// Layer-norm epsilon (fairseq's).
pub const LN_EPS: f64 = 1e-5;

/// Matrix-product FLOPs executed by one forward pass, by part of the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlopCount {
    pub encoder: u64,
    pub decoder: u64,
    /// The output projection onto the vocabulary (through the shared embedding).
    pub output: u64,
}

impl FlopCount {
    pub fn total(&self) -> u64 {
        self.encoder + self.decoder + self.output
    }

    pub(crate) fn add(&mut self, part: Part, flops: u64) {
        match part {
            Part::Encoder => self.encoder += flops,
            Part::Decoder => self.decoder += flops,
            Part::Output => self.output += flops,
        }
    }
}

/// Which part of the model FLOPs are charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Encoder,
    Decoder,
    Output,
}

/// Routing of one FFN layer in one forward pass (a dense layer routes every token to expert 0).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRouting {
    /// Tokens that entered the layer (padding excluded).
    pub tokens: usize,
    /// Experts per token.
    pub k: usize,
    /// (token, slot) pairs each expert processed (after any capacity limit).
    pub counts: Vec<usize>,
}

/// One FFN layer's routing as a forward pass leaves it: on a CUDA backend its counts stay on the
/// device until the pass is over, so that no MoE layer waits for the GPU in the middle of a pass.
pub(crate) struct PendingRouting {
    part: Part,
    tokens: usize,
    k: usize,
    d: usize,
    widths: Vec<usize>,
    /// `None` for a dense layer (every token goes to its one expert).
    routing: Option<MoeRouting>,
}

impl PendingRouting {
    /// The routing with its counts on the host (a download for a device routing), adding the
    /// experts' FLOPs (fc1 and fc2 over the rows each expert received) to `flops`.
    pub fn resolve(self, flops: &mut FlopCount) -> Result<LayerRouting> {
        let counts = match &self.routing {
            None => vec![self.tokens],
            Some(r) => r.counts()?.to_vec(),
        };
        for (&c, &h) in counts.iter().zip(&self.widths) {
            flops.add(self.part, 2 * 2 * (c * self.d * h) as u64);
        }
        Ok(LayerRouting { tokens: self.tokens, k: self.k, counts })
    }
}

/// Per-call state of a forward pass: the tape, the parameters, dropout seeding and the FLOP
/// counter.
pub(crate) struct Ctx<'a> {
    pub tape: &'a mut Tape,
    pub store: &'a ParamStore,
    /// Dropout is active only when training.
    pub train: bool,
    pub seed: u64,
    /// Dropout sites seen so far: each gets its own seed, `hash64(seed, site)`.
    site: u64,
    pub part: Part,
    pub flops: FlopCount,
    /// Element type of activations and constants (bf16 under mixed precision).
    pub dtype: DType,
    /// Where the parameters live; constants (positions, padding rows) are made there.
    pub device: crate::Device,
}

impl<'a> Ctx<'a> {
    pub fn new(tape: &'a mut Tape, store: &'a ParamStore, train: bool, seed: u64, dtype: DType, device: crate::Device) -> Self {
        Ctx { tape, store, train, seed, site: 0, part: Part::Encoder, flops: FlopCount::default(), dtype, device }
    }

    pub fn count(&mut self, flops: u64) {
        self.flops.add(self.part, flops);
    }

    /// The front slice `sizes` of a stored parameter (a view; its gradient lands in that slice).
    pub fn param(&mut self, id: ParamId, sizes: &[usize]) -> Result<Var> {
        let full = self.tape.param(self.store, id)?;
        self.tape.front_slice(&full, sizes)
    }

    /// `x W[:out, :in]^T + b[:out]` for `x: [rows, in]`.
    pub fn linear(&mut self, x: &Var, w: ParamId, b: Option<ParamId>, out: usize) -> Result<Var> {
        let (rows, inp) = match x.shape() {
            [r, i] => (*r, *i),
            s => return Err(Error::invalid("model linear", format!("expects a [rows, in] input, got {s:?}"))),
        };
        let wv = self.param(w, &[out, inp])?;
        let bv = b.map(|b| self.param(b, &[out])).transpose()?;
        self.count(2 * (rows * out * inp) as u64);
        self.tape.linear(x, &wv, bv.as_ref())
    }

    pub fn dropout(&mut self, x: &Var, p: f64) -> Result<Var> {
        if !self.train || p <= 0.0 {
            return Ok(x.clone());
        }
        let seed = crate::rng::hash64(self.seed, self.site);
        self.site += 1;
        self.tape.dropout(x, p, seed)
    }

    pub fn layer_norm(&mut self, x: &Var, p: &LnParams, d: usize) -> Result<Var> {
        let g = self.param(p.gamma, &[d])?;
        let b = self.param(p.beta, &[d])?;
        self.tape.layer_norm(x, &g, &b, LN_EPS)
    }

    pub fn matmul(&mut self, a: &Var, b: &Var) -> Result<Var> {
        let y = self.tape.matmul(a, b)?;
        // [.., m, k] @ [.., k, n]: 2·k multiply-adds per output element.
        let k = *a.shape().last().unwrap_or(&0);
        self.count(2 * (y.value().numel() * k) as u64);
        Ok(y)
    }
}

/// Shape of one attention call.
pub(crate) struct AttnDims {
    pub batch: usize,
    pub tq: usize,
    pub tk: usize,
    pub heads: usize,
    pub qkv: usize,
    /// Model width of the queries (and of the output).
    pub d_q: usize,
}

/// Multi-head attention of `xq: [B*tq, d_q]` over `mem: [B*tk, d_kv]`, output `[B*tq, d_q]`.
/// The q/k/v width is fixed (`qkv`); heads split it (head dim `qkv / heads`).
pub(crate) fn attention(
    ctx: &mut Ctx,
    p: &AttnParams,
    xq: &Var,
    mem: &Var,
    dims: &AttnDims,
    mask: &MaskSpec,
    attn_dropout: f64,
) -> Result<Var> {
    let q = attention_query(ctx, p, xq, dims)?;
    let (k, v) = attention_keys_values(ctx, p, mem, dims.qkv)?;
    attend(ctx, p, &q, &k, &v, dims, mask, attn_dropout)
}

/// The scaled query projection `[B*tq, qkv]` of an attention.
pub(crate) fn attention_query(ctx: &mut Ctx, p: &AttnParams, xq: &Var, dims: &AttnDims) -> Result<Var> {
    let AttnDims { heads, qkv, .. } = *dims;
    if heads == 0 || qkv % heads != 0 {
        return Err(Error::invalid("attention", format!("{heads} heads do not divide the q/k/v width {qkv}")));
    }
    let q = ctx.linear(xq, p.q_w, Some(p.q_b), qkv)?;
    // Scaling q rather than the scores: the same result, on the smaller tensor (fairseq's order).
    ctx.tape.scale(&q, ((qkv / heads) as f64).powf(-0.5))
}

/// The key and value projections `[B*tk, qkv]` of a memory. Incremental decoding computes them
/// once (encoder memory) or one position at a time (self-attention cache).
pub(crate) fn attention_keys_values(ctx: &mut Ctx, p: &AttnParams, mem: &Var, qkv: usize) -> Result<(Var, Var)> {
    let k = ctx.linear(mem, p.k_w, Some(p.k_b), qkv)?;
    let v = ctx.linear(mem, p.v_w, Some(p.v_b), qkv)?;
    Ok((k, v))
}

/// Attention of projected queries `q: [B*tq, qkv]` over projected keys and values
/// `k, v: [B*tk, qkv]`, through the output projection: `[B*tq, d_q]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    ctx: &mut Ctx,
    p: &AttnParams,
    q: &Var,
    k: &Var,
    v: &Var,
    dims: &AttnDims,
    mask: &MaskSpec,
    attn_dropout: f64,
) -> Result<Var> {
    let AttnDims { batch, tq, tk, heads, qkv, d_q } = *dims;
    if heads == 0 || qkv % heads != 0 {
        return Err(Error::invalid("attention", format!("{heads} heads do not divide the q/k/v width {qkv}")));
    }
    let hd = qkv / heads;
    let q = ctx.tape.reshape(q, &[batch, tq, heads, hd])?;
    let q = ctx.tape.permute(&q, &[0, 2, 1, 3])?; // [B, H, tq, hd]
    let k = ctx.tape.reshape(k, &[batch, tk, heads, hd])?;
    let kt = ctx.tape.permute(&k, &[0, 2, 3, 1])?; // [B, H, hd, tk]
    let v = ctx.tape.reshape(v, &[batch, tk, heads, hd])?;
    let v = ctx.tape.permute(&v, &[0, 2, 1, 3])?; // [B, H, tk, hd]
    let scores = ctx.matmul(&q, &kt)?;
    let probs = ctx.tape.softmax(&scores, mask)?;
    let probs = ctx.dropout(&probs, attn_dropout)?;
    let c = ctx.matmul(&probs, &v)?; // [B, H, tq, hd]
    let c = ctx.tape.permute(&c, &[0, 2, 1, 3])?;
    let c = ctx.tape.reshape(&c, &[batch * tq, qkv])?;
    ctx.linear(&c, p.o_w, Some(p.o_b), d_q)
}

/// The FFN sub-layer through the MoE layer (a dense FFN is its 1-expert case). Padding rows are
/// taken out before routing — they must not count as routed tokens, take expert capacity or
/// pull on the balance loss — and come back as zero rows. Returns the output, the layer's
/// (already weighted) balance loss and its routing, whose counts (and the expert FLOPs that depend
/// on them) may still be on the device: [`PendingRouting::resolve`] at the end of the pass.
pub(crate) fn ffn(
    ctx: &mut Ctx,
    p: &MoeParams,
    x: &Var,
    widths: &[usize],
    k: usize,
    opts: &MoeOptions,
    real_rows: Option<&[u32]>,
) -> Result<(Var, Option<Var>, PendingRouting)> {
    let d = x.shape()[1];
    let rows = x.shape()[0];
    let xs = match real_rows {
        // A row gather with a scatter-add backward: exactly what an embedding lookup is.
        Some(r) => ctx.tape.embedding(x, r)?,
        None => x.clone(),
    };
    let sub = MoeSubnet { d, widths: widths.to_vec(), k };
    let out = moe_forward(ctx.tape, ctx.store, p, &sub, opts, &xs)?;
    let tokens = xs.shape()[0];
    if widths.len() > 1 {
        ctx.count(2 * (tokens * d * widths.len()) as u64); // the router
    }
    let routing = PendingRouting {
        part: ctx.part,
        tokens,
        k: if widths.len() == 1 { 1 } else { k },
        d,
        widths: widths.to_vec(),
        routing: if widths.len() == 1 { None } else { Some(out.routing) },
    };
    let y = match real_rows {
        Some(r) => {
            // Scatter back: row t of the output is row pos[t] of [y; 0], the extra zero row for pads.
            let zero = ctx.tape.constant(Tensor::zeros_on(&[1, d], ctx.dtype, ctx.device)?);
            let padded = ctx.tape.concat(&[&out.y, &zero], 0)?;
            let mut pos = vec![r.len() as u32; rows];
            for (i, &t) in r.iter().enumerate() {
                pos[t as usize] = i as u32;
            }
            ctx.tape.embedding(&padded, &pos)?
        }
        None => out.y,
    };
    Ok((y, out.balance_loss, routing))
}

/// Sinusoidal positions `[len, d]` (fairseq's layout: sines in the first half of the channels,
/// cosines in the second, frequencies `10000^(-i/(half-1))`; an odd last channel is zero).
pub fn sinusoidal_positions(len: usize, d: usize, dtype: DType) -> Result<Tensor> {
    sinusoidal_positions_on(len, d, dtype, crate::Device::Cpu)
}

/// [`sinusoidal_positions`] made on `device`.
pub fn sinusoidal_positions_on(len: usize, d: usize, dtype: DType, device: crate::Device) -> Result<Tensor> {
    let half = d / 2;
    let step = if half > 1 { (10000f64).ln() / (half - 1) as f64 } else { 0.0 };
    let mut v = vec![0.0f64; len * d];
    for p in 0..len {
        for i in 0..half {
            let a = p as f64 * (-(i as f64) * step).exp();
            v[p * d + i] = a.sin();
            v[p * d + half + i] = a.cos();
        }
    }
    Tensor::from_vec(v, &[len, d])?.to_dtype_device(dtype, device)
}

/// The memory of an encoder–decoder attention with a span over `m` encoder layers: the last `m`
/// entries of `states` (each `[B*S, d]`), oldest first, concatenated along time per sentence:
/// `[B * m*S, d]`, with the source padding mask repeated the same way (`[B, m*S]`).
pub fn cross_attention_memory(
    tape: &mut Tape,
    states: &[Var],
    src_pad: &[bool],
    batch: usize,
    src_len: usize,
    m: usize,
) -> Result<(Var, Arc<Vec<bool>>)> {
    if m == 0 || m > states.len() {
        return Err(Error::invalid("cross attention", format!("a span over {m} encoder layers, but the encoder has {}", states.len())));
    }
    if src_pad.len() != batch * src_len {
        return Err(Error::ShapeMismatch { op: "cross attention mask", lhs: vec![batch, src_len], rhs: vec![src_pad.len()] });
    }
    let used = &states[states.len() - m..];
    let mem = if m == 1 {
        used[0].clone()
    } else {
        let d = used[0].shape()[1];
        let parts = used.iter().map(|s| tape.reshape(s, &[batch, src_len, d])).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Var> = parts.iter().collect();
        let cat = tape.concat(&refs, 1)?;
        tape.reshape(&cat, &[batch * m * src_len, d])?
    };
    let mut mask = Vec::with_capacity(batch * m * src_len);
    for b in 0..batch {
        for _ in 0..m {
            mask.extend_from_slice(&src_pad[b * src_len..(b + 1) * src_len]);
        }
    }
    Ok((mem, Arc::new(mask)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoids_follow_fairseq_layout() {
        let p = sinusoidal_positions(3, 6, DType::F64).unwrap().to_f64_vec().unwrap();
        // Position 0: sin 0 = 0 in the first half, cos 0 = 1 in the second.
        assert_eq!(&p[..6], &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        // Position 2, channel 1: frequency 10000^(-1/2).
        assert!((p[2 * 6 + 1] - (2.0 * 0.01f64).sin()).abs() < 1e-12);
        assert!((p[2 * 6 + 4] - (2.0 * 0.01f64).cos()).abs() < 1e-12);
        // An odd width leaves the last channel at zero.
        let odd = sinusoidal_positions(2, 5, DType::F64).unwrap().to_f64_vec().unwrap();
        assert_eq!(odd[9], 0.0);
    }

    #[test]
    fn flop_count_totals() {
        let f = FlopCount { encoder: 1, decoder: 2, output: 3 };
        assert_eq!(f.total(), 6);
    }
}
