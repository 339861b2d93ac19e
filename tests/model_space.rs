//! Search space parsing, uniform sampling, config validation.

mod common;

use automoe::model::{SearchSpace, SubnetConfig};
use automoe::rng::seeded;
use std::collections::BTreeSet;

#[test]
fn presets_parse_and_match_the_paper() {
    let root = env!("CARGO_MANIFEST_DIR");
    let wmt = SearchSpace::from_toml_file(format!("{root}/configs/space_wmt14.toml")).unwrap();
    assert_eq!(wmt.encoder_embed_dim, vec![640, 512]);
    assert_eq!(wmt.decoder_layers, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(wmt.cross_attention_span, vec![-1, 1, 2]);
    assert_eq!(wmt.ffn_widths, vec![3072, 2048, 1024]);
    assert_eq!((wmt.qkv_dim, wmt.max_experts, wmt.route_k.clone()), (512, 6, vec![1]));
    let small = SearchSpace::from_toml_file(format!("{root}/configs/space_small.toml")).unwrap();
    wmt.validate(&wmt.largest()).unwrap();
    small.validate(&small.sample(&mut seeded(1)).unwrap()).unwrap();
}

#[test]
fn bad_space_files_are_errors() {
    let ok = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/space_small.toml")).unwrap();
    let err = |t: &str| SearchSpace::from_toml_str(t).unwrap_err().to_string();
    assert!(err(&ok.replace("encoder_heads = [4, 2]", "encoder_heads = [3, 2]")).contains("encoder_heads"));
    assert!(err(&ok.replace("ffn_widths = [512, 256, 128]", "ffn_widths = []")).contains("ffn_widths"));
    assert!(err(&ok.replace("max_experts = 4", "max_experts = 4\nbogus = 1")).contains("bogus"));
    assert!(err(&ok.replace("cross_attention_span = [-1, 1, 2]", "cross_attention_span = [0]")).contains("cross_attention_span"));
    assert!(err(&ok.replace("cross_attention_span = [-1, 1, 2]", "cross_attention_span = [5]")).contains("reaches"));
    // Sizes far beyond any model are errors naming the gene, before anything is allocated.
    let huge = err(&ok.replace("ffn_widths = [512, 256, 128]", "ffn_widths = [512, 1000000000]"));
    assert!(huge.contains("ffn_widths = 1000000000") && huge.contains("limit"), "{huge}");
    assert!(err(&ok.replace("max_experts = 4", "max_experts = 513")).contains("max_experts = 513"));
    assert!(err(&ok.replace("route_k = [1]", "route_k = [1, 9]")).contains("route_k = 9"));
    let missing = std::path::Path::new("/nonexistent/space.toml");
    assert!(SearchSpace::from_toml_file(missing).unwrap_err().to_string().contains("nonexistent"));
}

#[test]
fn sampling_reaches_every_choice_and_is_seeded() {
    let space = common::tiny_space();
    let mut rng = seeded(7);
    let mut seen: [BTreeSet<i64>; 11] = Default::default();
    for _ in 0..400 {
        let c = space.sample(&mut rng).unwrap();
        space.validate(&c).unwrap();
        seen[0].insert(c.encoder_embed_dim as i64);
        seen[1].insert(c.decoder_embed_dim as i64);
        seen[2].insert(c.encoder.len() as i64);
        seen[3].insert(c.decoder.len() as i64);
        seen[4].insert(c.route_k as i64);
        for l in &c.encoder {
            seen[5].insert(l.self_heads as i64);
            seen[6].insert(l.experts as i64);
            seen[7].extend(l.expert_widths.iter().map(|&w| w as i64));
        }
        for l in &c.decoder {
            seen[8].insert(l.self_heads as i64);
            seen[9].insert(l.cross_heads as i64);
            seen[10].insert(l.cross_span as i64);
            seen[6].insert(l.experts as i64);
            seen[7].extend(l.expert_widths.iter().map(|&w| w as i64));
        }
    }
    let set = |v: &[i64]| v.iter().copied().collect::<BTreeSet<i64>>();
    assert_eq!(seen[0], set(&[12, 16]));
    assert_eq!(seen[1], set(&[12, 16]));
    assert_eq!(seen[2], set(&[2, 3]));
    assert_eq!(seen[3], set(&[1, 2]));
    assert_eq!(seen[4], set(&[1, 2]));
    assert_eq!(seen[5], set(&[2, 4]));
    assert_eq!(seen[6], set(&[1, 2, 3]));
    assert_eq!(seen[7], set(&[16, 24]));
    assert_eq!(seen[8], set(&[2, 4]));
    assert_eq!(seen[9], set(&[2, 4]));
    assert_eq!(seen[10], set(&[-1, 1, 2]));
    assert_eq!(space.sample(&mut seeded(3)).unwrap(), space.sample(&mut seeded(3)).unwrap());
}

#[test]
fn spans_never_reach_past_a_shallow_encoder() {
    // The tiny space has 2- and 3-layer encoders and a span choice reaching 3 layers.
    let space = common::tiny_space();
    let mut rng = seeded(11);
    let mut shallow = 0;
    for _ in 0..200 {
        let c = space.sample(&mut rng).unwrap();
        if c.encoder.len() == 2 {
            shallow += 1;
            assert!(c.decoder.iter().all(|l| l.cross_span != 2), "{c:?}");
        }
    }
    assert!(shallow > 50);
}

fn err_of(space: &SearchSpace, c: &SubnetConfig) -> String {
    space.validate(c).unwrap_err().to_string()
}

#[test]
fn validation_errors_name_gene_and_layer() {
    let space = common::tiny_space();
    let base = common::moe_config();
    space.validate(&base).unwrap();

    let mut c = base.clone();
    c.encoder[1].expert_widths = vec![20];
    let e = err_of(&space, &c);
    assert!(e.contains("encoder layer 1") && e.contains("expert 0 width = 20"), "{e}");

    let mut c = base.clone();
    c.decoder[0].expert_widths = vec![16];
    let e = err_of(&space, &c);
    assert!(e.contains("decoder layer 0") && e.contains("expert_widths has 1 entries but experts = 2"), "{e}");

    let mut c = base.clone();
    c.decoder[1].cross_heads = 3;
    let e = err_of(&space, &c);
    assert!(e.contains("decoder layer 1") && e.contains("cross_heads = 3 does not divide qkv_dim 8"), "{e}");

    let mut c = base.clone();
    c.encoder.truncate(2);
    let e = err_of(&space, &c);
    assert!(e.contains("decoder layer 0") && e.contains("cross_span 2 reaches 3 encoder layers but the encoder has 2"), "{e}");

    let mut c = base.clone();
    c.decoder.push(c.decoder[0].clone());
    let e = err_of(&space, &c);
    assert!(e.contains("decoder layers = 3") && e.contains("[1, 2]"), "{e}");

    let mut c = base.clone();
    c.encoder[0].experts = 4;
    c.encoder[0].expert_widths = vec![16; 4];
    assert!(err_of(&space, &c).contains("exceeds the space's max_experts 3"));

    let mut c = base.clone();
    c.decoder[1].cross_span = 0;
    assert!(err_of(&space, &c).contains("cross_span 0"));

    let mut c = base.clone();
    c.encoder_embed_dim = 14;
    assert!(err_of(&space, &c).contains("encoder_embed_dim = 14"));

    let mut c = base.clone();
    c.qkv_dim = 16;
    assert!(err_of(&space, &c).contains("qkv_dim"));
}

#[test]
fn config_json_round_trip_and_bad_json() {
    let c = common::moe_config();
    let back = SubnetConfig::from_json(&c.to_json().unwrap()).unwrap();
    assert_eq!(back, c);
    let mut bad = c.clone();
    bad.encoder[0].expert_widths.pop();
    let e = SubnetConfig::from_json(&serde_json::to_string(&bad).unwrap()).unwrap_err().to_string();
    assert!(e.contains("encoder layer 0"), "{e}");
    assert!(SubnetConfig::from_json("{\"encoder_embed_dim\": 3}").is_err());

    // Sizes past the limits (a typo, or an overflow waiting to happen) name the gene and layer.
    let check = |c: &SubnetConfig| c.check().unwrap_err().to_string();
    let mut wide = c.clone();
    wide.decoder[0].expert_widths[0] = 1 << 40;
    let e = check(&wide);
    assert!(e.contains("decoder layer 0") && e.contains("expert 0 has width 1099511627776"), "{e}");
    let mut many = c.clone();
    many.encoder[1].experts = 600;
    many.encoder[1].expert_widths = vec![64; 600];
    assert!(check(&many).contains("encoder layer 1: experts = 600"), "{}", check(&many));
    let mut deep = c.clone();
    deep.encoder_embed_dim = usize::MAX;
    assert!(check(&deep).contains("encoder_embed_dim"));
    let mut k = c;
    k.route_k = 9;
    assert!(check(&k).contains("route_k = 9"));
}

#[test]
fn a_supernet_larger_than_memory_is_an_error_not_an_abort() {
    if automoe::device::host_memory_available().is_none() {
        eprintln!("skipped: this platform does not report available memory");
        return;
    }
    let ok = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/space_small.toml")).unwrap();
    // Within every gene's limit, but 512 experts 1M wide in each of 6 layers are ~3 TiB of f32.
    let text = ok.replace("ffn_widths = [512, 256, 128]", "ffn_widths = [1048576]").replace("max_experts = 4", "max_experts = 512");
    let space = SearchSpace::from_toml_str(&text).unwrap();
    let opts = automoe::model::ModelOptions::default();
    let err = automoe::model::Supernet::new(space, 1000, opts, 0, automoe::DType::F32).err().expect("must not allocate").to_string();
    assert!(err.contains("parameters of the supernet of space `small`") && err.contains("GiB available"), "{err}");
}
