//! Parameter and FLOP counts of a subnet, computed from its config alone.
//!
//! Conventions (and where the reference implementation went wrong):
//! - Parameters count only what the subnet uses: the experts of each layer up to its expert
//!   count, each at its own width; the router only for layers with more than one expert.
//! - Active parameters per token: everything but the FFN layers, plus per MoE layer its router and
//!   the expected parameters of the `k` experts a token is routed to under a routing distribution.
//! - FLOPs are matrix-product FLOPs (`2·m·n·k` per product), exactly what `layers::Ctx` counts in
//!   a forward pass: linear layers, attention scores and contexts, the router, each expert over
//!   the tokens routed to it, and the output projection. The paper's GFLOPs (HAT/AutoMoE tables)
//!   leave out the output projection; [`FlopReport::paper_gflops`] follows that, and all
//!   comparisons with a budget are made in the same unit (GFLOPs), never raw against giga.

use serde::{Deserialize, Serialize};

use super::space::{check_vocab, span_layers, SubnetConfig};
use super::transformer::PassRouting;
use crate::{Error, Result};

/// How tokens spread over the experts of each FFN layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Routing {
    /// Every expert of a layer gets the same share of (token, slot) pairs.
    Uniform,
    /// Measured per layer: the fraction of (token, slot) pairs each expert processed
    /// (`counts[e] / (tokens * k)`; below 1 in sum when a capacity limit dropped pairs).
    Measured { encoder: Vec<Vec<f64>>, decoder: Vec<Vec<f64>> },
}

impl Routing {
    /// The routing measured in one forward pass.
    pub fn measured(pass: &PassRouting) -> Self {
        let frac = |layers: &[super::layers::LayerRouting]| -> Vec<Vec<f64>> {
            layers
                .iter()
                .map(|l| {
                    let pairs = (l.tokens * l.k).max(1) as f64;
                    l.counts.iter().map(|&c| c as f64 / pairs).collect()
                })
                .collect()
        };
        Routing::Measured { encoder: frac(&pass.encoder), decoder: frac(&pass.decoder) }
    }

    /// The expert shares of one layer (`side` 0 = encoder, 1 = decoder).
    fn shares(&self, side: usize, layer: usize, n: usize) -> Result<Vec<f64>> {
        match self {
            Routing::Uniform => Ok(vec![1.0 / n as f64; n]),
            Routing::Measured { encoder, decoder } => {
                let name = if side == 0 { "encoder" } else { "decoder" };
                let layers = if side == 0 { encoder } else { decoder };
                let s =
                    layers.get(layer).ok_or_else(|| Error::invalid("Routing", format!("no measured routing for {name} layer {layer}")))?;
                if s.len() != n {
                    return Err(Error::invalid("Routing", format!("{name} layer {layer}: {} measured shares for {n} experts", s.len())));
                }
                Ok(s.clone())
            }
        }
    }
}

/// Parameter counts of a subnet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamReport {
    /// Every stored scalar the subnet uses (a standalone model's size).
    pub total: usize,
    /// The shared embedding `[V, max(d_enc, d_dec)]` (included in `total`).
    pub embedding: usize,
    /// Expected parameters one token touches (routers plus its `k` experts in MoE layers).
    pub active_per_token: f64,
}

impl ParamReport {
    /// Without the embedding, as the paper's tables count.
    pub fn total_without_embedding(&self) -> usize {
        self.total - self.embedding
    }
    pub fn active_without_embedding(&self) -> f64 {
        self.active_per_token - self.embedding as f64
    }
}

/// FLOPs of one forward pass (batch 1) by part.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlopReport {
    pub encoder: f64,
    pub decoder: f64,
    pub output: f64,
}

impl FlopReport {
    pub fn total(&self) -> f64 {
        self.encoder + self.decoder + self.output
    }
    /// GFLOPs as the paper reports them: encoder + decoder, without the output projection.
    pub fn paper_gflops(&self) -> f64 {
        (self.encoder + self.decoder) / 1e9
    }
}

fn attn_params(qkv: usize, dq: usize, dkv: usize) -> usize {
    qkv * dq + qkv + 2 * (qkv * dkv + qkv) + dq * qkv + dq
}

fn expert_params(d: usize, h: usize) -> usize {
    2 * d * h + h + d
}

/// (stored, expected active per token) parameters of one FFN layer.
fn ffn_params(d: usize, widths: &[usize], k: usize, shares: &[f64]) -> (usize, f64) {
    let n = widths.len();
    let experts: usize = widths.iter().map(|&h| expert_params(d, h)).sum();
    if n == 1 {
        return (experts, experts as f64);
    }
    let router = n * d + n;
    // A token's k slots land on expert e with probability shares[e] each.
    let active = router as f64 + k as f64 * widths.iter().zip(shares).map(|(&h, &s)| s * expert_params(d, h) as f64).sum::<f64>();
    (router + experts, active)
}

/// Parameter counts of `cfg` with vocabulary `vocab`; `pre_norm` adds the two final LNs.
pub fn param_report(cfg: &SubnetConfig, vocab: usize, pre_norm: bool, routing: &Routing) -> Result<ParamReport> {
    cfg.check()?;
    // With the config's and the vocabulary's limits, no count below can overflow.
    check_vocab(vocab, "param_report")?;
    let (de, dd, qkv) = (cfg.encoder_embed_dim, cfg.decoder_embed_dim, cfg.qkv_dim);
    let embedding = vocab * de.max(dd);
    let mut total = embedding;
    let mut active = embedding as f64;
    if pre_norm {
        total += 2 * de + 2 * dd;
        active += (2 * de + 2 * dd) as f64;
    }
    for (i, l) in cfg.encoder.iter().enumerate() {
        let fixed = attn_params(qkv, de, de) + 4 * de;
        let (stored, act) = ffn_params(de, &l.expert_widths, cfg.k_for(l.experts), &routing.shares(0, i, l.experts)?);
        total += fixed + stored;
        active += fixed as f64 + act;
    }
    for (i, l) in cfg.decoder.iter().enumerate() {
        let fixed = attn_params(qkv, dd, dd) + attn_params(qkv, dd, de) + 6 * dd;
        let (stored, act) = ffn_params(dd, &l.expert_widths, cfg.k_for(l.experts), &routing.shares(1, i, l.experts)?);
        total += fixed + stored;
        active += fixed as f64 + act;
    }
    Ok(ParamReport { total, embedding, active_per_token: active })
}

/// FLOPs of an FFN layer over `t` tokens.
fn ffn_flops(t: usize, d: usize, widths: &[usize], k: usize, shares: &[f64]) -> f64 {
    // In f64 throughout: token counts come from callers, and f64 products cannot wrap.
    let (t, d) = (t as f64, d as f64);
    if widths.len() == 1 {
        return 4.0 * t * d * widths[0] as f64;
    }
    let pairs = t * k as f64;
    let router = 2.0 * t * d * widths.len() as f64;
    router + widths.iter().zip(shares).map(|(&h, &s)| s * pairs * (4.0 * d * h as f64)).sum::<f64>()
}

/// Matrix-product FLOPs of one attention: q/k/v/out projections, scores and contexts.
fn attn_flops(tq: usize, tk: usize, dq: usize, dkv: usize, qkv: usize) -> f64 {
    let (tq, tk, dq, dkv, qkv) = (tq as f64, tk as f64, dq as f64, dkv as f64, qkv as f64);
    let proj = 2.0 * tq * dq * qkv + 2.0 * 2.0 * tk * dkv * qkv + 2.0 * tq * qkv * dq;
    let scores = 2.0 * 2.0 * tq * tk * qkv; // q·k and probs·v
    proj + scores
}

/// FLOPs of one forward pass of `cfg` on a `src_len`-token source and `tgt_len`-token target
/// (batch 1; the paper uses 30 and 30), with MoE layers following `routing`.
pub fn flop_report(cfg: &SubnetConfig, vocab: usize, src_len: usize, tgt_len: usize, routing: &Routing) -> Result<FlopReport> {
    // No vocabulary check: every product is in f64, and the search's features count FLOPs
    // without the output projection by passing vocab 0.
    cfg.check()?;
    let (de, dd, qkv) = (cfg.encoder_embed_dim, cfg.decoder_embed_dim, cfg.qkv_dim);
    let (s, t) = (src_len, tgt_len);
    let mut encoder = 0.0;
    for (i, l) in cfg.encoder.iter().enumerate() {
        encoder += attn_flops(s, s, de, de, qkv);
        encoder += ffn_flops(s, de, &l.expert_widths, cfg.k_for(l.experts), &routing.shares(0, i, l.experts)?);
    }
    let mut decoder = 0.0;
    for (i, l) in cfg.decoder.iter().enumerate() {
        let m = span_layers(l.cross_span).unwrap_or(1);
        decoder += attn_flops(t, t, dd, dd, qkv);
        decoder += attn_flops(t, m.saturating_mul(s), dd, de, qkv);
        decoder += ffn_flops(t, dd, &l.expert_widths, cfg.k_for(l.experts), &routing.shares(1, i, l.experts)?);
    }
    let output = 2.0 * t as f64 * dd as f64 * vocab as f64;
    Ok(FlopReport { encoder, decoder, output })
}

/// Default sentence lengths of the paper's FLOPs protocol.
pub const PAPER_SRC_LEN: usize = 30;
pub const PAPER_TGT_LEN: usize = 30;

/// Everything the search constrains, in one serialisable record (params and the paper's FLOPs
/// protocol).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubnetCost {
    pub params: ParamReport,
    pub flops: FlopReport,
}

impl SubnetCost {
    /// Costs of `cfg` on a [`PAPER_SRC_LEN`]-token source and [`PAPER_TGT_LEN`]-token target.
    pub fn of(cfg: &SubnetConfig, vocab: usize, pre_norm: bool, routing: &Routing) -> Result<Self> {
        Ok(SubnetCost {
            params: param_report(cfg, vocab, pre_norm, routing)?,
            flops: flop_report(cfg, vocab, PAPER_SRC_LEN, PAPER_TGT_LEN, routing)?,
        })
    }

    /// Whether the paper's GFLOPs are within a budget given in GFLOPs (one unit on both sides:
    /// the reference implementation compared raw FLOPs with a value in giga).
    pub fn within_gflops(&self, budget_gflops: f64) -> bool {
        self.flops.paper_gflops() <= budget_gflops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::space::{DecoderLayerConfig, EncoderLayerConfig};

    fn cfg(widths: Vec<usize>, k: usize) -> SubnetConfig {
        SubnetConfig {
            encoder_embed_dim: 4,
            decoder_embed_dim: 4,
            qkv_dim: 4,
            route_k: k,
            encoder: vec![EncoderLayerConfig { self_heads: 1, experts: widths.len(), expert_widths: widths.clone() }],
            decoder: vec![DecoderLayerConfig { self_heads: 1, cross_heads: 1, cross_span: -1, experts: 1, expert_widths: vec![8] }],
        }
    }

    #[test]
    fn hand_counted_small_model() {
        // Encoder: attention 4 * (4*4 + 4) = 80, two LNs 16, experts 2 * (2*4*h + h + 4), router 2*4 + 2.
        let c = cfg(vec![8, 4], 1);
        let p = param_report(&c, 10, false, &Routing::Uniform).unwrap();
        let enc = 80 + 16 + (2 * 4 * 8 + 8 + 4) + (2 * 4 * 4 + 4 + 4) + 10;
        let dec = 80 + 80 + 24 + (2 * 4 * 8 + 8 + 4);
        assert_eq!(p.total, 40 + enc + dec);
        // Top-1, uniform: half a token's expert mass on each expert.
        let active = 40.0 + (80 + 16 + 10) as f64 + 0.5 * (76 + 40) as f64 + dec as f64;
        assert_eq!(p.active_per_token, active);
        // FLOPs: router 2*S*4*2, experts S/2 tokens each at 4*4*h.
        let f = flop_report(&c, 10, 2, 3, &Routing::Uniform).unwrap();
        let attn_enc = (2 * 2 * 4 * 4 + 4 * 2 * 4 * 4 + 2 * 2 * 4 * 4 + 4 * 2 * 2 * 4) as f64;
        assert_eq!(f.encoder, attn_enc + (2 * 2 * 4 * 2) as f64 + 1.0 * (4 * 4 * 8) as f64 + 1.0 * (4 * 4 * 4) as f64);
        assert_eq!(f.output, (2 * 3 * 4 * 10) as f64);
        let cost = SubnetCost::of(&c, 10, false, &Routing::Uniform).unwrap();
        assert!(cost.within_gflops(1.0) && !cost.within_gflops(0.0));
    }
}
