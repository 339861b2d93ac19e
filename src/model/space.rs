//! The search space (a TOML file per dataset) and the concrete subnet configurations drawn from it
//! (JSON). A space lists the choices of every gene; a [`SubnetConfig`] fixes each gene per layer,
//! including the width of every expert of every FFN layer (heterogeneous experts).

use std::path::Path;

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{Error, Result};

/// Upper bounds on the size genes of spaces and subnets. They keep parameter and FLOP counts far
/// from overflowing (so a mistyped config is an error rather than a crash in an allocation), and
/// the expert and route limits are what every backend runs: the CUDA gating kernel routes up to
/// 512 experts, top-8.
pub const MAX_MODEL_DIM: usize = 1 << 16;
/// Largest FFN width of a dense layer or one expert.
pub const MAX_FFN_WIDTH: usize = 1 << 20;
/// Most encoder or decoder layers.
pub const MAX_LAYERS: usize = 1024;
/// Most experts in one FFN layer.
pub const MAX_EXPERTS: usize = 512;
/// Most experts routed per token.
pub const MAX_ROUTE_K: usize = 8;
/// Largest vocabulary of a model: the tokenizer's limit, which keeps `vocab · d` (the embedding)
/// and the output projection's FLOPs far from overflowing.
pub const MAX_VOCAB_SIZE: usize = crate::data::tokenizer::MAX_VOCAB_SIZE;

/// A model's vocabulary must hold the special tokens (ids 0..4: `<pad>`, `<s>`, `</s>`, `<unk>`)
/// and be at most [`MAX_VOCAB_SIZE`]; `op` names the caller (or the flag) in the error.
pub fn check_vocab(vocab: usize, op: &'static str) -> Result<()> {
    let specials = crate::data::SPECIAL_TOKENS.len();
    if vocab < specials || vocab > MAX_VOCAB_SIZE {
        return Err(Error::invalid(
            op,
            format!("vocabulary size {vocab} is not between {specials} (the special tokens) and {MAX_VOCAB_SIZE}"),
        ));
    }
    Ok(())
}
const _: () = assert!(MAX_EXPERTS <= crate::cuda::moe_ops::MAX_EXPERTS && MAX_ROUTE_K <= crate::cuda::moe_ops::MAX_K);

/// The first of `(gene, value, limit)` whose value is above its limit, as a message.
fn over_limit<'a>(checks: impl IntoIterator<Item = (&'a str, usize, usize)>) -> Option<String> {
    checks.into_iter().find(|&(_, v, max)| v > max).map(|(gene, v, max)| format!("{gene} = {v} is above the limit of {max}"))
}

/// The choices of every gene. Every list is a set of allowed values; a subnet picks one per gene
/// (per layer for the per-layer genes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    /// A label for reports (e.g. `wmt14-en-de`).
    pub name: String,
    pub encoder_embed_dim: Vec<usize>,
    pub decoder_embed_dim: Vec<usize>,
    /// Width of the q/k/v projections of every attention (fixed: the head dim is `qkv_dim / heads`).
    pub qkv_dim: usize,
    pub encoder_layers: Vec<usize>,
    pub decoder_layers: Vec<usize>,
    /// Heads of each encoder self-attention.
    pub encoder_heads: Vec<usize>,
    pub decoder_self_heads: Vec<usize>,
    pub decoder_cross_heads: Vec<usize>,
    /// Encoder–decoder attention span of each decoder layer: -1 attends to the last encoder layer,
    /// `s >= 1` to the last `s + 1` encoder layers' outputs concatenated along time.
    pub cross_attention_span: Vec<i32>,
    /// Hidden width of a dense FFN layer and of each expert of an MoE layer.
    pub ffn_widths: Vec<usize>,
    /// Experts per FFN layer are drawn from `1..=max_experts` (1 = a dense FFN).
    pub max_experts: usize,
    /// Experts each token is routed to.
    pub route_k: Vec<usize>,
}

/// One encoder layer of a subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderLayerConfig {
    pub self_heads: usize,
    /// Expert count of the FFN layer (1 = dense).
    pub experts: usize,
    /// Hidden width of each expert, `experts` entries.
    pub expert_widths: Vec<usize>,
}

/// One decoder layer of a subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderLayerConfig {
    pub self_heads: usize,
    pub cross_heads: usize,
    /// See [`SearchSpace::cross_attention_span`].
    pub cross_span: i32,
    pub experts: usize,
    pub expert_widths: Vec<usize>,
}

/// A concrete architecture: every gene fixed. The layer lists' lengths are the layer counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    pub encoder_embed_dim: usize,
    pub decoder_embed_dim: usize,
    pub qkv_dim: usize,
    /// Experts per token in MoE layers (a layer with fewer experts routes to all of them).
    pub route_k: usize,
    pub encoder: Vec<EncoderLayerConfig>,
    pub decoder: Vec<DecoderLayerConfig>,
}

fn bad(msg: String) -> Error {
    Error::invalid("SubnetConfig", msg)
}

/// Encoder layers a cross-attention span reads: -1 -> 1, s >= 1 -> s + 1. `None` for a span that
/// means nothing (0 or below -1).
pub fn span_layers(span: i32) -> Option<usize> {
    match span {
        -1 => Some(1),
        s if s >= 1 => Some(s as usize + 1),
        _ => None,
    }
}

impl SubnetConfig {
    /// Experts per layer, encoder then decoder (e.g. `1-4-2 / 3-1`): how reports and
    /// `automoe inspect` show a subnet's shape at a glance.
    pub fn experts_per_layer(&self) -> String {
        let join = |experts: Vec<usize>| experts.iter().map(usize::to_string).collect::<Vec<_>>().join("-");
        let enc = join(self.encoder.iter().map(|l| l.experts).collect());
        let dec = join(self.decoder.iter().map(|l| l.experts).collect());
        format!("{enc} / {dec}")
    }

    /// Effective experts per token of a layer with `experts` experts.
    pub fn k_for(&self, experts: usize) -> usize {
        self.route_k.min(experts).max(1)
    }

    /// Internal consistency, without a space: what any model (supernet or standalone) needs to run
    /// this config. Errors name the gene and the layer.
    pub fn check(&self) -> Result<()> {
        if self.encoder_embed_dim == 0 || self.decoder_embed_dim == 0 || self.qkv_dim == 0 {
            return Err(bad(format!(
                "embed dims and qkv_dim must be positive (encoder {}, decoder {}, qkv {})",
                self.encoder_embed_dim, self.decoder_embed_dim, self.qkv_dim
            )));
        }
        if self.encoder.is_empty() || self.decoder.is_empty() {
            return Err(bad(format!(
                "needs at least one encoder and one decoder layer (got {} and {})",
                self.encoder.len(),
                self.decoder.len()
            )));
        }
        if self.route_k == 0 {
            return Err(bad("route_k must be at least 1".into()));
        }
        let sizes = [
            ("encoder_embed_dim", self.encoder_embed_dim, MAX_MODEL_DIM),
            ("decoder_embed_dim", self.decoder_embed_dim, MAX_MODEL_DIM),
            ("qkv_dim", self.qkv_dim, MAX_MODEL_DIM),
            ("route_k", self.route_k, MAX_ROUTE_K),
            ("encoder layers", self.encoder.len(), MAX_LAYERS),
            ("decoder layers", self.decoder.len(), MAX_LAYERS),
        ];
        if let Some(msg) = over_limit(sizes) {
            return Err(bad(msg));
        }
        let heads_ok = |side: &str, i: usize, gene: &str, h: usize| -> Result<()> {
            if h == 0 || self.qkv_dim % h != 0 {
                return Err(bad(format!("{side} layer {i}: {gene} = {h} does not divide qkv_dim {}", self.qkv_dim)));
            }
            Ok(())
        };
        let experts_ok = |side: &str, i: usize, n: usize, widths: &[usize]| -> Result<()> {
            if n == 0 {
                return Err(bad(format!("{side} layer {i}: experts must be at least 1")));
            }
            if widths.len() != n {
                return Err(bad(format!("{side} layer {i}: expert_widths has {} entries but experts = {n}", widths.len())));
            }
            if let Some(e) = widths.iter().position(|&w| w == 0) {
                return Err(bad(format!("{side} layer {i}: expert {e} has width 0")));
            }
            if let Some(msg) = over_limit([("experts", n, MAX_EXPERTS)]) {
                return Err(bad(format!("{side} layer {i}: {msg}")));
            }
            if let Some(e) = widths.iter().position(|&w| w > MAX_FFN_WIDTH) {
                return Err(bad(format!("{side} layer {i}: expert {e} has width {}, above the limit of {MAX_FFN_WIDTH}", widths[e])));
            }
            Ok(())
        };
        for (i, l) in self.encoder.iter().enumerate() {
            heads_ok("encoder", i, "self_heads", l.self_heads)?;
            experts_ok("encoder", i, l.experts, &l.expert_widths)?;
        }
        for (i, l) in self.decoder.iter().enumerate() {
            heads_ok("decoder", i, "self_heads", l.self_heads)?;
            heads_ok("decoder", i, "cross_heads", l.cross_heads)?;
            experts_ok("decoder", i, l.experts, &l.expert_widths)?;
            match span_layers(l.cross_span) {
                None => return Err(bad(format!("decoder layer {i}: cross_span {} is not -1 or a positive count", l.cross_span))),
                Some(m) if m > self.encoder.len() => {
                    return Err(bad(format!(
                        "decoder layer {i}: cross_span {} reaches {m} encoder layers but the encoder has {}",
                        l.cross_span,
                        self.encoder.len()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The same subnet with every expert of a layer as wide as the layer's first: a homogeneous
    /// MoE, the baseline that shows what heterogeneous expert widths buy.
    pub fn homogenized(mut self) -> Self {
        let each = |widths: &mut Vec<usize>| {
            if let Some(&w) = widths.first() {
                widths.iter_mut().for_each(|x| *x = w);
            }
        };
        self.encoder.iter_mut().for_each(|l| each(&mut l.expert_widths));
        self.decoder.iter_mut().for_each(|l| each(&mut l.expert_widths));
        self
    }

    /// Whether every layer's experts have one width.
    pub fn is_homogeneous(&self) -> bool {
        let one = |w: &[usize]| w.windows(2).all(|p| p[0] == p[1]);
        self.encoder.iter().all(|l| one(&l.expert_widths)) && self.decoder.iter().all(|l| one(&l.expert_widths))
    }

    /// The widest cross-attention reach (in encoder layers) of any decoder layer.
    pub fn max_span_layers(&self) -> usize {
        self.decoder.iter().filter_map(|l| span_layers(l.cross_span)).max().unwrap_or(1)
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::invalid("SubnetConfig::to_json", e.to_string()))
    }

    /// Parses and checks a config (consistency only; see [`SearchSpace::validate`] for membership).
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: SubnetConfig = serde_json::from_str(text).map_err(|e| Error::invalid("SubnetConfig::from_json", e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// [`Self::from_json`] of a file (what `automoe search` writes as `best.json`); errors name it.
    pub fn from_json_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| Error::Format { path: path.to_path_buf(), msg: e.to_string() })
    }
}

fn space_err(msg: String) -> Error {
    Error::invalid("SearchSpace", msg)
}

impl SearchSpace {
    /// Reads and checks a space from a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let space: SearchSpace = toml::from_str(&text).map_err(|e| Error::Format { path: path.to_path_buf(), msg: e.to_string() })?;
        space.check().map_err(|e| Error::Format { path: path.to_path_buf(), msg: e.to_string() })?;
        Ok(space)
    }

    /// Parses and checks a space from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let space: SearchSpace = toml::from_str(text).map_err(|e| space_err(e.to_string()))?;
        space.check()?;
        Ok(space)
    }

    /// The space must be non-empty in every gene and every choice must be usable.
    pub fn check(&self) -> Result<()> {
        let lists: [(&str, &[usize]); 9] = [
            ("encoder_embed_dim", &self.encoder_embed_dim),
            ("decoder_embed_dim", &self.decoder_embed_dim),
            ("encoder_layers", &self.encoder_layers),
            ("decoder_layers", &self.decoder_layers),
            ("encoder_heads", &self.encoder_heads),
            ("decoder_self_heads", &self.decoder_self_heads),
            ("decoder_cross_heads", &self.decoder_cross_heads),
            ("ffn_widths", &self.ffn_widths),
            ("route_k", &self.route_k),
        ];
        for (gene, list) in lists {
            if list.is_empty() {
                return Err(space_err(format!("gene `{gene}` has no choices")));
            }
            if list.contains(&0) {
                return Err(space_err(format!("gene `{gene}` has a choice of 0: {list:?}")));
            }
            // Sampling picks uniformly from the list, so a repeated value would be drawn more often.
            if let Some(v) = repeated(list) {
                return Err(space_err(format!("gene `{gene}` lists {v} twice: {list:?} (each choice once)")));
            }
        }
        if self.qkv_dim == 0 || self.max_experts == 0 {
            return Err(space_err(format!("qkv_dim ({}) and max_experts ({}) must be positive", self.qkv_dim, self.max_experts)));
        }
        let limit = |gene: &str| match gene {
            "encoder_layers" | "decoder_layers" => MAX_LAYERS,
            "ffn_widths" => MAX_FFN_WIDTH,
            "route_k" => MAX_ROUTE_K,
            _ => MAX_MODEL_DIM,
        };
        let maxima = lists.iter().map(|&(gene, list)| (gene, list.iter().copied().max().unwrap_or(0), limit(gene)));
        if let Some(msg) =
            over_limit(maxima.chain([("qkv_dim", self.qkv_dim, MAX_MODEL_DIM), ("max_experts", self.max_experts, MAX_EXPERTS)]))
        {
            return Err(space_err(msg));
        }
        for (gene, list) in [
            ("encoder_heads", &self.encoder_heads),
            ("decoder_self_heads", &self.decoder_self_heads),
            ("decoder_cross_heads", &self.decoder_cross_heads),
        ] {
            if let Some(h) = list.iter().find(|&&h| self.qkv_dim % h != 0) {
                return Err(space_err(format!("gene `{gene}`: {h} heads do not divide qkv_dim {}", self.qkv_dim)));
            }
        }
        if self.cross_attention_span.is_empty() {
            return Err(space_err("gene `cross_attention_span` has no choices".into()));
        }
        if let Some(v) = repeated(&self.cross_attention_span) {
            return Err(space_err(format!(
                "gene `cross_attention_span` lists {v} twice: {:?} (each choice once)",
                self.cross_attention_span
            )));
        }
        let min_enc = *self.encoder_layers.iter().min().unwrap_or(&0);
        for &s in &self.cross_attention_span {
            match span_layers(s) {
                None => return Err(space_err(format!("cross_attention_span {s} is not -1 or a positive count"))),
                Some(m) if m > *self.encoder_layers.iter().max().unwrap_or(&0) => {
                    return Err(space_err(format!(
                        "cross_attention_span {s} reaches {m} encoder layers, more than any encoder in the space"
                    )))
                }
                Some(_) => {}
            }
        }
        if !self.cross_attention_span.iter().any(|&s| span_layers(s).is_some_and(|m| m <= min_enc)) {
            return Err(space_err(format!("no cross_attention_span choice fits the smallest encoder ({min_enc} layers)")));
        }
        Ok(())
    }

    pub fn max_encoder_embed_dim(&self) -> usize {
        self.encoder_embed_dim.iter().copied().max().unwrap_or(0)
    }
    pub fn max_decoder_embed_dim(&self) -> usize {
        self.decoder_embed_dim.iter().copied().max().unwrap_or(0)
    }
    pub fn max_encoder_layers(&self) -> usize {
        self.encoder_layers.iter().copied().max().unwrap_or(0)
    }
    pub fn max_decoder_layers(&self) -> usize {
        self.decoder_layers.iter().copied().max().unwrap_or(0)
    }
    pub fn max_ffn_width(&self) -> usize {
        self.ffn_widths.iter().copied().max().unwrap_or(0)
    }

    /// Checks that every gene of `cfg` is one of this space's choices. Errors name the gene and
    /// layer and list the allowed values.
    pub fn validate(&self, cfg: &SubnetConfig) -> Result<()> {
        cfg.check()?;
        let member = |gene: &str, at: &str, v: usize, list: &[usize]| -> Result<()> {
            if list.contains(&v) {
                Ok(())
            } else {
                Err(bad(format!("{at}{gene} = {v} is not in the space's choices {list:?}")))
            }
        };
        member("encoder_embed_dim", "", cfg.encoder_embed_dim, &self.encoder_embed_dim)?;
        member("decoder_embed_dim", "", cfg.decoder_embed_dim, &self.decoder_embed_dim)?;
        if cfg.qkv_dim != self.qkv_dim {
            return Err(bad(format!("qkv_dim = {} but the space fixes it at {}", cfg.qkv_dim, self.qkv_dim)));
        }
        member("route_k", "", cfg.route_k, &self.route_k)?;
        member("encoder layers", "", cfg.encoder.len(), &self.encoder_layers)?;
        member("decoder layers", "", cfg.decoder.len(), &self.decoder_layers)?;
        let experts = |at: &str, n: usize, widths: &[usize]| -> Result<()> {
            if n > self.max_experts {
                return Err(bad(format!("{at}experts = {n} exceeds the space's max_experts {}", self.max_experts)));
            }
            for (e, &w) in widths.iter().enumerate() {
                member(&format!("expert {e} width"), at, w, &self.ffn_widths)?;
            }
            Ok(())
        };
        for (i, l) in cfg.encoder.iter().enumerate() {
            let at = format!("encoder layer {i}: ");
            member("self_heads", &at, l.self_heads, &self.encoder_heads)?;
            experts(&at, l.experts, &l.expert_widths)?;
        }
        for (i, l) in cfg.decoder.iter().enumerate() {
            let at = format!("decoder layer {i}: ");
            member("self_heads", &at, l.self_heads, &self.decoder_self_heads)?;
            member("cross_heads", &at, l.cross_heads, &self.decoder_cross_heads)?;
            if !self.cross_attention_span.contains(&l.cross_span) {
                return Err(bad(format!(
                    "{at}cross_span = {} is not in the space's choices {:?}",
                    l.cross_span, self.cross_attention_span
                )));
            }
            experts(&at, l.experts, &l.expert_widths)?;
        }
        Ok(())
    }

    /// A subnet drawn uniformly: every gene independently, per layer for the per-layer genes. The
    /// span of each decoder layer is drawn among the choices that fit the drawn encoder depth.
    pub fn sample(&self, rng: &mut Rng) -> Result<SubnetConfig> {
        self.check()?;
        fn pick<T: Copy>(rng: &mut Rng, list: &[T]) -> T {
            list[rng.random_range(0..list.len())]
        }
        let enc_layers = pick(rng, &self.encoder_layers);
        let dec_layers = pick(rng, &self.decoder_layers);
        let spans: Vec<i32> =
            self.cross_attention_span.iter().copied().filter(|&s| span_layers(s).is_some_and(|m| m <= enc_layers)).collect();
        let ffn = |rng: &mut Rng| -> (usize, Vec<usize>) {
            let n = rng.random_range(1..=self.max_experts);
            (n, (0..n).map(|_| pick(rng, &self.ffn_widths)).collect())
        };
        let encoder_embed_dim = pick(rng, &self.encoder_embed_dim);
        let decoder_embed_dim = pick(rng, &self.decoder_embed_dim);
        let route_k = pick(rng, &self.route_k);
        let encoder = (0..enc_layers)
            .map(|_| {
                let self_heads = pick(rng, &self.encoder_heads);
                let (experts, expert_widths) = ffn(rng);
                EncoderLayerConfig { self_heads, experts, expert_widths }
            })
            .collect();
        let decoder = (0..dec_layers)
            .map(|_| {
                let self_heads = pick(rng, &self.decoder_self_heads);
                let cross_heads = pick(rng, &self.decoder_cross_heads);
                let cross_span = pick(rng, &spans);
                let (experts, expert_widths) = ffn(rng);
                DecoderLayerConfig { self_heads, cross_heads, cross_span, experts, expert_widths }
            })
            .collect();
        Ok(SubnetConfig { encoder_embed_dim, decoder_embed_dim, qkv_dim: self.qkv_dim, route_k, encoder, decoder })
    }

    /// The subnet that uses every weight of the supernet: largest of everything, `max_experts`
    /// experts of the largest width in every layer, the longest span that fits.
    pub fn largest(&self) -> SubnetConfig {
        let enc = self.max_encoder_layers();
        let span = self
            .cross_attention_span
            .iter()
            .copied()
            .filter(|&s| span_layers(s).is_some_and(|m| m <= enc))
            .max_by_key(|&s| span_layers(s))
            .unwrap_or(-1);
        let max = |l: &[usize]| l.iter().copied().max().unwrap_or(1);
        let widths = vec![self.max_ffn_width(); self.max_experts];
        SubnetConfig {
            encoder_embed_dim: self.max_encoder_embed_dim(),
            decoder_embed_dim: self.max_decoder_embed_dim(),
            qkv_dim: self.qkv_dim,
            route_k: max(&self.route_k),
            encoder: (0..enc)
                .map(|_| EncoderLayerConfig {
                    self_heads: max(&self.encoder_heads),
                    experts: self.max_experts,
                    expert_widths: widths.clone(),
                })
                .collect(),
            decoder: (0..self.max_decoder_layers())
                .map(|_| DecoderLayerConfig {
                    self_heads: max(&self.decoder_self_heads),
                    cross_heads: max(&self.decoder_cross_heads),
                    cross_span: span,
                    experts: self.max_experts,
                    expert_widths: widths.clone(),
                })
                .collect(),
        }
    }
}

impl SearchSpace {
    /// The cheapest subnet: smallest embed dims, fewest layers and heads, one expert (a dense FFN)
    /// of the smallest width in every layer, and the shortest encoder–decoder span. Validation of a
    /// supernet watches it next to [`SearchSpace::largest`], since the two bracket every subnet.
    pub fn smallest(&self) -> SubnetConfig {
        let min = |l: &[usize]| l.iter().copied().min().unwrap_or(1);
        let enc = min(&self.encoder_layers);
        let span = self
            .cross_attention_span
            .iter()
            .copied()
            .filter(|&s| span_layers(s).is_some_and(|m| m <= enc))
            .min_by_key(|&s| span_layers(s))
            .unwrap_or(-1);
        let w = min(&self.ffn_widths);
        SubnetConfig {
            encoder_embed_dim: min(&self.encoder_embed_dim),
            decoder_embed_dim: min(&self.decoder_embed_dim),
            qkv_dim: self.qkv_dim,
            route_k: min(&self.route_k),
            encoder: (0..enc)
                .map(|_| EncoderLayerConfig { self_heads: min(&self.encoder_heads), experts: 1, expert_widths: vec![w] })
                .collect(),
            decoder: (0..min(&self.decoder_layers))
                .map(|_| DecoderLayerConfig {
                    self_heads: min(&self.decoder_self_heads),
                    cross_heads: min(&self.decoder_cross_heads),
                    cross_span: span,
                    experts: 1,
                    expert_widths: vec![w],
                })
                .collect(),
        }
    }

    /// The dense baseline of the space: [`SearchSpace::largest`] with one expert (a dense FFN of the
    /// largest width) in every layer, i.e. the biggest plain Transformer the space holds.
    pub fn dense(&self) -> SubnetConfig {
        let mut cfg = self.largest();
        let w = self.max_ffn_width();
        for l in &mut cfg.encoder {
            l.experts = 1;
            l.expert_widths = vec![w];
        }
        for l in &mut cfg.decoder {
            l.experts = 1;
            l.expert_widths = vec![w];
        }
        cfg
    }

    /// The space that holds exactly `cfg` and nothing smaller or larger in any gene it uses: a
    /// supernet over it has every tensor at `cfg`'s size (except experts narrower than the layer's
    /// widest, and the shared embedding when the two embed dims differ), which is how a subnet is
    /// trained from scratch.
    pub fn of_subnet(cfg: &SubnetConfig) -> Result<SearchSpace> {
        cfg.check()?;
        fn set(it: impl Iterator<Item = usize>) -> Vec<usize> {
            let mut v: Vec<usize> = it.collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        let mut spans: Vec<i32> = cfg.decoder.iter().map(|l| l.cross_span).collect();
        spans.sort_unstable();
        spans.dedup();
        let widths = cfg.encoder.iter().flat_map(|l| l.expert_widths.iter()).chain(cfg.decoder.iter().flat_map(|l| l.expert_widths.iter()));
        let max_experts = cfg.encoder.iter().map(|l| l.experts).chain(cfg.decoder.iter().map(|l| l.experts)).max().unwrap_or(1);
        let space = SearchSpace {
            name: "subnet".into(),
            encoder_embed_dim: vec![cfg.encoder_embed_dim],
            decoder_embed_dim: vec![cfg.decoder_embed_dim],
            qkv_dim: cfg.qkv_dim,
            encoder_layers: vec![cfg.encoder.len()],
            decoder_layers: vec![cfg.decoder.len()],
            encoder_heads: set(cfg.encoder.iter().map(|l| l.self_heads)),
            decoder_self_heads: set(cfg.decoder.iter().map(|l| l.self_heads)),
            decoder_cross_heads: set(cfg.decoder.iter().map(|l| l.cross_heads)),
            cross_attention_span: spans,
            ffn_widths: set(widths.copied()),
            max_experts,
            route_k: vec![cfg.route_k],
        };
        space.validate(cfg)?;
        Ok(space)
    }
}

/// A value that occurs more than once in `list`.
fn repeated<T: PartialEq + Copy>(list: &[T]) -> Option<T> {
    list.iter().enumerate().find(|&(i, v)| list[..i].contains(v)).map(|(_, &v)| v)
}

/// The first gene in which two spaces differ, as `gene: a vs b` (the name last, as it changes
/// nothing a model computes); `None` when they are equal. For messages that refuse a file made
/// for another space.
pub fn space_difference(a: &SearchSpace, b: &SearchSpace) -> Option<String> {
    let genes = |s: &SearchSpace| match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (ga, gb) = (genes(a), genes(b));
    let differs = |k: &String| ga.get(k) != gb.get(k);
    let key = ga.keys().filter(|k| k.as_str() != "name").find(|k| differs(k)).or_else(|| ga.keys().find(|k| differs(k)))?;
    let show = |v: Option<&serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "absent".into());
    Some(format!("{key}: {} vs {}", show(ga.get(key)), show(gb.get(key))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_choice_is_refused() {
        let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/space_small.toml")).unwrap();
        SearchSpace::from_toml_str(&base).unwrap();
        let line = base.lines().find(|l| l.starts_with("ffn_widths")).unwrap();
        let twice = base.replace(line, "ffn_widths = [128, 256, 128]");
        let err = SearchSpace::from_toml_str(&twice).unwrap_err().to_string();
        assert!(err.contains("`ffn_widths` lists 128 twice"), "{err}");
        let line = base.lines().find(|l| l.starts_with("cross_attention_span")).unwrap();
        let twice = base.replace(line, "cross_attention_span = [-1, 1, -1]");
        let err = SearchSpace::from_toml_str(&twice).unwrap_err().to_string();
        assert!(err.contains("`cross_attention_span` lists -1 twice"), "{err}");
    }

    #[test]
    fn span_meaning() {
        assert_eq!(span_layers(-1), Some(1));
        assert_eq!(span_layers(1), Some(2));
        assert_eq!(span_layers(2), Some(3));
        assert_eq!(span_layers(0), None);
        assert_eq!(span_layers(-2), None);
    }

    #[test]
    fn effective_k_is_clamped_to_the_layer() {
        let c = SubnetConfig { encoder_embed_dim: 4, decoder_embed_dim: 4, qkv_dim: 4, route_k: 2, encoder: vec![], decoder: vec![] };
        assert_eq!(c.k_for(1), 1);
        assert_eq!(c.k_for(3), 2);
        assert!(c.check().unwrap_err().to_string().contains("at least one encoder"));
    }

    #[test]
    fn smallest_dense_and_singleton_spaces_are_members() {
        let space = SearchSpace::from_toml_str(include_str!("../../configs/space_small.toml")).unwrap();
        for cfg in [space.smallest(), space.dense(), space.largest()] {
            space.validate(&cfg).unwrap();
            let own = SearchSpace::of_subnet(&cfg).unwrap();
            assert_eq!(own.largest().encoder_embed_dim, cfg.encoder_embed_dim);
        }
        let s = space.smallest();
        assert_eq!((s.encoder_embed_dim, s.decoder.len(), s.encoder[0].expert_widths.clone()), (96, 1, vec![128]));
        assert!(space.dense().encoder.iter().all(|l| l.experts == 1 && l.expert_widths == [512]));
        // A singleton space's largest subnet is the subnet itself when it is homogeneous.
        assert_eq!(SearchSpace::of_subnet(&space.dense()).unwrap().largest(), space.dense());
    }

    #[test]
    fn homogenized_gives_every_expert_its_layers_first_width() {
        let cfg: SubnetConfig = serde_json::from_str(include_str!("../../configs/subnet_small_moe.json")).unwrap();
        assert!(!cfg.is_homogeneous());
        let h = cfg.clone().homogenized();
        assert!(h.is_homogeneous());
        h.check().unwrap();
        for (a, b) in cfg
            .encoder
            .iter()
            .zip(&h.encoder)
            .map(|(a, b)| (&a.expert_widths, &b.expert_widths))
            .chain(cfg.decoder.iter().zip(&h.decoder).map(|(a, b)| (&a.expert_widths, &b.expert_widths)))
        {
            assert_eq!((b.len(), b[0]), (a.len(), a[0]));
            assert!(b.iter().all(|&w| w == a[0]), "{a:?} -> {b:?}");
        }
        // Everything but the widths is kept, and a homogeneous subnet is its own projection.
        assert_eq!(SubnetConfig { encoder: cfg.encoder.clone(), decoder: cfg.decoder.clone(), ..h.clone() }, cfg);
        assert_eq!(h.clone().homogenized(), h);
    }

    #[test]
    fn space_difference_names_the_first_differing_gene() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/space_small.toml")).unwrap();
        let a = SearchSpace::from_toml_str(&text).unwrap();
        assert_eq!(space_difference(&a, &a), None);
        let b = SearchSpace { max_experts: a.max_experts + 1, name: "other".into(), ..a.clone() };
        assert_eq!(space_difference(&a, &b), Some(format!("max_experts: {} vs {}", a.max_experts, a.max_experts + 1)));
        let c = SearchSpace { name: "other".into(), ..a.clone() };
        assert_eq!(space_difference(&a, &c), Some(format!("name: \"{}\" vs \"other\"", a.name)));
    }
}
