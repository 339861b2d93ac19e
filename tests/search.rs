//! The hardware-aware search: evolution against synthetic fitness and latency functions with known
//! answers, constraint handling, reproducibility, the latency predictor, and the real CPU latency
//! meter and supernet fitness on a tiny model.

use std::cell::RefCell;

use automoe::model::{ModelOptions, SearchSpace, SubnetConfig, SubnetCost, Supernet};
use automoe::search::report::{pareto_front, save_search};
use automoe::search::{
    search, split_records, Clock, Constraints, Fitness, Latency, LatencyDataset, LatencyMeter, LatencyPredictor, LatencyProtocol,
    PredictorConfig, SearchConfig, SubnetLatencyMeter, SupernetLoss,
};
use automoe::{DType, Result};

const SPACE: &str = r#"
name = "test"
encoder_embed_dim = [16, 8]
decoder_embed_dim = [16, 8]
qkv_dim = 8
encoder_layers = [2]
decoder_layers = [1, 2, 3]
encoder_heads = [2, 1]
decoder_self_heads = [2, 1]
decoder_cross_heads = [2, 1]
cross_attention_span = [-1, 1]
ffn_widths = [32, 16]
max_experts = 2
route_k = [1]
"#;

fn space() -> SearchSpace {
    SearchSpace::from_toml_str(SPACE).unwrap()
}

/// A latency that grows with the decoder depth only: 1 ms per decoder layer.
struct DepthLatency;

impl LatencyMeter for DepthLatency {
    fn measure(&mut self, cfg: &SubnetConfig) -> Result<Latency> {
        Ok(Latency { encoder_ms: 0.0, decoder_ms: cfg.decoder.len() as f64 })
    }
    fn describe(&self) -> String {
        "1 ms per decoder layer".into()
    }
}

/// Loss 0 for the largest subnet; 100 per decoder layer short of the deepest (so depth dominates),
/// plus 1 per gene below its largest choice. Under "latency <= 2 ms" (2 decoder layers) the optimum
/// is the largest subnet cut to 2 decoder layers, at loss 100.
fn synthetic_loss(space: &SearchSpace, cfg: &SubnetConfig) -> f64 {
    let big = space.largest();
    let mut loss = 100.0 * (big.decoder.len() - cfg.decoder.len()) as f64;
    let miss = |a: usize, b: usize| f64::from(u8::from(a != b));
    loss += miss(cfg.encoder_embed_dim, big.encoder_embed_dim) + miss(cfg.decoder_embed_dim, big.decoder_embed_dim);
    for l in &cfg.encoder {
        loss += miss(l.self_heads, 2) + miss(l.experts, 2) + l.expert_widths.iter().map(|&w| miss(w, 32)).sum::<f64>();
    }
    for l in &cfg.decoder {
        loss += miss(l.self_heads, 2) + miss(l.cross_heads, 2) + miss(l.experts, 2);
        loss += f64::from(u8::from(l.cross_span != 1)) + l.expert_widths.iter().map(|&w| miss(w, 32)).sum::<f64>();
    }
    loss
}

fn the_optimum(space: &SearchSpace) -> SubnetConfig {
    let mut c = space.largest();
    c.decoder.truncate(2);
    c
}

fn config(seed: u64, iterations: usize) -> SearchConfig {
    SearchConfig { iterations, seed, vocab: 50, ..SearchConfig::default() }
}

#[test]
fn finds_the_known_optimum_under_a_latency_constraint_and_respects_every_constraint() {
    let space = space();
    let optimum = the_optimum(&space);
    let gflops_budget = SubnetCost::of(&optimum, 50, false, &automoe::model::Routing::Uniform).unwrap().flops.paper_gflops();
    let seen = RefCell::new(Vec::new());
    let mut fitness = |cfg: &SubnetConfig| -> Result<f64> {
        seen.borrow_mut().push(cfg.clone());
        Ok(synthetic_loss(&space, cfg))
    };
    let constraints = Constraints { latency_ms: Some(2.0), gflops: Some(gflops_budget), active_params: None };
    let mut meter = DepthLatency;
    let r = search(&space, config(1, 30), constraints, &mut fitness, Some(&mut meter), |_, _| {}).unwrap();
    assert_eq!(r.best.config, optimum, "loss {}", r.best.loss);
    assert_eq!(r.best.loss, 100.0);
    assert_eq!(r.population.len(), 125);
    let seen = seen.into_inner();
    assert!(seen.len() > 125);
    for cfg in &seen {
        assert!(cfg.decoder.len() <= 2, "evaluated a subnet over the latency budget: {} layers", cfg.decoder.len());
        let g = SubnetCost::of(cfg, 50, false, &automoe::model::Routing::Uniform).unwrap().flops.paper_gflops();
        assert!(g <= gflops_budget, "evaluated a subnet over the GFLOPs budget: {g} > {gflops_budget}");
        space.validate(cfg).unwrap();
    }
    assert!(r.rejected > 0, "the latency constraint should have rejected some draws");
    // History: the best loss never gets worse (parents survive).
    assert!(r.history.windows(2).all(|w| w[1].best_loss <= w[0].best_loss));
}

#[test]
fn active_params_constraint_holds_for_every_candidate() {
    let space = space();
    let largest = SubnetCost::of(&space.largest(), 50, false, &automoe::model::Routing::Uniform).unwrap();
    let budget = largest.params.active_without_embedding() * 0.6;
    // Every subnet the search evaluates, not only the final population, must be within budget.
    let seen = RefCell::new(Vec::new());
    let mut fitness = |cfg: &SubnetConfig| -> Result<f64> {
        seen.borrow_mut().push(cfg.clone());
        Ok(synthetic_loss(&space, cfg))
    };
    let c = Constraints { active_params: Some(budget), ..Constraints::default() };
    let r = search(&space, config(2, 5), c, &mut fitness, None, |_, _| {}).unwrap();
    let seen = seen.into_inner();
    assert!(seen.len() >= r.population.len(), "{} evaluated", seen.len());
    for cfg in &seen {
        let active = SubnetCost::of(cfg, 50, false, &automoe::model::Routing::Uniform).unwrap().params.active_without_embedding();
        assert!(active <= budget, "evaluated a subnet over the budget: {active} > {budget}");
    }
    assert!(r.population.iter().all(|c| c.active_params <= budget));
    // The budget binds: the unconstrained optimum (the largest subnet) is over it, so some
    // draws were rejected.
    assert!(r.rejected > 0, "a budget of 0.6x the largest rejected nothing");
}

#[test]
fn the_population_holds_no_copies_unless_the_space_is_too_small_for_it() {
    let space = space();
    let mut fitness = |cfg: &SubnetConfig| -> Result<f64> { Ok(synthetic_loss(&space, cfg)) };
    let r = search(&space, config(4, 8), Constraints::default(), &mut fitness, None, |_, _| {}).unwrap();
    let distinct: std::collections::HashSet<String> = r.population.iter().map(|c| serde_json::to_string(&c.config).unwrap()).collect();
    assert_eq!(distinct.len(), r.population.len(), "{} copies in the final population", r.population.len() - distinct.len());
    // Mutations of converged parents hit a parent often: those draws were redrawn.
    assert!(r.duplicates > 0);
    // A space of one subnet (the smallest is dense: one expert, one width, one span) still fills
    // the population, with copies of it, evaluated once.
    let one = SearchSpace::of_subnet(&space.smallest()).unwrap();
    let mut fitness = |cfg: &SubnetConfig| -> Result<f64> { Ok(synthetic_loss(&one, cfg)) };
    let r = search(&one, config(4, 2), Constraints::default(), &mut fitness, None, |_, _| {}).unwrap();
    assert_eq!((r.population.len(), r.evaluated), (125, 1));
    assert!(r.duplicates >= 124, "{}", r.duplicates);
}

#[test]
fn same_seed_same_result_and_different_seed_differs() {
    let space = space();
    let run = |seed: u64| {
        let mut fitness = |cfg: &SubnetConfig| -> Result<f64> { Ok(synthetic_loss(&space, cfg)) };
        let mut meter = DepthLatency;
        let c = Constraints { latency_ms: Some(2.0), ..Constraints::default() };
        search(&space, config(seed, 3), c, &mut fitness, Some(&mut meter), |_, _| {}).unwrap()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a, b);
    assert_ne!(a.population, c.population);
}

#[test]
fn infeasible_constraints_give_a_clear_error() {
    let space = space();
    let mut fitness = |cfg: &SubnetConfig| -> Result<f64> { Ok(synthetic_loss(&space, cfg)) };
    // Settings past the limits are errors before anything is evaluated.
    for (cfg, name) in [
        (SearchConfig { iterations: usize::MAX, ..config(0, 1) }, "iterations"),
        (SearchConfig { mutations: usize::MAX, ..config(0, 1) }, "population"),
        (SearchConfig { parents: 0, ..config(0, 1) }, "parents"),
    ] {
        let e = search(&space, cfg, Constraints::default(), &mut fitness, None, |_, _| {}).unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
    }
    // A bound below the smallest subnet's cost is known from the space: refused before any draw.
    let c = Constraints { gflops: Some(1e-9), ..Constraints::default() };
    let cfg = SearchConfig { max_retries: 50, ..config(0, 2) };
    let mut evaluated = 0;
    let mut counting = |cfg: &SubnetConfig| -> Result<f64> {
        evaluated += 1;
        Ok(synthetic_loss(&space, cfg))
    };
    let msg = search(&space, cfg, c, &mut counting, None, |_, _| {}).unwrap_err().to_string();
    assert!(msg.contains("GFLOPs <= 0.000000001 is out of reach") && msg.contains("smallest subnet"), "{msg}");
    assert_eq!(evaluated, 0);
    let c = Constraints { active_params: Some(10.0), ..Constraints::default() };
    let msg = search(&space, cfg, c, &mut fitness, None, |_, _| {}).unwrap_err().to_string();
    assert!(msg.contains("active params <= 0.000 M is out of reach"), "{msg}");
    // One only the meter can rule out (no subnet has under 1 decoder layer): the draws give up
    // after max_retries with the costs they saw.
    let c = Constraints { latency_ms: Some(0.5), ..Constraints::default() };
    let msg = search(&space, cfg, c, &mut fitness, Some(&mut DepthLatency), |_, _| {}).unwrap_err().to_string();
    assert!(msg.contains("no random subnet satisfying the constraints") && msg.contains("latency <= 0.5 ms"), "{msg}");
    assert!(msg.contains("smallest costs seen"), "{msg}");
    // A latency constraint without a meter is refused up front.
    let c = Constraints { latency_ms: Some(1.0), ..Constraints::default() };
    let msg = search(&space, config(0, 1), c, &mut fitness, None, |_, _| {}).unwrap_err().to_string();
    assert!(msg.contains("needs a latency meter"), "{msg}");
}

/// A nonlinear synthetic latency: what the predictor must learn.
struct SyntheticLatency;

impl LatencyMeter for SyntheticLatency {
    fn measure(&mut self, cfg: &SubnetConfig) -> Result<Latency> {
        let enc: f64 = cfg.encoder.iter().map(|l| (cfg.encoder_embed_dim * l.expert_widths.iter().max().unwrap()) as f64).sum();
        let dec: f64 = cfg
            .decoder
            .iter()
            .map(|l| {
                (cfg.decoder_embed_dim * (l.expert_widths.iter().max().unwrap() + 8 * l.self_heads)) as f64
                    * (1.0 + l.cross_span.max(0) as f64)
            })
            .sum();
        Ok(Latency { encoder_ms: 0.5 + enc / 500.0, decoder_ms: 1.0 + dec / 300.0 })
    }
    fn describe(&self) -> String {
        "synthetic".into()
    }
}

#[test]
fn predictor_beats_a_constant_and_round_trips() {
    let space = space();
    let ds = LatencyDataset::build(&space, &mut SyntheticLatency, 200, 5, |_| {}).unwrap();
    let (train, test) = split_records(&ds.records, 0.2, 1).unwrap();
    assert_eq!(test.len(), 40);
    let cfg = PredictorConfig { hidden: 32, layers: 2, epochs: 60, batch_size: 16, lr: 3e-3, weight_decay: 0.0, seed: 3 };
    let p = LatencyPredictor::train(&ds, &train, cfg, |_| {}).unwrap();
    let baseline = train.iter().map(|r| r.latency.total_ms()).sum::<f64>() / train.len() as f64;
    let rep = p.evaluate(&test, baseline).unwrap();
    assert!(rep.mape_pct < 0.5 * rep.baseline_mape_pct && rep.rmse_ms < 0.5 * rep.baseline_rmse_ms, "{rep}");
    assert!(rep.kendall_tau > 0.7, "{rep}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    p.save(&path).unwrap();
    let q = LatencyPredictor::load(&path).unwrap();
    assert_eq!(p.predict(&test[0].config).unwrap(), q.predict(&test[0].config).unwrap());
    // A predictor file whose space was edited to absurd sizes is refused, not expanded.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["space"]["decoder_layers"] = serde_json::json!([1, 1_000_000_000]);
    std::fs::write(&path, json.to_string()).unwrap();
    let msg = LatencyPredictor::load(&path).unwrap_err().to_string();
    assert!(msg.contains("p.json") && msg.contains("decoder_layers"), "{msg}");
    // The dataset round-trips and its features are rechecked on load.
    let ds_path = dir.path().join("d.json");
    ds.save_json(&ds_path).unwrap();
    assert!(LatencyDataset::load_json(&ds_path).unwrap() == ds, "the dataset did not round-trip");
    ds.save_csv(&dir.path().join("d.csv")).unwrap();
    let mut bad = ds.clone();
    bad.records[0].features[0] += 1.0;
    bad.save_json(&ds_path).unwrap();
    let msg = LatencyDataset::load_json(&ds_path).unwrap_err().to_string();
    assert!(msg.contains("stored features differ"), "{msg}");
}

/// Saves `json` edited by `edit` to `path` and returns the error loading it gives.
fn load_edited_predictor(path: &std::path::Path, json: &serde_json::Value, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut j = json.clone();
    edit(&mut j);
    std::fs::write(path, j.to_string()).unwrap();
    LatencyPredictor::load(path).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn out_of_range_latencies_and_predictor_values_are_refused_by_name() {
    let space = space();
    let ds = LatencyDataset::build(&space, &mut SyntheticLatency, 20, 2, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Dataset records: negative, huge and all-zero times are named with their record.
    let ds_path = dir.path().join("d.json");
    for (enc, dec, expect) in [(-1.0, 1.0, "encoder_ms = -1"), (1.0, 1e9, "decoder_ms = 1000000000 is above"), (0.0, 0.0, "is 0")] {
        let mut bad = ds.clone();
        bad.records[3].latency = Latency { encoder_ms: enc, decoder_ms: dec };
        bad.save_json(&ds_path).unwrap();
        let msg = LatencyDataset::load_json(&ds_path).unwrap_err().to_string();
        assert!(msg.contains("record 3") && msg.contains(expect), "{msg}");
        // Training on such records directly (not through a file) is refused too.
        let cfg = PredictorConfig { hidden: 8, layers: 1, epochs: 1, batch_size: 8, lr: 1e-3, weight_decay: 0.0, seed: 0 };
        let msg = LatencyPredictor::train(&bad, &bad.records, cfg, |_| {}).unwrap_err().to_string();
        assert!(msg.contains("training record 3") && msg.contains(expect), "{msg}");
    }

    let cfg = PredictorConfig { hidden: 8, layers: 1, epochs: 2, batch_size: 8, lr: 1e-3, weight_decay: 0.0, seed: 0 };
    let p = LatencyPredictor::train(&ds, &ds.records, cfg, |_| {}).unwrap();
    let path = dir.path().join("p.json");
    p.save(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let msg = load_edited_predictor(&path, &json, |j| j["target_std"][1] = serde_json::json!(0.0));
    assert!(msg.contains("p.json") && msg.contains("target_std of the decoder = 0 is not positive"), "{msg}");
    let msg = load_edited_predictor(&path, &json, |j| j["feature_std"][0] = serde_json::json!(-2.0));
    assert!(msg.contains("feature_std of `") && msg.contains("not positive"), "{msg}");
    let msg = load_edited_predictor(&path, &json, |j| j["layers"][0]["b"][2] = serde_json::json!(1e38));
    assert!(msg.contains("layer 0 bias 2") && msg.contains("within"), "{msg}");
    let msg = load_edited_predictor(&path, &json, |j| j["target_mean"][0] = serde_json::json!(1e300));
    assert!(msg.contains("target_mean of the encoder"), "{msg}");
    // Every value in range, but the prediction overflows: found on load, not mid-search.
    let msg = load_edited_predictor(&path, &json, |j| j["layers"][1]["b"][0] = serde_json::json!(9e5));
    assert!(msg.contains("test prediction") && msg.contains("out of range"), "{msg}");
    let msg = load_edited_predictor(&path, &json, |j| j["feature_names"][1] = serde_json::json!("renamed"));
    assert!(msg.contains("feature 1 is `renamed`"), "{msg}");
    // The unedited file still loads (the edits above did not leak into it).
    std::fs::write(&path, json.to_string()).unwrap();
    LatencyPredictor::load(&path).unwrap();

    // A predictor used on another space names the first gene that differs.
    let other = SearchSpace { max_experts: 3, ..space.clone() };
    let msg = p.check_space(&other).unwrap_err().to_string();
    assert!(msg.contains("max_experts: 2 vs 3"), "{msg}");
    p.check_space(&space).unwrap();
}

#[test]
fn cpu_meter_and_supernet_fitness_run_on_a_tiny_model_and_outputs_are_written() {
    let space = space();
    let net = Supernet::new(space.clone(), 40, ModelOptions::default(), 3, DType::F32).unwrap();
    let protocol = LatencyProtocol { src_len: 6, steps: 3, beam: 2, warmup: 1, runs: 3, trim: 0.0, threads: None, clock: Clock::Wall };
    let mut meter = SubnetLatencyMeter::new(&net, protocol, 1, 0).unwrap();
    assert!(meter.describe().contains("1 thread"));
    let lat = meter.measure(&space.largest()).unwrap();
    assert!(lat.encoder_ms > 0.0 && lat.decoder_ms > 0.0, "{lat:?}");
    assert!(SubnetLatencyMeter::new(&net, protocol, 0, 0).is_err());
    // The protocol is the evaluation's: a thread count in it must agree with the meter's pool.
    assert_eq!(meter.protocol(), LatencyProtocol { threads: Some(1), ..protocol });
    let msg = SubnetLatencyMeter::new(&net, LatencyProtocol { threads: Some(2), ..protocol }, 1, 0).err().unwrap().to_string();
    assert!(msg.contains("asks for Some(2) threads"), "{msg}");
    assert!(SubnetLatencyMeter::new(&net, LatencyProtocol { threads: Some(1), ..protocol }, 1, 0).is_ok());
    let mut rounds = Vec::new();
    let both =
        meter.measure_interleaved(&[space.largest(), space.sample(&mut automoe::rng::seeded(1)).unwrap()], |r| rounds.push(r)).unwrap();
    assert_eq!(rounds, vec![1, 2, 3]);
    assert!(both.len() == 2 && both.iter().all(|l| l.encoder_ms > 0.0 && l.decoder_ms > 0.0), "{both:?}");
    // The rounds under it: every model once per round, in turn, each run counted for its own model.
    let models = [net.extract(&space.largest()).unwrap(), net.extract(&space.smallest()).unwrap()];
    let mut order = Vec::new();
    let reports = automoe::decode::measure_in_rounds(
        2,
        &LatencyProtocol { runs: 5, trim: 0.2, threads: Some(1), ..protocol },
        |i, time| {
            order.push(i);
            time(&models[i].view()?)
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(order, [0, 1].repeat(5));
    assert!(reports.iter().all(|r| r.runs_kept == 3 && r.threads == 1 && r.total_ms == r.encoder_ms + r.decoder_ms), "{reports:?}");
    // A model its caller forgot to time is an error naming it, not a mean over fewer runs.
    let err = automoe::decode::measure_in_rounds(2, &protocol, |i, time| if i == 1 { Ok(()) } else { time(&models[i].view()?) }, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("model 1 was not timed in round 1"), "{err}");
    // The thread-CPU clock (for shared machines) times the same passes, on one thread only.
    let cpu_protocol = LatencyProtocol { clock: Clock::Cpu, ..protocol };
    let msg = SubnetLatencyMeter::new(&net, cpu_protocol, 2, 0).err().unwrap().to_string();
    assert!(msg.contains("needs 1 thread"), "{msg}");
    let mut cpu_meter = SubnetLatencyMeter::new(&net, cpu_protocol, 1, 0).unwrap();
    assert!(cpu_meter.describe().contains("thread-CPU clock"));
    let l = cpu_meter.measure(&space.largest()).unwrap();
    assert!(l.encoder_ms > 0.0 && l.decoder_ms > 0.0, "{l:?}");
    // The same protocol on the CUDA path (the emulator here): wall clock only.
    let small = LatencyProtocol { src_len: 4, steps: 2, beam: 2, warmup: 0, runs: 1, trim: 0.0, threads: None, clock: Clock::Wall };
    let mut emu_meter = SubnetLatencyMeter::new(&net, small, 1, 0).unwrap().on_device(automoe::Device::Emu).unwrap();
    assert!(emu_meter.describe().starts_with("emu"), "{}", emu_meter.describe());
    let l = emu_meter.measure(&space.smallest()).unwrap();
    assert!(l.encoder_ms > 0.0 && l.decoder_ms > 0.0, "{l:?}");
    let msg = SubnetLatencyMeter::new(&net, cpu_protocol, 1, 0).unwrap().on_device(automoe::Device::Emu).err().unwrap().to_string();
    assert!(msg.contains("wall clock"), "{msg}");

    let pairs: Vec<automoe::data::TokenizedPair> =
        (0..6u32).map(|i| automoe::data::TokenizedPair { src: vec![4 + i, 5 + i, 2], tgt: vec![6 + i, 7, 8, 2] }).collect();
    let mut loss = SupernetLoss::new(&net, &pairs, 12).unwrap();
    assert_eq!(loss.tokens(), 24);
    let l = loss.loss(&space.largest()).unwrap();
    // Untrained: close to ln(vocab).
    assert!(l.is_finite() && (l - (40f64).ln()).abs() < 1.5, "{l}");

    let cfg = SearchConfig { parents: 3, mutations: 3, crossovers: 3, iterations: 1, ..config(0, 1) };
    let r = search(&space, cfg, Constraints::default(), &mut loss, Some(&mut meter), |_, _| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_search(&r, dir.path()).unwrap();
    let best = SubnetConfig::from_json(&std::fs::read_to_string(dir.path().join("best.json")).unwrap()).unwrap();
    assert_eq!(best, r.best.config);
    let svg = std::fs::read_to_string(dir.path().join("pareto.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Pareto"), "{}", &svg[..svg.len().min(200)]);
    let pts: Vec<(f64, f64)> = r.population.iter().map(|c| (c.latency.unwrap().total_ms(), c.loss)).collect();
    assert!(!pareto_front(&pts).is_empty());
}

/// A fitness that rewards heterogeneity: loss 10 minus the number of layers whose experts differ
/// in width. The homogeneous search must never evaluate such a layer however much it would pay;
/// the ordinary search, under the same fitness, finds them.
#[test]
fn a_homogeneous_search_evaluates_only_homogeneous_subnets() {
    let space = space();
    let mixed = |cfg: &SubnetConfig| {
        let differ = |w: &[usize]| w.windows(2).any(|p| p[0] != p[1]);
        cfg.encoder.iter().filter(|l| differ(&l.expert_widths)).count() + cfg.decoder.iter().filter(|l| differ(&l.expert_widths)).count()
    };
    let run = |homogeneous_experts: bool| {
        let seen = RefCell::new(Vec::new());
        let mut fitness = |cfg: &SubnetConfig| -> Result<f64> {
            seen.borrow_mut().push(cfg.clone());
            Ok(10.0 - mixed(cfg) as f64)
        };
        let cfg = SearchConfig { homogeneous_experts, ..config(4, 3) };
        let r = search(&space, cfg, Constraints::default(), &mut fitness, None, |_, _| {}).unwrap();
        assert_eq!(r.config.homogeneous_experts, homogeneous_experts);
        (r, seen.into_inner())
    };
    let (r, seen) = run(true);
    assert!(seen.iter().all(|c| c.is_homogeneous()), "a heterogeneous subnet was evaluated");
    // Not vacuous: MoE layers (2 experts) were searched, each with one width, both widths seen.
    let moe: Vec<usize> = seen.iter().flat_map(|c| c.encoder.iter().filter(|l| l.experts == 2).map(|l| l.expert_widths[0])).collect();
    assert!(moe.contains(&32) && moe.contains(&16), "{moe:?}");
    assert_eq!(r.best.loss, 10.0);
    let (r, seen) = run(false);
    assert!(seen.iter().any(|c| !c.is_homogeneous()));
    assert!(r.best.loss < 10.0, "the ordinary search finds heterogeneous layers: {}", r.best.loss);
}
