//! Golden test: BLEU and chrF on a 1000-line corpus must reproduce sacreBLEU 2.6.0's numbers
//! (`tests/data/bleu/expected.json`) to 1e-6, with n-gram counts and lengths exact.

use std::path::PathBuf;

use automoe::decode::bleu::{corpus_bleu, sentence_bleu, sentence_bleu_score};
use automoe::decode::chrf::corpus_chrf;
use serde_json::Value;

fn data(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/bleu").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One segment per line, as sacreBLEU reads a file (the files are ASCII, no `\r`).
fn lines(name: &str) -> Vec<String> {
    data(name).lines().map(str::to_owned).collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("integer") as usize).collect()
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-6, "{what}: got {got}, sacreBLEU {want}");
}

#[test]
fn golden_matches_sacrebleu() {
    let exp: Value = serde_json::from_str(&data("expected.json")).expect("expected.json");
    let (hyps, refs) = (lines("hyp.en"), lines("ref.en"));
    assert_eq!((hyps.len(), refs.len()), (1000, 1000));

    let b = corpus_bleu(&hyps, &refs).unwrap();
    assert_eq!(b.counts.to_vec(), usizes(&exp["counts"]), "counts");
    assert_eq!(b.totals.to_vec(), usizes(&exp["totals"]), "totals");
    assert_eq!(b.sys_len as u64, exp["sys_len"].as_u64().unwrap(), "sys_len");
    assert_eq!(b.ref_len as u64, exp["ref_len"].as_u64().unwrap(), "ref_len");
    assert_close("corpus BLEU", b.score, f(&exp["bleu"]));
    assert_eq!(b.signature(), exp["bleu_signature"].as_str().unwrap());

    let c = corpus_chrf(&hyps, &refs).unwrap();
    assert_close("corpus chrF", c.score, f(&exp["chrf"]));
    assert_eq!(c.signature(), exp["chrf_signature"].as_str().unwrap());

    let first5 = exp["sentence_bleu_first5"].as_array().unwrap();
    assert_eq!(first5.len(), 5);
    for (i, want) in first5.iter().enumerate() {
        assert_close(&format!("sentence BLEU {i}"), sentence_bleu(&hyps[i], &refs[i]), f(want));
    }
    assert_eq!(sentence_bleu_score(&hyps[0], &refs[0]).signature(), exp["sentence_bleu_signature"].as_str().unwrap());
}
