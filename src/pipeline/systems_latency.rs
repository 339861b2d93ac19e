//! `systems_latency.json`: every trained system run's latency, timed together in rounds after all
//! are trained (`Context::time_systems`), so that a load drifting over the measurement hits every
//! system alike. The evaluation's own files leave latency out; the report reads it from here.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::decode::LatencyReport;
use crate::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemsLatency {
    /// What was timed and where (`LatencyProtocol::describe`).
    pub meter: String,
    /// Every system run, in report order.
    pub systems: Vec<TimedRun>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedRun {
    /// The run's name under `systems/` and `eval/`.
    pub label: String,
    pub latency: LatencyReport,
}

impl SystemsLatency {
    /// The measurement at `path` if it timed exactly the runs `labels` (in this order); `None`
    /// when there is none or it timed other runs (they are then timed again, all together).
    pub fn load_for(path: &Path, labels: &[&str]) -> Result<Option<Self>> {
        if !path.exists() {
            return Ok(None);
        }
        let t: SystemsLatency = super::stages::from_json(path)?;
        Ok(t.systems.iter().map(|s| s.label.as_str()).eq(labels.iter().copied()).then_some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_is_reused_only_for_the_same_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("systems_latency.json");
        assert_eq!(SystemsLatency::load_for(&path, &["a"]).unwrap(), None);
        let latency = LatencyReport { encoder_ms: 1.0, decoder_ms: 2.0, total_ms: 3.0, threads: 1, runs_kept: 16 };
        let t = SystemsLatency {
            meter: "cpu".into(),
            systems: ["a", "b"].map(|label| TimedRun { label: label.into(), latency: latency.clone() }).to_vec(),
        };
        std::fs::write(&path, serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(SystemsLatency::load_for(&path, &["a", "b"]).unwrap(), Some(t));
        for other in [&["a"][..], &["b", "a"], &["a", "b", "c"]] {
            assert_eq!(SystemsLatency::load_for(&path, other).unwrap(), None, "{other:?}");
        }
        std::fs::write(&path, "{").unwrap();
        let err = SystemsLatency::load_for(&path, &["a"]).unwrap_err().to_string();
        assert!(err.contains("systems_latency.json"), "{err}");
    }
}
