//! Translation training through the CLI's code path (`automoe train` / `train-supernet` argument
//! parsing -> `train::mt::run`) on a tiny space and a small synthetic corpus: the loss falls, a run
//! resumes from its directory, resuming with another setup is refused, a non-finite loss stops
//! training naming the update, and the exported model and the supernet load back.

use std::path::Path;

use automoe::cli::{train, train_supernet};
use automoe::data::Tokenizer;
use automoe::model::{SearchSpace, SubnetModel};
use automoe::train::mt::{self, RunSummary};
use automoe::train::{read_checkpoint_meta, save_weights};
use automoe::{Error, Tensor};
use clap::Parser;

const TINY_SPACE: &str = r#"
name = "tiny"
encoder_embed_dim = [32, 16]
decoder_embed_dim = [32, 16]
qkv_dim = 32
encoder_layers = [2]
decoder_layers = [1, 2]
encoder_heads = [2, 1]
decoder_self_heads = [2, 1]
decoder_cross_heads = [2, 1]
cross_attention_span = [-1, 1]
ffn_widths = [64, 32]
max_experts = 2
route_k = [1]
"#;

#[derive(Parser)]
struct TrainCli {
    #[command(flatten)]
    args: train::Args,
}

#[derive(Parser)]
struct SupernetCli {
    #[command(flatten)]
    args: train_supernet::Args,
}

/// Arguments shared by every run here: the tiny space, 600 + 100 synthetic pairs, short batches, no
/// dropout (so that a few dozen updates show a clear fall), one thread.
fn common(dir: &Path, out: &str, max_updates: u64) -> Vec<String> {
    let space = dir.join("tiny.toml");
    std::fs::write(&space, TINY_SPACE).unwrap();
    [
        "automoe",
        "--out",
        dir.join(out).to_str().unwrap(),
        "--space",
        space.to_str().unwrap(),
        "--synthetic-pairs",
        "600",
        "--synthetic-valid",
        "100",
        "--vocab-size",
        "200",
        "--max-tokens",
        "400",
        "--max-updates",
        &max_updates.to_string(),
        "--lr",
        "3e-3",
        "--warmup",
        "5",
        "--dropout",
        "0",
        "--attention-dropout",
        "0",
        "--log-every",
        "5",
        "--valid-every",
        "20",
        "--checkpoint-every",
        "20",
        "--threads",
        "1",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn train_run(argv: Vec<String>) -> Result<RunSummary, Error> {
    let cli = TrainCli::try_parse_from(argv).unwrap();
    cli.args.common.execute(&cli.args.spec()?)
}

fn mean_loss(s: &RunSummary, range: std::ops::Range<usize>) -> f64 {
    let u = &s.report.updates[range];
    u.iter().map(|r| r.loss).sum::<f64>() / u.len() as f64
}

#[test]
fn dense_subnet_learns_resumes_and_stops_on_nan() {
    let dir = tempfile::tempdir().unwrap();
    let with = |extra: &[&str], max: u64| {
        let mut a = common(dir.path(), "dense", max);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let first = train_run(with(&["--dense"], 40)).unwrap();
    assert_eq!(first.report.updates.len(), 40);
    let (start, end) = (mean_loss(&first, 0..5), mean_loss(&first, 35..40));
    assert!(end < start - 0.5, "training loss went from {start:.3} to {end:.3}");
    let valid_nll = first.valid.last().unwrap().1["nll"];
    // Forty tiny updates reach the unigram plateau, not below it (examples/train_small.rs shows
    // that); here the validation NLL must at least beat a uniform guess over the vocabulary.
    let vocab = Tokenizer::load(dir.path().join("dense/tokenizer.json")).unwrap().vocab_size() as f64;
    assert!(valid_nll < vocab.ln() - 0.5, "valid nll {valid_nll:.3} vs uniform {:.3}", vocab.ln());
    let model_dir = first.model_dir.clone().unwrap();
    let model = SubnetModel::load(&model_dir).unwrap();
    assert_eq!(model.numel(), first.params);
    Tokenizer::load(model_dir.join("tokenizer.json")).unwrap();

    // The same directory again without --resume is refused; so is a resume with another model setup.
    let again = train_run(with(&["--dense"], 40)).unwrap_err().to_string();
    assert!(again.contains("--resume"), "{again}");
    let other = train_run(with(&["--dense", "--resume", "--label-smoothing", "0.2"], 60)).unwrap_err().to_string();
    assert!(other.contains("label_smoothing"), "{other}");

    // Resuming continues at update 40 and ends at 60, appending to the same log.
    let second = train_run(with(&["--dense", "--resume"], 60)).unwrap();
    assert_eq!(second.start_update, 40);
    assert_eq!(second.report.updates.first().unwrap().update, 41);
    assert_eq!(read_checkpoint_meta(&second.checkpoint).unwrap().update, 60);
    let log = std::fs::read_to_string(dir.path().join("dense/train.jsonl")).unwrap();
    let valids: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("valid").is_some())
        .map(|v| v["update"].as_u64().unwrap())
        .collect();
    assert_eq!(valids, [20, 40, 60]);
    assert!(second.valid.last().unwrap().1["nll"] <= valid_nll + 0.05);

    // Resuming the finished run trains nothing, reports the same final validation, and logs no
    // second line for update 60.
    let rerun = train_run(with(&["--dense", "--resume"], 60)).unwrap();
    assert!(rerun.report.updates.is_empty());
    assert_eq!(rerun.valid.last().unwrap(), second.valid.last().unwrap());
    assert_eq!(std::fs::read_to_string(dir.path().join("dense/train.jsonl")).unwrap(), log, "the log is unchanged");
    // A resume with --max-updates below the checkpoint would silently do nothing: refused.
    let below = train_run(with(&["--dense", "--resume"], 50)).unwrap_err().to_string();
    assert!(below.contains("at update 60, past --max-updates 50"), "{below}");
    // --tokenizer with --resume must be the run's own (it was ignored for the run's own before).
    let with_tokenizer = |tok: &str| {
        let mut a = with(&["--dense", "--resume", "--tokenizer", tok], 60);
        let i = a.iter().position(|x| x == "--vocab-size").unwrap();
        a.drain(i..i + 2);
        train_run(a)
    };
    let other_tok = dir.path().join("other_tokenizer.json");
    Tokenizer::train(["x y z w"; 3], &automoe::data::BpeConfig { vocab_size: 30, min_frequency: 1, limit_alphabet: None })
        .unwrap()
        .save(&other_tok)
        .unwrap();
    let other_tok = other_tok.to_string_lossy().into_owned();
    let err = with_tokenizer(&other_tok).unwrap_err().to_string();
    assert!(err.contains("is not the tokenizer the run was started with"), "{err}");

    // A NaN in the checkpoint's weights: resuming stops before training, naming the file and the
    // tensor (divergence during training is `train_loop`'s a_nan_loss_stops_at_its_update...).
    let mut poisoned = SubnetModel::load(&model_dir).unwrap();
    let id = poisoned.store.id("embed.weight").unwrap();
    let shape = poisoned.store.value(id).shape().to_vec();
    poisoned.store.get_mut(id).value = Tensor::full(&shape, f64::NAN, automoe::DType::F32);
    save_weights(&second.checkpoint.join("weights.safetensors"), &poisoned.store).unwrap();
    let err = train_run(with(&["--dense", "--resume"], 80)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Format { .. }), "{msg}");
    assert!(msg.contains("weights.safetensors") && msg.contains("`embed.weight`") && msg.contains("NaN"), "{msg}");
    assert_eq!(read_checkpoint_meta(&second.checkpoint).unwrap().update, 60, "the last good checkpoint is kept");
}

/// `--average 3 --average-every 5`: the exported model holds the mean of the weights after
/// updates 30, 35 and 40 (read back from the snapshots and averaged here), the checkpoint keeps the
/// final weights, and both are validated.
#[test]
fn averaged_model_is_the_mean_of_the_last_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut argv = common(dir.path(), "avg", 40);
    argv.extend(["--dense", "--average", "3", "--average-every", "5"].map(String::from));
    let s = train_run(argv.clone()).unwrap();
    assert_eq!(s.averaged_updates, [30, 35, 40]);
    let metrics = &s.valid.last().unwrap().1;
    assert!(metrics["averaged.nll"].is_finite() && metrics["nll"].is_finite(), "{metrics:?}");

    let model = SubnetModel::load(s.model_dir.unwrap()).unwrap();
    let snapshot_values = |update: u64| {
        let mut store = model.store.clone();
        let path = dir.path().join(format!("avg/snapshots/update-{update:08}.safetensors"));
        automoe::train::load_weights(&path, &mut store).unwrap();
        store.iter().map(|(_, p)| p.value.to_f64_vec().unwrap()).collect::<Vec<_>>()
    };
    let snaps: Vec<_> = [30, 35, 40].map(snapshot_values).into();
    let mut differs_from_final = false;
    for (i, (_, p)) in model.store.iter().enumerate() {
        let got = p.value.to_vec::<f32>().unwrap();
        for (j, g) in got.iter().enumerate() {
            let mean = (snaps[0][i][j] + snaps[1][i][j] + snaps[2][i][j]) / 3.0;
            assert_eq!(*g, mean as f32, "`{}`[{j}]", p.name);
            differs_from_final |= *g != snaps[2][i][j] as f32;
        }
    }
    assert!(differs_from_final, "the exported model is the final weights, not their average");

    // A schedule reaching back before the first update is refused before anything runs.
    let mut too_far = common(dir.path(), "avg_bad", 40);
    too_far.extend(["--dense", "--average", "9", "--average-every", "5"].map(String::from));
    let err = train_run(too_far).unwrap_err().to_string();
    assert!(err.contains("--average") && err.contains("9 snapshots 5 updates apart"), "{err}");
    assert!(!dir.path().join("avg_bad").exists());
}

#[test]
fn supernet_trains_sampled_subnets_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let argv = common(dir.path(), "super", 30);
    let cli = SupernetCli::try_parse_from(argv).unwrap();
    let space = cli.args.common.space().unwrap();
    let spec = cli.args.common.spec(mt::Mode::Supernet { space: space.clone() }).unwrap();
    let s = cli.args.common.execute(&spec).unwrap();
    let (start, end) = (mean_loss(&s, 0..5), mean_loss(&s, 25..30));
    assert!(end < start - 0.3, "supernet training loss went from {start:.3} to {end:.3}");
    let (update, m) = s.valid.last().unwrap();
    assert_eq!(*update, 30);
    for key in ["largest.nll", "largest.loss", "smallest.nll", "smallest.loss"] {
        assert!(m[key].is_finite() && m[key] < 1.5 * s.unigram_nll, "{key} = {}", m[key]);
    }
    // The router's balance is validated for subnets with MoE layers, and only for them.
    for (name, cfg) in [("largest", space.largest()), ("smallest", space.smallest())] {
        let experts = cfg.encoder.iter().map(|l| l.experts).chain(cfg.decoder.iter().map(|l| l.experts)).max().unwrap();
        match m.get(&format!("{name}.max_expert_share")) {
            Some(&share) => assert!(experts > 1 && share >= 1.0 / experts as f64 - 1e-9 && share <= 1.0, "{name}: {share}"),
            None => assert_eq!(experts, 1, "{name} has MoE layers but no max_expert_share"),
        }
    }
    assert!(space.largest().encoder.iter().any(|l| l.experts > 1), "the test space should have MoE layers");
    // Different updates train different subnets, all members of the space, reproducibly.
    let subnets: Vec<_> = (1..=10).map(|u| mt::sampled_subnet(&space, 1, u).unwrap()).collect();
    assert!(subnets.iter().any(|c| *c != subnets[0]));
    assert_eq!(subnets[3], mt::sampled_subnet(&space, 1, 4).unwrap());
    subnets.iter().for_each(|c| space.validate(c).unwrap());
    let (supernet, meta) = mt::load_supernet(&dir.path().join("super")).unwrap();
    assert_eq!(meta.update, 30);
    assert_eq!(supernet.space, space);
    assert!(s.model_dir.is_none());
}

/// `--device emu` runs the CUDA code path through the CLI: a subnet trains, its checkpoint (saved
/// from the device) resumes onto the device and continues exactly as the CPU run does.
#[test]
fn training_on_the_cuda_emulator_checkpoints_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let with = |out: &str, extra: &[&str], max: u64| {
        let mut a = common(dir.path(), out, max);
        // Smaller batches than the other tests (the emulator is slow), checkpoints every 2 updates.
        for (flag, value) in [("--max-tokens", "120"), ("--valid-every", "0"), ("--checkpoint-every", "2"), ("--synthetic-valid", "8")] {
            let i = a.iter().position(|x| x == flag).unwrap();
            a[i + 1] = value.to_string();
        }
        a.push("--dense".into());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let cpu = train_run(with("cpu", &[], 4)).unwrap();
    train_run(with("emu", &["--device", "emu"], 2)).unwrap();
    let resumed = train_run(with("emu", &["--device", "emu", "--resume"], 4)).unwrap();
    assert_eq!(resumed.start_update, 2);
    for (e, c) in resumed.report.updates.iter().zip(&cpu.report.updates[2..]) {
        assert_eq!(e.update, c.update);
        assert!((e.loss - c.loss).abs() < 1e-4 * c.loss, "update {}: emulator loss {} vs CPU {}", e.update, e.loss, c.loss);
    }
    let e = train_run(with("bad", &["--device", "cpu", "--mixed-precision"], 1)).unwrap_err().to_string();
    assert!(e.contains("CUDA"), "{e}");
}

/// Settings the run would reject only after reading the corpus, or would follow to a strange
/// schedule, are refused up front in the flags' terms; nothing is written.
#[test]
fn bad_flags_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let with = |flag: &str, value: &str| {
        let mut a = common(dir.path(), "bad", 40);
        if let Some(i) = a.iter().position(|x| x == flag) {
            a.drain(i..i + 2);
        }
        // `--flag=value`, so that a negative value is not read as a flag.
        a.push(format!("{flag}={value}"));
        a.push("--dense".into());
        train_run(a).unwrap_err().to_string()
    };
    for flag in ["--max-updates", "--max-tokens", "--max-len", "--accumulate"] {
        let err = with(flag, "0");
        assert!(err.contains(flag) && err.contains("at least 1"), "{flag}: {err}");
    }
    let err = with("--min-lr", "0.01");
    assert!(err.contains("--min-lr") && err.contains("above --lr"), "{err}");
    // A bad rate is the rate's error, not --min-lr's.
    for lr in ["0", "-1"] {
        let err = with("--lr", lr);
        assert!(err.starts_with("--lr") && err.contains("positive"), "--lr {lr}: {err}");
    }
    // A negative clipping norm is not "off" (0 is).
    for norm in ["-1", "nan"] {
        let err = with("--clip-norm", norm);
        assert!(err.starts_with("--clip-norm") && err.contains("0 turns clipping off"), "{err}");
    }
    for min_lr in ["-1", "nan"] {
        let err = with("--min-lr", min_lr);
        assert!(err.starts_with("--min-lr") && err.contains(">= 0"), "{err}");
    }
    // The built-in corpus cannot be empty; nor can --average-every average nothing.
    for flag in ["--synthetic-pairs", "--synthetic-valid"] {
        let err = with(flag, "0");
        assert!(err.starts_with(flag) && err.contains("at least 1"), "{flag}: {err}");
    }
    let mut a = common(dir.path(), "bad", 40);
    a.extend(["--dense", "--average", "0", "--average-every", "5"].map(String::from));
    let err = train_run(a).unwrap_err().to_string();
    assert!(err.starts_with("--average-every") && err.contains("--average N"), "{err}");
    assert!(!dir.path().join("bad").exists());
    // A given tokenizer has its own vocabulary: --vocab-size with it is a contradiction.
    let mut both = common(dir.path(), "bad", 40);
    both.extend(["--tokenizer", "tok.json"].map(String::from));
    assert!(both.iter().any(|a| a == "--vocab-size"), "common() sets --vocab-size");
    let e = TrainCli::try_parse_from(both).err().expect("refused").to_string();
    assert!(e.contains("--vocab-size") && e.contains("--tokenizer"), "{e}");
}

/// `--subnet-config` trains the architecture in the file (a search's best.json), exported as is;
/// one outside the given space is refused naming the file, and so is one that is not a config.
#[test]
fn a_subnet_config_file_is_trained_and_checked_against_the_space() {
    let dir = tempfile::tempdir().unwrap();
    let space = SearchSpace::from_toml_str(TINY_SPACE).unwrap();
    let mut cfg = space.smallest();
    cfg.decoder[0].experts = 2; // a two-expert decoder layer, unlike any preset
    cfg.decoder[0].expert_widths = vec![64, 32];
    space.validate(&cfg).unwrap();
    let path = dir.path().join("best.json");
    std::fs::write(&path, cfg.to_json().unwrap()).unwrap();
    let mut argv = common(dir.path(), "from_file", 6);
    argv.extend(["--subnet-config".into(), path.to_str().unwrap().into()]);
    let s = train_run(argv).unwrap();
    assert_eq!(SubnetModel::load(s.model_dir.as_ref().unwrap()).unwrap().config, cfg);

    cfg.decoder[0].experts = 3; // max_experts is 2
    cfg.decoder[0].expert_widths = vec![64, 32, 32];
    std::fs::write(&path, cfg.to_json().unwrap()).unwrap();
    let mut argv = common(dir.path(), "outside", 6);
    argv.extend(["--subnet-config".into(), path.to_str().unwrap().into()]);
    let err = train_run(argv).unwrap_err().to_string();
    assert!(err.contains("best.json"), "{err}");
    std::fs::write(&path, "{\"encoder\": 3}").unwrap();
    let mut argv = common(dir.path(), "garbage", 6);
    argv.extend(["--subnet-config".into(), path.to_str().unwrap().into()]);
    let err = train_run(argv).unwrap_err().to_string();
    assert!(err.contains("best.json"), "{err}");
}
