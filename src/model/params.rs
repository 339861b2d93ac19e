//! Where every weight of the Transformer lives in a [`ParamStore`], and the one walk over them
//! that subnet extraction and loading share.
//!
//! The supernet stores every tensor at its largest size; a subnet reads front slices. A standalone
//! (extracted) model has the same structure with each tensor exactly its subnet's size, so one
//! forward implementation runs both: the slices it takes are then the whole tensors.

use super::space::{SearchSpace, SubnetConfig};
use crate::autograd::{ParamId, ParamStore};
use crate::moe::layer::xavier;
use crate::moe::{ExpertParams, MoeParams};
use crate::rng::Rng;
use crate::{DType, Error, Result, Tensor};

/// q/k/v/out projections of one attention, each with a bias. Weights are `[out, in]`.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub q_w: ParamId,
    pub q_b: ParamId,
    pub k_w: ParamId,
    pub k_b: ParamId,
    pub v_w: ParamId,
    pub v_b: ParamId,
    pub o_w: ParamId,
    pub o_b: ParamId,
}

#[derive(Clone, Copy, Debug)]
pub struct LnParams {
    pub gamma: ParamId,
    pub beta: ParamId,
}

pub struct EncoderLayerParams {
    pub self_attn: AttnParams,
    pub self_ln: LnParams,
    /// The FFN of the layer: a dense FFN is the 1-expert case.
    pub ffn: MoeParams,
    pub ffn_ln: LnParams,
}

pub struct DecoderLayerParams {
    pub self_attn: AttnParams,
    pub self_ln: LnParams,
    pub cross_attn: AttnParams,
    pub cross_ln: LnParams,
    pub ffn: MoeParams,
    pub ffn_ln: LnParams,
}

/// Every parameter of an encoder–decoder Transformer.
pub struct NetParams {
    /// The joined-vocabulary embedding `[V, max(d_enc, d_dec)]`, shared by source, target and the
    /// output projection.
    pub embed: ParamId,
    pub encoder: Vec<EncoderLayerParams>,
    pub decoder: Vec<DecoderLayerParams>,
    /// Final layer norms of each stack (pre-LayerNorm models only).
    pub encoder_ln: Option<LnParams>,
    pub decoder_ln: Option<LnParams>,
    /// The largest embed dims the tensors hold (dropout is scaled by `d / d_max`).
    pub encoder_d_max: usize,
    pub decoder_d_max: usize,
}

fn add_attn(store: &mut ParamStore, prefix: &str, qkv: usize, d_q: usize, d_kv: usize, rng: &mut Rng) -> Result<AttnParams> {
    let zeros = |n: usize| Tensor::zeros(&[n], DType::F32);
    Ok(AttnParams {
        q_w: store.add(format!("{prefix}.q_proj.weight"), xavier(qkv, d_q, rng)?)?,
        q_b: store.add(format!("{prefix}.q_proj.bias"), zeros(qkv))?,
        k_w: store.add(format!("{prefix}.k_proj.weight"), xavier(qkv, d_kv, rng)?)?,
        k_b: store.add(format!("{prefix}.k_proj.bias"), zeros(qkv))?,
        v_w: store.add(format!("{prefix}.v_proj.weight"), xavier(qkv, d_kv, rng)?)?,
        v_b: store.add(format!("{prefix}.v_proj.bias"), zeros(qkv))?,
        o_w: store.add(format!("{prefix}.out_proj.weight"), xavier(d_q, qkv, rng)?)?,
        o_b: store.add(format!("{prefix}.out_proj.bias"), zeros(d_q))?,
    })
}

fn add_ln(store: &mut ParamStore, prefix: &str, d: usize) -> Result<LnParams> {
    Ok(LnParams {
        gamma: store.add(format!("{prefix}.weight"), Tensor::ones(&[d], DType::F32))?,
        beta: store.add(format!("{prefix}.bias"), Tensor::zeros(&[d], DType::F32))?,
    })
}

impl NetParams {
    /// The supernet's parameters: every tensor at the space's largest size, every layer up to the
    /// deepest encoder and decoder, `max_experts` experts of the widest width in every FFN layer.
    /// Created in f32 (the MoE layer's initialiser decides its own tensors' dtype).
    pub fn create_supernet(store: &mut ParamStore, space: &SearchSpace, vocab: usize, pre_norm: bool, rng: &mut Rng) -> Result<Self> {
        space.check()?;
        if vocab == 0 {
            return Err(Error::invalid("Supernet::new", "the vocabulary is empty"));
        }
        let (de, dd, qkv) = (space.max_encoder_embed_dim(), space.max_decoder_embed_dim(), space.qkv_dim);
        let (n, h) = (space.max_experts, space.max_ffn_width());
        let d_emb = de.max(dd);
        // Normal(0, d^-1/2), as fairseq initialises a scaled embedding.
        let embed = store.add("embed.weight", Tensor::randn(&[vocab, d_emb], (d_emb as f64).powf(-0.5), DType::F32, rng))?;
        let mut encoder = Vec::new();
        for i in 0..space.max_encoder_layers() {
            let p = format!("encoder.layers.{i}");
            encoder.push(EncoderLayerParams {
                self_attn: add_attn(store, &format!("{p}.self_attn"), qkv, de, de, rng)?,
                self_ln: add_ln(store, &format!("{p}.self_attn_layer_norm"), de)?,
                ffn: MoeParams::new(store, &format!("{p}.moe"), de, n, h, rng)?,
                ffn_ln: add_ln(store, &format!("{p}.final_layer_norm"), de)?,
            });
        }
        let mut decoder = Vec::new();
        for i in 0..space.max_decoder_layers() {
            let p = format!("decoder.layers.{i}");
            decoder.push(DecoderLayerParams {
                self_attn: add_attn(store, &format!("{p}.self_attn"), qkv, dd, dd, rng)?,
                self_ln: add_ln(store, &format!("{p}.self_attn_layer_norm"), dd)?,
                cross_attn: add_attn(store, &format!("{p}.encoder_attn"), qkv, dd, de, rng)?,
                cross_ln: add_ln(store, &format!("{p}.encoder_attn_layer_norm"), dd)?,
                ffn: MoeParams::new(store, &format!("{p}.moe"), dd, n, h, rng)?,
                ffn_ln: add_ln(store, &format!("{p}.final_layer_norm"), dd)?,
            });
        }
        let (encoder_ln, decoder_ln) = if pre_norm {
            (Some(add_ln(store, "encoder.layer_norm", de)?), Some(add_ln(store, "decoder.layer_norm", dd)?))
        } else {
            (None, None)
        };
        Ok(NetParams { embed, encoder, decoder, encoder_ln, decoder_ln, encoder_d_max: de, decoder_d_max: dd })
    }

    /// The structure of a standalone model of `cfg` with placeholder ids, to be filled by
    /// [`NetParams::map`] (loading walks it to bind the loaded tensors in order).
    pub fn skeleton(cfg: &SubnetConfig, pre_norm: bool) -> Self {
        let z = ParamId(0);
        let attn = AttnParams { q_w: z, q_b: z, k_w: z, k_b: z, v_w: z, v_b: z, o_w: z, o_b: z };
        let ln = LnParams { gamma: z, beta: z };
        let moe = |d: usize, widths: &[usize]| MoeParams {
            router_w: z,
            router_b: z,
            experts: widths.iter().map(|_| ExpertParams { fc1_w: z, fc1_b: z, fc2_w: z, fc2_b: z }).collect(),
            d_max: d,
            n_max: widths.len(),
            h_max: widths.iter().copied().max().unwrap_or(0),
        };
        let (de, dd) = (cfg.encoder_embed_dim, cfg.decoder_embed_dim);
        NetParams {
            embed: z,
            encoder: cfg
                .encoder
                .iter()
                .map(|l| EncoderLayerParams { self_attn: attn, self_ln: ln, ffn: moe(de, &l.expert_widths), ffn_ln: ln })
                .collect(),
            decoder: cfg
                .decoder
                .iter()
                .map(|l| DecoderLayerParams {
                    self_attn: attn,
                    self_ln: ln,
                    cross_attn: attn,
                    cross_ln: ln,
                    ffn: moe(dd, &l.expert_widths),
                    ffn_ln: ln,
                })
                .collect(),
            encoder_ln: pre_norm.then_some(ln),
            decoder_ln: pre_norm.then_some(ln),
            encoder_d_max: de,
            decoder_d_max: dd,
        }
    }

    /// Checks that these parameters can run `cfg` (enough layers, experts, width).
    pub fn check_fits(&self, store: &ParamStore, cfg: &SubnetConfig) -> Result<()> {
        cfg.check()?;
        let too_big = |what: String| Err(Error::invalid("subnet does not fit the model", what));
        if cfg.encoder.len() > self.encoder.len() || cfg.decoder.len() > self.decoder.len() {
            return too_big(format!(
                "{} encoder / {} decoder layers requested, the model has {} / {}",
                cfg.encoder.len(),
                cfg.decoder.len(),
                self.encoder.len(),
                self.decoder.len()
            ));
        }
        if cfg.encoder_embed_dim > self.encoder_d_max || cfg.decoder_embed_dim > self.decoder_d_max {
            return too_big(format!(
                "embed dims {}/{} requested, the model holds {}/{}",
                cfg.encoder_embed_dim, cfg.decoder_embed_dim, self.encoder_d_max, self.decoder_d_max
            ));
        }
        let qkv = store.value(match self.encoder.first() {
            Some(l) => l.self_attn.q_w,
            None => return too_big("the model has no encoder layer".into()),
        });
        if qkv.shape()[0] != cfg.qkv_dim {
            return too_big(format!("qkv_dim {} requested, the model has {}", cfg.qkv_dim, qkv.shape()[0]));
        }
        let ffn_fits = |side: &str, i: usize, p: &MoeParams, widths: &[usize]| -> Result<()> {
            if widths.len() > p.experts.len() {
                return too_big(format!("{side} layer {i}: {} experts requested, the model has {}", widths.len(), p.experts.len()));
            }
            for (e, (&w, ep)) in widths.iter().zip(&p.experts).enumerate() {
                let have = store.value(ep.fc1_w).shape()[0];
                if w > have {
                    return too_big(format!("{side} layer {i}: expert {e} width {w} requested, the model holds {have}"));
                }
            }
            Ok(())
        };
        for (i, (l, p)) in cfg.encoder.iter().zip(&self.encoder).enumerate() {
            ffn_fits("encoder", i, &p.ffn, &l.expert_widths)?;
        }
        for (i, (l, p)) in cfg.decoder.iter().zip(&self.decoder).enumerate() {
            ffn_fits("decoder", i, &p.ffn, &l.expert_widths)?;
        }
        Ok(())
    }

    /// Walks every parameter `cfg` uses, in a fixed order, calling `f(id, sizes)` with the front
    /// slice the subnet takes of it; builds the same structure from the ids `f` returns. Extraction
    /// copies each slice into a new store; loading binds the loaded tensors in the same order.
    ///
    /// A dense (1-expert) layer has no router: its router is mapped to an empty `[0, d]` / `[0]`
    /// slice, so a standalone model holds no weight its subnet does not use.
    pub fn map(&self, cfg: &SubnetConfig, vocab: usize, mut f: impl FnMut(ParamId, &[usize]) -> Result<ParamId>) -> Result<NetParams> {
        let (de, dd, qkv) = (cfg.encoder_embed_dim, cfg.decoder_embed_dim, cfg.qkv_dim);
        let mut f = |id: ParamId, sizes: &[usize]| f(id, sizes);
        let embed = f(self.embed, &[vocab, de.max(dd)])?;
        fn attn(
            f: &mut impl FnMut(ParamId, &[usize]) -> Result<ParamId>,
            a: &AttnParams,
            qkv: usize,
            dq: usize,
            dkv: usize,
        ) -> Result<AttnParams> {
            Ok(AttnParams {
                q_w: f(a.q_w, &[qkv, dq])?,
                q_b: f(a.q_b, &[qkv])?,
                k_w: f(a.k_w, &[qkv, dkv])?,
                k_b: f(a.k_b, &[qkv])?,
                v_w: f(a.v_w, &[qkv, dkv])?,
                v_b: f(a.v_b, &[qkv])?,
                o_w: f(a.o_w, &[dq, qkv])?,
                o_b: f(a.o_b, &[dq])?,
            })
        }
        fn ln(f: &mut impl FnMut(ParamId, &[usize]) -> Result<ParamId>, l: &LnParams, d: usize) -> Result<LnParams> {
            Ok(LnParams { gamma: f(l.gamma, &[d])?, beta: f(l.beta, &[d])? })
        }
        fn moe(f: &mut impl FnMut(ParamId, &[usize]) -> Result<ParamId>, p: &MoeParams, d: usize, widths: &[usize]) -> Result<MoeParams> {
            let n = widths.len();
            let rows = if n > 1 { n } else { 0 };
            let router_w = f(p.router_w, &[rows, d])?;
            let router_b = f(p.router_b, &[rows])?;
            let mut experts = Vec::with_capacity(n);
            for (ep, &h) in p.experts.iter().zip(widths) {
                experts.push(ExpertParams {
                    fc1_w: f(ep.fc1_w, &[h, d])?,
                    fc1_b: f(ep.fc1_b, &[h])?,
                    fc2_w: f(ep.fc2_w, &[d, h])?,
                    fc2_b: f(ep.fc2_b, &[d])?,
                });
            }
            Ok(MoeParams { router_w, router_b, experts, d_max: d, n_max: n, h_max: widths.iter().copied().max().unwrap_or(0) })
        }
        let mut encoder = Vec::new();
        for (l, p) in cfg.encoder.iter().zip(&self.encoder) {
            encoder.push(EncoderLayerParams {
                self_attn: attn(&mut f, &p.self_attn, qkv, de, de)?,
                self_ln: ln(&mut f, &p.self_ln, de)?,
                ffn: moe(&mut f, &p.ffn, de, &l.expert_widths)?,
                ffn_ln: ln(&mut f, &p.ffn_ln, de)?,
            });
        }
        let mut decoder = Vec::new();
        for (l, p) in cfg.decoder.iter().zip(&self.decoder) {
            decoder.push(DecoderLayerParams {
                self_attn: attn(&mut f, &p.self_attn, qkv, dd, dd)?,
                self_ln: ln(&mut f, &p.self_ln, dd)?,
                cross_attn: attn(&mut f, &p.cross_attn, qkv, dd, de)?,
                cross_ln: ln(&mut f, &p.cross_ln, dd)?,
                ffn: moe(&mut f, &p.ffn, dd, &l.expert_widths)?,
                ffn_ln: ln(&mut f, &p.ffn_ln, dd)?,
            });
        }
        let encoder_ln = self.encoder_ln.as_ref().map(|l| ln(&mut f, l, de)).transpose()?;
        let decoder_ln = self.decoder_ln.as_ref().map(|l| ln(&mut f, l, dd)).transpose()?;
        Ok(NetParams { embed, encoder, decoder, encoder_ln, decoder_ln, encoder_d_max: de, decoder_d_max: dd })
    }
}
