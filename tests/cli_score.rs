//! `automoe score` through its library entry point: scores, comparisons and bad files.

use std::path::{Path, PathBuf};

use automoe::cli::score::{score, to_json, Args};
use automoe::decode::bleu::corpus_bleu;
use automoe::decode::chrf::corpus_chrf;

fn write(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    p
}

const REFS: [&str; 6] = [
    "a man in a red hat rides a bike .",
    "two dogs play in the snow .",
    "a woman is reading a book on a bench .",
    "children run across the green field .",
    "a cook prepares food in a kitchen .",
    "people wait for the bus in the rain .",
];
const WEAK: [&str; 6] = ["a man rides .", "dogs play .", "a woman reads .", "children run .", "a cook .", "people wait ."];
const GOOD: [&str; 6] = [
    "a man in a hat rides a bike .",
    "two dogs play in snow .",
    "a woman is reading a book on a bench .",
    "children run across a green field .",
    "a cook prepares food in the kitchen .",
    "people wait for a bus in the rain .",
];

fn args(reference: PathBuf, hyps: Vec<PathBuf>, json: Option<PathBuf>) -> Args {
    Args { reference, hyps, resamples: 200, seed: 3, json }
}

#[test]
fn scores_every_file_and_compares_each_with_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(dir.path(), "ref", &REFS);
    let (weak, good) = (write(dir.path(), "weak", &WEAK), write(dir.path(), "good", &GOOD));
    let a = args(r, vec![weak.clone(), good.clone(), weak.clone()], Some(dir.path().join("out.json")));
    let s = score(&a).unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!((s[0].bleu, s[0].chrf), (corpus_bleu(&WEAK, &REFS).unwrap().score, corpus_chrf(&WEAK, &REFS).unwrap().score));
    assert_eq!(s[1].bleu, corpus_bleu(&GOOD, &REFS).unwrap().score);
    assert!(s[0].versus_baseline.is_none());
    let t = s[1].versus_baseline.as_ref().unwrap();
    assert_eq!((t.bleu.baseline.score, t.bleu.system.score), (s[0].bleu, s[1].bleu));
    assert!(t.bleu.difference > 20.0 && t.bleu.p_value < 0.05, "{t:?}");
    // The baseline against itself.
    let same = s[2].versus_baseline.as_ref().unwrap();
    assert_eq!((same.bleu.difference, same.bleu.p_value), (0.0, 1.0));
    let j = to_json(&a, &s);
    assert_eq!(j["systems"].as_array().unwrap().len(), 3);
    assert!(j["systems"][0]["versus_baseline"].is_null());
    assert_eq!(j["systems"][1]["versus_baseline"]["bleu"]["p_value"].as_f64(), Some(t.bleu.p_value));
    assert_eq!(j["resamples"], 200);
    assert_eq!(j["bleu_signature"].as_str(), Some(corpus_bleu(&WEAK, &REFS).unwrap().signature().as_str()));
    assert_eq!(j["chrf_signature"].as_str(), Some(corpus_chrf(&WEAK, &REFS).unwrap().signature().as_str()));
}

#[test]
fn files_of_the_wrong_length_and_empty_references_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(dir.path(), "ref", &REFS);
    let short = write(dir.path(), "short.hyp", &WEAK[..5]);
    let good = write(dir.path(), "good", &GOOD);
    let e = score(&args(r.clone(), vec![good.clone(), short], None)).unwrap_err().to_string();
    assert!(e.contains("short.hyp has 5 lines") && e.contains("has 6"), "{e}");
    let one = write(dir.path(), "one.hyp", &WEAK[..1]);
    let e = score(&args(r.clone(), vec![one], None)).unwrap_err().to_string();
    assert!(e.contains("one.hyp has 1 line but") && e.contains("line-aligned"), "{e}");
    let empty = write(dir.path(), "empty.ref", &[]);
    let e = score(&args(empty, vec![good.clone()], None)).unwrap_err().to_string();
    assert!(e.contains("empty.ref has no lines"), "{e}");
    let e = score(&args(r.clone(), vec![dir.path().join("missing.hyp")], None)).unwrap_err().to_string();
    assert!(e.contains("missing.hyp"), "{e}");
    // --json naming the reference or a hypothesis file would replace it: refused, file kept.
    for victim in [r.clone(), good.clone()] {
        let before = std::fs::read(&victim).unwrap();
        let e = automoe::cli::score::run(args(r.clone(), vec![good.clone()], Some(victim.clone()))).unwrap_err().to_string();
        assert!(e.contains("score --json") && e.contains("is also the input"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), before);
    }
    // A bad resample count is refused with one file too (it has nothing to compare, but the
    // value is a mistake all the same).
    for hyps in [vec![good.clone(), good.clone()], vec![good]] {
        let mut a = args(write(dir.path(), "ref2", &REFS), hyps, None);
        a.resamples = 0;
        let e = score(&a).unwrap_err().to_string();
        assert!(e.contains("score --resamples") && e.contains("0 is outside"), "{e}");
    }
}
