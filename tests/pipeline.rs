//! The pipeline end to end on a tiny budget: every stage runs, the report has every system, the
//! export loads, and a second run finds every output and redoes nothing.

use std::path::Path;

use automoe::pipeline::plan::Status;
use automoe::pipeline::{self, PipelineConfig, REPORT_FILE};

const TINY: &str = r#"
name = "tiny"
seed = 3
space = "small"
[data]
vocab_size = 300
max_tokens = 1024
synthetic_train = 400
synthetic_valid = 40
synthetic_test = 12
[supernet]
updates = 6
warmup = 2
[latency]
samples = 10
holdout = 0.2
predictor_epochs = 5
# The timing thread's CPU time, in rounds: the 10 tiny subnets' latencies differ by fractions of a
# millisecond, which the wall clock of a loaded CI machine can reorder (the search's budget is a
# fraction of the predicted latency, so an inverted predictor leaves no feasible subnet).
clock = "cpu"
interleave = true
[search]
iterations = 1
parents = 2
mutations = 2
crossovers = 2
valid_sentences = 20
[final_train]
updates = 3
warmup = 1
[eval]
beam = 2
"#;

fn modified(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn tiny_pipeline_runs_every_stage_and_resumes_without_redoing_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let cfg = PipelineConfig::from_toml_str(TINY, Path::new("tiny.toml")).unwrap();
    // The plan of a new run: everything to run, and nothing written by planning it.
    let planned = pipeline::plan(&cfg, &out).unwrap();
    assert!(planned.iter().all(|s| matches!(s.status, Status::ToRun | Status::EveryRun)), "{planned:?}");
    assert!(!out.exists());
    let results = pipeline::run(&cfg, &out).unwrap();
    let planned = pipeline::plan(&cfg, &out).unwrap();
    assert_eq!(planned.len(), 1 + 1 + 1 + 2 + 2 * 4 + 1 + 2, "{planned:?}");
    assert!(planned.iter().all(|s| matches!(s.status, Status::Kept | Status::EveryRun)), "{planned:?}");
    let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["automoe", "dense_searched", "dense_large", "switch"]);
    for r in &results {
        assert!(r.latency_ms() > 0.0 && r.gflops > 0.0 && r.total_params > 0, "{r:?}");
        assert!((0.0..=100.0).contains(&r.bleu) && r.test_sentences == 12, "{r:?}");
        // The routed cost is measured on the test set; a dense model has nothing to route.
        let routed = r.routed_gflops.expect("the test set has pairs");
        let dense = r.config.encoder.iter().all(|l| l.experts == 1) && r.config.decoder.iter().all(|l| l.experts == 1);
        assert_eq!(dense, r.expert_shares.is_empty(), "{r:?}");
        assert_eq!(dense, r.max_expert_share.is_none(), "{r:?}");
        if let Some(s) = r.max_expert_share {
            let experts = r.config.encoder.iter().map(|l| l.experts).chain(r.config.decoder.iter().map(|l| l.experts)).max().unwrap();
            assert!(s >= 1.0 / experts as f64 - 1e-12 && s <= 1.0, "{r:?}");
        }
        if dense {
            assert_eq!(routed, r.gflops, "{r:?}");
            assert_eq!(r.routed_active_params, Some(r.active_params), "{r:?}");
        }
    }
    assert!(!results[3].expert_shares.is_empty(), "switch is an MoE model: {:?}", results[3]);
    let report = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
    for n in &names {
        assert!(report.contains(&format!("| {n} |")), "{report}");
    }
    assert!(report.contains("GFLOPs routed") && report.contains("Routing on the test set"), "{report}");
    // The test-set noise: AutoMoE against each baseline by paired bootstrap, differences as in the table.
    assert!(report.contains("Test-set sampling noise"), "{report}");
    for r in &results[1..] {
        let line = format!("- **automoe − {}**: BLEU {:+.2} (p = ", r.name, results[0].bleu - r.bleu);
        assert!(report.contains(&line), "{line}\n{report}");
    }
    let collapsed = results.iter().any(|r| r.max_expert_share.is_some_and(|s| s > pipeline::COLLAPSED_SHARE));
    assert_eq!(collapsed, report.contains("Collapsed routers"), "{report}");
    // Each search's best subnet and its population's spread, as its population.json has them.
    for (dir, what) in [("search", "AutoMoE search"), ("search_dense", "HAT-style search")] {
        let r: automoe::search::SearchResult =
            serde_json::from_str(&std::fs::read_to_string(out.join(dir).join("population.json")).unwrap()).unwrap();
        let row = format!("| {what}");
        let line =
            report.lines().find(|l| l.starts_with(&row) && l.contains(&format!("(`{dir}/`)"))).unwrap_or_else(|| panic!("{row}\n{report}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells[2], format!("{:.4}", r.best.loss), "{line}");
        assert_eq!(cells[3], r.population.get(4).map_or("-".into(), |c| format!("{:.4}", c.loss)), "{line}");
        assert_eq!(cells[5], format!("{:.1}", r.constraints.latency_ms.unwrap()), "{line}");
        assert_eq!(cells[6], format!("{:.1}", r.best.latency.unwrap().total_ms()), "{line}");
        let system = &results[usize::from(dir == "search_dense")];
        assert_eq!(cells[7], format!("{:.1}", system.latency_ms()), "{line}");
        assert_eq!(cells[9], r.best.config.experts_per_layer(), "{line}");
        assert_eq!(cells[10], r.evaluated.to_string(), "{line}");
        assert_eq!(r.best.config, results[usize::from(dir == "search_dense")].config, "the search's best is the system trained");
    }
    for f in ["search/best.json", "search/population.json", "search/pareto.svg", "latency/predictor.json", "export/tokenizer.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // Every system's latency comes from one measurement of them all, in report order; the
    // evaluation's own files leave it out.
    let timed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("systems_latency.json")).unwrap()).unwrap();
    let timed = timed["systems"].as_array().unwrap();
    assert_eq!(timed.iter().map(|t| t["label"].as_str().unwrap()).collect::<Vec<_>>(), names);
    for (t, r) in timed.iter().zip(&results) {
        assert_eq!(t["latency"]["total_ms"].as_f64(), Some(r.latency_ms()), "{t}");
    }
    assert!(!std::fs::read_to_string(out.join("eval/switch.json")).unwrap().contains("total_ms"));
    assert!(report.contains("every system timed together in rounds") && report.contains("thread(s), thread-CPU clock"), "{report}");
    // The export is what `automoe translate` and the C ABI load.
    automoe::cli::translate::load_model_dir(&pipeline::export_dir(&out)).unwrap();
    // Every stage's wall time is kept, and the report sums them.
    let timings = pipeline::Timings::load(&out).unwrap();
    let stages: Vec<&str> = timings.stages.iter().map(|(s, _)| s.as_str()).collect();
    for s in [
        "tokenizer.json",
        "supernet",
        "latency",
        "search",
        "search_dense",
        "systems/automoe",
        "systems/switch",
        "eval/switch.json",
        "systems_latency.json",
    ] {
        assert!(stages.contains(&s), "{s} missing from {stages:?}");
    }
    assert!(timings.stages.iter().all(|(_, s)| *s > 0.0), "{timings:?}");
    assert!(report.contains(&format!("Wall time of the stages: {}", timings.summary())), "{report}");

    // A second run redoes nothing: stage outputs keep their times, the results are equal.
    let marks = [
        "supernet/DONE",
        "latency/predictor.json",
        "search/population.json",
        "systems/switch/DONE",
        "eval/switch.json",
        "systems_latency.json",
    ];
    let before: Vec<_> = marks.iter().map(|m| modified(&out.join(m))).collect();
    let again = pipeline::run(&cfg, &out).unwrap();
    assert_eq!(again, results);
    let after: Vec<_> = marks.iter().map(|m| modified(&out.join(m))).collect();
    assert_eq!(before, after);
    // ... and its report still gives the first run's stage times, not the rerun's few seconds.
    assert_eq!(pipeline::Timings::load(&out).unwrap(), timings);
    let report = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
    assert!(report.contains(&format!("Wall time of the stages: {}", timings.summary())), "{report}");

    // Changed settings would reuse stale outputs: refused before anything runs, nothing touched.
    let mut changed = cfg.clone();
    changed.final_train.updates += 1;
    let err = pipeline::run(&changed, &out).unwrap_err().to_string();
    assert!(err.contains("final_train.updates") && err.contains("systems"), "{err}");
    assert_eq!(pipeline::plan(&changed, &out).unwrap_err().to_string(), err, "the plan refuses as the run does");
    let recorded = std::fs::read_to_string(out.join("pipeline.toml")).unwrap();
    assert_eq!(PipelineConfig::from_toml_str(&recorded, Path::new("pipeline.toml")).unwrap(), cfg);
    assert_eq!(marks.iter().map(|m| modified(&out.join(m))).collect::<Vec<_>>(), after);

    // More replicates in the same directory: the trained runs are kept, only the new seed trains.
    let mut twice = cfg.clone();
    twice.final_train.replicates = 2;
    let planned = pipeline::plan(&twice, &out).unwrap();
    let to_run: Vec<String> = planned.iter().filter(|s| s.status == Status::ToRun).map(|s| s.output.display().to_string()).collect();
    let mut want: Vec<String> = names.iter().flat_map(|n| [format!("systems/{n}.seed5"), format!("eval/{n}.seed5.json")]).collect();
    want.push("systems_latency.json".into());
    assert_eq!(to_run, want, "only the new seed's runs are planned, and all runs timed again together");
    let both = pipeline::run(&twice, &out).unwrap();
    let (kept, retimed) = marks.split_at(marks.len() - 1);
    assert_eq!(kept.iter().map(|m| modified(&out.join(m))).collect::<Vec<_>>(), after[..kept.len()]);
    assert_ne!(modified(&out.join(retimed[0])), after[kept.len()]);
    let seeds: Vec<(&str, Option<u64>)> = both.iter().map(|r| (r.name.as_str(), r.seed)).collect();
    let want: Vec<(&str, Option<u64>)> = results.iter().flat_map(|r| [(r.name.as_str(), Some(4)), (r.name.as_str(), Some(5))]).collect();
    assert_eq!(seeds, want);
    // The first runs' results are kept; only their latency is new (timed with the new runs).
    let untimed = |r: &automoe::pipeline::SystemResult| automoe::pipeline::SystemResult { latency: None, ..r.clone() };
    assert_eq!(both.iter().step_by(2).map(untimed).collect::<Vec<_>>(), results.iter().map(untimed).collect::<Vec<_>>());
    assert!(both.iter().all(|r| r.latency_ms() > 0.0), "{both:?}");
    assert!(out.join("systems/switch.seed5/DONE").exists() && out.join("eval/switch.seed5.json").exists());
    let more = pipeline::Timings::load(&out).unwrap();
    let first_runs = |t: &pipeline::Timings| t.stages.iter().filter(|(s, _)| s != "systems_latency.json").cloned().collect::<Vec<_>>();
    assert_eq!(first_runs(&more)[..timings.stages.len() - 1], first_runs(&timings)[..], "the first runs' times are kept");
    assert!(more.stages.iter().any(|(s, _)| s == "systems/switch.seed5") && more.stages.iter().any(|(s, _)| s == "eval/switch.seed5.json"));
    let report = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
    let switch: Vec<&automoe::pipeline::SystemResult> = both.iter().filter(|r| r.name == "switch").collect();
    let (mean, sd) = pipeline::mean_and_sd(&[switch[0].bleu, switch[1].bleu]);
    let cell = format!("| switch | {mean:.2} ± {:.2} |", sd.unwrap());
    assert!(report.contains(&cell) && report.contains("sample standard deviation"), "{cell}\n{report}");
    assert!(report.contains(&format!("{:.2} / {:.2} (seed 5)", switch[1].bleu, switch[1].chrf)), "{report}");
    assert!(report.contains("- **switch seed 5**:"), "routing of each replicate: {report}");

    // A training stage interrupted after its checkpoint and resumed counts the training time the
    // checkpoint banked (here edited to 1000 s), not only the resuming invocation's seconds.
    std::fs::remove_file(out.join("supernet/DONE")).unwrap();
    let meta_path = out.join("supernet/checkpoint/meta.json");
    let mut meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["elapsed_s"] = serde_json::json!(1000.0);
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    pipeline::run(&twice, &out).unwrap();
    let supernet_s = pipeline::Timings::load(&out).unwrap().stages.iter().find(|(s, _)| s == "supernet").unwrap().1;
    assert!((1000.0..1100.0).contains(&supernet_s), "supernet stage {supernet_s} s");
}

#[test]
fn bad_configs_are_clear_errors() {
    let err = PipelineConfig::from_toml_str("space = 3", Path::new("p.toml")).unwrap_err().to_string();
    assert!(err.contains("p.toml"), "{err}");
    let cfg = PipelineConfig::from_toml_str("space = \"no/such/space.toml\"", Path::new("p.toml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = pipeline::run(&cfg, tmp.path()).unwrap_err().to_string();
    assert!(err.contains("no/such/space.toml"), "{err}");
    // The CPU clock times one thread.
    let err = PipelineConfig::from_toml_str("[latency]\nclock = \"cpu\"\nthreads = 2", Path::new("p.toml")).unwrap_err().to_string();
    assert!(err.contains("p.toml") && err.contains("latency.clock") && err.contains("threads = 2"), "{err}");
    let err = PipelineConfig::from_toml_str("[latency]\nclock = \"sundial\"", Path::new("p.toml")).unwrap_err().to_string();
    assert!(err.contains("p.toml") && err.contains("sundial"), "{err}");
}

#[test]
fn a_missing_test_split_fails_before_any_training() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    let en = ["a man rides a bike", "two dogs play", "a woman reads", "the children run"];
    let de = ["ein mann fährt rad", "zwei hunde spielen", "eine frau liest", "die kinder rennen"];
    for split in ["train", "val"] {
        std::fs::write(corpus.join(format!("{split}.en")), en.join("\n") + "\n").unwrap();
        std::fs::write(corpus.join(format!("{split}.de")), de.join("\n") + "\n").unwrap();
    }
    let toml = TINY.replace("[data]\n", &format!("[data]\ndir = {:?}\ntest = \"tset\"\n", corpus.to_str().unwrap()));
    let cfg = PipelineConfig::from_toml_str(&toml, Path::new("tiny.toml")).unwrap();
    let out = tmp.path().join("run");
    let err = pipeline::run(&cfg, &out).unwrap_err().to_string();
    assert!(err.contains("tset.en"), "{err}");
    assert!(!out.join("supernet").exists(), "the supernet was trained before the test split was read");
}

#[test]
fn a_gflops_bound_no_subnet_meets_fails_before_any_training() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = PipelineConfig::from_toml_str(&TINY.replace("[search]\n", "[search]\ngflops = 1e-9\n"), Path::new("tiny.toml")).unwrap();
    let out = tmp.path().join("run");
    let err = pipeline::run(&cfg, &out).unwrap_err().to_string();
    assert!(err.contains("GFLOPs <= 0.000000001 is out of reach"), "{err}");
    assert!(!out.join("supernet").exists(), "the supernet was trained before the bound was checked");
}

/// `[latency] device` makes a GPU the search's target hardware. Without one, the run says so
/// before any training; with one (the device check, scripts/gpu-bundle-run.sh), the tiny pipeline
/// runs with the predictor's dataset and every system's latency timed there.
#[test]
fn latency_on_a_gpu_is_checked_before_training_and_reported() {
    // The wall clock (the thread-CPU clock cannot see device work), and no latency budget: the
    // tiny subnets' GPU latencies differ too little to rank, and the measuring is what is tested.
    let toml = TINY
        .replace("clock = \"cpu\"", "clock = \"wall\"")
        .replace("[latency]\n", "[latency]\ndevice = \"cuda:0\"\n")
        .replace("[search]\n", "[search]\nlatency_fraction = 0.0\n");
    let cfg = PipelineConfig::from_toml_str(&toml, Path::new("gpu.toml")).unwrap();
    assert_eq!(cfg.latency.device, automoe::Device::Cuda(0));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    match automoe::cuda::Gpu::of(automoe::Device::Cuda(0)) {
        Err(e) => {
            automoe::cuda::skip_unless_required("AUTOMOE_REQUIRE_CUDA", &format!("pipeline latency on cuda:0: {e}"));
            let err = pipeline::run(&cfg, &out).unwrap_err().to_string();
            assert!(err.contains("[latency] device") && err.contains("cuda:0"), "{err}");
            assert!(!out.join("supernet").exists(), "nothing trained");
        }
        Ok(_) => {
            let results = pipeline::run(&cfg, &out).unwrap();
            assert!(results.iter().all(|r| r.latency_ms() > 0.0 && r.latency_ms().is_finite()), "{results:?}");
            let report = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
            assert!(report.contains("cuda:0 (host: 1 thread(s)), wall clock"), "{report}");
        }
    }
}

/// `automoe demo --plan` prints the plan of a new run and creates nothing.
#[test]
fn the_binary_plans_without_running() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_automoe")).args(["demo", "--plan", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("a new run") && text.contains("to run") && text.contains("systems/switch"), "{text}");
    assert!(text.contains("14 stage(s) to run or finish"), "{text}");
    assert!(!out.exists(), "planning wrote {}", out.display());
}

/// `[search] homogeneous_baseline`: the same search restricted to homogeneous MoE subnets, trained
/// and evaluated beside AutoMoE's (here without the other baselines).
#[test]
fn the_homogeneous_baseline_is_searched_trained_and_reported() {
    let toml = format!("baselines = false\n{}", TINY.replace("[search]\n", "[search]\nhomogeneous_baseline = true\n"));
    let cfg = PipelineConfig::from_toml_str(&toml, Path::new("homogeneous.toml")).unwrap();
    assert!(cfg.search.homogeneous_baseline && !cfg.baselines);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let planned: Vec<String> = pipeline::plan(&cfg, &out).unwrap().iter().map(|s| s.output.display().to_string()).collect();
    assert!(planned.contains(&"search_homogeneous".to_string()) && !planned.contains(&"search_dense".to_string()), "{planned:?}");
    let results = pipeline::run(&cfg, &out).unwrap();
    let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["automoe", "homogeneous_searched"]);
    assert!(results[1].config.is_homogeneous(), "{:?}", results[1].config);
    let pop: automoe::search::SearchResult =
        serde_json::from_str(&std::fs::read_to_string(out.join("search_homogeneous/population.json")).unwrap()).unwrap();
    assert!(pop.config.homogeneous_experts && pop.population.iter().all(|c| c.config.is_homogeneous()));
    let report = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
    assert!(report.contains("| homogeneous_searched |") && report.contains("every expert of a layer one width"), "{report}");
    assert!(report.contains("- **automoe − homogeneous_searched**"), "{report}");
    let row = format!("| homogeneous MoE search (every expert of a layer one width) (`search_homogeneous/`) | {:.4} |", pop.best.loss);
    assert!(report.contains(&row), "{row}\n{report}");
}

/// `[search] verify_latency`: the best candidates are measured in order of fitness and the first
/// within the budget is the system trained; the population file and the report say what was
/// measured. Without a budget the setting is refused.
#[test]
fn verify_latency_measures_the_best_candidates_and_trains_the_first_within_budget() {
    let toml = format!("baselines = false\n{}", TINY.replace("[search]\n", "[search]\nverify_latency = 3\n"));
    let cfg = PipelineConfig::from_toml_str(&toml, Path::new("verify.toml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let results = pipeline::run(&cfg, &out).unwrap();
    let pop: automoe::search::SearchResult =
        serde_json::from_str(&std::fs::read_to_string(out.join("search/population.json")).unwrap()).unwrap();
    let v = pop.verification.as_ref().expect("the search's latency was verified");
    let budget = pop.constraints.latency_ms.unwrap();
    assert_eq!(v.budget_ms, budget);
    assert!(v.meter.contains("thread-CPU clock") && v.meter.contains("5 warm-up + 20 timed runs"), "the paper's protocol: {}", v.meter);
    // The predictor's dataset was measured by the same protocol (`[latency] dataset_protocol`'s
    // default), so the budget, the predictions and this verification are one quantity.
    let ds = automoe::search::LatencyDataset::load_json(&out.join("latency/dataset.json")).unwrap();
    assert_eq!(ds.meter, format!("{}; interleaved rounds", v.meter), "dataset and verification meters");
    let ranks: Vec<usize> = v.checked.iter().map(|c| c.rank).collect();
    assert_eq!(ranks, (0..v.checked.len()).collect::<Vec<_>>(), "measured in rank order");
    assert!(v.checked.iter().all(|c| c.measured_ms > 0.0 && c.loss == pop.population[c.rank].loss));
    match v.chosen {
        Some(rank) => {
            assert_eq!(rank, v.checked.len() - 1, "measuring stops at the first within the budget");
            assert!(v.checked[rank].measured_ms <= budget && v.checked[..rank].iter().all(|c| c.measured_ms > budget), "{v:?}");
            assert_eq!(pop.best, pop.population[rank]);
        }
        None => {
            assert_eq!(v.checked.len(), 3.min(pop.population.len()));
            assert!(v.checked.iter().all(|c| c.measured_ms > budget), "{v:?}");
            assert_eq!(pop.best, pop.population[0]);
        }
    }
    assert_eq!(results[0].config, pop.best.config, "the system trained is the verified best");
    let report = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
    assert!(report.contains(&format!("AutoMoE search: the best candidates' latency measured ({}): {}.", v.meter, v.summary())), "{report}");

    let no_budget = toml.replace("[search]\n", "[search]\nlatency_fraction = 0\n");
    let err = PipelineConfig::from_toml_str(&no_budget, Path::new("verify.toml")).unwrap_err().to_string();
    assert!(err.contains("verify_latency") && err.contains("no latency budget"), "{err}");
}

#[test]
fn a_space_file_edited_under_existing_outputs_is_refused() {
    // The space is a setting by its path; what it holds is compared with what the outputs
    // recorded (here the latency dataset's copy), so an edit in place cannot reuse them.
    let tmp = tempfile::tempdir().unwrap();
    let space_text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/space_small.toml")).unwrap();
    let space_file = tmp.path().join("space.toml");
    std::fs::write(&space_file, &space_text).unwrap();
    let mut cfg = PipelineConfig::from_toml_str(TINY, Path::new("tiny.toml")).unwrap();
    cfg.space = space_file.to_string_lossy().into_owned();
    let out = tmp.path().join("run");
    std::fs::create_dir_all(out.join("latency")).unwrap();
    let recorded = automoe::model::SearchSpace::from_toml_str(&space_text).unwrap();
    std::fs::write(out.join("latency/dataset.json"), serde_json::json!({ "space": recorded }).to_string()).unwrap();
    pipeline::plan(&cfg, &out).unwrap();
    std::fs::write(&space_file, space_text.replace("max_experts = 4", "max_experts = 3")).unwrap();
    let err = pipeline::plan(&cfg, &out).unwrap_err().to_string();
    assert!(err.contains("dataset.json") && err.contains("max_experts: 4 vs 3") && err.contains("latency"), "{err}");
}
