//! Latency of a subnet by the AutoMoE protocol: batch 1, a `src_len`-token source, the encoder
//! once, then `steps` decoder steps at beam `beam`; `warmup` untimed runs, then `runs` timed runs
//! whose top and bottom `trim` fraction are dropped; latency = mean encoder + mean decoder time.
//!
//! The search only needs *some* meter, so measurement is a trait ([`LatencyMeter`]): the
//! measuring meter here (incremental decoder), a predictor ([`super::LatencyPredictor`]), or a
//! synthetic function in tests.
//!
//! [`SubnetLatencyMeter`] times the extracted standalone model with the incremental decoder
//! (`decode::latency::time_one_run`): the encoder once, then `steps` beam steps with cached
//! self-attention keys and values and encoder keys and values computed once per layer — the same
//! code path that translates, so the search ranks subnets by what translation costs.

use serde::{Deserialize, Serialize};

use crate::data::SPECIAL_TOKENS;
use crate::decode::latency::{measure, measure_in_rounds};
/// The protocol, its clock and its mean are the decoder's (one definition for evaluation and search).
pub use crate::decode::latency::{trimmed_mean, Clock, LatencyProtocol};
use crate::model::{SubnetConfig, SubnetModel, Supernet};
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

/// Measures subnets of a supernet: each config is extracted into a standalone model (so the timing
/// sees exactly the subnet's tensors) and timed by the protocol inside a rayon pool of a fixed
/// thread count, on the CPU or ([`Self::on_device`]) a CUDA device.
pub struct SubnetLatencyMeter<'a> {
    supernet: &'a Supernet,
    protocol: LatencyProtocol,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Where the timed models run: the CPU (the default), or a CUDA device ([`Self::on_device`]).
    device: crate::Device,
}

/// The meter's name from before it could time on a CUDA device.
#[deprecated(note = "renamed SubnetLatencyMeter: it times on the CPU or a CUDA device")]
pub type CpuLatencyMeter<'a> = SubnetLatencyMeter<'a>;

impl<'a> SubnetLatencyMeter<'a> {
    /// `threads` CPU threads (0 is refused: the count must be fixed to compare timings); the
    /// protocol's own `threads` must be unset or the same count. The source is
    /// `decode::latency::latency_source` (fixed, so every subnet sees the same input); `_seed` is
    /// kept for callers' reproducibility records.
    pub fn new(supernet: &'a Supernet, protocol: LatencyProtocol, threads: usize, _seed: u64) -> Result<Self> {
        protocol.check()?;
        if protocol.threads.is_some_and(|t| t != threads) {
            return Err(Error::invalid(
                "SubnetLatencyMeter",
                format!("the protocol asks for {:?} threads but the meter was given {threads}", protocol.threads),
            ));
        }
        if protocol.clock == Clock::Cpu && threads != 1 {
            return Err(Error::invalid(
                "SubnetLatencyMeter",
                format!("the CPU clock measures one thread's time, so it needs 1 thread (got {threads}); use the wall clock for more"),
            ));
        }
        if threads == 0 {
            return Err(Error::invalid(
                "SubnetLatencyMeter",
                "the thread count must be at least 1 (timings are only comparable at a fixed count)",
            ));
        }
        let first = SPECIAL_TOKENS.len() as u32;
        if supernet.vocab <= first as usize {
            return Err(Error::invalid("SubnetLatencyMeter", format!("vocabulary of {} has no ordinary tokens", supernet.vocab)));
        }
        let pool = crate::device::cpu_pool(threads, "latency threads")?;
        // The meter's pool runs every timing, so the protocol itself names no pool.
        let protocol = LatencyProtocol { threads: None, ..protocol };
        Ok(SubnetLatencyMeter { supernet, protocol, pool, threads, device: crate::Device::Cpu })
    }

    /// Times the models on `device` instead (a GPU, or `emu` to exercise the path), with the same
    /// protocol; host work (beam bookkeeping) still uses this meter's threads. The thread-CPU clock
    /// cannot see device time, so only the wall clock is accepted for a CUDA device.
    pub fn on_device(mut self, device: crate::Device) -> Result<Self> {
        if device.is_cuda() {
            if self.protocol.clock == Clock::Cpu {
                return Err(Error::invalid(
                    "SubnetLatencyMeter",
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

    /// The protocol, with `threads` set to the meter's count.
    pub fn protocol(&self) -> LatencyProtocol {
        LatencyProtocol { threads: Some(self.threads), ..self.protocol }
    }

    /// Times an already extracted model, which must be on this meter's device.
    pub fn measure_model(&self, model: &SubnetModel) -> Result<Latency> {
        let p = self.protocol;
        let view = model.view()?;
        let on = model.store.iter().next().map_or(crate::Device::Cpu, |(_, p)| p.value.device());
        if on != self.device {
            return Err(Error::invalid("SubnetLatencyMeter", format!("the model is on {on} but the meter times on {}", self.device)));
        }
        let report = self.pool.install(|| measure(&view, &p))?;
        Ok(Latency { encoder_ms: report.encoder_ms, decoder_ms: report.decoder_ms })
    }
}

impl SubnetLatencyMeter<'_> {
    /// Measures many subnets in rounds: each round extracts every subnet in turn and gives it
    /// `warmup` untimed runs and one timed run; the trimmed mean over `runs` rounds is its
    /// latency. On a shared machine whose load drifts over minutes, this spreads every subnet's
    /// timings over the whole measurement, so the drift hits all subnets alike instead of ranking
    /// them by when they happened to be measured. `progress` gets the rounds done.
    pub fn measure_interleaved(&self, cfgs: &[SubnetConfig], progress: impl FnMut(usize) + Send) -> Result<Vec<Latency>> {
        let reports = self.pool.install(|| {
            measure_in_rounds(
                cfgs.len(),
                &self.protocol,
                |i, time| {
                    // Re-extracted each round: keeping every model would hold them all in memory.
                    let model = self.supernet.extract(&cfgs[i])?.to_device(self.device)?;
                    time(&model.view()?)
                },
                progress,
            )
        })?;
        Ok(reports.iter().map(|r| Latency { encoder_ms: r.encoder_ms, decoder_ms: r.decoder_ms }).collect())
    }
}

impl LatencyMeter for SubnetLatencyMeter<'_> {
    fn measure(&mut self, cfg: &SubnetConfig) -> Result<Latency> {
        let model = self.supernet.extract(cfg)?.to_device(self.device)?;
        self.measure_model(&model)
    }

    fn describe(&self) -> String {
        self.protocol.describe(self.device, self.threads)
    }
}
