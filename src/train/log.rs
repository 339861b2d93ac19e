//! Training logs: a JSONL file (one object per log step or validation, appended, so a resumed run
//! continues the same file; the lines a crash left after the resumed checkpoint are dropped first,
//! so each update is logged once) and an `indicatif` progress bar on stderr.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{Error, Result};

/// One line of the log: averages over the updates since the previous line.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    pub update: u64,
    pub epoch: u64,
    /// Token-weighted mean loss (as optimised, e.g. label-smoothed) over the window.
    pub loss: f64,
    /// Token-weighted mean negative log-likelihood over the window.
    pub nll: f64,
    /// Target tokens in the window.
    pub tokens: usize,
    /// Tokens per second of update time (validation and checkpointing excluded).
    pub tokens_per_s: f64,
    /// Learning rate of the last update of the window.
    pub lr: f64,
    /// Mean gradient norm (before clipping) over the window.
    pub grad_norm: f64,
    /// Training time so far, summed over resumed sessions.
    pub elapsed_s: f64,
}

/// Accumulates updates between two log lines.
#[derive(Default)]
pub(crate) struct Window {
    loss_sum: f64,
    nll_sum: f64,
    tokens: usize,
    grad_norm_sum: f64,
    updates: u64,
    secs: f64,
}

impl Window {
    pub(crate) fn add(&mut self, loss: f64, nll: f64, tokens: usize, grad_norm: f64, secs: f64) {
        self.loss_sum += loss * tokens as f64;
        self.nll_sum += nll * tokens as f64;
        self.tokens += tokens;
        self.grad_norm_sum += grad_norm;
        self.updates += 1;
        self.secs += secs;
    }

    pub(crate) fn tokens_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.tokens as f64 / self.secs
        } else {
            0.0
        }
    }

    /// The line for this window (empty windows give zeros); resets the window.
    pub(crate) fn take(&mut self, update: u64, epoch: u64, lr: f64, elapsed_s: f64) -> LogLine {
        let n = self.tokens.max(1) as f64;
        let line = LogLine {
            update,
            epoch,
            loss: self.loss_sum / n,
            nll: self.nll_sum / n,
            tokens: self.tokens,
            tokens_per_s: self.tokens_per_s(),
            lr,
            grad_norm: self.grad_norm_sum / self.updates.max(1) as f64,
            elapsed_s,
        };
        *self = Window::default();
        line
    }
}

pub(crate) struct TrainLog {
    file: Option<(PathBuf, BufWriter<File>)>,
    bar: ProgressBar,
}

impl TrainLog {
    /// Opens (appending to) `path` when given, and a progress bar over `total` updates starting at
    /// `start`, hidden when `quiet` or when stderr is not a terminal (CI logs, pipes).
    pub(crate) fn open(path: Option<&Path>, total: u64, start: u64, quiet: bool) -> Result<Self> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                let f = OpenOptions::new().create(true).append(true).open(p).map_err(|e| Error::io(p, e))?;
                Some((p.to_path_buf(), BufWriter::new(f)))
            }
            None => None,
        };
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            // The template is a constant; should it ever fail to parse, the default style is fine.
            if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}") {
                bar.set_style(style);
            }
            bar
        };
        bar.set_position(start);
        Ok(TrainLog { file, bar })
    }

    pub(crate) fn progress(&self, update: u64, loss: f64, tokens_per_s: f64, lr: f64) {
        self.bar.set_position(update);
        self.bar.set_message(format!("loss {loss:.4} | {tokens_per_s:.0} tok/s | lr {lr:.2e}"));
    }

    pub(crate) fn line(&mut self, line: &LogLine) -> Result<()> {
        let json = serde_json::to_value(line).map_err(|e| Error::invalid("training log", e.to_string()))?;
        self.write(&json)
    }

    pub(crate) fn valid(&mut self, update: u64, metrics: &BTreeMap<String, f64>, elapsed_s: f64) -> Result<()> {
        self.bar.println(format!("update {update}: valid {}", format_metrics(metrics)));
        self.write(&serde_json::json!({ "update": update, "valid": metrics, "elapsed_s": elapsed_s }))
    }

    /// One JSON object per line, flushed at once so that a crash loses no finished line.
    fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        let Some((path, w)) = self.file.as_mut() else { return Ok(()) };
        let text = value.to_string();
        writeln!(w, "{text}").and_then(|()| w.flush()).map_err(|e| Error::io(path.as_path(), e))
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Appends one validation line (the same object [`TrainLog::valid`] writes) to the log at `path`:
/// for a validation made after the trainer's loop, e.g. of the final weights. Nothing is written
/// when the log already has a validation of `update` with the same metric names: rerunning a
/// finished run validates the same weights again, and the log should still say it once.
pub(crate) fn append_valid_once(path: &Path, update: u64, metrics: &BTreeMap<String, f64>, elapsed_s: f64) -> Result<()> {
    if logged_valid(path, update, metrics)? {
        return Ok(());
    }
    let mut log = TrainLog::open(Some(path), 0, 0, true)?;
    log.write(&serde_json::json!({ "update": update, "valid": metrics, "elapsed_s": elapsed_s }))
}

/// The log's text, or `None` when there is no log yet.
fn read_log(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Whether the log at `path` holds a validation line of `update` with exactly `metrics`' names.
fn logged_valid(path: &Path, update: u64, metrics: &BTreeMap<String, f64>) -> Result<bool> {
    let Some(text) = read_log(path)? else { return Ok(false) };
    let same = |v: &serde_json::Value| {
        v.get("update").and_then(|u| u.as_u64()) == Some(update)
            && v.get("valid").and_then(|m| m.as_object()).is_some_and(|m| m.keys().eq(metrics.keys()))
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|v| same(&v)))
}

/// Drops from the log at `path` every line about an update after `update`: what a run wrote after
/// the checkpoint it now resumes from (it will log those updates again), or, for a fresh start
/// (`update` 0), a previous run's lines. Lines that are not a JSON object with an `update` are
/// kept; a last line cut short by a crash gets its newline, so the next line starts on its own.
/// Rewritten atomically, and only when something changes.
pub(crate) fn drop_lines_after(path: &Path, update: u64) -> Result<()> {
    let Some(text) = read_log(path)? else { return Ok(()) };
    let line_update = |l: &str| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v.get("update")?.as_u64());
    let kept: String = text.lines().filter(|l| line_update(l).is_none_or(|u| u <= update)).map(|l| format!("{l}\n")).collect();
    if kept != text {
        crate::fsio::write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

fn format_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_after_the_resumed_update_are_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        drop_lines_after(&path, 5).unwrap(); // no log yet: nothing to do
        assert!(!path.exists());
        let text = "{\"update\":2,\"loss\":1}\nnot json\n{\"update\":4,\"valid\":{}}\n{\"update\":6,\"loss\":0.5}\n{\"upd";
        std::fs::write(&path, text).unwrap();
        drop_lines_after(&path, 4).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"update\":2,\"loss\":1}\nnot json\n{\"update\":4,\"valid\":{}}\n{\"upd\n");
        drop_lines_after(&path, 0).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not json\n{\"upd\n");
    }

    #[test]
    fn a_validation_already_logged_is_not_logged_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        let plain: BTreeMap<String, f64> = [("loss".to_string(), 2.0), ("nll".to_string(), 1.5)].into();
        let averaged: BTreeMap<String, f64> = [("averaged.loss".to_string(), 1.9)].into();
        append_valid_once(&path, 10, &plain, 1.0).unwrap();
        append_valid_once(&path, 10, &averaged, 1.0).unwrap();
        append_valid_once(&path, 10, &plain, 2.0).unwrap();
        append_valid_once(&path, 10, &averaged, 2.0).unwrap();
        append_valid_once(&path, 12, &plain, 3.0).unwrap();
        let updates: Vec<u64> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["update"].as_u64().unwrap())
            .collect();
        assert_eq!(updates, [10, 10, 12]);
    }
}
