//! `automoe translate` / `evaluate` end to end on a tiny randomly initialised saved model with a
//! tokenizer trained on a few sentences: the library entry points the binary calls, and the binary
//! itself on stdin.

mod common;

use std::path::Path;

use automoe::cli::evaluate::{self, evaluate, RoutedCost};
use automoe::cli::translate::{self, DecodeArgs, TOKENIZER_FILE};
use automoe::data::{BpeConfig, Tokenizer};
use automoe::model::{flop_report, param_report, ModelOptions, Routing, Supernet, PAPER_SRC_LEN, PAPER_TGT_LEN};
use automoe::DType;
use common::{moe_config, tiny_space};

const TEXT: &[&str] = &[
    "a man is riding a bike",
    "two dogs play in the park",
    "ein mann fährt fahrrad",
    "zwei hunde spielen im park",
    "the woman reads a book",
    "die frau liest ein buch",
];

/// Saves a random MoE model and a tokenizer into `dir`; returns the tokenizer.
fn make_model_dir(dir: &Path) -> Tokenizer {
    let tok = Tokenizer::train(TEXT.iter(), &BpeConfig { vocab_size: 80, min_frequency: 1, limit_alphabet: None }).unwrap();
    let sup = Supernet::new(tiny_space(), tok.vocab_size(), ModelOptions::default(), 3, DType::F32).unwrap();
    sup.extract(&moe_config()).unwrap().save(dir).unwrap();
    tok.save(dir.join(TOKENIZER_FILE)).unwrap();
    tok
}

fn small_decode() -> DecodeArgs {
    DecodeArgs { batch_size: 2, beam: 3, max_len_a: 0.0, max_len_b: 6, threads: Some(1), ..DecodeArgs::default() }
}

#[test]
fn translate_files_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    let tok = make_model_dir(&model_dir);
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "a man reads a book\n\ntwo dogs\n   \nein mann fährt im park\n").unwrap();
    let output = tmp.path().join("out.txt");
    let args = translate::Args {
        model: model_dir.clone(),
        input: Some(input.clone()),
        output: Some(output.clone()),
        nbest: 1,
        decode: small_decode(),
    };
    translate::run(args).unwrap();
    let out = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<&str> = out.split('\n').collect();
    assert_eq!(lines.len(), 6, "five lines and the final newline: {out:?}");
    assert_eq!(lines[1], "", "an empty line stays empty");
    assert_eq!(lines[3], "", "a blank line is empty");
    assert_eq!(lines[5], "");
    // Random weights translate to something of at most 6 tokens; it decodes without specials.
    for l in [lines[0], lines[2], lines[4]] {
        assert!(tok.encode(l).unwrap().len() <= 7, "{l:?}");
        assert!(!l.contains("</s>") && !l.contains("<pad>"));
    }
    // --output naming the input, or one of the model's files, is refused and replaces nothing.
    for victim in [input.clone(), model_dir.join("model.json"), model_dir.join("tokenizer.json")] {
        let before = std::fs::read(&victim).unwrap();
        let args = translate::Args {
            model: model_dir.clone(),
            input: Some(input.clone()),
            output: Some(victim.clone()),
            nbest: 1,
            decode: small_decode(),
        };
        let err = translate::run(args).unwrap_err().to_string();
        assert!(err.contains("translate --output") && err.contains("is also the input"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), before);
    }
    // The same through the library call with greedy search in one batch: line count kept.
    let (model, tok) = translate::load_model_dir(&model_dir).unwrap();
    let lines: Vec<String> = ["", "a man"].iter().map(|s| s.to_string()).collect();
    let greedy = DecodeArgs { beam: 1, ..small_decode() };
    let out = translate::translate_lines(&model.view().unwrap(), &tok, &lines, &greedy).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], "");
}

#[test]
fn long_lines_are_errors_or_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    make_model_dir(&model_dir);
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "a man\ntwo dogs\ntwo dogs play in the park and a man is riding a bike\n").unwrap();
    let output = tmp.path().join("out.txt");
    let decode = DecodeArgs { max_source_len: 8, ..small_decode() };
    let args = translate::Args {
        model: model_dir.clone(),
        input: Some(input.clone()),
        output: Some(output.clone()),
        nbest: 1,
        decode: decode.clone(),
    };
    let err = translate::run(args).unwrap_err().to_string();
    assert!(err.contains("line 3") && err.contains("--truncate"), "{err}");
    assert!(!output.exists(), "nothing is written after an error");
    let decode = DecodeArgs { truncate: true, ..decode };
    translate::run(translate::Args { model: model_dir, input: Some(input), output: Some(output.clone()), nbest: 1, decode }).unwrap();
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 3);
    // An --output in a missing directory is refused before the model is even loaded.
    let nowhere = tmp.path().join("missing/out.txt");
    let args = translate::Args { model: tmp.path().join("no-model"), input: None, output: Some(nowhere), nbest: 1, decode: small_decode() };
    let err = translate::run(args).unwrap_err().to_string();
    assert!(err.contains("--output") && err.contains("does not exist"), "{err}");
}

#[test]
fn bad_model_directories_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    make_model_dir(&model_dir);
    // A tokenizer with another vocabulary size.
    let other = Tokenizer::train(TEXT.iter(), &BpeConfig { vocab_size: 40, min_frequency: 1, limit_alphabet: None }).unwrap();
    other.save(model_dir.join(TOKENIZER_FILE)).unwrap();
    let err = translate::load_model_dir(&model_dir).err().unwrap().to_string();
    assert!(err.contains("not the model's tokenizer"), "{err}");
    std::fs::remove_file(model_dir.join(TOKENIZER_FILE)).unwrap();
    let err = translate::load_model_dir(&model_dir).err().unwrap().to_string();
    assert!(err.contains("no tokenizer.json"), "{err}");
    let err = translate::load_model_dir(&tmp.path().join("missing")).err().unwrap().to_string();
    assert!(err.contains("missing: no such model directory"), "{err}");
    let err = translate::load_model_dir(&model_dir.join("model.json")).err().unwrap().to_string();
    assert!(err.contains("model.json is not a directory"), "{err}");
    // A file where a directory on the way should be: nothing is there (ENOTDIR is not an I/O
    // failure to report as such).
    let err = translate::load_model_dir(&model_dir.join("model.json").join("x")).err().unwrap().to_string();
    assert!(err.contains("no such model directory"), "{err}");
    // The directory above the model, as a training run lays it out: the error points one level down.
    let err = translate::load_model_dir(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("training run") && err.contains(&model_dir.display().to_string()), "{err}");
}

#[test]
fn evaluate_prices_the_routing_measured_on_the_test_set() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    let tok = make_model_dir(&model_dir);
    let (src, reference) = (tmp.path().join("test.en"), tmp.path().join("test.de"));
    // Pairs with an empty side take no part (line 2: empty source, line 4: empty reference).
    let s_lines = ["a man is riding a bike", "", "two dogs play in the park", "the woman reads", "a book"];
    let r_lines = ["ein mann fährt fahrrad", "die frau", "zwei hunde spielen im park", "", "ein buch"];
    std::fs::write(&src, s_lines.join("\n") + "\n").unwrap();
    std::fs::write(&reference, r_lines.join("\n") + "\n").unwrap();
    let args = evaluate::Args { model: model_dir.clone(), src, reference, hyp_out: None, json: None, decode: small_decode() };
    let e = evaluate(&args).unwrap();
    let r = e.routed.as_ref().expect("three pairs have both sides");
    let used = [0, 2, 4];
    let src_tokens: usize = used.iter().map(|&i| tok.encode(s_lines[i]).unwrap().len()).sum();
    // The decoder reads <s> and the reference without its </s>: as many tokens as the encoding.
    let tgt_tokens: usize = used.iter().map(|&i| tok.encode(r_lines[i]).unwrap().len()).sum();
    let cfg = moe_config();
    assert_eq!(r.counts.encoder.len(), cfg.encoder.len());
    for (i, l) in r.counts.encoder.iter().enumerate() {
        assert_eq!(l.tokens, src_tokens, "encoder layer {i}");
        assert_eq!(l.counts.iter().sum::<usize>(), l.tokens * l.k, "encoder layer {i}: no capacity limit drops a pair");
    }
    for (i, l) in r.counts.decoder.iter().enumerate() {
        assert_eq!(l.tokens, tgt_tokens, "decoder layer {i}");
        assert_eq!(l.counts.iter().sum::<usize>(), l.tokens * l.k, "decoder layer {i}");
    }
    // The prices are the cost model's under the measured and the uniform routing.
    let (model, _) = translate::load_model_dir(&model_dir).unwrap();
    let gflops = |routing: &Routing| flop_report(&cfg, model.vocab, PAPER_SRC_LEN, PAPER_TGT_LEN, routing).unwrap().paper_gflops();
    assert_eq!(r.gflops, gflops(&Routing::measured(&r.counts)));
    assert_eq!(r.uniform_gflops, gflops(&Routing::Uniform));
    let active = param_report(&cfg, model.vocab, false, &Routing::measured(&r.counts)).unwrap().active_without_embedding();
    assert_eq!(r.active_params, active);
    // One share line per MoE layer (4 of the 5 layers), naming each expert's width.
    let lines = r.share_lines(&e.config);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].starts_with("encoder layer 1: 16 × ") && lines[0].contains(", 24 × "), "{lines:?}");
    assert!(lines[3].starts_with("decoder layer 2: 24 × "), "{lines:?}");
    // A test set with no complete pair has nothing to measure.
    let (model, tok) = translate::load_model_dir(&model_dir).unwrap();
    let none = RoutedCost::measure(&model, &tok, &["".into(), "a".into()], &["b".into(), " ".into()]).unwrap();
    assert!(none.is_none());
}

#[test]
fn evaluate_scores_and_writes_hypotheses() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    make_model_dir(&model_dir);
    let (src, reference) = (tmp.path().join("test.en"), tmp.path().join("test.de"));
    std::fs::write(&src, "a man is riding a bike\ntwo dogs play in the park\n").unwrap();
    std::fs::write(&reference, "ein mann fährt fahrrad\nzwei hunde spielen im park\n").unwrap();
    let hyp_out = tmp.path().join("hyp.de");
    let json_out = tmp.path().join("scores.json");
    let args = evaluate::Args {
        model: model_dir.clone(),
        src: src.clone(),
        reference: reference.clone(),
        hyp_out: Some(hyp_out.clone()),
        json: Some(json_out.clone()),
        decode: small_decode(),
    };
    let e = evaluate(&args).unwrap();
    assert_eq!(e.sentences, 2);
    assert!((0.0..=100.0).contains(&e.bleu.score) && (0.0..=100.0).contains(&e.chrf.score));
    evaluate::run(args).unwrap();
    assert_eq!(std::fs::read_to_string(&hyp_out).unwrap().lines().count(), 2);
    // --json holds what was printed, as numbers (decoding is deterministic, so equal to `e`).
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    assert_eq!(j["bleu"]["score"].as_f64(), Some(e.bleu.score), "{j}");
    assert_eq!(j["bleu"]["signature"].as_str(), Some(e.bleu.signature().as_str()));
    assert_eq!(j["chrf"]["score"].as_f64(), Some(e.chrf.score));
    assert_eq!(j["sentences"].as_u64(), Some(2));
    assert_eq!(j["decoding"]["beam"].as_u64(), Some(3));
    let r = e.routed.as_ref().unwrap();
    assert_eq!(j["routed_cost"]["gflops"].as_f64(), Some(r.gflops));
    assert_eq!(j["routed_cost"]["uniform_gflops"].as_f64(), Some(r.uniform_gflops));
    let enc = j["routed_cost"]["encoder"].as_array().unwrap();
    assert_eq!(enc.len(), moe_config().encoder.len());
    assert_eq!(enc[0]["expert_widths"], serde_json::json!([16, 24, 16]));
    let shares: f64 = enc[0]["shares"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-12, "{shares}");
    // An output that cannot be written is refused before decoding, and nothing is written.
    std::fs::remove_file(&hyp_out).unwrap();
    let bad = evaluate::Args {
        model: model_dir.clone(),
        src: src.clone(),
        reference: reference.clone(),
        hyp_out: Some(hyp_out.clone()),
        json: Some(tmp.path().join("missing/scores.json")),
        decode: small_decode(),
    };
    let err = evaluate::run(bad).unwrap_err().to_string();
    assert!(err.contains("--json") && err.contains("does not exist"), "{err}");
    assert!(!hyp_out.exists());
    // An output that is an input, or two outputs in one file: refused before decoding, the
    // reference kept as it was.
    let reference_text = std::fs::read(&reference).unwrap();
    for (hyp, json, names) in [
        (None, Some(reference.clone()), ["evaluate --json", "the input --ref"]),
        (Some(hyp_out.clone()), Some(hyp_out.clone()), ["evaluate --json", "also evaluate --hyp-out"]),
    ] {
        let same = evaluate::Args {
            model: model_dir.clone(),
            src: src.clone(),
            reference: reference.clone(),
            hyp_out: hyp,
            json,
            decode: small_decode(),
        };
        let err = evaluate::run(same).unwrap_err().to_string();
        assert!(names.iter().all(|n| err.contains(n)), "{err}");
    }
    assert_eq!(std::fs::read(&reference).unwrap(), reference_text);
    assert!(!hyp_out.exists());
    // Nor may an output replace one of the model's files (the model loads first, so it would
    // have succeeded and left a directory that no longer loads).
    for file in ["model.json", "model.safetensors", "tokenizer.json"] {
        let victim = model_dir.join(file);
        let before = std::fs::read(&victim).unwrap();
        let onto_model = evaluate::Args {
            model: model_dir.clone(),
            src: src.clone(),
            reference: reference.clone(),
            hyp_out: Some(victim.clone()),
            json: None,
            decode: small_decode(),
        };
        let err = evaluate::run(onto_model).unwrap_err().to_string();
        assert!(err.contains("evaluate --hyp-out") && err.contains(&format!("the model's {file}")), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), before);
    }
    // An empty test set has no score (BLEU over nothing would read 0).
    let (empty_src, empty_ref) = (tmp.path().join("empty.en"), tmp.path().join("empty.de"));
    std::fs::write(&empty_src, "").unwrap();
    std::fs::write(&empty_ref, "").unwrap();
    let none = evaluate::Args {
        model: model_dir.clone(),
        src: empty_src,
        reference: empty_ref,
        hyp_out: None,
        json: None,
        decode: small_decode(),
    };
    assert!(evaluate(&none).unwrap_err().to_string().contains("empty.en has no lines"));
    // Misaligned files.
    std::fs::write(&reference, "nur eine zeile\n").unwrap();
    let args = evaluate::Args { model: model_dir, src, reference, hyp_out: None, json: None, decode: small_decode() };
    assert!(evaluate(&args).unwrap_err().to_string().contains("has 2 lines"));
}

/// Runs `automoe translate MODEL_DIR --beam 2 --max-len-a 0 --max-len-b 4 --threads 1 EXTRA...`
/// on `input`; returns its stdout, after checking that it succeeded.
fn translate_stdin(model_dir: &Path, extra: &[&str], input: &str) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_automoe"));
    cmd.args(["translate", model_dir.to_str().unwrap(), "--beam", "2", "--max-len-a", "0", "--max-len-b", "4", "--threads", "1"])
        .args(extra);
    common::stdout_with_input(&mut cmd, input)
}

#[test]
fn binary_translates_stdin() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    make_model_dir(&model_dir);
    let input = "the woman reads\n\ndie frau\n";
    let text = translate_stdin(&model_dir, &[], input);
    assert_eq!(text.lines().count(), 3, "{text:?}");
    assert_eq!(text.lines().nth(1), Some(""));
    let one_best: Vec<String> = text.lines().map(str::to_string).collect();

    // --nbest 2: "SENTENCE ||| TRANSLATION ||| SCORE" lines, best first, the first the 1-best.
    let text = translate_stdin(&model_dir, &["--nbest", "2"], input);
    let rows: Vec<(usize, String, f64)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(" ||| ").collect();
            assert_eq!(f.len(), 3, "{l:?}");
            (f[0].parse().unwrap(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect();
    for (i, best) in one_best.iter().enumerate() {
        let mine: Vec<&(usize, String, f64)> = rows.iter().filter(|r| r.0 == i).collect();
        assert!(!mine.is_empty() && mine.len() <= 2, "sentence {i}: {text}");
        assert_eq!(&mine[0].1, best, "sentence {i}: the first is the 1-best");
        assert!(mine.windows(2).all(|w| w[0].2 >= w[1].2), "sentence {i}: best first: {text}");
    }
    assert_eq!(rows.iter().filter(|r| r.0 == 1).count(), 1, "an empty line gives one empty translation");
    let out = Command::new(env!("CARGO_BIN_EXE_automoe"))
        .args(["translate", model_dir.to_str().unwrap(), "--beam", "2", "--nbest", "3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nbest 3 must be 1 to --beam (2)"), "{}", String::from_utf8_lossy(&out.stderr));

    // A missing model directory fails with a message, not a panic.
    let out = Command::new(env!("CARGO_BIN_EXE_automoe")).args(["translate", "/nonexistent/model"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such model directory"));
}

/// `automoe latency --model DIR [--model DIR ...]`: trained model directories timed by the AutoMoE
/// protocol (several together, in rounds), through the library entry point and the binary; a
/// missing directory and a model given with a supernet checkpoint are refused by name.
#[test]
fn latency_of_a_model_directory() {
    use automoe::cli::latency::{measure_model_dirs, ProtocolArgs};
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    make_model_dir(&model_dir);
    let protocol = ProtocolArgs {
        fast: true,
        src_len: Some(6),
        steps: Some(4),
        beam: Some(2),
        warmup: None,
        runs: Some(7),
        trim: None,
        threads: 1,
        clock: automoe::search::latency::Clock::Cpu,
        device: automoe::Device::Cpu,
    };
    // One model, then the same directory twice (timed together in rounds).
    for n in [1, 2] {
        let lats = measure_model_dirs(&vec![model_dir.clone(); n], &protocol).unwrap();
        assert_eq!(lats.len(), n);
        for lat in lats {
            // 7 runs, trim 0.2 (--fast): one dropped at each end.
            assert_eq!((lat.runs_kept, lat.threads), (5, 1), "{lat:?}");
            assert!(lat.encoder_ms > 0.0 && lat.decoder_ms > 0.0 && lat.total_ms == lat.encoder_ms + lat.decoder_ms, "{lat:?}");
        }
    }
    let err = measure_model_dirs(&[model_dir.clone(), tmp.path().join("missing")], &protocol).unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("no such model directory"), "{err}");

    let bin = env!("CARGO_BIN_EXE_automoe");
    let dir = model_dir.to_str().unwrap();
    let out =
        std::process::Command::new(bin).args(["latency", "--model", dir, "--fast", "--steps", "3", "--clock", "cpu"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("encoder ") && stdout.contains(" ms, total "), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("thread-CPU clock; source 30 tokens, 3 decoder steps at beam 5"));
    let out = std::process::Command::new(bin).args(["latency", "--model", dir, "--model", dir, "--fast", "--steps", "3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().filter(|l| l.starts_with(&format!("{dir}: encoder "))).count(), 2, "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 models timed together in rounds"));
    let out = std::process::Command::new(bin).args(["latency", "--model", dir, "--checkpoint", dir]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--checkpoint"));
}
