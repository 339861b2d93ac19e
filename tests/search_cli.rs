//! The search pipeline through its CLI modules on a tiny supernet checkpoint: `latency` builds a
//! dataset, `predictor` trains on it, `search` loads the checkpoint (space in the meta), measures
//! fitness on validation text and writes best config, population and Pareto plot; `fitness`
//! computes the same fitness for given and sampled subnets.

use std::path::Path;

use automoe::cli;
use automoe::data::{synthetic_corpus, BpeConfig, Tokenizer};
use automoe::model::{ModelOptions, SearchSpace, SubnetConfig, Supernet};
use automoe::search::{load_supernet, SupernetMeta};
use automoe::train::{save_checkpoint, Adam, AdamConfig, CheckpointMeta, LrSchedule};
use automoe::DType;
use clap::Parser;

const SPACE: &str = r#"
name = "cli-test"
encoder_embed_dim = [16, 8]
decoder_embed_dim = [16, 8]
qkv_dim = 8
encoder_layers = [2]
decoder_layers = [1, 2]
encoder_heads = [2, 1]
decoder_self_heads = [2, 1]
decoder_cross_heads = [2, 1]
cross_attention_span = [-1, 1]
ffn_widths = [32, 16]
max_experts = 2
route_k = [1]
"#;

#[derive(Parser)]
struct Cmd {
    #[command(subcommand)]
    sub: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    Latency(cli::latency::Args),
    Predictor(cli::predictor::Args),
    Search(cli::search::Args),
    Fitness(cli::fitness::Args),
}

fn run(args: &[&str]) -> automoe::Result<()> {
    let cmd = Cmd::try_parse_from(std::iter::once("automoe").chain(args.iter().copied())).unwrap_or_else(|e| panic!("{e}"));
    match cmd.sub {
        Sub::Latency(a) => cli::latency::run(a),
        Sub::Predictor(a) => cli::predictor::run(a),
        Sub::Search(a) => cli::search::run(a),
        Sub::Fitness(a) => cli::fitness::run(a),
    }
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) {
    std::fs::write(path, lines.collect::<Vec<_>>().join("\n") + "\n").unwrap();
}

/// A tiny space's supernet checkpoint written the way `train-supernet` writes one, a tokenizer
/// and validation text from the synthetic corpus, all under `d`; returns the space, the
/// checkpoint's directory and its metadata.
fn setup(d: &Path) -> (SearchSpace, std::path::PathBuf, CheckpointMeta, Supernet) {
    let space = SearchSpace::from_toml_str(SPACE).unwrap();
    std::fs::write(d.join("space.toml"), SPACE).unwrap();

    // A tokenizer and validation text from the built-in synthetic corpus.
    let corpus = synthetic_corpus(1, 200, 12, 0).unwrap();
    let tok = Tokenizer::train(
        corpus.train.iter().flat_map(|(s, t)| [s.as_str(), t.as_str()]),
        &BpeConfig { vocab_size: 120, ..Default::default() },
    )
    .unwrap();
    tok.save(d.join("tokenizer.json")).unwrap();
    write_lines(&d.join("valid.src"), corpus.valid.iter().map(|(s, _)| s.clone()));
    write_lines(&d.join("valid.tgt"), corpus.valid.iter().map(|(_, t)| t.clone()));

    // A supernet checkpoint the way `train-supernet` writes one: the space in the meta.
    let net = Supernet::new(space.clone(), tok.vocab_size(), ModelOptions::default(), 5, DType::F32).unwrap();
    let mut meta = CheckpointMeta::new(0, 5, LrSchedule::Constant { lr: 1e-3 }, AdamConfig::default());
    // Shaped like train-supernet's run description: extra keys beside space, options and vocab.
    meta.model_config = SupernetMeta::of(&net).to_value().unwrap();
    meta.model_config["label_smoothing"] = serde_json::json!(0.1);
    meta.model_config["data"] = serde_json::json!({"synthetic": true});
    meta.tokenizer_hash = Some(tok.hash().unwrap());
    let ckpt = d.join("ckpt");
    save_checkpoint(&ckpt, &net.store, &Adam::new(AdamConfig::default()), &meta).unwrap();
    (space, ckpt, meta, net)
}

#[test]
fn latency_predictor_and_search_commands_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_string_lossy().into_owned();
    let (space, ckpt, meta, net) = setup(d);
    let mut subnet_meta = meta.clone();
    subnet_meta.model_config["mode"] = serde_json::json!("subnet");
    let subnet_ckpt = d.join("subnet_ckpt");
    save_checkpoint(&subnet_ckpt, &net.store, &Adam::new(AdamConfig::default()), &subnet_meta).unwrap();
    let msg = load_supernet(&subnet_ckpt).err().unwrap().to_string();
    assert!(msg.contains("a checkpoint of a `subnet` run"), "{msg}");
    let (loaded, _) = load_supernet(&ckpt).unwrap();
    assert_eq!(loaded.space, space);
    let cfg = space.largest();
    assert_eq!(loaded.store.value(loaded.params.embed).to_f32_vec().unwrap(), net.store.value(net.params.embed).to_f32_vec().unwrap());

    let tiny = ["--src-len", "4", "--steps", "2", "--beam", "2", "--warmup", "0", "--runs", "1"];
    let space_path = p("space.toml");
    let mut args = vec!["latency", "--space", &space_path, "--vocab", "50", "--samples", "12", "--out"];
    let ds = p("lat/ds.json");
    args.push(&ds);
    args.extend(tiny);
    run(&args).unwrap();
    assert!(d.join("lat/ds.csv").is_file());
    // The same subnets measured in interleaved rounds.
    args[6] = "6";
    let ds2 = p("lat/ds2.json");
    args[8] = &ds2;
    args.push("--interleave");
    run(&args).unwrap();
    let (a, b) = (
        automoe::search::LatencyDataset::load_json(Path::new(&ds)).unwrap(),
        automoe::search::LatencyDataset::load_json(Path::new(&ds2)).unwrap(),
    );
    assert!(b.meter.contains("interleaved") && b.records.len() == 6);
    assert!(a.records.iter().zip(&b.records).all(|(x, y)| x.config == y.config));
    std::fs::write(d.join("best_in.json"), cfg.to_json().unwrap()).unwrap();
    let mut one = vec!["latency", "--space", &space_path, "--vocab", "50", "--config"];
    let best_in = p("best_in.json");
    one.push(&best_in);
    one.extend(tiny);
    run(&one).unwrap();
    let msg = run(&["latency", "--space", &space_path]).unwrap_err().to_string();
    assert!(msg.contains("--samples"), "{msg}");
    // An --out the CSV would overwrite is refused before anything is measured.
    let msg = run(&["latency", "--space", &space_path, "--samples", "12", "--out", "lat.CSV"]).unwrap_err().to_string();
    assert!(msg.contains("--out") && msg.contains("lat.CSV"), "{msg}");

    // Refused before measuring: no subnets, and an --out under a file.
    let msg = run(&["latency", "--space", &space_path, "--samples", "0", "--out", &p("lat/zero.json")]).unwrap_err().to_string();
    assert!(msg.contains("--samples") && msg.contains("at least 1"), "{msg}");
    let under_a_file = format!("{ds}/x.json");
    let msg = run(&["latency", "--space", &space_path, "--samples", "3", "--out", &under_a_file]).unwrap_err().to_string();
    assert!(msg.contains("latency --out") && msg.contains("ds.json is a file"), "{msg}");

    let pred = p("pred.json");
    // A predictor saved over its own dataset would lose the measurements: refused, dataset kept.
    let before = std::fs::read(&ds).unwrap();
    let msg =
        run(&["predictor", "--dataset", &ds, "--out", &ds, "--hidden", "8", "--layers", "1", "--epochs", "3"]).unwrap_err().to_string();
    assert!(msg.contains("predictor --out") && msg.contains("the input --dataset"), "{msg}");
    assert_eq!(std::fs::read(&ds).unwrap(), before);
    run(&["predictor", "--dataset", &ds, "--out", &pred, "--hidden", "8", "--layers", "1", "--epochs", "3"]).unwrap();

    let out = p("search");
    let ck = ckpt.to_string_lossy().into_owned();
    let base = [
        "search",
        "--checkpoint",
        &ck,
        "--valid-src",
        &p("valid.src"),
        "--valid-tgt",
        &p("valid.tgt"),
        "--out",
        &out,
        "--iterations",
        "1",
        "--parents",
        "2",
        "--mutations",
        "2",
        "--crossovers",
        "2",
    ];
    let mut with_pred = base.to_vec();
    with_pred.extend(["--predictor", &pred, "--latency-ms", "1e9", "--active-params", "10M"]);
    run(&with_pred).unwrap();
    let best = SubnetConfig::from_json(&std::fs::read_to_string(d.join("search/best.json")).unwrap()).unwrap();
    space.validate(&best).unwrap();
    let pop: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("search/population.json")).unwrap()).unwrap();
    assert_eq!(pop["population"].as_array().unwrap().len(), 6);
    assert!(pop["population"][0]["latency"]["encoder_ms"].as_f64().unwrap() > 0.0);
    assert!(std::fs::read_to_string(d.join("search/pareto.svg")).unwrap().contains("latency (ms)"));
    // --verify-latency: the best candidate measured by the protocol; within a budget this wide it
    // is taken at once, and population.json records the check.
    let mut verified = with_pred.clone();
    verified.extend(["--verify-latency", "3"]);
    verified.extend(tiny);
    run(&verified).unwrap();
    let pop: automoe::search::SearchResult = serde_json::from_slice(&std::fs::read(d.join("search/population.json")).unwrap()).unwrap();
    let v = pop.verification.as_ref().expect("a verification");
    assert_eq!((v.chosen, v.checked.len(), v.budget_ms), (Some(0), 1, 1e9));
    assert!(v.checked[0].measured_ms > 0.0 && v.checked[0].predicted_ms.is_some() && v.meter.contains("0 warm-up + 1 timed runs"), "{v:?}");
    // Without a latency bound there is nothing to verify against: refused when parsed.
    let mut unbounded = base.to_vec();
    unbounded.extend(["--verify-latency", "3"]);
    assert!(Cmd::try_parse_from(std::iter::once("automoe").chain(unbounded.iter().copied())).is_err());

    // An impossible budget ends in the clear error, not a loop.
    let mut impossible = base.to_vec();
    impossible.extend(["--gflops", "0", "--max-retries", "20"]);
    let msg = run(&impossible).unwrap_err().to_string();
    assert!(msg.contains("GFLOPs <= 0 is out of reach"), "{msg}");
    // A latency bound without a latency source is refused.
    let mut no_meter = base.to_vec();
    no_meter.extend(["--latency-ms", "5"]);
    assert!(run(&no_meter).unwrap_err().to_string().contains("latency meter"));
    // A predictor of another space (here: the same one, renamed) is refused, naming the file and both spaces.
    let mut other: serde_json::Value = serde_json::from_slice(&std::fs::read(&pred).unwrap()).unwrap();
    other["space"]["name"] = "other".into();
    let other_path = p("pred_other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let mut with_other = base.to_vec();
    with_other.extend(["--predictor", &other_path, "--latency-ms", "1e9"]);
    let msg = run(&with_other).unwrap_err().to_string();
    assert!(msg.contains("pred_other.json") && msg.contains("trained for space `other`"), "{msg}");
    let mut no_pairs = base.to_vec();
    no_pairs.extend(["--valid-sentences", "0"]);
    let msg = run(&no_pairs).unwrap_err().to_string();
    assert!(msg.contains("--valid-sentences"), "{msg}");
}

fn parse_fitness(args: &[&str]) -> cli::fitness::Args {
    match Cmd::try_parse_from(std::iter::once("automoe").chain(args.iter().copied())).unwrap_or_else(|e| panic!("{e}")).sub {
        Sub::Fitness(a) => a,
        _ => unreachable!("a fitness command line"),
    }
}

#[test]
fn fitness_command_matches_the_search_and_keeps_earlier_samples() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_string_lossy().into_owned();
    let (space, ckpt, _, _) = setup(d);
    let ck = ckpt.to_string_lossy().into_owned();
    let (vs, vt) = (p("valid.src"), p("valid.tgt"));
    let data = ["--checkpoint", ck.as_str(), "--valid-src", vs.as_str(), "--valid-tgt", vt.as_str(), "--valid-sentences", "40"];
    let search_out = p("search");
    let mut search = vec!["search", "--out", &search_out, "--iterations", "1", "--parents", "2", "--mutations", "2", "--crossovers", "2"];
    search.extend(data);
    run(&search).unwrap();
    let pop: automoe::search::SearchResult = serde_json::from_slice(&std::fs::read(d.join("search/population.json")).unwrap()).unwrap();

    // The search's best and two draws from the space; the best's loss is the one the search computed.
    let (best, out) = (p("search/best.json"), p("fit"));
    let mut args = vec!["fitness", best.as_str(), "--sample", "2", "--seed", "7", "--out", out.as_str()];
    args.extend(data);
    let results = cli::fitness::fitness(&parse_fitness(&args)).unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].loss, pop.best.loss, "the fitness is the search's");
    assert_eq!((results[0].gflops, results[0].active_params), (pop.best.gflops, pop.best.active_params));
    assert_eq!(results[0].config, pop.best.config);
    assert_eq!(results[1].name, "sample_0.json");
    let written: Vec<cli::fitness::SubnetFitness> = serde_json::from_slice(&std::fs::read(d.join("fit/fitness.json")).unwrap()).unwrap();
    assert_eq!(written, results);
    for (i, r) in results[1..].iter().enumerate() {
        assert!(r.loss.is_finite() && r.loss > 0.0, "{r:?}");
        let file = d.join("fit").join(cli::fitness::sample_file(i));
        let cfg = SubnetConfig::from_json_file(&file).unwrap();
        assert_eq!(cfg, r.config);
        space.validate(&cfg).unwrap();
    }
    assert_ne!(results[1].config, results[2].config, "two draws of a space this size differ");
    // A sample file given back is scored the same; the same draw again rewrites identical files.
    let sample0 = p("fit/sample_0.json");
    let mut again = vec!["fitness", sample0.as_str()];
    again.extend(data);
    assert_eq!(cli::fitness::fitness(&parse_fitness(&again)).unwrap()[0].loss, results[1].loss);
    assert_eq!(cli::fitness::fitness(&parse_fitness(&args)).unwrap(), results);

    // Another seed's draws would replace sample files a model may have been trained from: refused,
    // nothing written.
    let before = std::fs::read(d.join("fit/fitness.json")).unwrap();
    let mut other_seed = args.clone();
    other_seed[5] = "8";
    let msg = cli::fitness::fitness(&parse_fitness(&other_seed)).unwrap_err().to_string();
    assert!(msg.contains("sample_0.json") && msg.contains("another configuration"), "{msg}");
    assert_eq!(std::fs::read(d.join("fit/fitness.json")).unwrap(), before);

    // Bad requests, each named.
    let mut no_out = vec!["fitness", "--sample", "2"];
    no_out.extend(data);
    assert!(cli::fitness::fitness(&parse_fitness(&no_out)).unwrap_err().to_string().contains("needs --out"));
    let too_many = (cli::fitness::MAX_SAMPLES + 1).to_string();
    let mut huge = vec!["fitness", "--sample", too_many.as_str(), "--out", out.as_str()];
    huge.extend(data);
    let msg = cli::fitness::fitness(&parse_fitness(&huge)).unwrap_err().to_string();
    assert!(msg.contains("--sample") && msg.contains("above the limit"), "{msg}");
    let mut nothing = vec!["fitness"];
    nothing.extend(data);
    assert!(cli::fitness::fitness(&parse_fitness(&nothing)).unwrap_err().to_string().contains("nothing to evaluate"));
    let mut wide = space.largest();
    wide.encoder_embed_dim = 24;
    std::fs::write(d.join("wide.json"), wide.to_json().unwrap()).unwrap();
    let wide_path = p("wide.json");
    let mut outside = vec!["fitness", wide_path.as_str()];
    outside.extend(data);
    let msg = cli::fitness::fitness(&parse_fitness(&outside)).unwrap_err().to_string();
    assert!(msg.contains("wide.json") && msg.contains("not a subnet of the supernet's space `cli-test`"), "{msg}");
}

#[test]
fn a_bad_vocabulary_or_output_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_string_lossy().into_owned();
    let (_, ckpt, _, _) = setup(d);
    let (ck, vs, vt) = (ckpt.to_string_lossy().into_owned(), p("valid.src"), p("valid.tgt"));
    let data = ["--checkpoint", ck.as_str(), "--valid-src", vs.as_str(), "--valid-tgt", vt.as_str(), "--valid-sentences", "8"];

    // search --out that is a file, or whose files would replace an input.
    std::fs::write(d.join("taken"), "x").unwrap();
    let taken = p("taken");
    let mut search =
        vec!["search", "--out", taken.as_str(), "--iterations", "1", "--parents", "2", "--mutations", "2", "--crossovers", "2"];
    search.extend(data);
    let msg = run(&search).unwrap_err().to_string();
    assert!(msg.contains("taken exists and is not a directory"), "{msg}");
    std::fs::write(d.join("best.json"), "a predictor the user keeps").unwrap();
    let (here, predictor) = (d.to_string_lossy().into_owned(), p("best.json"));
    search[2] = here.as_str();
    search.extend(["--predictor", predictor.as_str()]);
    let msg = run(&search).unwrap_err().to_string();
    assert!(msg.contains("best.json") && msg.contains("is also the input --predictor"), "{msg}");
    assert_eq!(std::fs::read_to_string(d.join("best.json")).unwrap(), "a predictor the user keeps");

    // latency --vocab out of range names the flag.
    let space = p("space.toml");
    for vocab in ["0", "1099511627776"] {
        let msg = run(&["latency", "--space", &space, "--vocab", vocab, "--samples", "1", "--out", &p("l.json")]).unwrap_err().to_string();
        assert!(msg.contains("latency --vocab") && msg.contains(&format!("vocabulary size {vocab}")), "{msg}");
    }

    // A checkpoint whose meta.json claims a vocabulary past the limit: an error naming the file.
    let meta_path = ckpt.join("meta.json");
    let mut meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["model_config"]["vocab"] = serde_json::json!(1u64 << 58);
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let msg = load_supernet(&ckpt).err().unwrap().to_string();
    assert!(msg.contains("meta.json") && msg.contains("vocabulary size 288230376151711744"), "{msg}");
}
