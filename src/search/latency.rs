//! Latency of a subnet by the AutoMoE protocol: batch 1, a `src_len`-token source, the encoder
//! once, then `steps` decoder steps at beam `beam`; `warmup` untimed runs, then `runs` timed runs
//! whose top and bottom `trim` fraction are dropped; latency = mean encoder + mean decoder time.
//!
//! The search only needs *some* meter, so measurement is a trait ([`LatencyMeter`]): the CPU meter
//! here (incremental decoder), a predictor ([`super::LatencyPredictor`]),
//! or a synthetic function in tests.
//!
//! [`CpuLatencyMeter`] times the extracted standalone model with the incremental decoder
//! (`decode::latency::time_one_run`): the encoder once, then `steps` beam steps with cached
//! self-attention keys and values and encoder keys and values computed once per layer — the same
//! code path that translates, so the search ranks subnets by what translation costs.

use serde::{Deserialize, Serialize};

use crate::data::SPECIAL_TOKENS;
pub use crate::decode::latency::Clock;
use crate::decode::latency::{time_one_run, LatencyProtocol as DecodeProtocol};
use crate::model::{ModelView, SubnetConfig, SubnetModel, Supernet};
use crate::{Error, Result};

/// Mean encoder and decoder time of one translation, milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub encoder_ms: f64,
    pub decoder_ms: f64,
}

impl Latency {
    pub fn total_ms(&self) -> f64 {
        self.encoder_ms + self.decoder_ms
    }
}

/// Anything that can give a subnet's latency: a measurement or a prediction.
pub trait LatencyMeter {
    fn measure(&mut self, cfg: &SubnetConfig) -> Result<Latency>;
    /// One line saying what is measured and how (device, threads, protocol), for reports.
    fn describe(&self) -> String;
}

/// The timing protocol. [`LatencyProtocol::paper`] is AutoMoE's; [`LatencyProtocol::fast`] trades
/// repetitions for speed when many subnets are measured (the dataset of the predictor).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyProtocol {
    /// Source length in tokens (paper: 30).
    pub src_len: usize,
    /// Decoder steps (paper: 30).
    pub steps: usize,
    /// Beam size: the batch of every decoder step (paper: 5).
    pub beam: usize,
    /// Untimed runs before timing (paper: 5).
    pub warmup: usize,
    /// Timed runs (the reference implementation uses 10 or more).
    pub runs: usize,
    /// Fraction of the fastest and of the slowest timed runs dropped (paper: 0.1).
    pub trim: f64,
    /// Wall clock (the protocol) or thread CPU time (shared machines, one thread).
    #[serde(default)]
    pub clock: Clock,
}

impl LatencyProtocol {
    pub fn paper() -> Self {
        LatencyProtocol { src_len: 30, steps: 30, beam: 5, warmup: 5, runs: 10, trim: 0.1, clock: Clock::Wall }
    }

    /// Same shapes as the paper, fewer repetitions (one warm-up, five timed runs, the fastest and
    /// slowest dropped by the trim).
    pub fn fast() -> Self {
        LatencyProtocol { warmup: 1, runs: 5, trim: 0.2, ..Self::paper() }
    }

    /// The same checks and limits as the decoder's protocol, which times every run.
    pub fn check(&self) -> Result<()> {
        self.as_decode(self.warmup, self.runs).check()
    }

    /// The decoder's protocol with these shapes and clock, `warmup` and `runs` repetitions, and
    /// the current thread pool (the meter owns its pool).
    fn as_decode(&self, warmup: usize, runs: usize) -> DecodeProtocol {
        DecodeProtocol {
            src_len: self.src_len,
            steps: self.steps,
            beam: self.beam,
            warmup,
            runs,
            trim: self.trim,
            threads: None,
            clock: self.clock,
        }
    }
}

/// Mean of `samples` without the `floor(trim * n)` smallest and largest values (at least one value
/// is always kept). `None` for no samples.
pub fn trimmed_mean(samples: &[f64], trim: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let cut = ((trim.clamp(0.0, 0.5) * s.len() as f64).floor() as usize).min((s.len() - 1) / 2);
    let kept = &s[cut..s.len() - cut];
    Some(kept.iter().sum::<f64>() / kept.len() as f64)
}

/// Measures subnets of a supernet on the CPU: each config is extracted into a standalone model
/// (so the timing sees exactly the subnet's tensors) and timed by the protocol inside a rayon pool
/// of a fixed thread count.
pub struct CpuLatencyMeter<'a> {
    supernet: &'a Supernet,
    protocol: LatencyProtocol,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Where the timed models run: the CPU (the default), or a CUDA device ([`Self::on_device`]).
    device: crate::Device,
}

impl<'a> CpuLatencyMeter<'a> {
    /// `threads` CPU threads (0 is refused: the count must be fixed to compare timings). The source
    /// is `decode::latency::latency_source` (fixed, so every subnet sees the same input); `_seed`
    /// is kept for callers' reproducibility records.
    pub fn new(supernet: &'a Supernet, protocol: LatencyProtocol, threads: usize, _seed: u64) -> Result<Self> {
        protocol.check()?;
        if protocol.clock == Clock::Cpu && threads != 1 {
            return Err(Error::invalid(
                "CpuLatencyMeter",
                format!("the CPU clock measures one thread's time, so it needs 1 thread (got {threads}); use the wall clock for more"),
            ));
        }
        if threads == 0 {
            return Err(Error::invalid(
                "CpuLatencyMeter",
                "the thread count must be at least 1 (timings are only comparable at a fixed count)",
            ));
        }
        let first = SPECIAL_TOKENS.len() as u32;
        if supernet.vocab <= first as usize {
            return Err(Error::invalid("CpuLatencyMeter", format!("vocabulary of {} has no ordinary tokens", supernet.vocab)));
        }
        let pool = crate::device::cpu_pool(threads, "latency threads")?;
        Ok(CpuLatencyMeter { supernet, protocol, pool, threads, device: crate::Device::Cpu })
    }

    /// Times the models on `device` instead (a GPU, or `emu` to exercise the path), with the same
    /// protocol; host work (beam bookkeeping) still uses this meter's threads. The thread-CPU clock
    /// cannot see device time, so only the wall clock is accepted for a CUDA device.
    pub fn on_device(mut self, device: crate::Device) -> Result<Self> {
        if device.is_cuda() {
            if self.protocol.clock == Clock::Cpu {
                return Err(Error::invalid(
                    "CpuLatencyMeter",
                    format!("the thread-CPU clock cannot time work on {device}; use the wall clock"),
                ));
            }
            crate::cuda::Gpu::of(device)?;
        }
        self.device = device;
        Ok(self)
    }

    pub fn device(&self) -> crate::Device {
        self.device
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn protocol(&self) -> LatencyProtocol {
        self.protocol
    }

    /// One run of the protocol on `model` with the incremental decoder (the same code path that
    /// translates): the encoder once, then `steps` beam steps with cached keys and values.
    /// Returns (encoder ms, decoder ms) by the protocol's clock.
    fn time_one_run(&self, view: &ModelView) -> Result<(f64, f64)> {
        time_one_run(view, &DecodeProtocol { trim: 0.0, ..self.protocol.as_decode(0, 1) })
    }

    /// Times an already extracted model, which must be on this meter's device.
    pub fn measure_model(&self, model: &SubnetModel) -> Result<Latency> {
        let p = self.protocol;
        let view = model.view()?;
        let on = model.store.iter().next().map_or(crate::Device::Cpu, |(_, p)| p.value.device());
        if on != self.device {
            return Err(Error::invalid("CpuLatencyMeter", format!("the model is on {on} but the meter times on {}", self.device)));
        }
        self.pool.install(|| {
            for _ in 0..p.warmup {
                self.time_one_run(&view)?;
            }
            let mut enc = Vec::with_capacity(p.runs);
            let mut dec = Vec::with_capacity(p.runs);
            for _ in 0..p.runs {
                let (e, d) = self.time_one_run(&view)?;
                enc.push(e);
                dec.push(d);
            }
            // `runs >= 1` is checked, so both means exist.
            Ok(Latency {
                encoder_ms: trimmed_mean(&enc, p.trim).unwrap_or(f64::NAN),
                decoder_ms: trimmed_mean(&dec, p.trim).unwrap_or(f64::NAN),
            })
        })
    }
}

impl CpuLatencyMeter<'_> {
    /// Measures many subnets in rounds: each round extracts every subnet in turn and gives it
    /// `warmup` untimed runs and one timed run; the trimmed mean over `runs` rounds is its
    /// latency. On a shared machine whose load drifts over minutes, this spreads every subnet's
    /// timings over the whole measurement, so the drift hits all subnets alike instead of ranking
    /// them by when they happened to be measured. `progress` gets the rounds done.
    pub fn measure_interleaved(&self, cfgs: &[SubnetConfig], mut progress: impl FnMut(usize) + Send) -> Result<Vec<Latency>> {
        let p = self.protocol;
        let mut enc = vec![Vec::with_capacity(p.runs); cfgs.len()];
        let mut dec = vec![Vec::with_capacity(p.runs); cfgs.len()];
        self.pool.install(|| -> Result<()> {
            for round in 0..p.runs {
                for (i, cfg) in cfgs.iter().enumerate() {
                    // Re-extracted each round: keeping every model would hold them all in memory.
                    let model = self.supernet.extract(cfg)?.to_device(self.device)?;
                    let view = model.view()?;
                    for _ in 0..p.warmup {
                        self.time_one_run(&view)?;
                    }
                    let (e, d) = self.time_one_run(&view)?;
                    enc[i].push(e);
                    dec[i].push(d);
                }
                progress(round + 1);
            }
            Ok(())
        })?;
        Ok(enc
            .iter()
            .zip(&dec)
            .map(|(e, d)| Latency {
                encoder_ms: trimmed_mean(e, p.trim).unwrap_or(f64::NAN),
                decoder_ms: trimmed_mean(d, p.trim).unwrap_or(f64::NAN),
            })
            .collect())
    }
}

impl LatencyMeter for CpuLatencyMeter<'_> {
    fn measure(&mut self, cfg: &SubnetConfig) -> Result<Latency> {
        let model = self.supernet.extract(cfg)?.to_device(self.device)?;
        self.measure_model(&model)
    }

    fn describe(&self) -> String {
        let p = &self.protocol;
        let place = if self.device.is_cuda() {
            format!("{} (host: {} thread(s))", self.device, self.threads)
        } else {
            format!("cpu, {} thread(s)", self.threads)
        };
        format!(
            "{place}, {} clock; source {} tokens, {} decoder steps at beam {}, {} warm-up + {} timed runs, trim {}; \
             incremental decoder",
            match p.clock {
                Clock::Wall => "wall",
                Clock::Cpu => "thread-CPU",
            },
            p.src_len,
            p.steps,
            p.beam,
            p.warmup,
            p.runs,
            p.trim
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_mean_drops_both_tails() {
        assert_eq!(trimmed_mean(&[], 0.1), None);
        assert_eq!(trimmed_mean(&[5.0], 0.4), Some(5.0));
        // 10 values, trim 0.1: drop 1 at each end.
        let v: Vec<f64> = (1..=9).map(f64::from).chain([1000.0]).collect();
        assert_eq!(trimmed_mean(&v, 0.1), Some((2..=9).map(f64::from).sum::<f64>() / 8.0));
        assert_eq!(trimmed_mean(&[1.0, 2.0, 3.0], 0.0), Some(2.0));
    }

    #[test]
    fn protocol_is_checked() {
        assert!(LatencyProtocol::paper().check().is_ok());
        assert!(LatencyProtocol { runs: 0, ..LatencyProtocol::paper() }.check().is_err());
        assert!(LatencyProtocol { trim: 0.5, ..LatencyProtocol::paper() }.check().is_err());
    }
}
