//! `automoe search`: evolutionary search over a trained supernet (checkpoint directory) for the
//! subnet with the lowest validation loss under latency / GFLOPs / active-parameter constraints.
//! Writes `best.json`, `population.json` and `pareto.svg` into `--out`.

use std::path::PathBuf;

use crate::search::report::save_search;
use crate::search::{search, verify_latency, Constraints, LatencyMeter, LatencyPredictor, SearchConfig, SupernetLoss};
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub data: super::fitness::FitnessData,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Latency bound in milliseconds (total of encoder and decoder); needs --predictor or
    /// --measure-latency.
    #[arg(long)]
    pub latency_ms: Option<f64>,
    /// GFLOPs bound (the paper's: 30-token source and target, no output projection).
    #[arg(long)]
    pub gflops: Option<f64>,
    /// Active parameters per token without the embedding, e.g. `45M`, `800K` or `1200000`.
    #[arg(long, value_parser = parse_count)]
    pub active_params: Option<f64>,
    /// Latencies from this predictor (`automoe predictor --out`).
    #[arg(long, conflicts_with = "measure_latency")]
    pub predictor: Option<PathBuf>,
    /// Measure every candidate's latency on the CPU (slow; see `automoe latency`).
    #[arg(long)]
    pub measure_latency: bool,
    /// After the search, measure its best N candidates in order of fitness (by --protocol's
    /// settings) and take the first whose measured latency is within --latency-ms: a predicted
    /// budget otherwise favours the candidates the predictor underestimates. Needs --latency-ms.
    #[arg(long, default_value_t = 0, requires = "latency_ms")]
    pub verify_latency: usize,
    #[command(flatten)]
    pub protocol: super::latency::ProtocolArgs,
    #[arg(long, default_value_t = 15)]
    pub iterations: usize,
    #[arg(long, default_value_t = 25)]
    pub parents: usize,
    #[arg(long, default_value_t = 50)]
    pub mutations: usize,
    #[arg(long, default_value_t = 50)]
    pub crossovers: usize,
    #[arg(long, default_value_t = 0.3)]
    pub mutation_prob: f64,
    #[arg(long, default_value_t = 0.5)]
    pub crossover_prob: f64,
    /// Draws per population slot before the constraints are declared unsatisfiable.
    #[arg(long, default_value_t = 1000)]
    pub max_retries: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Search homogeneous MoE subnets only (every expert of a layer one width): the baseline that
    /// measures what heterogeneous experts buy.
    #[arg(long)]
    pub homogeneous_experts: bool,
}

/// `45M` -> 45e6, `800K` -> 8e5, `1.5G` -> 1.5e9, `1200` -> 1200.
pub fn parse_count(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * mult),
        _ => Err(format!("`{s}` is not a count (a non-negative number, optionally with K, M or G)")),
    }
}

/// The files `search` writes into `--out`.
/// Before the search (which may take hours): `--out` can hold its three files, none of which is
/// one of the inputs.
fn check_outputs(args: &Args) -> Result<()> {
    crate::fsio::check_output_dir(&args.out)?;
    let outputs = crate::search::report::SEARCH_FILES.map(|name| args.out.join(name));
    for path in &outputs {
        crate::fsio::check_creatable_file(path, "search --out")?;
    }
    let mut inputs: Vec<(&'static str, &std::path::Path)> =
        vec![("--valid-src", &args.data.valid_src), ("--valid-tgt", &args.data.valid_tgt)];
    inputs.extend(args.data.tokenizer.as_deref().map(|t| ("--tokenizer", t)));
    inputs.extend(args.predictor.as_deref().map(|p| ("--predictor", p)));
    let outputs: Vec<(&'static str, &std::path::Path)> = outputs.iter().map(|p| ("search --out", p.as_path())).collect();
    crate::fsio::check_distinct_outputs(&outputs, &inputs)
}

pub fn run(args: Args) -> Result<()> {
    check_outputs(&args)?;
    let (net, _, pairs) = args.data.load("automoe search")?;
    let mut fitness = SupernetLoss::new(&net, &pairs, args.data.max_tokens)?;

    let mut predictor = match &args.predictor {
        Some(p) => {
            let pred = LatencyPredictor::load(p)?;
            pred.check_space(&net.space).map_err(|e| Error::Format { path: p.clone(), msg: format!("{e} (the supernet's space)") })?;
            Some(pred)
        }
        None => None,
    };
    let mut cpu = if args.measure_latency { Some(args.protocol.meter(&net, args.seed)?) } else { None };
    let meter: Option<&mut dyn LatencyMeter> = match (predictor.as_mut(), cpu.as_mut()) {
        (Some(p), _) => Some(p),
        (None, Some(c)) => Some(c),
        (None, None) => None,
    };
    if let Some(m) = &meter {
        eprintln!("latency: {}", m.describe());
    }
    let constraints = Constraints { latency_ms: args.latency_ms, gflops: args.gflops, active_params: args.active_params };
    let config = SearchConfig {
        parents: args.parents,
        mutations: args.mutations,
        crossovers: args.crossovers,
        mutation_prob: args.mutation_prob,
        crossover_prob: args.crossover_prob,
        iterations: args.iterations,
        max_retries: args.max_retries,
        seed: args.seed,
        vocab: net.vocab,
        pre_norm: net.options.pre_norm,
        homogeneous_experts: args.homogeneous_experts,
    };
    eprintln!("constraints: {}; population {} for {} iterations", constraints.describe(), config.population(), config.iterations);
    let pb = super::latency::bar(args.iterations as u64 + 1, "generations");
    let mut result = search(&net.space, config, constraints, &mut fitness, meter, |i, _| pb.set_position(i as u64 + 1))?;
    pb.finish_and_clear();
    if args.verify_latency > 0 {
        let mut measured = args.protocol.meter(&net, args.seed)?;
        verify_latency(&mut result, &mut measured, args.verify_latency)?;
        if let Some(v) = &result.verification {
            println!("latency of the best candidates measured ({}) against {:.2} ms: {}", v.meter, v.budget_ms, v.summary());
        }
    }
    save_search(&result, &args.out)?;
    let b = &result.best;
    let lat = b.latency.map(|l| format!(", latency {:.2} ms", l.total_ms())).unwrap_or_default();
    println!(
        "best: loss {:.4}, {:.3} GFLOPs, {:.2} M active params{lat}; {} subnets evaluated, {} draws rejected, {} draws copied a population member",
        b.loss,
        b.gflops,
        b.active_params / 1e6,
        result.evaluated,
        result.rejected,
        result.duplicates
    );
    println!("wrote best.json, population.json, pareto.svg to {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn counts_with_suffixes() {
        assert_eq!(parse_count("45M"), Ok(45e6));
        assert_eq!(parse_count("800k"), Ok(8e5));
        assert_eq!(parse_count("1200"), Ok(1200.0));
        assert!(parse_count("-1").is_err() && parse_count("abc").is_err() && parse_count("").is_err());
    }
}
