//! Architecture features of a subnet: the predictor's input.
//!
//! [`features`] is the only place a feature vector is built; the dataset builder, the predictor's
//! training and its predictions all call it, and the predictor stores the space and
//! [`FEATURE_VERSION`] it was trained with. (The reference implementation assembled its features
//! in one order when training and in another when predicting; here there is no second order to
//! get wrong.)
//!
//! Every raw feature is scaled by the space's largest value of that gene (so it lies in [0, 1]);
//! the predictor then standardises them with statistics it stores. Absent layers (a decoder
//! shallower than the space's deepest) contribute zeros.

use super::super::model::{flop_report, span_layers, Routing, SearchSpace, SubnetConfig};
use crate::Result;

/// Bumped whenever [`features`] changes meaning; a predictor or dataset of another version is
/// refused.
pub const FEATURE_VERSION: u32 = 1;

fn max_of(list: &[usize]) -> f64 {
    list.iter().copied().max().unwrap_or(1).max(1) as f64
}

/// Encoder and decoder GFLOPs (uniform routing, no output projection) of a 30/30-token pass.
fn gflops(cfg: &SubnetConfig) -> Result<(f64, f64)> {
    let f = flop_report(cfg, 0, crate::model::PAPER_SRC_LEN, crate::model::PAPER_TGT_LEN, &Routing::Uniform)?;
    Ok((f.encoder / 1e9, f.decoder / 1e9))
}

fn mean(v: &[usize]) -> f64 {
    v.iter().sum::<usize>() as f64 / v.len().max(1) as f64
}

/// The feature vector of `cfg` in `space` (validated against it). Its length is
/// [`feature_names`]`(space).len()` for every subnet of the space.
pub fn features(cfg: &SubnetConfig, space: &SearchSpace) -> Result<Vec<f32>> {
    space.validate(cfg)?;
    let (enc_g, dec_g) = gflops(cfg)?;
    let (max_enc_g, max_dec_g) = gflops(&space.largest())?;
    let d_enc = space.max_encoder_embed_dim() as f64;
    let d_dec = space.max_decoder_embed_dim() as f64;
    let width = space.max_ffn_width().max(1) as f64;
    let experts = space.max_experts.max(1) as f64;
    let max_span = space.cross_attention_span.iter().filter_map(|&s| span_layers(s)).max().unwrap_or(1) as f64;
    let mut f = vec![
        cfg.encoder_embed_dim as f64 / d_enc,
        cfg.decoder_embed_dim as f64 / d_dec,
        cfg.encoder.len() as f64 / max_of(&space.encoder_layers),
        cfg.decoder.len() as f64 / max_of(&space.decoder_layers),
        cfg.route_k as f64 / max_of(&space.route_k),
        enc_g / max_enc_g.max(f64::MIN_POSITIVE),
        dec_g / max_dec_g.max(f64::MIN_POSITIVE),
    ];
    for i in 0..space.max_encoder_layers() {
        match cfg.encoder.get(i) {
            Some(l) => f.extend([
                1.0,
                l.self_heads as f64 / max_of(&space.encoder_heads),
                l.experts as f64 / experts,
                mean(&l.expert_widths) / width,
                l.expert_widths.iter().copied().max().unwrap_or(0) as f64 / width,
            ]),
            None => f.extend([0.0; 5]),
        }
    }
    for i in 0..space.max_decoder_layers() {
        match cfg.decoder.get(i) {
            Some(l) => f.extend([
                1.0,
                l.self_heads as f64 / max_of(&space.decoder_self_heads),
                l.cross_heads as f64 / max_of(&space.decoder_cross_heads),
                span_layers(l.cross_span).unwrap_or(1) as f64 / max_span,
                l.experts as f64 / experts,
                mean(&l.expert_widths) / width,
                l.expert_widths.iter().copied().max().unwrap_or(0) as f64 / width,
            ]),
            None => f.extend([0.0; 7]),
        }
    }
    Ok(f.into_iter().map(|x| x as f32).collect())
}

/// Names of the entries of [`features`], in the same order (CSV headers, reports).
pub fn feature_names(space: &SearchSpace) -> Vec<String> {
    let mut n: Vec<String> = ["enc_embed", "dec_embed", "enc_layers", "dec_layers", "route_k", "enc_gflops", "dec_gflops"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for i in 0..space.max_encoder_layers() {
        for g in ["present", "heads", "experts", "mean_width", "max_width"] {
            n.push(format!("enc{i}_{g}"));
        }
    }
    for i in 0..space.max_decoder_layers() {
        for g in ["present", "self_heads", "cross_heads", "span", "experts", "mean_width", "max_width"] {
            n.push(format!("dec{i}_{g}"));
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_matches_names_and_values_are_scaled() {
        let space = SearchSpace::from_toml_str(include_str!("../../configs/space_small.toml")).unwrap();
        let names = feature_names(&space);
        let mut rng = crate::rng::seeded(3);
        for _ in 0..20 {
            let cfg = space.sample(&mut rng).unwrap();
            let f = features(&cfg, &space).unwrap();
            assert_eq!(f.len(), names.len());
            assert!(f.iter().all(|&x| (0.0..=1.0 + 1e-6).contains(&x)), "{f:?}");
        }
        let largest = features(&space.largest(), &space).unwrap();
        assert_eq!(largest[5], 1.0);
        assert_eq!(largest[6], 1.0);
    }
}
