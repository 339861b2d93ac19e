//! Parameter and FLOP counts: the analytic counts from a config agree with what a forward pass
//! executes, and reproduce the paper's Transformer-big numbers.

mod common;

use automoe::autograd::Tape;
use automoe::model::{flop_report, param_report, ModelOptions, Routing, RunMode, SearchSpace, SubnetConfig, Supernet};
use automoe::rng::seeded;
use automoe::DType;
use common::{batch, dense_config, moe_config, tiny_space, VOCAB};

fn executed(net: &Supernet, cfg: &SubnetConfig, b: &automoe::model::Batch) -> automoe::model::ModelOutput {
    net.forward(&mut Tape::inference(), cfg, b, RunMode::inference()).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn analytic_flops_match_the_executed_count() {
    let net = Supernet::new(tiny_space(), VOCAB, ModelOptions::default(), 3, DType::F32).unwrap();
    let mut cfgs = vec![dense_config(), moe_config(), net.space.largest()];
    let mut rng = seeded(4);
    cfgs.extend((0..6).map(|_| net.space.sample(&mut rng).unwrap()));
    for (i, cfg) in cfgs.iter().enumerate() {
        // The paper's protocol: one 30-token source, one 30-token target.
        let b = batch(&[30], &[30], 100 + i as u64);
        let out = executed(&net, cfg, &b);
        let routing = Routing::measured(&out.routing);
        let a = flop_report(cfg, VOCAB, 30, 30, &routing).unwrap();
        assert!(close(a.encoder, out.flops.encoder as f64), "cfg {i}: encoder {} vs {}", a.encoder, out.flops.encoder);
        assert!(close(a.decoder, out.flops.decoder as f64), "cfg {i}: decoder {} vs {}", a.decoder, out.flops.decoder);
        assert_eq!(a.output, out.flops.output as f64);
        let dense = cfg.encoder.iter().all(|l| l.experts == 1) && cfg.decoder.iter().all(|l| l.experts == 1);
        if dense {
            // No routing involved: the uniform report is exact too.
            let u = flop_report(cfg, VOCAB, 30, 30, &Routing::Uniform).unwrap();
            assert_eq!(u.total(), out.flops.total() as f64, "cfg {i}");
        }
        // A batch of equal-length sentences costs the batch size times one.
        let b2 = batch(&[30, 30], &[30, 30], 200 + i as u64);
        let out2 = executed(&net, cfg, &b2);
        if dense {
            assert_eq!(out2.flops.total(), 2 * out.flops.total(), "cfg {i}");
        }
    }
}

#[test]
fn moe_flops_follow_the_routing_and_include_the_router() {
    let cfg = moe_config();
    let u = flop_report(&cfg, VOCAB, 30, 30, &Routing::Uniform).unwrap();
    let shares = |pick_wide: bool, layers: &[(usize, Vec<usize>)]| -> Vec<Vec<f64>> {
        layers
            .iter()
            .map(|(_, w)| {
                let target = if pick_wide { *w.iter().max().unwrap() } else { *w.iter().min().unwrap() };
                let e = w.iter().position(|&x| x == target).unwrap();
                (0..w.len()).map(|i| if i == e { 1.0 } else { 0.0 }).collect()
            })
            .collect()
    };
    let enc: Vec<(usize, Vec<usize>)> = cfg.encoder.iter().map(|l| (l.experts, l.expert_widths.clone())).collect();
    let dec: Vec<(usize, Vec<usize>)> = cfg.decoder.iter().map(|l| (l.experts, l.expert_widths.clone())).collect();
    // Everything to the narrow experts costs less than uniform, which costs less than everything
    // to the wide ones.
    let wide = flop_report(&cfg, VOCAB, 30, 30, &Routing::Measured { encoder: shares(true, &enc), decoder: shares(true, &dec) }).unwrap();
    let narrow =
        flop_report(&cfg, VOCAB, 30, 30, &Routing::Measured { encoder: shares(false, &enc), decoder: shares(false, &dec) }).unwrap();
    assert!(narrow.total() < u.total() && u.total() < wide.total());
    // Encoder layer 0: 30 tokens, d 16, widths [16, 24, 16]; router 2*30*16*3 plus one expert each.
    let enc0_narrow = 2.0 * 30.0 * 16.0 * 3.0 + 4.0 * 30.0 * 16.0 * 16.0;
    let enc0_wide = 2.0 * 30.0 * 16.0 * 3.0 + 4.0 * 30.0 * 16.0 * 24.0;
    assert!(close(wide.encoder - narrow.encoder, (enc0_wide - enc0_narrow) + 4.0 * 30.0 * 16.0 * 8.0));
    // Mismatched measured routing is an error naming the layer.
    let e = flop_report(&cfg, VOCAB, 30, 30, &Routing::Measured { encoder: vec![vec![1.0]], decoder: vec![] }).unwrap_err().to_string();
    assert!(e.contains("encoder layer 0") && e.contains("3 experts"), "{e}");
}

#[test]
fn params_count_only_used_experts_and_active_params_follow_k() {
    let cfg = moe_config();
    let p = param_report(&cfg, VOCAB, false, &Routing::Uniform).unwrap();
    // Dropping an expert of a layer removes exactly its weights and one router row.
    let mut fewer = cfg.clone();
    fewer.encoder[0].experts = 2;
    fewer.encoder[0].expert_widths = vec![16, 24];
    let q = param_report(&fewer, VOCAB, false, &Routing::Uniform).unwrap();
    assert_eq!(p.total - q.total, (2 * 16 * 16 + 16 + 16) + (16 + 1));
    // Top-2 doubles the expert part of active params but not the stored count.
    let mut k2 = cfg.clone();
    k2.route_k = 2;
    let r = param_report(&k2, VOCAB, false, &Routing::Uniform).unwrap();
    assert_eq!(r.total, p.total);
    assert!(r.active_per_token > p.active_per_token);
    assert!(p.active_per_token < p.total as f64);
    // A dense config: every parameter is active.
    let d = param_report(&dense_config(), VOCAB, false, &Routing::Uniform).unwrap();
    assert_eq!(d.active_per_token, d.total as f64);
    assert_eq!(d.embedding, VOCAB * 16);
}

/// Transformer-big (d 1024, FFN 4096, 16 heads, 6+6 layers) in the paper's units: 176 M
/// parameters without the embedding; ~10.6 GFLOPs at 30 + 30 tokens.
#[test]
fn transformer_big_matches_the_paper() {
    let space = SearchSpace::from_toml_str(
        r#"
        name = "big"
        encoder_embed_dim = [1024]
        decoder_embed_dim = [1024]
        qkv_dim = 1024
        encoder_layers = [6]
        decoder_layers = [6]
        encoder_heads = [16]
        decoder_self_heads = [16]
        decoder_cross_heads = [16]
        cross_attention_span = [-1]
        ffn_widths = [4096]
        max_experts = 1
        route_k = [1]
        "#,
    )
    .unwrap();
    let cfg = space.largest();
    let p = param_report(&cfg, 32768, false, &Routing::Uniform).unwrap();
    let m = p.total_without_embedding() as f64 / 1e6;
    assert!((m - 176.0).abs() < 1.0, "{m} M");
    let f = flop_report(&cfg, 32768, 30, 30, &Routing::Uniform).unwrap();
    println!("Transformer-big: {m:.1} M params, {:.2} GFLOPs (paper: 176 M, 10.6 GFLOPs)", f.paper_gflops());
    assert!((f.paper_gflops() - 10.6).abs() < 0.1, "{}", f.paper_gflops());
}

#[test]
fn routing_measured_over_several_batches() {
    let net = Supernet::new(tiny_space(), VOCAB, ModelOptions::default(), 3, DType::F32).unwrap();
    let cfg = moe_config();
    let mut total = automoe::model::PassRouting::default();
    for s in 0..3 {
        let out = executed(&net, &cfg, &batch(&[7, 5], &[6, 4], 40 + s));
        total.merge(&out.routing).unwrap();
    }
    assert!(total.encoder.iter().all(|l| l.tokens == 36 && l.counts.iter().sum::<usize>() == 36));
    assert!(total.decoder.iter().all(|l| l.tokens == 30));
    let Routing::Measured { encoder, .. } = Routing::measured(&total) else { unreachable!() };
    assert!(encoder.iter().all(|s| (s.iter().sum::<f64>() - 1.0).abs() < 1e-12));
    // A different subnet's routing cannot be merged in.
    let other = executed(&net, &dense_config(), &batch(&[3], &[3], 1));
    assert!(total.merge(&other.routing).is_err());
}

#[test]
fn mean_max_share_averages_the_moe_layers_and_skips_dense_ones() {
    use automoe::model::{LayerRouting, PassRouting};
    let layer = |tokens, k, counts: &[usize]| LayerRouting { tokens, k, counts: counts.to_vec() };
    // Dense layers (one expert) and layers without tokens say nothing about a router.
    let dense = PassRouting { encoder: vec![layer(10, 1, &[10])], decoder: vec![layer(0, 2, &[0, 0, 0])] };
    assert_eq!(dense.mean_max_share(), None);
    // 6 of 10 pairs, and 8 of 2·6 = 12 pairs: (0.6 + 2/3) / 2.
    let pass = PassRouting { encoder: vec![layer(10, 1, &[10]), layer(10, 1, &[3, 6, 1])], decoder: vec![layer(6, 2, &[8, 4])] };
    let want = (0.6 + 8.0 / 12.0) / 2.0;
    assert!(close(pass.mean_max_share().unwrap(), want), "{:?}", pass.mean_max_share());
    // A real pass: between 1/E and 1 for the MoE config.
    let net = Supernet::new(tiny_space(), VOCAB, ModelOptions::default(), 5, DType::F32).unwrap();
    let cfg = moe_config();
    let out = executed(&net, &cfg, &batch(&[7, 5], &[6, 4], 9));
    let most_experts = cfg.encoder.iter().map(|l| l.experts).chain(cfg.decoder.iter().map(|l| l.experts)).max().unwrap();
    let s = out.routing.mean_max_share().unwrap();
    assert!(s >= 1.0 / most_experts as f64 - 1e-12 && s <= 1.0, "{s}");
    assert_eq!(executed(&net, &dense_config(), &batch(&[3], &[3], 1)).routing.mean_max_share(), None);
}

#[test]
fn a_vocabulary_past_the_limit_is_an_error_not_a_wrapped_count() {
    use automoe::model::MAX_VOCAB_SIZE;
    let cfg = moe_config();
    // 2^58 · 16 wraps a u64; before the limit the count came out small and the allocation panicked.
    for vocab in [MAX_VOCAB_SIZE + 1, 1 << 58, usize::MAX] {
        let e = param_report(&cfg, vocab, false, &Routing::Uniform).unwrap_err().to_string();
        assert!(e.contains(&format!("vocabulary size {vocab}")), "{e}");
        let e = Supernet::new(tiny_space(), vocab, ModelOptions::default(), 1, DType::F32).err().unwrap().to_string();
        assert!(e.contains("Supernet::new") && e.contains("vocabulary size"), "{e}");
    }
    for vocab in [0, 3] {
        assert!(param_report(&cfg, vocab, false, &Routing::Uniform).unwrap_err().to_string().contains("special tokens"));
    }
    param_report(&cfg, MAX_VOCAB_SIZE, false, &Routing::Uniform).unwrap();
    // Token counts from callers are multiplied in f64: huge lengths give huge FLOPs, not a wrap.
    let f = flop_report(&cfg, VOCAB, usize::MAX / 2, usize::MAX / 2, &Routing::Uniform).unwrap();
    assert!(f.total() > 1e30, "{f:?}");
}
