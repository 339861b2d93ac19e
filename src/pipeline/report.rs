//! The pipeline's report: one row per system, as markdown (`report.md`) and on stdout.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::PipelineConfig;
use super::layout::{Search, SYSTEMS_LATENCY_FILE};
use super::timings::Timings;
use crate::decode::significance::PairedBootstrap;
use crate::decode::LatencyReport;
use crate::fsio::write_atomic;
use crate::model::SubnetConfig;
use crate::search::SearchResult;
use crate::Result;

pub const REPORT_FILE: &str = "report.md";

/// One evaluated system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemResult {
    pub name: String,
    pub description: String,
    /// The seed this model was trained from (one per replicate); absent in results written
    /// before replicates existed, which the pipeline fills in when it reads them.
    #[serde(default)]
    pub seed: Option<u64>,
    pub bleu: f64,
    pub chrf: f64,
    pub bleu_signature: String,
    pub test_sentences: usize,
    /// AutoMoE's protocol (encoder + 30 incremental decoder steps at beam 5, batch 1), timed with
    /// every other system of the run in rounds (`systems_latency.json`). The evaluation's own file
    /// (`eval/<name>.json`) leaves it out, because it is measured after all systems are trained;
    /// the results the pipeline returns and reports always have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyReport>,
    /// The paper's GFLOPs: 30-token source and target, no output projection, uniform routing.
    pub gflops: f64,
    /// Expected parameters per token without the embedding (uniform routing).
    pub active_params: f64,
    /// Stored parameters without the embedding.
    pub total_params: usize,
    /// `gflops` and `active_params` under the routing measured on the test set (teacher-forced);
    /// absent in results written before it was measured, or when the test set had no pair.
    #[serde(default)]
    pub routed_gflops: Option<f64>,
    #[serde(default)]
    pub routed_active_params: Option<f64>,
    /// Per MoE layer: each expert's width and share of the test set's (token, slot) pairs.
    #[serde(default)]
    pub expert_shares: Vec<String>,
    /// The largest share any one expert got in any MoE layer (1.0: a router sent everything to one
    /// expert); absent for dense systems and in results written before it was measured.
    #[serde(default)]
    pub max_expert_share: Option<f64>,
    /// Experts per layer, encoder then decoder (e.g. `1-4-2 / 3-1`).
    pub experts: String,
    pub config: SubnetConfig,
}

impl SystemResult {
    /// The measured latency in ms (NaN before the systems' latency stage has filled it in).
    pub fn latency_ms(&self) -> f64 {
        self.latency.as_ref().map_or(f64::NAN, |l| l.total_ms)
    }
}

/// The mean of `xs` and, for two or more values, their sample standard deviation.
pub fn mean_and_sd(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = (xs.len() > 1).then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, sd)
}

/// `results` cut into systems: runs of consecutive results with one name (a system's replicates).
fn systems(results: &[SystemResult]) -> Vec<&[SystemResult]> {
    results.chunk_by(|a, b| a.name == b.name).collect()
}

/// Whether any system in `results` was trained more than once.
fn replicated(results: &[SystemResult]) -> bool {
    systems(results).iter().any(|runs| runs.len() > 1)
}

/// A result's name in the report: with its seed when systems have several runs.
fn run_name(r: &SystemResult, replicated: bool) -> String {
    match (replicated, r.seed) {
        (true, Some(seed)) => format!("{} seed {seed}", r.name),
        _ => r.name.clone(),
    }
}

/// The markdown table of `results`, one row per system: a system's replicates (consecutive results
/// with its name) are averaged, and BLEU and chrF show `mean ± sd` over them.
pub fn table(results: &[SystemResult]) -> String {
    let mut s = String::from(
        "| system | BLEU | chrF | latency ms | GFLOPs | GFLOPs routed | active params (M) | total params (M) | experts enc / dec |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for runs in systems(results) {
        let r = &runs[0];
        let of = |f: fn(&SystemResult) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let spread = |f: fn(&SystemResult) -> f64| match mean_and_sd(&of(f)) {
            (mean, Some(sd)) => format!("{mean:.2} ± {sd:.2}"),
            (mean, None) => format!("{mean:.2}"),
        };
        let mean = |f: fn(&SystemResult) -> f64| mean_and_sd(&of(f)).0;
        let routed: Option<Vec<f64>> = runs.iter().map(|r| r.routed_gflops).collect();
        let routed = routed.map_or_else(|| "–".to_string(), |g| format!("{:.3}", mean_and_sd(&g).0));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.3} | {routed} | {:.2} | {:.2} | {} |",
            r.name,
            spread(|r| r.bleu),
            spread(|r| r.chrf),
            mean(|r| r.latency_ms()),
            r.gflops,
            r.active_params / 1e6,
            r.total_params as f64 / 1e6,
            r.experts
        );
    }
    s
}

/// With replicates: what the table's `±` means, and every run's scores by seed.
fn replicates_note(results: &[SystemResult]) -> String {
    if !replicated(results) {
        return String::new();
    }
    let runs = systems(results).iter().map(|r| r.len()).max().unwrap_or(1);
    let mut md = format!(
        "\nBLEU and chrF: mean ± sample standard deviation over up to {runs} training runs per system, each from its \
         own seed; latency and routed GFLOPs are means over the runs. A difference between two systems smaller \
         than their spread is within seed noise.\n\n"
    );
    for runs in systems(results) {
        let each: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.2} / {:.2} (seed {})", r.bleu, r.chrf, r.seed.map_or_else(|| "?".into(), |s| s.to_string())))
            .collect();
        let _ = writeln!(md, "- **{}** BLEU / chrF: {}.", runs[0].name, each.join(", "));
    }
    md
}

/// How much of the table is the test sample's noise: the first system's first run against every
/// other system's first run by paired bootstrap resampling (`comparisons`: baseline name, test).
fn test_set_note(first: &str, comparisons: &[(String, PairedBootstrap)]) -> String {
    let Some((_, t0)) = comparisons.first() else { return String::new() };
    let mut md = format!(
        "\nTest-set sampling noise (paired bootstrap: {} resamples of the {} test sentences, seed {}; the first run of each \
         system): {first} BLEU {:.2} ± {:.2} (95 % interval), chrF {:.2} ± {:.2}. p is sacreBLEU's paired-bootstrap \
         p-value: how likely a difference this large is from the test sample alone. It does not cover training \
         noise, which is often larger (compare runs over seeds with `[final_train] replicates`).\n\n",
        t0.resamples, t0.sentences, t0.seed, t0.bleu.system.score, t0.bleu.system.ci, t0.chrf.system.score, t0.chrf.system.ci
    );
    for (name, t) in comparisons {
        let _ = writeln!(
            md,
            "- **{first} − {name}**: BLEU {:+.2} (p = {:.3}), chrF {:+.2} (p = {:.3}); {name} BLEU {:.2} ± {:.2}.",
            t.bleu.difference, t.bleu.p_value, t.chrf.difference, t.chrf.p_value, t.bleu.baseline.score, t.bleu.baseline.ci
        );
    }
    md
}

/// A router sending more than this share of a layer's pairs to one expert has collapsed: the other
/// experts of the layer hardly train or run, and the layer is a dense one with extra parameters.
pub const COLLAPSED_SHARE: f64 = 0.8;

/// A paragraph naming the systems with a collapsed router (empty when there are none), and how
/// to spread the load when this run trained without the balance loss.
fn collapse_note(cfg: &PipelineConfig, results: &[SystemResult]) -> String {
    let seeds = replicated(results);
    let collapsed: Vec<String> = results
        .iter()
        .filter_map(|r| r.max_expert_share.filter(|&s| s > COLLAPSED_SHARE).map(|s| format!("{} ({:.0} %)", run_name(r, seeds), 100.0 * s)))
        .collect();
    if collapsed.is_empty() {
        return String::new();
    }
    let mut note = format!(
        "\nCollapsed routers in {}: a layer sends more than {:.0} % of its pairs to one expert (the largest share in \
         brackets), so it runs and trains mostly that expert.",
        collapsed.join(", "),
        100.0 * COLLAPSED_SHARE
    );
    if cfg.supernet.balance_coef == 0.0 || cfg.final_train.balance_coef == 0.0 {
        note.push_str(
            " This run trained without the load-balancing loss in at least one stage (AutoMoE's recipe); \
             `balance_coef = 0.01` in `[supernet]` and `[final_train]` spreads the load (docs/RESULTS.md).",
        );
    }
    note.push('\n');
    note
}

/// Writes `report.md` and prints the table.
/// The searches' outcomes: each search's best subnet and how its final population's fitness
/// spreads, so that a reader can see whether the fitness separated the searches' choices (best
/// losses closer than a population's spread were not told apart by it), and its latency budget
/// beside the mean latency its system measured in the evaluation.
fn searches_note(searches: &[(Search, SearchResult)], results: &[SystemResult]) -> String {
    if searches.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\nSearches (fitness: the supernet's validation loss with the subnet's inherited weights, lower is better; \
         the population's 5th-best and median losses show how far apart its members were; measured: the \
         latency of the system the search chose, trained, timed with the other systems, mean over its runs):\n\n\
         | search | best loss | 5th-best loss | median loss | budget ms | predicted ms | measured ms | GFLOPs | experts enc / dec | subnets evaluated | draws rejected |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n",
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut over = Vec::new();
    for (which, r) in searches {
        let losses: Vec<f64> = r.population.iter().map(|c| c.loss).collect();
        let nth = |i: usize| losses.get(i).map_or("-".to_string(), |l| format!("{l:.4}"));
        let predicted = r.best.latency.map(|l| l.total_ms());
        let name = which.system().name();
        let runs: Vec<f64> = results.iter().filter(|x| x.name == name).map(|x| x.latency_ms()).collect();
        let measured = (!runs.is_empty()).then(|| mean_and_sd(&runs).0);
        let budget = r.constraints.latency_ms;
        let _ = writeln!(
            md,
            "| {} (`{}/`) | {:.4} | {} | {} | {} | {} | {} | {:.3} | {} | {} | {} |",
            which.describe(),
            which.dir_name(),
            r.best.loss,
            nth(4),
            nth(losses.len().saturating_sub(1) / 2),
            ms(budget),
            ms(predicted),
            ms(measured),
            r.best.gflops,
            r.best.config.experts_per_layer(),
            r.evaluated,
            r.rejected,
        );
        if let (Some(b), Some(m)) = (budget, measured) {
            if m > b {
                over.push(format!("{name} ({m:.1} ms, {:.0} % above)", 100.0 * (m / b - 1.0)));
            }
        }
    }
    for (which, r) in searches {
        if let Some(v) = &r.verification {
            let _ = writeln!(md, "\n{}: the best candidates' latency measured ({}): {}.", which.describe(), v.meter, v.summary());
        }
    }
    if !over.is_empty() {
        let _ = writeln!(
            md,
            "\nMeasured above the latency budget: {}. The search keeps the candidates whose predicted latency is within \
             the budget, so near the budget it favours those the predictor underestimates; a larger or quieter latency \
             dataset (`[latency] samples`, `clock = \"cpu\"`) narrows the gap.",
            over.join(", ")
        );
    }
    md
}

/// What the report is made of: a run's configuration and every stage's outcome.
pub struct Report<'a> {
    pub cfg: &'a PipelineConfig,
    /// Every evaluated run, AutoMoE's first.
    pub results: &'a [SystemResult],
    /// The AutoMoE model against each other system on the test set (paired bootstrap).
    pub comparisons: &'a [(String, PairedBootstrap)],
    /// Each search's result, in the order they ran.
    pub searches: &'a [(Search, SearchResult)],
    /// How the systems' latencies were timed (`LatencyProtocol::describe`).
    pub latency_meter: &'a str,
    /// The exported AutoMoE model's directory.
    pub export: &'a Path,
    pub timings: &'a Timings,
    /// This invocation's wall time.
    pub seconds: f64,
}

/// Writes `out/report.md` and prints the table to stdout.
pub fn write(out: &Path, report: &Report) -> Result<()> {
    let Report { cfg, results, comparisons, searches, latency_meter, export, timings, seconds } = *report;
    let mut md = format!("# AutoMoE pipeline report: {}\n\n", cfg.name);
    let data = cfg
        .data
        .dir
        .as_ref()
        .map(|d| format!("{} ({}→{})", d.display(), cfg.data.src, cfg.data.tgt))
        .unwrap_or_else(|| "the built-in synthetic corpus".into());
    let _ =
        writeln!(md, "Data: {data}; search space `{}`; {} test sentences.\n", cfg.space, results.first().map_or(0, |r| r.test_sentences));
    md.push_str(&table(results));
    md.push_str(&replicates_note(results));
    md.push_str(&test_set_note(results.first().map_or("", |r| r.name.as_str()), comparisons));
    md.push('\n');
    for runs in systems(results) {
        let _ = writeln!(md, "- **{}**: {}.", runs[0].name, runs[0].description);
    }
    let seeds = replicated(results);
    let moe: Vec<&SystemResult> = results.iter().filter(|r| !r.expert_shares.is_empty()).collect();
    if !moe.is_empty() {
        md.push_str("\nRouting on the test set (teacher-forced): each expert's width × its share of the (token, slot) pairs.\n\n");
        for r in moe {
            let _ = writeln!(md, "- **{}**: {}.", run_name(r, seeds), r.expert_shares.join("; "));
        }
        md.push_str(&collapse_note(cfg, results));
    }
    md.push_str(&searches_note(searches, results));
    let _ = writeln!(
        md,
        "\nLatency: batch 1, the encoder once and then the decoder's steps with eos forbidden, mean of the timed runs \
         without the slowest and fastest ({latency_meter}); every system timed together in rounds, each round giving each system \
         its warm-up runs and one timed run, so that a changing load on the machine hits all of them alike \
         (`{SYSTEMS_LATENCY_FILE}`). GFLOPs: 30-token source and target, as the paper counts, \
         with every expert of a layer getting the same share of tokens (what the search constrains); \
         GFLOPs routed: the same count with each expert's share measured on the test set. \
         BLEU: {}.\n\nPareto front of the search (validation loss against predicted latency): `search/pareto.svg`. \
         Exported AutoMoE model: `{}`.\n\nWall time of the stages: {}, each stage's time from the invocation that ran it \
         (`timings.json`); this invocation took {seconds:.0} s.",
        results.first().map_or(String::new(), |r| r.bleu_signature.clone()),
        export.display(),
        timings.summary(),
    );
    write_atomic(&out.join(REPORT_FILE), md.as_bytes())?;
    println!("{}", table(results));
    println!("report: {}", out.join(REPORT_FILE).display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, max_expert_share: Option<f64>) -> SystemResult {
        let config = crate::train::mt::small_space().unwrap().largest();
        SystemResult {
            name: name.into(),
            description: String::new(),
            seed: Some(2),
            bleu: 0.0,
            chrf: 0.0,
            bleu_signature: String::new(),
            test_sentences: 1,
            latency: Some(LatencyReport { encoder_ms: 0.5, decoder_ms: 0.5, total_ms: 1.0, threads: 1, runs_kept: 16 }),
            gflops: 0.1,
            active_params: 1.0,
            total_params: 1,
            routed_gflops: None,
            routed_active_params: None,
            expert_shares: Vec::new(),
            max_expert_share,
            experts: config.experts_per_layer(),
            config,
        }
    }

    #[test]
    fn replicates_are_one_row_with_the_spread_and_every_seed_listed() {
        assert_eq!(mean_and_sd(&[1.0, 2.0, 3.0]), (2.0, Some(1.0)));
        assert_eq!(mean_and_sd(&[5.0]), (5.0, None));
        let run = |name: &str, seed, bleu| SystemResult { seed: Some(seed), bleu, ..result(name, Some(0.9)) };
        let single = [run("a", 2, 20.0), run("b", 2, 10.0)];
        let t = table(&single);
        assert!(t.contains("| a | 20.00 | 0.00 |") && !t.contains('±'), "{t}");
        assert_eq!(replicates_note(&single), "");
        assert!(collapse_note(&PipelineConfig::default(), &single).contains(" a (90 %)"));
        let runs = [run("a", 2, 20.0), run("a", 3, 22.0), run("a", 4, 24.0), run("b", 2, 10.0)];
        let t = table(&runs);
        assert_eq!(t.lines().count(), 4, "one row per system: {t}");
        assert!(t.contains("| a | 22.00 ± 2.00 | 0.00 ± 0.00 |") && t.contains("| b | 10.00 | 0.00 |"), "{t}");
        let note = replicates_note(&runs);
        assert!(note.contains("up to 3 training runs") && note.contains("24.00 / 0.00 (seed 4)"), "{note}");
        assert!(collapse_note(&PipelineConfig::default(), &runs).contains("a seed 3 (90 %)"));
    }

    #[test]
    fn searches_show_their_spread_and_a_system_measured_above_its_budget() {
        use crate::search::{Candidate, Constraints, Latency, SearchConfig};
        let config = crate::train::mt::small_space().unwrap().largest();
        let candidate = |loss: f64| Candidate {
            config: config.clone(),
            loss,
            latency: Some(Latency { encoder_ms: 1.0, decoder_ms: 8.0 }),
            gflops: 0.05,
            active_params: 1e6,
            total_params: 2_000_000,
        };
        let population: Vec<Candidate> = [2.5, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1].into_iter().map(candidate).collect();
        let search = |budget: f64| SearchResult {
            best: population[0].clone(),
            population: population.clone(),
            history: Vec::new(),
            constraints: Constraints { latency_ms: Some(budget), gflops: None, active_params: None },
            config: SearchConfig::default(),
            evaluated: 40,
            rejected: 3,
            duplicates: 0,
            verification: None,
        };
        let timed =
            |total_ms: f64| Some(LatencyReport { encoder_ms: 1.0, decoder_ms: total_ms - 1.0, total_ms, threads: 1, runs_kept: 16 });
        let runs = |name: &str, latency: [f64; 2]| latency.map(|ms| SystemResult { latency: timed(ms), ..result(name, None) });
        let mut results = runs("automoe", [11.0, 13.0]).to_vec();
        results.extend(runs("dense_searched", [9.0, 9.5]));
        let note = searches_note(&[(Search::AutoMoe, search(10.0)), (Search::Dense, search(10.0))], &results);
        let row = note.lines().find(|l| l.contains("(`search/`)")).unwrap();
        assert_eq!(row, "| AutoMoE search (`search/`) | 2.5000 | 2.9000 | 2.8000 | 10.0 | 9.0 | 12.0 | 0.050 | 4-4-4 / 4-4-4 | 40 | 3 |");
        assert!(note.contains("Measured above the latency budget: automoe (12.0 ms, 20 % above)."), "{note}");
        assert!(!note.contains("dense_searched ("), "within its budget: {note}");
        assert!(!searches_note(&[(Search::Dense, search(10.0))], &results).contains("Measured above"));
        assert_eq!(searches_note(&[], &results), "");
    }

    #[test]
    fn collapsed_routers_are_named_with_the_remedy_only_when_the_run_lacked_it() {
        let mut cfg = PipelineConfig::default();
        let results =
            [result("dense", None), result("even", Some(0.4)), result("stuck", Some(0.97)), result("edge", Some(COLLAPSED_SHARE))];
        let note = collapse_note(&cfg, &results);
        assert!(note.contains("stuck (97 %)") && !note.contains("even") && !note.contains("edge"), "{note}");
        assert!(note.contains("balance_coef = 0.01"), "{note}");
        cfg.supernet.balance_coef = 0.01;
        cfg.final_train.balance_coef = 0.01;
        let note = collapse_note(&cfg, &results);
        assert!(note.contains("stuck") && !note.contains("balance_coef"), "{note}");
        assert_eq!(collapse_note(&cfg, &results[..2]), "");
    }
}
