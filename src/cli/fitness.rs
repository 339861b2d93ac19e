//! `automoe fitness`: the search's fitness of chosen subnets — each one's validation loss with the
//! weights it inherits from a trained supernet — without running a search. With `--sample N` it
//! also draws N subnets uniformly from the supernet's space (the distribution the supernet was
//! trained on) and writes their configurations, so that they can be trained from scratch
//! (`automoe train --subnet-config`) to check how well the supernet's ranking predicts the
//! trained models' (the fidelity that every search result rests on).
//!
//! [`FitnessData`] (the supernet checkpoint and the validation pairs) is shared with
//! `automoe search`, so both compute one fitness.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{filter_pairs, read_parallel, LengthFilter, TokenizedPair, Tokenizer};
use crate::fsio::{check_output_dir, write_atomic_creating_dir};
use crate::model::{Routing, SubnetConfig, SubnetCost, Supernet};
use crate::search::{load_supernet, Fitness, SupernetLoss};
use crate::train::CheckpointMeta;
use crate::{Error, Result};

/// The supernet and the validation pairs whose loss is the fitness.
#[derive(clap::Args, Debug, Clone)]
pub struct FitnessData {
    /// Supernet checkpoint directory (written by `automoe train-supernet`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Validation source and target files (line-aligned; `.gz` allowed).
    #[arg(long)]
    pub valid_src: PathBuf,
    #[arg(long)]
    pub valid_tgt: PathBuf,
    /// Tokenizer (`tokenizer.json`); default: `tokenizer.json` in the checkpoint directory or its
    /// parent.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Validation pairs used for fitness (the first N after length filtering; fixed for the run).
    #[arg(long, default_value_t = 500)]
    pub valid_sentences: usize,
    /// Token budget of one validation batch.
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
}

impl FitnessData {
    /// The supernet, its checkpoint's metadata and the validation pairs, tokenised with the
    /// supernet's tokenizer (checked against the hash the checkpoint recorded). `command` names
    /// the caller in errors.
    pub fn load(&self, command: &'static str) -> Result<(Supernet, CheckpointMeta, Vec<TokenizedPair>)> {
        if self.valid_sentences == 0 {
            return Err(Error::invalid("--valid-sentences", "must be at least 1 (the fitness is their loss)"));
        }
        let (net, meta) = load_supernet(&self.checkpoint)?;
        eprintln!("supernet: space `{}`, vocabulary {}, update {}", net.space.name, net.vocab, meta.update);
        let tok_path = find_tokenizer(self.tokenizer.as_ref(), &self.checkpoint, command)?;
        let tok = Tokenizer::load(&tok_path)?;
        if let Some(want) = &meta.tokenizer_hash {
            let got = tok.hash()?;
            if &got != want {
                return Err(Error::Format {
                    path: tok_path,
                    msg: format!(
                        "tokenizer hash {got} differs from the checkpoint's {want}: not the tokenizer the supernet was trained with"
                    ),
                });
            }
        }
        if tok.vocab_size() > net.vocab {
            return Err(Error::Format {
                path: tok_path,
                msg: format!("vocabulary {} exceeds the supernet's {}", tok.vocab_size(), net.vocab),
            });
        }
        let raw = read_parallel(&self.valid_src, &self.valid_tgt)?;
        let (mut pairs, report) = filter_pairs(&raw, &LengthFilter::default(), |s| tok.encode(s))?;
        if pairs.is_empty() {
            return Err(Error::Format { path: self.valid_src.clone(), msg: format!("no validation pair for the fitness ({report})") });
        }
        pairs.truncate(self.valid_sentences);
        eprintln!("validation: {report}; using {} pairs", pairs.len());
        Ok((net, meta, pairs))
    }
}

fn find_tokenizer(explicit: Option<&PathBuf>, checkpoint: &Path, command: &'static str) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.clone());
    }
    let candidates = [checkpoint.join("tokenizer.json"), checkpoint.parent().unwrap_or(Path::new(".")).join("tokenizer.json")];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::invalid(
            command,
            format!("no --tokenizer given and none found at {} or {}", candidates[0].display(), candidates[1].display()),
        )
    })
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub data: FitnessData,
    /// Subnet configuration files (JSON, e.g. a search's best.json or `--sample`'s output).
    pub configs: Vec<PathBuf>,
    /// Also draw this many subnets uniformly from the supernet's space (needs --out, where their
    /// configurations are written as `sample_<i>.json`).
    #[arg(long, default_value_t = 0)]
    pub sample: usize,
    /// Seed of --sample's draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory: fitness.json (every subnet's loss, costs and configuration) and the
    /// sampled configurations.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One subnet's fitness and the costs the search constrains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubnetFitness {
    /// The configuration file it was read from, or the sample's file name.
    pub name: String,
    /// Validation NLL per target token with the supernet's weights (lower is better).
    pub loss: f64,
    pub gflops: f64,
    /// Active parameters per token without the embedding (uniform routing).
    pub active_params: f64,
    /// Experts per layer, encoder then decoder.
    pub experts: String,
    pub config: SubnetConfig,
}

/// The most subnets `--sample` draws (each one costs a validation pass over the supernet: a
/// search evaluates a few hundred).
pub const MAX_SAMPLES: usize = 100_000;

/// The name of `--sample`'s i-th configuration file (0-based).
pub fn sample_file(i: usize) -> String {
    format!("sample_{i}.json")
}

/// The fitness of every given and sampled subnet, in that order; writes `--out` when given.
pub fn fitness(args: &Args) -> Result<Vec<SubnetFitness>> {
    if args.configs.is_empty() && args.sample == 0 {
        return Err(Error::invalid("automoe fitness", "nothing to evaluate: give subnet configuration files or --sample N"));
    }
    if args.sample > MAX_SAMPLES {
        // Each draw is a validation pass over the supernet; the configurations are kept in memory.
        return Err(Error::invalid("--sample", format!("{} is above the limit of {MAX_SAMPLES}", args.sample)));
    }
    if args.sample > 0 && args.out.is_none() {
        return Err(Error::invalid("--sample", "needs --out, where the drawn configurations are written (to train them later)"));
    }
    if let Some(out) = &args.out {
        check_output_dir(out)?;
    }
    // Every file is read and checked against the space before the (slower) validation passes.
    let mut subnets = Vec::new();
    let (net, _, pairs) = args.data.load("automoe fitness")?;
    for path in &args.configs {
        let cfg = SubnetConfig::from_json_file(path)?;
        net.space.validate(&cfg).map_err(|e| Error::Format {
            path: path.clone(),
            msg: format!("not a subnet of the supernet's space `{}`: {e}", net.space.name),
        })?;
        subnets.push((path.display().to_string(), cfg));
    }
    let mut rng = crate::rng::seeded(args.seed);
    for i in 0..args.sample {
        subnets.push((sample_file(i), net.space.sample(&mut rng)?));
    }
    let mut loss = SupernetLoss::new(&net, &pairs, args.data.max_tokens)?;
    let mut results = Vec::new();
    for (name, config) in subnets {
        let cost = SubnetCost::of(&config, net.vocab, net.options.pre_norm, &Routing::Uniform)?;
        results.push(SubnetFitness {
            loss: loss.loss(&config)?,
            gflops: cost.flops.paper_gflops(),
            active_params: cost.params.active_without_embedding(),
            experts: config.experts_per_layer(),
            name,
            config,
        });
    }
    if let Some(out) = &args.out {
        let samples: Vec<(PathBuf, String)> = results
            .iter()
            .skip(args.configs.len())
            .enumerate()
            .map(|(i, r)| Ok((out.join(sample_file(i)), r.config.to_json()?)))
            .collect::<Result<_>>()?;
        // A sample file of an earlier draw (another seed, say) may be what a trained model was
        // made from: it is kept, and the run stops before writing anything.
        for (path, json) in &samples {
            if path.exists() && std::fs::read_to_string(path).map_err(|e| Error::io(path, e))? != *json {
                return Err(Error::invalid(
                    "--out",
                    format!("{} holds another configuration (an earlier --sample draw); use another --out or delete it", path.display()),
                ));
            }
        }
        for (path, json) in &samples {
            write_atomic_creating_dir(path, json.as_bytes())?;
        }
        let path = out.join("fitness.json");
        let json = serde_json::to_string_pretty(&results).map_err(|e| Error::invalid("automoe fitness", e.to_string()))?;
        write_atomic_creating_dir(&path, json.as_bytes())?;
    }
    Ok(results)
}

pub fn run(args: Args) -> Result<()> {
    let results = fitness(&args)?;
    println!("| subnet | loss | GFLOPs | active params (M) | experts enc / dec |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for r in &results {
        println!("| {} | {:.4} | {:.3} | {:.2} | {} |", r.name, r.loss, r.gflops, r.active_params / 1e6, r.experts);
    }
    if let Some(out) = &args.out {
        println!("wrote fitness.json{} to {}", if args.sample > 0 { " and the sampled configurations" } else { "" }, out.display());
    }
    Ok(())
}
