//! `automoe predictor`: train the latency predictor on a dataset from `automoe latency --samples`,
//! report held-out RMSE, MAPE and Kendall's tau, and save it.

use std::path::PathBuf;

use crate::search::{split_records, LatencyDataset, LatencyPredictor, PredictorConfig};
use crate::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Dataset (JSON) written by `automoe latency --samples N --out FILE`.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Where to save the trained predictor (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of the subnets held out for evaluation.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    #[arg(long, default_value_t = 400)]
    pub hidden: usize,
    /// Hidden layers.
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Decoupled weight decay (AdamW); 0.5 lowered held-out error on the small space's dataset
    /// (docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 0.5)]
    pub weight_decay: f64,
    /// Seeds the split, the initialisation and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    // Before training: a predictor saved over its own dataset would lose the measurements.
    crate::fsio::check_creatable_file(&args.out, "predictor --out")?;
    crate::fsio::check_distinct_outputs(&[("predictor --out", &args.out)], &[("--dataset", &args.dataset)])?;
    let ds = LatencyDataset::load_json(&args.dataset)?;
    let (train, test) = split_records(&ds.records, args.holdout, args.seed)?;
    let config = PredictorConfig {
        hidden: args.hidden,
        layers: args.layers,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        seed: args.seed,
    };
    eprintln!("training on {} subnets, {} held out; dataset meter: {}", train.len(), test.len(), ds.meter);
    let pb = super::latency::bar(args.epochs as u64, "epochs");
    let pred = LatencyPredictor::train(&ds, &train, config, |e| pb.set_position(e as u64))?;
    pb.finish_and_clear();
    let baseline = train.iter().map(|r| r.latency.total_ms()).sum::<f64>() / train.len() as f64;
    let report = pred.evaluate(&test, baseline)?;
    let train_report = pred.evaluate(&train, baseline)?;
    println!("train: {train_report}");
    println!("held out: {report}");
    pred.save(&args.out)?;
    println!("predictor saved to {}", args.out.display());
    Ok(())
}
