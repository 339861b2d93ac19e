//! `automoe latency`: measure one subnet's latency by the AutoMoE protocol, or a trained model
//! directory's, or build the predictor's dataset of N sampled subnets.

use std::path::PathBuf;

use crate::decode::LatencyReport;
use crate::model::{ModelOptions, SearchSpace, SubnetConfig, Supernet};
use crate::search::latency::Clock;
use crate::search::{load_supernet, LatencyDataset, LatencyMeter, LatencyProtocol, SubnetLatencyMeter};
use crate::{DType, Error, Result};

/// Protocol settings shared by `latency` and `search --measure-latency`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProtocolArgs {
    /// Fewer repetitions (1 warm-up, 5 timed runs, trim 0.2) instead of the paper's 5 + 20 (trim 0.1).
    #[arg(long)]
    pub fast: bool,
    /// Source length in tokens.
    #[arg(long)]
    pub src_len: Option<usize>,
    /// Decoder steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Beam size (the batch of each decoder step).
    #[arg(long)]
    pub beam: Option<usize>,
    #[arg(long)]
    pub warmup: Option<usize>,
    #[arg(long)]
    pub runs: Option<usize>,
    /// Fraction of the fastest and of the slowest runs dropped.
    #[arg(long)]
    pub trim: Option<f64>,
    /// CPU threads used for timing (fixed, so timings compare).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// `wall` (the protocol) or `cpu`: the timing thread's CPU time, which estimates idle-machine
    /// latency on a shared, loaded machine (needs --threads 1).
    #[arg(long, default_value = "wall", value_parser = parse_clock)]
    pub clock: Clock,
    /// Where the timed models run: `cpu`, `cuda:N` (latency on a GPU, the search's target
    /// hardware then), or `emu` (the CUDA path on the emulator; slow, for testing).
    #[arg(long, default_value = "cpu", value_parser = super::train::parse_device)]
    pub device: crate::Device,
}

fn parse_clock(s: &str) -> std::result::Result<Clock, String> {
    match s {
        "wall" => Ok(Clock::Wall),
        "cpu" => Ok(Clock::Cpu),
        _ => Err(format!("`{s}` is not a clock (wall or cpu)")),
    }
}

impl ProtocolArgs {
    pub fn protocol(&self) -> LatencyProtocol {
        let base = if self.fast { LatencyProtocol::fast() } else { LatencyProtocol::paper() };
        LatencyProtocol {
            src_len: self.src_len.unwrap_or(base.src_len),
            steps: self.steps.unwrap_or(base.steps),
            beam: self.beam.unwrap_or(base.beam),
            warmup: self.warmup.unwrap_or(base.warmup),
            runs: self.runs.unwrap_or(base.runs),
            trim: self.trim.unwrap_or(base.trim),
            threads: Some(self.threads),
            clock: self.clock,
        }
    }

    /// A meter timing `net`'s subnets by these settings, on `--device` in `--threads` threads.
    pub fn meter<'a>(&self, net: &'a Supernet, seed: u64) -> Result<SubnetLatencyMeter<'a>> {
        SubnetLatencyMeter::new(net, self.protocol(), self.threads, seed)?.on_device(self.device)
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Search space (TOML); ignored with --checkpoint, which carries its own.
    #[arg(long, default_value = "configs/space_small.toml")]
    pub space: PathBuf,
    /// Time subnets of this supernet checkpoint (trained weights route tokens realistically);
    /// without it a freshly initialised supernet of --space is used.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Vocabulary size (the output projection's width) when no checkpoint is given.
    #[arg(long, default_value_t = 8000)]
    pub vocab: usize,
    /// Measure this subnet (JSON, as `search` writes it).
    #[arg(long, conflicts_with = "samples")]
    pub config: Option<PathBuf>,
    /// Measure a trained model directory (as `train` or `pipeline` exports it) instead of a
    /// supernet's subnet: its own weights, so its own routing. Given several times, the models
    /// are timed together in rounds (each round: every model's warm-up runs and one timed run),
    /// so that a changing load on the machine hits all of them alike.
    #[arg(long, conflicts_with_all = ["checkpoint", "config", "samples", "space", "vocab"])]
    pub model: Vec<PathBuf>,
    /// Build a dataset of this many sampled subnets (needs --out).
    #[arg(long, requires = "out")]
    pub samples: Option<usize>,
    /// Dataset file (JSON); a CSV with the same stem is written beside it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure the dataset in rounds over all subnets (one timed run each per round) instead of
    /// subnet by subnet: load drift on a shared machine then hits every subnet alike.
    #[arg(long, requires = "samples")]
    pub interleave: bool,
    /// Seeds the sampled subnets and the input tokens.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub protocol: ProtocolArgs,
}

/// The supernet to time: from a checkpoint, or fresh from a space file.
pub(crate) fn supernet(checkpoint: Option<&PathBuf>, space: &PathBuf, vocab: usize) -> Result<Supernet> {
    match checkpoint {
        Some(dir) => Ok(load_supernet(dir)?.0),
        None => {
            crate::model::check_vocab(vocab, "latency --vocab")?;
            Supernet::new(SearchSpace::from_toml_file(space)?, vocab, ModelOptions::default(), 0, DType::F32)
        }
    }
}

pub(crate) fn bar(total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})") {
        bar.set_style(style);
    }
    bar.set_prefix(what.to_string());
    bar
}

/// `--model DIR ...`: trained model directories timed by the same protocol as the subnets, on
/// `--device` in `--threads` threads; one alone by `decode::measure`, several together
/// ([`measure_model_dirs_together`]).
pub fn measure_model_dirs(dirs: &[PathBuf], protocol: &ProtocolArgs) -> Result<Vec<LatencyReport>> {
    let proto = protocol.protocol();
    match dirs {
        [one] => Ok(vec![crate::decode::measure(&load_on(one, protocol.device)?.view()?, &proto)?]),
        _ => measure_model_dirs_together(dirs, protocol.device, &proto),
    }
}

/// Trained model directories on `device`, timed together in rounds by `proto`
/// (`decode::measure_in_rounds`): the pipeline's systems and `--model` given several times.
pub fn measure_model_dirs_together(dirs: &[PathBuf], device: crate::Device, proto: &LatencyProtocol) -> Result<Vec<LatencyReport>> {
    let models = dirs.iter().map(|dir| load_on(dir, device)).collect::<Result<Vec<_>>>()?;
    crate::decode::measure_in_rounds(models.len(), proto, |i, time| time(&models[i].view()?), |_| {})
}

fn load_on(dir: &std::path::Path, device: crate::Device) -> Result<crate::model::SubnetModel> {
    crate::cli::translate::load_model_dir(dir)?.0.to_device(device)
}

pub fn run(args: Args) -> Result<()> {
    // The CSV goes beside the dataset with the extension swapped: an --out ending in .csv would
    // have the CSV overwrite the JSON once the (long) measuring is done.
    if let Some(out) = &args.out {
        if out.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            return Err(Error::invalid(
                "--out",
                format!("{} ends in .csv, the name of the CSV written beside the JSON dataset; name the dataset .json", out.display()),
            ));
        }
        // Before measuring, which takes minutes: a path that cannot be written loses it all.
        crate::fsio::check_creatable_file(out, "latency --out")?;
        crate::fsio::check_creatable_file(&out.with_extension("csv"), "latency --out (its CSV)")?;
        crate::fsio::check_distinct_outputs(&[("latency --out", out)], &[("--space", &args.space)])?;
    }
    if args.samples == Some(0) {
        return Err(Error::invalid("--samples", "must be at least 1 (a dataset of 0 subnets trains no predictor)"));
    }
    if !args.model.is_empty() {
        eprintln!("meter: {}", args.protocol.protocol().describe(args.protocol.device, args.protocol.threads));
        if args.model.len() > 1 {
            eprintln!("{} models timed together in rounds", args.model.len());
        }
        for (dir, lat) in args.model.iter().zip(measure_model_dirs(&args.model, &args.protocol)?) {
            let name = if args.model.len() > 1 { format!("{}: ", dir.display()) } else { String::new() };
            println!("{name}encoder {:.3} ms, decoder {:.3} ms, total {:.3} ms", lat.encoder_ms, lat.decoder_ms, lat.total_ms);
        }
        return Ok(());
    }
    let net = supernet(args.checkpoint.as_ref(), &args.space, args.vocab)?;
    let mut meter = args.protocol.meter(&net, args.seed)?;
    eprintln!("meter: {}", meter.describe());
    match (&args.config, args.samples, &args.out) {
        (Some(path), _, _) => {
            let cfg = SubnetConfig::from_json_file(path)?;
            let lat = meter.measure(&cfg)?;
            println!("encoder {:.3} ms, decoder {:.3} ms, total {:.3} ms", lat.encoder_ms, lat.decoder_ms, lat.total_ms());
            Ok(())
        }
        (None, Some(n), Some(out)) => {
            let ds = if args.interleave {
                let pb = bar(meter.protocol().runs as u64, "rounds");
                let ds = LatencyDataset::build_interleaved(&net.space, &meter, n, args.seed, |i| pb.set_position(i as u64))?;
                pb.finish_and_clear();
                ds
            } else {
                let pb = bar(n as u64, "measuring");
                let ds = LatencyDataset::build(&net.space, &mut meter, n, args.seed, |i| pb.set_position(i as u64))?;
                pb.finish_and_clear();
                ds
            };
            ds.save_json(out)?;
            let csv = out.with_extension("csv");
            ds.save_csv(&csv)?;
            let totals: Vec<f64> = ds.records.iter().map(|r| r.latency.total_ms()).collect();
            let (lo, hi) = totals.iter().fold((f64::INFINITY, 0f64), |(a, b), &t| (a.min(t), b.max(t)));
            println!("{n} subnets measured (total latency {lo:.2}..{hi:.2} ms): {} and {}", out.display(), csv.display());
            Ok(())
        }
        _ => Err(Error::invalid("automoe latency", "give --config FILE (one subnet) or --samples N --out FILE (a dataset)")),
    }
}
