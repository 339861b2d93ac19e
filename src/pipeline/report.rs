//! The pipeline's report: one row per system, as markdown (`report.md`) and on stdout.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::PipelineConfig;
use crate::fsio::write_atomic;
use crate::model::SubnetConfig;
use crate::Result;

pub const REPORT_FILE: &str = "report.md";

/// One evaluated system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemResult {
    pub name: String,
    pub description: String,
    pub bleu: f64,
    pub chrf: f64,
    pub bleu_signature: String,
    pub test_sentences: usize,
    /// AutoMoE's protocol: encoder + 30 incremental decoder steps at beam 5, batch 1.
    pub latency_ms: f64,
    pub encoder_ms: f64,
    pub decoder_ms: f64,
    pub latency_threads: usize,
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
    pub fn experts_of(cfg: &SubnetConfig) -> String {
        let enc: Vec<String> = cfg.encoder.iter().map(|l| l.experts.to_string()).collect();
        let dec: Vec<String> = cfg.decoder.iter().map(|l| l.experts.to_string()).collect();
        format!("{} / {}", enc.join("-"), dec.join("-"))
    }
}

/// The markdown table of `results`.
pub fn table(results: &[SystemResult]) -> String {
    let mut s = String::from(
        "| system | BLEU | chrF | latency ms | GFLOPs | GFLOPs routed | active params (M) | total params (M) | experts enc / dec |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for r in results {
        let routed = r.routed_gflops.map_or_else(|| "–".to_string(), |g| format!("{g:.3}"));
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.1} | {:.3} | {routed} | {:.2} | {:.2} | {} |",
            r.name,
            r.bleu,
            r.chrf,
            r.latency_ms,
            r.gflops,
            r.active_params / 1e6,
            r.total_params as f64 / 1e6,
            r.experts
        );
    }
    s
}

/// A router sending more than this share of a layer's pairs to one expert has collapsed: the other
/// experts of the layer hardly train or run, and the layer is a dense one with extra parameters.
pub const COLLAPSED_SHARE: f64 = 0.8;

/// A paragraph naming the systems with a collapsed router (empty when there are none), and how
/// to spread the load when this run trained without the balance loss.
fn collapse_note(cfg: &PipelineConfig, results: &[SystemResult]) -> String {
    let collapsed: Vec<String> = results
        .iter()
        .filter_map(|r| r.max_expert_share.filter(|&s| s > COLLAPSED_SHARE).map(|s| format!("{} ({:.0} %)", r.name, 100.0 * s)))
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
pub fn write(out: &Path, cfg: &PipelineConfig, results: &[SystemResult], export: &Path, seconds: f64) -> Result<()> {
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
    md.push('\n');
    for r in results {
        let _ = writeln!(md, "- **{}**: {}.", r.name, r.description);
    }
    let moe: Vec<&SystemResult> = results.iter().filter(|r| !r.expert_shares.is_empty()).collect();
    if !moe.is_empty() {
        md.push_str("\nRouting on the test set (teacher-forced): each expert's width × its share of the (token, slot) pairs.\n\n");
        for r in moe {
            let _ = writeln!(md, "- **{}**: {}.", r.name, r.expert_shares.join("; "));
        }
        md.push_str(&collapse_note(cfg, results));
    }
    let threads = results.first().map_or(1, |r| r.latency_threads);
    let _ = writeln!(
        md,
        "\nLatency: batch 1, a 30-token source, the encoder once plus 30 incremental decoder steps at beam 5, \
         trimmed mean, {threads} thread(s) on this machine. GFLOPs: 30-token source and target, as the paper counts, \
         with every expert of a layer getting the same share of tokens (what the search constrains); \
         GFLOPs routed: the same count with each expert's share measured on the test set. \
         BLEU: {}.\n\nPareto front of the search (validation loss against predicted latency): `search/pareto.svg`. \
         Exported AutoMoE model: `{}`. Wall time: {:.0} s.",
        results.first().map_or(String::new(), |r| r.bleu_signature.clone()),
        export.display(),
        seconds
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
            bleu: 0.0,
            chrf: 0.0,
            bleu_signature: String::new(),
            test_sentences: 1,
            latency_ms: 1.0,
            encoder_ms: 0.5,
            decoder_ms: 0.5,
            latency_threads: 1,
            gflops: 0.1,
            active_params: 1.0,
            total_params: 1,
            routed_gflops: None,
            routed_active_params: None,
            expert_shares: Vec::new(),
            max_expert_share,
            experts: SystemResult::experts_of(&config),
            config,
        }
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
