//! Edited files must give errors, never panics or aborts: every number in a saved model's
//! `model.json` and in a subnet config is replaced in turn by extreme values, and loading (and,
//! where it loads, translating) must return. Found by fuzzing the CLI: widths of 1e9 aborted in an
//! allocation and 2^63 overflowed before the size limits existed.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use automoe::data::tokenizer::EOS_ID;
use automoe::decode::{translate_ids, SearchOptions};
use automoe::model::{ModelOptions, SearchSpace, SubnetConfig, SubnetModel, Supernet};
use automoe::DType;
use common::{moe_config, tiny_space, VOCAB};
use serde_json::Value;

/// Values a hand edit or a corrupted file can put where a size belongs.
const EXTREMES: [u64; 5] = [0, 1 << 21, 1 << 32, 1 << 63, u64::MAX];

/// The JSON pointer of every number in `v`.
fn number_paths(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Number(_) => out.push(at),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| number_paths(x, format!("{at}/{i}"), out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| number_paths(x, format!("{at}/{k}"), out)),
        _ => {}
    }
}

/// `v` with the number at `path` replaced by `x`.
fn with_number(v: &Value, path: &str, x: u64) -> Value {
    let mut v = v.clone();
    *v.pointer_mut(path).expect("path from number_paths") = Value::from(x);
    v
}

#[test]
fn every_number_of_a_saved_model_json_set_to_an_extreme_loads_or_errors() {
    let sup = Supernet::new(tiny_space(), VOCAB, ModelOptions::default(), 3, DType::F32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    sup.extract(&moe_config()).unwrap().save(dir.path()).unwrap();
    let json_path = dir.path().join("model.json");
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let mut paths = Vec::new();
    number_paths(&original, String::new(), &mut paths);
    assert!(paths.len() > 20, "the model.json walk found only {paths:?}");
    let source = vec![5u32, 6, 7, EOS_ID];
    let opts = SearchOptions { beam: 2, max_len_b: 4, max_len_a: 0.0, ..SearchOptions::default() };
    let mut loaded = 0;
    for path in &paths {
        for x in EXTREMES {
            std::fs::write(&json_path, with_number(&original, path, x).to_string()).unwrap();
            let outcome = catch_unwind(AssertUnwindSafe(|| match SubnetModel::load(dir.path()) {
                Ok(model) => {
                    loaded += 1;
                    // Whatever loads must translate or refuse to, without a panic.
                    let _ = model.view().and_then(|v| translate_ids(&v, std::slice::from_ref(&source), &opts));
                }
                Err(e) => assert!(e.to_string().contains("model"), "{path} = {x}: the error names no file: {e}"),
            }));
            assert!(outcome.is_ok(), "model.json {path} = {x} panicked");
        }
    }
    // Options such as the dropout rate do not change the shapes, so some edits load.
    assert!(loaded > 0 && loaded < paths.len() * EXTREMES.len(), "{loaded} of {} edits loaded", paths.len() * EXTREMES.len());
}

#[test]
fn every_size_of_a_subnet_config_set_past_its_limit_is_an_error() {
    let original = serde_json::to_value(moe_config()).unwrap();
    let mut paths = Vec::new();
    number_paths(&original, String::new(), &mut paths);
    // Above every limit (the largest limit is an FFN width of 2^20); 0 is below every minimum.
    for path in &paths {
        for x in [0, 1 << 21, 1 << 63, u64::MAX] {
            let text = with_number(&original, path, x).to_string();
            let outcome = catch_unwind(|| SubnetConfig::from_json(&text));
            let result = outcome.unwrap_or_else(|_| panic!("subnet config {path} = {x} panicked"));
            assert!(result.is_err(), "subnet config {path} = {x} was accepted");
        }
    }
    // And a space with such a size is refused when parsed, before a supernet is allocated.
    let space = toml::to_string(&tiny_space()).unwrap();
    for (gene, value) in [("ffn_widths", "[4611686018427387904]"), ("decoder_layers", "[1, 100000]"), ("max_experts", "100000")] {
        let line = space.lines().find(|l| l.starts_with(&format!("{gene} ="))).unwrap();
        let edited = space.replace(line, &format!("{gene} = {value}"));
        let e = SearchSpace::from_toml_str(&edited).unwrap_err().to_string();
        assert!(e.contains(gene), "{gene}: {e}");
    }
}
