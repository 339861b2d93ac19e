//! The wall time of every pipeline stage, kept in the run directory (`timings.json`) so that the
//! report states what the run cost however many invocations it took: a rerun that skips finished
//! stages would otherwise report its own few seconds as the run's time.
//!
//! A stage's time is written when it has done its work. A stage that runs again from scratch (its
//! outputs were removed) replaces its time; a training stage resumed from its checkpoint counts
//! the training time the checkpoint banked (earlier, interrupted invocations never wrote theirs)
//! plus the resuming invocation's. The part of an interrupted invocation after its last
//! checkpoint, and its data preparation, are counted nowhere. The
//! report counts the stages whose outputs are still there ([`Timings::present`]), so a system
//! dropped from the run (its outputs removed) drops out of the time too.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsio::write_atomic;
use crate::{Error, Result};

/// The file, in the run directory.
pub const TIMINGS_FILE: &str = "timings.json";

/// Seconds per stage, in the order the stages first finished. A stage is named by its output's
/// path under the run directory (`tokenizer.json`, `supernet`, `latency`, `search`,
/// `systems/automoe`, `eval/automoe.json`, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub stages: Vec<(String, f64)>,
}

impl Timings {
    /// The run directory's timings; none for a directory without the file (new, or made before
    /// timings were kept).
    pub fn load(out: &Path) -> Result<Self> {
        let path = out.join(TIMINGS_FILE);
        if !path.exists() {
            return Ok(Timings::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let t: Timings = serde_json::from_str(&text).map_err(|e| Error::Format { path: path.clone(), msg: e.to_string() })?;
        if let Some((stage, s)) = t.stages.iter().find(|(_, s)| !(s.is_finite() && *s >= 0.0)) {
            return Err(Error::Format { path, msg: format!("stage `{stage}` has {s} seconds; expected a finite time >= 0") });
        }
        Ok(t)
    }

    /// Records `seconds` for `stage` (added to its time when `resumed`, else replacing it) and
    /// writes the file atomically.
    pub fn record(&mut self, out: &Path, stage: &str, seconds: f64, resumed: bool) -> Result<()> {
        match self.stages.iter_mut().find(|(s, _)| s == stage) {
            Some((_, t)) if resumed => *t += seconds,
            Some((_, t)) => *t = seconds,
            None => self.stages.push((stage.to_string(), seconds)),
        }
        let path: PathBuf = out.join(TIMINGS_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::invalid("pipeline timings", e.to_string()))?;
        write_atomic(&path, format!("{text}\n").as_bytes())
    }

    /// The name under which the stage writing `output` (a path under `out`) is recorded.
    pub fn stage_name(out: &Path, output: &Path) -> String {
        output.strip_prefix(out).unwrap_or(output).to_string_lossy().into_owned()
    }

    /// The recorded seconds of `stage`.
    pub fn seconds(&self, stage: &str) -> Option<f64> {
        self.stages.iter().find(|(s, _)| s == stage).map(|(_, t)| *t)
    }

    /// The stages whose outputs exist under `out`.
    pub fn present(&self, out: &Path) -> Timings {
        Timings { stages: self.stages.iter().filter(|(stage, _)| out.join(stage).exists()).cloned().collect() }
    }

    /// The seconds of all stages.
    pub fn total(&self) -> f64 {
        self.stages.iter().map(|(_, s)| s).sum()
    }

    /// One line for the report: each kind of stage (its path's first component without an
    /// extension, so every system's training is one entry) with its seconds, and the total.
    pub fn summary(&self) -> String {
        if self.stages.is_empty() {
            return format!("not recorded (the run directory predates `{TIMINGS_FILE}`)");
        }
        let mut kinds: Vec<(&str, f64, usize)> = Vec::new();
        for (stage, s) in &self.stages {
            let first = stage.split('/').next().unwrap_or(stage);
            let kind = first.split_once('.').map_or(first, |(stem, _)| stem);
            match kinds.iter_mut().find(|(k, _, _)| *k == kind) {
                Some((_, t, n)) => {
                    *t += s;
                    *n += 1;
                }
                None => kinds.push((kind, *s, 1)),
            }
        }
        let mut line = String::new();
        for (i, (kind, s, n)) in kinds.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let runs = if *n > 1 { format!(" ({n} runs)") } else { String::new() };
            let _ = write!(line, "{sep}{kind} {s:.0} s{runs}");
        }
        format!("{:.0} s in all ({line})", self.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_replace_or_add_their_time_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Timings::load(dir.path()).unwrap();
        assert_eq!(t, Timings::default());
        assert!(t.summary().contains("not recorded"));
        t.record(dir.path(), "supernet", 10.0, false).unwrap();
        t.record(dir.path(), "systems/a", 4.0, false).unwrap();
        t.record(dir.path(), "systems/a", 1.5, true).unwrap();
        t.record(dir.path(), "systems/b", 3.0, false).unwrap();
        t.record(dir.path(), "supernet", 12.0, false).unwrap();
        t.record(dir.path(), "tokenizer.json", 0.5, false).unwrap();
        let back = Timings::load(dir.path()).unwrap();
        assert_eq!(back, t);
        let want = [("supernet".to_string(), 12.0), ("systems/a".into(), 5.5), ("systems/b".into(), 3.0), ("tokenizer.json".into(), 0.5)];
        assert_eq!(back.stages, want);
        assert_eq!((back.seconds("systems/a"), back.seconds("systems/c")), (Some(5.5), None));
        assert_eq!(Timings::stage_name(dir.path(), &dir.path().join("systems").join("a")), "systems/a");
        assert_eq!(back.summary(), "21 s in all (supernet 12 s, systems 8 s (2 runs), tokenizer 0 s)");
        // Only stages whose outputs exist count: here `supernet/` and `systems/b/`.
        for d in ["supernet", "systems/b"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        assert_eq!(back.present(dir.path()).stages, [want[0].clone(), want[2].clone()]);
    }

    #[test]
    fn a_damaged_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TIMINGS_FILE), "{\"stages\": [[\"supernet\", -1.0]]}").unwrap();
        let e = Timings::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(TIMINGS_FILE) && e.contains("supernet") && e.contains("-1"), "{e}");
        std::fs::write(dir.path().join(TIMINGS_FILE), "not json").unwrap();
        assert!(Timings::load(dir.path()).unwrap_err().to_string().contains(TIMINGS_FILE));
    }
}
