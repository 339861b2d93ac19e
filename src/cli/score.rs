//! `automoe score`: BLEU and chrF of translation files against one reference (sacreBLEU
//! 2.6.0-compatible), and with two or more files, each compared with the first by paired
//! bootstrap resampling (`decode::significance`), as `sacrebleu REF -i BASE SYS... --paired-bs`.
//! It reads the `eval/<system>.hyp` files a pipeline run writes, or any detokenized output.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::data::read_lines;
use crate::decode::bleu::{bleu_signature, corpus_bleu};
use crate::decode::chrf::{chrf_signature, corpus_chrf};
use crate::decode::significance::{paired_bootstrap, PairedBootstrap, DEFAULT_RESAMPLES, DEFAULT_SEED};
use crate::fsio::{check_distinct_outputs, check_output_file, write_atomic};
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Reference translations, one per line.
    #[arg(long = "ref")]
    pub reference: PathBuf,
    /// Translation files, line-aligned with --ref; the first is the baseline the others are
    /// compared with.
    #[arg(required = true)]
    pub hyps: Vec<PathBuf>,
    /// Bootstrap resamples per comparison (sacreBLEU's default).
    #[arg(long, default_value_t = DEFAULT_RESAMPLES)]
    pub resamples: usize,
    /// Seed of the resampling.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Also write every score and comparison here as one JSON object (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One file's scores, and its comparison with the baseline (none for the baseline itself).
#[derive(Debug, Clone)]
pub struct Scored {
    pub path: PathBuf,
    pub bleu: f64,
    pub chrf: f64,
    pub versus_baseline: Option<PairedBootstrap>,
}

fn lines_of(n: usize) -> String {
    if n == 1 {
        "1 line".into()
    } else {
        format!("{n} lines")
    }
}

fn read_aligned(path: &Path, refs: usize, reference: &Path) -> Result<Vec<String>> {
    let lines = read_lines(path)?;
    if lines.len() != refs {
        return Err(Error::invalid(
            "score",
            format!(
                "{} has {} but the reference {} has {refs}: the files must be line-aligned",
                path.display(),
                lines_of(lines.len()),
                reference.display()
            ),
        ));
    }
    Ok(lines)
}

/// Scores every file of `args.hyps` and compares each after the first with the first.
pub fn score(args: &Args) -> Result<Vec<Scored>> {
    // Checked even for one file (nothing to compare), so a bad value is never silently ignored.
    let max = crate::decode::significance::MAX_RESAMPLES;
    if !(1..=max).contains(&args.resamples) {
        return Err(Error::invalid("score --resamples", format!("{} is outside 1..={max}", args.resamples)));
    }
    let refs = read_lines(&args.reference)?;
    if refs.is_empty() {
        return Err(Error::invalid("score", format!("the reference {} has no lines", args.reference.display())));
    }
    let baseline = read_aligned(&args.hyps[0], refs.len(), &args.reference)?;
    let mut out = Vec::with_capacity(args.hyps.len());
    for (i, path) in args.hyps.iter().enumerate() {
        let other;
        let hyps = if i == 0 {
            &baseline
        } else {
            other = read_aligned(path, refs.len(), &args.reference)?;
            &other
        };
        let versus_baseline = if i == 0 { None } else { Some(paired_bootstrap(&baseline, hyps, &refs, args.resamples, args.seed)?) };
        out.push(Scored {
            path: path.clone(),
            bleu: corpus_bleu(hyps, &refs)?.score,
            chrf: corpus_chrf(hyps, &refs)?.score,
            versus_baseline,
        });
    }
    Ok(out)
}

/// What `--json` writes.
pub fn to_json(args: &Args, scored: &[Scored]) -> serde_json::Value {
    json!({
        "ref": args.reference,
        "resamples": args.resamples,
        "seed": args.seed,
        "bleu_signature": bleu_signature(false),
        "chrf_signature": chrf_signature(),
        "systems": scored.iter().map(|s| json!({
            "path": s.path, "bleu": s.bleu, "chrf": s.chrf, "versus_baseline": s.versus_baseline,
        })).collect::<Vec<_>>(),
    })
}

/// One metric's cell: `score (mean ± 95 % half-width)`, and the p-value against the baseline.
fn cells(m: &crate::decode::significance::MetricTest) -> String {
    let stars = if m.p_value < 0.05 { " *" } else { "" };
    format!("{:6.2} ({:5.2} ± {:4.2})  {:+6.2}  p = {:.4}{stars}", m.system.score, m.system.mean, m.system.ci, m.difference, m.p_value)
}

pub fn run(args: Args) -> Result<()> {
    if let Some(p) = &args.json {
        check_output_file(p, "score --json")?;
        let inputs: Vec<(&'static str, &Path)> =
            std::iter::once(("--ref", args.reference.as_path())).chain(args.hyps.iter().map(|h| ("HYPOTHESES", h.as_path()))).collect();
        check_distinct_outputs(&[("score --json", p)], &inputs)?;
    }
    let scored = score(&args)?;
    let name_width = scored.iter().map(|s| s.path.display().to_string().len()).max().unwrap_or(0).max(6);
    for s in &scored {
        let name = s.path.display().to_string();
        match &s.versus_baseline {
            None => {
                let ci = if scored.len() > 1 { " (baseline)" } else { "" };
                println!("{name:name_width$}  BLEU {:6.2}  chrF {:6.2}{ci}", s.bleu, s.chrf);
            }
            Some(t) => {
                println!("{name:name_width$}  BLEU {}", cells(&t.bleu));
                println!("{:name_width$}  chrF {}", "", cells(&t.chrf));
            }
        }
    }
    if let Some(t) = scored.iter().find_map(|s| s.versus_baseline.as_ref()) {
        let (b, c) = (&t.bleu.baseline, &t.chrf.baseline);
        println!(
            "baseline: BLEU {:.2} ({:.2} ± {:.2}), chrF {:.2} ({:.2} ± {:.2}); paired bootstrap, {} resamples of {} sentences, seed {}; * p < 0.05",
            b.score, b.mean, b.ci, c.score, c.mean, c.ci, t.resamples, t.sentences, t.seed
        );
    }
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&to_json(&args, &scored)).map_err(|e| Error::invalid("score --json", e.to_string()))?;
        write_atomic(p, format!("{text}\n").as_bytes())?;
    }
    Ok(())
}
