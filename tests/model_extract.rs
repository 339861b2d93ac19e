//! Subnet extraction: a standalone model with exactly its subnet's weights, saved and loaded,
//! computes what the supernet computes for that subnet.

mod common;

use automoe::autograd::Tape;
use automoe::model::{param_report, ModelOptions, Routing, RunMode, SubnetConfig, SubnetModel, Supernet};
use automoe::rng::seeded;
use automoe::DType;
use common::{batch, dense_config, moe_config, rel_diff, tiny_space, VOCAB};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("automoe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn check_equivalence(net: &Supernet, cfg: &SubnetConfig, tag: &str) {
    let b = batch(&[6, 4, 5], &[5, 3, 4], 17);
    let run = RunMode::train(5); // dropout on: the same seed must give the same masks in both
    let mut t1 = Tape::new();
    let sup = net.forward(&mut t1, cfg, &b, run).unwrap();
    let model = net.extract(cfg).unwrap();
    let mut t2 = Tape::new();
    let ext = model.forward(&mut t2, &b, run).unwrap();
    let (a, e) = (sup.logits.value().to_f64_vec().unwrap(), ext.logits.value().to_f64_vec().unwrap());
    // Dropout is scaled by d / d_max, so training passes agree only at the supernet's width;
    // inference passes must agree always.
    let sup_inf = net.forward(&mut Tape::inference(), cfg, &b, RunMode::inference()).unwrap();
    let ext_inf = model.forward(&mut Tape::inference(), &b, RunMode::inference()).unwrap();
    let a_inf = sup_inf.logits.value().to_f64_vec().unwrap();
    let e_inf = ext_inf.logits.value().to_f64_vec().unwrap();
    assert!(rel_diff(&e_inf, &a_inf) < 1e-6, "{tag}: {}", rel_diff(&e_inf, &a_inf));
    assert_eq!(sup_inf.routing, ext_inf.routing, "{tag}: routing differs");
    assert_eq!(sup_inf.flops, ext_inf.flops, "{tag}");
    if cfg.encoder_embed_dim == net.space.max_encoder_embed_dim() && cfg.decoder_embed_dim == net.space.max_decoder_embed_dim() {
        assert!(rel_diff(&e, &a) < 1e-6, "{tag} (train): {}", rel_diff(&e, &a));
    }

    // The standalone model holds exactly the subnet's parameters.
    let report = param_report(cfg, VOCAB, net.options.pre_norm, &Routing::Uniform).unwrap();
    assert_eq!(model.numel(), report.total, "{tag}");
    for (_, p) in model.store.iter() {
        let src = net.store.value(net.store.id(&p.name).unwrap());
        assert!(p.value.shape().iter().zip(src.shape()).all(|(a, b)| a <= b), "{tag}: {}", p.name);
    }

    // Save, load, same outputs bit for bit.
    let dir = temp_dir(tag);
    model.save(&dir).unwrap();
    let loaded = SubnetModel::load(&dir).unwrap();
    assert_eq!(loaded.config, *cfg);
    assert_eq!(loaded.options, net.options);
    let l_inf = loaded.forward(&mut Tape::inference(), &b, RunMode::inference()).unwrap().logits.value().to_f64_vec().unwrap();
    assert_eq!(l_inf, e_inf, "{tag}: reloaded model differs");
    assert!(!std::fs::read_dir(&dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn extracted_models_match_the_supernet() {
    for pre_norm in [false, true] {
        let net = Supernet::new(tiny_space(), VOCAB, ModelOptions { pre_norm, ..Default::default() }, 8, DType::F32).unwrap();
        check_equivalence(&net, &dense_config(), &format!("dense-{pre_norm}"));
        check_equivalence(&net, &moe_config(), &format!("moe-{pre_norm}"));
        check_equivalence(&net, &net.space.largest(), &format!("largest-{pre_norm}"));
        let mut rng = seeded(pre_norm as u64);
        for i in 0..4 {
            let cfg = net.space.sample(&mut rng).unwrap();
            check_equivalence(&net, &cfg, &format!("sample{i}-{pre_norm}"));
        }
    }
}

#[test]
fn loading_rejects_mismatched_files() {
    let net = Supernet::new(tiny_space(), VOCAB, ModelOptions::default(), 8, DType::F32).unwrap();
    let model = net.extract(&moe_config()).unwrap();
    let dir = temp_dir("bad-load");
    model.save(&dir).unwrap();
    // A config that asks for a wider expert than the stored tensor.
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["config"]["encoder"][0]["expert_widths"][0] = serde_json::json!(24);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let e = SubnetModel::load(&dir).err().unwrap().to_string();
    assert!(e.contains("encoder.layers.0.moe.experts.0.fc1.weight") && e.contains("[16, 16]"), "{e}");
    // A parameter listed twice: a format error naming model.json and the name.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = v["param_order"][0].clone();
    v["param_order"].as_array_mut().unwrap().push(first.clone());
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let e = SubnetModel::load(&dir).err().unwrap();
    assert!(matches!(e, automoe::Error::Format { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("model.json") && e.contains(&format!("`{}` twice", first.as_str().unwrap())), "{e}");
    std::fs::write(&path, "{").unwrap();
    assert!(SubnetModel::load(&dir).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(SubnetModel::load(&dir).err().unwrap().to_string().contains("model.json"));
    // A config outside the space cannot be extracted.
    let mut cfg = moe_config();
    cfg.decoder[0].expert_widths[0] = 20;
    assert!(net.extract(&cfg).is_err());
}
