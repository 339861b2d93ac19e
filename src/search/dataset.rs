//! The latency dataset: sampled subnets with their features and measured encoder and decoder
//! latencies. Saved as JSON (everything, including each config, which is what training reads) and
//! optionally as CSV (features and latencies, for a spreadsheet); both written atomically.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::features::{feature_names, features, FEATURE_VERSION};
use super::latency::{Latency, LatencyMeter, SubnetLatencyMeter};
use crate::fsio::write_atomic_creating_dir as write_file;
use crate::model::{SearchSpace, SubnetConfig};
use crate::{Error, Result};

const FORMAT: &str = "automoe-latency-dataset-v1";

/// One measured subnet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyRecord {
    pub config: SubnetConfig,
    /// `features(config, space)` at the time of measurement (checked again on load).
    pub features: Vec<f32>,
    pub latency: Latency,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyDataset {
    pub format: String,
    pub feature_version: u32,
    pub space: SearchSpace,
    /// [`LatencyMeter::describe`] of the meter that produced the latencies.
    pub meter: String,
    pub records: Vec<LatencyRecord>,
}

/// Most subnets a latency dataset measures (a few hundred train a good predictor).
pub const MAX_LATENCY_SAMPLES: usize = 1_000_000;

/// Longest encoder or decoder time a record may hold: one hour. A subnet of any space translates
/// a sentence in well under a second, so a larger value is a corrupt or hand-edited file.
pub const MAX_LATENCY_MS: f64 = 3.6e6;

/// A record's latency must be finite, non-negative, at most [`MAX_LATENCY_MS`] per part and
/// positive in total: the predictor trains on its logarithm.
pub fn check_latency(latency: &Latency) -> std::result::Result<(), String> {
    for (part, ms) in [("encoder_ms", latency.encoder_ms), ("decoder_ms", latency.decoder_ms)] {
        if !ms.is_finite() || ms < 0.0 {
            return Err(format!("{part} = {ms} is not a finite non-negative time"));
        }
        if ms > MAX_LATENCY_MS {
            return Err(format!("{part} = {ms} is above the limit of {MAX_LATENCY_MS} ms (one hour)"));
        }
    }
    if latency.total_ms() <= 0.0 {
        return Err("encoder_ms + decoder_ms is 0; a measured time is positive".into());
    }
    Ok(())
}

/// A sample count past [`MAX_LATENCY_SAMPLES`] is an error (the interleaved build holds every
/// config at once).
pub fn check_samples(n: usize) -> Result<()> {
    if n > MAX_LATENCY_SAMPLES {
        return Err(Error::invalid("LatencyDataset", format!("{n} samples is above the limit of {MAX_LATENCY_SAMPLES}")));
    }
    Ok(())
}

impl LatencyDataset {
    pub fn new(space: SearchSpace, meter: String) -> Self {
        LatencyDataset { format: FORMAT.into(), feature_version: FEATURE_VERSION, space, meter, records: Vec::new() }
    }

    /// Samples `n` subnets of the space from `seed` and measures each; `progress` is called after
    /// every subnet with the count done.
    pub fn build(space: &SearchSpace, meter: &mut dyn LatencyMeter, n: usize, seed: u64, mut progress: impl FnMut(usize)) -> Result<Self> {
        check_samples(n)?;
        let mut ds = LatencyDataset::new(space.clone(), meter.describe());
        let mut rng = crate::rng::seeded(seed);
        for i in 0..n {
            let config = space.sample(&mut rng)?;
            let latency = meter.measure(&config)?;
            ds.records.push(LatencyRecord { features: features(&config, space)?, config, latency });
            progress(i + 1);
        }
        Ok(ds)
    }

    /// Like [`LatencyDataset::build`] (the same subnets for a seed), measured in interleaved rounds
    /// ([`SubnetLatencyMeter::measure_interleaved`]); `progress` gets the rounds done.
    pub fn build_interleaved(
        space: &SearchSpace,
        meter: &SubnetLatencyMeter,
        n: usize,
        seed: u64,
        progress: impl FnMut(usize) + Send,
    ) -> Result<Self> {
        check_samples(n)?;
        let mut rng = crate::rng::seeded(seed);
        let configs: Vec<SubnetConfig> = (0..n).map(|_| space.sample(&mut rng)).collect::<Result<_>>()?;
        let latencies = meter.measure_interleaved(&configs, progress)?;
        let mut ds = LatencyDataset::new(space.clone(), format!("{}; interleaved rounds", meter.describe()));
        for (config, latency) in configs.into_iter().zip(latencies) {
            ds.records.push(LatencyRecord { features: features(&config, space)?, config, latency });
        }
        Ok(ds)
    }

    pub fn save_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Format { path: path.to_path_buf(), msg: e.to_string() })?;
        write_file(path, &json)
    }

    /// Reads a dataset and recomputes every record's features with today's [`features`]: a
    /// dataset whose stored features differ was built by other feature code and is refused.
    pub fn load_json(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let fmt = |msg: String| Error::Format { path: path.to_path_buf(), msg };
        let ds: LatencyDataset = serde_json::from_slice(&bytes).map_err(|e| fmt(format!("not a latency dataset: {e}")))?;
        if ds.format != FORMAT {
            return Err(fmt(format!("format `{}` is not `{FORMAT}`", ds.format)));
        }
        if ds.feature_version != FEATURE_VERSION {
            return Err(fmt(format!("feature version {} (this build computes version {FEATURE_VERSION}); re-measure", ds.feature_version)));
        }
        ds.space.check().map_err(|e| fmt(e.to_string()))?;
        for (i, r) in ds.records.iter().enumerate() {
            let f = features(&r.config, &ds.space).map_err(|e| fmt(format!("record {i}: {e}")))?;
            if f != r.features {
                return Err(fmt(format!("record {i}: stored features differ from the features of its config")));
            }
            check_latency(&r.latency).map_err(|e| fmt(format!("record {i}: {e}")))?;
        }
        Ok(ds)
    }

    /// `features..., encoder_ms, decoder_ms, total_ms` per record, with a header.
    pub fn save_csv(&self, path: &Path) -> Result<()> {
        let mut out = feature_names(&self.space).join(",");
        out.push_str(",encoder_ms,decoder_ms,total_ms\n");
        for r in &self.records {
            for f in &r.features {
                out.push_str(&format!("{f},"));
            }
            out.push_str(&format!("{},{},{}\n", r.latency.encoder_ms, r.latency.decoder_ms, r.latency.total_ms()));
        }
        write_file(path, out.as_bytes())
    }
}
