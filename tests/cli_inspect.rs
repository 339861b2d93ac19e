//! `automoe inspect` on a saved model directory and on a subnet configuration file: every layer
//! described, the costs equal to the cost model's, and bad arguments refused by name.

mod common;

use std::path::{Path, PathBuf};

use automoe::cli::inspect::{describe, inspect, to_json, Args};
use automoe::cli::translate::TOKENIZER_FILE;
use automoe::data::{BpeConfig, Tokenizer};
use automoe::model::{flop_report, param_report, ModelOptions, Routing, Supernet, PAPER_SRC_LEN, PAPER_TGT_LEN};
use automoe::DType;
use common::{moe_config, tiny_space};

fn args(path: PathBuf, vocab: Option<usize>, json: Option<PathBuf>) -> Args {
    Args { path, vocab, pre_norm: false, json }
}

/// A random MoE model with GELU FFNs and renormalised gates, saved with a tokenizer into `dir`.
fn make_model_dir(dir: &Path) -> usize {
    let text = ["a man rides a bike", "ein mann fährt fahrrad", "two dogs play", "zwei hunde spielen"];
    let tok = Tokenizer::train(text.iter(), &BpeConfig { vocab_size: 60, min_frequency: 1, limit_alphabet: None }).unwrap();
    let options = ModelOptions {
        pre_norm: true,
        activation: automoe::model::FfnActivation::Gelu,
        renormalize_gates: true,
        ..ModelOptions::default()
    };
    let sup = Supernet::new(tiny_space(), tok.vocab_size(), options, 3, DType::F32).unwrap();
    sup.extract(&moe_config()).unwrap().save(dir).unwrap();
    tok.save(dir.join(TOKENIZER_FILE)).unwrap();
    tok.vocab_size()
}

#[test]
fn a_model_directory_is_described_layer_by_layer_with_its_costs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let vocab = make_model_dir(&dir);
    let i = inspect(&args(dir.clone(), None, None)).unwrap();
    let cfg = moe_config();
    assert_eq!((&i.config, i.vocab, i.pre_norm), (&cfg, vocab, true));
    let params = param_report(&cfg, vocab, true, &Routing::Uniform).unwrap();
    let flops = flop_report(&cfg, vocab, PAPER_SRC_LEN, PAPER_TGT_LEN, &Routing::Uniform).unwrap();
    assert_eq!((i.cost.params, i.cost.flops), (params, flops));
    let text = describe(&i);
    assert!(text.contains("model directory") && text.contains("pre-norm, GELU FFNs, top-k gates renormalised, top-1 routing"), "{text}");
    // moe_config: encoder 16 wide with 3 layers, decoder 12 wide with 2.
    assert!(text.contains("encoder: embed 16, attention width 8, 3 layers"), "{text}");
    assert!(text.contains("  layer 0: 2 heads; FFN 3 experts: 16, 24, 16\n"), "{text}");
    assert!(text.contains("  layer 1: 4 heads; FFN dense 24\n"), "{text}");
    assert!(text.contains("decoder: embed 12, attention width 8, 2 layers"), "{text}");
    assert!(
        text.contains("  layer 0: 2 self-attention heads, 4 cross-attention heads over the last 3 encoder layers; FFN 2 experts: 16, 24\n"),
        "{text}"
    );
    assert!(text.contains("cross-attention heads over the last encoder layer; FFN 3 experts: 24, 24, 16\n"), "{text}");
    assert!(text.contains(&format!("GFLOPs: {:.3}", flops.paper_gflops())), "{text}");
    assert!(text.contains(&format!("{:.2} M in all", params.total as f64 / 1e6)), "{text}");
    let j = to_json(&i);
    assert_eq!(j["kind"], "model");
    assert_eq!(j["experts"], "3-1-2 / 2-3");
    assert_eq!(j["params"]["total"].as_u64(), Some(params.total as u64));
    assert_eq!(j["options"]["activation"], "gelu");
    assert_eq!(j["gflops"].as_f64(), Some(flops.paper_gflops()));

    // --json naming a file of the model directory is refused before anything is written.
    let e = automoe::cli::inspect::run(args(dir.clone(), None, Some(dir.join("model.json")))).unwrap_err().to_string();
    assert!(e.contains("is also the input the model's model.json"), "{e}");
    // A model directory has its own vocabulary: a --vocab beside it is a mistake, said so.
    let e = inspect(&args(dir.clone(), Some(7), None)).unwrap_err().to_string();
    assert!(e.contains("model directory") && e.contains("--vocab"), "{e}");
    // A directory that is not a model says what it lacks; a run's directory, where its model is.
    std::fs::remove_file(dir.join(TOKENIZER_FILE)).unwrap();
    let e = inspect(&args(dir.clone(), None, None)).unwrap_err().to_string();
    assert!(e.contains(TOKENIZER_FILE), "{e}");
    let e = inspect(&args(tmp.path().to_path_buf(), None, None)).unwrap_err().to_string();
    assert!(e.contains("training run") && e.contains(&dir.display().to_string()), "{e}");
}

#[test]
fn a_configuration_file_needs_a_vocabulary_and_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("best.json");
    std::fs::write(&path, moe_config().to_json().unwrap()).unwrap();
    let e = inspect(&args(path.clone(), None, None)).unwrap_err().to_string();
    assert!(e.contains("best.json") && e.contains("--vocab"), "{e}");
    assert!(inspect(&args(path.clone(), Some(0), None)).unwrap_err().to_string().contains("--vocab"));
    // A vocabulary past the limit is refused by name before any count (it used to wrap `vocab · d`).
    let e = inspect(&args(path.clone(), Some(1 << 60), None)).unwrap_err().to_string();
    assert!(e.contains("inspect --vocab") && e.contains("vocabulary size 1152921504606846976"), "{e}");
    // --json naming the inspected file would replace it: refused, and the file is kept.
    let before = std::fs::read(&path).unwrap();
    let e = automoe::cli::inspect::run(args(path.clone(), Some(40), Some(path.clone()))).unwrap_err().to_string();
    assert!(e.contains("inspect --json") && e.contains("is also the input"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let i = inspect(&Args { pre_norm: true, ..args(path.clone(), Some(40), None) }).unwrap();
    assert!(i.options.is_none() && i.pre_norm);
    assert_eq!(i.cost.params, param_report(&moe_config(), 40, true, &Routing::Uniform).unwrap());
    assert!(describe(&i).contains("(subnet configuration): vocabulary 40, pre-norm, top-1 routing\n"));
    assert_eq!(to_json(&i)["kind"], "subnet_config");

    // A configuration that contradicts itself is refused with the file's name and the reason.
    let mut bad = moe_config();
    bad.encoder[0].experts = 2;
    std::fs::write(&path, bad.to_json().unwrap()).unwrap();
    let e = inspect(&args(path.clone(), Some(40), None)).unwrap_err().to_string();
    assert!(e.contains("best.json") && e.contains("encoder layer 0"), "{e}");
    std::fs::write(&path, "{").unwrap();
    assert!(inspect(&args(path, Some(40), None)).unwrap_err().to_string().contains("best.json"));
}

#[test]
fn the_binary_prints_the_description_and_writes_the_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    make_model_dir(&dir);
    let json = tmp.path().join("inspect.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_automoe"))
        .args(["inspect", dir.to_str().unwrap(), "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let i = inspect(&args(dir, None, None)).unwrap();
    assert_eq!(printed, describe(&i));
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(written, to_json(&i));
}
