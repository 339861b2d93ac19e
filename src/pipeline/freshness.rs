//! A rerun in an existing run directory resumes it: every stage whose outputs exist is skipped.
//! That is only right when those outputs were made with the settings the stage would use now, so
//! before anything runs, the configuration the directory was made with (`pipeline.toml`) is
//! compared with the new one. A changed setting makes every output of its stage and of the stages
//! after it stale; if any of those exist, the run stops with an error that names the changed
//! settings and the stale outputs. Nothing is deleted: the user picks a fresh directory or removes
//! what should be recomputed.

use std::path::{Path, PathBuf};

use super::config::PipelineConfig;
use super::layout::{RunDir, SYSTEMS_LATENCY_FILE};
use crate::cli::translate::TOKENIZER_FILE;
use crate::model::SearchSpace;
use crate::{Error, Result};

/// The run's configuration as last used, in the run directory.
pub const CONFIG_FILE: &str = "pipeline.toml";

/// A stage: its name, the configuration keys it reads (a table's name stands for every key in it;
/// the most specific entry wins, so `data.test` is the evaluation's while the rest of `data` is
/// the first stage's), and its outputs (relative to the run directory). In pipeline order: a stage
/// depends on every stage before it. `name` (a label) and `device` (where the computation runs,
/// not what it computes) belong to no stage. `data/` holds only the evaluation's copy of the test
/// split (cut to `eval.max_sentences`), so it is the evaluation's output, as is the systems' latency
/// measurement (timed after all are trained, with the `[latency]` settings, which come earlier).
const STAGES: &[(&str, &[&str], &[&str])] = &[
    ("tokenizer and data", &["seed", "data"], &[TOKENIZER_FILE]),
    ("supernet training", &["space", "supernet"], &["supernet"]),
    ("latency predictor", &["latency"], &["latency"]),
    ("search", &["search"], &["search", "search_dense", "search_homogeneous"]),
    ("training of the chosen systems", &["final_train", "baselines"], &["systems", "export"]),
    ("evaluation", &["eval", "data.test"], &["eval", SYSTEMS_LATENCY_FILE, "data"]),
];

/// Settings inside a stage's table that change none of its stored outputs: a replicate's directory
/// is named by its seed and the report is rewritten on every run, so raising (or lowering)
/// `final_train.replicates` reuses the replicates already trained and trains only the new ones;
/// `search.homogeneous_baseline` adds a search and a system in directories of their own
/// (`search_homogeneous/`, `systems/homogeneous_searched/`) and leaves the others as they are.
const UNSTAGED: &[&str] = &["final_train.replicates", "search.homogeneous_baseline"];

/// Errors when `out` holds stage outputs that `cfg` would compute differently from the
/// configuration recorded in `out/pipeline.toml`. A directory without that file is new.
pub fn check(out: &Path, cfg: &PipelineConfig) -> Result<()> {
    check_space_contents(out, cfg)?;
    let path = out.join(CONFIG_FILE);
    if !path.exists() {
        return Ok(());
    }
    // Parsed and re-serialised, so that settings an older file leaves to their defaults compare
    // equal to the same defaults written out.
    let old = PipelineConfig::from_file(&path)?;
    // Each changed setting with the first stage that reads it (settings no stage reads dropped).
    let changed: Vec<(usize, String, String, String)> = changed_keys(&to_value(&old)?, &to_value(cfg)?)
        .into_iter()
        .filter_map(|(key, was, now)| stage_of(&key).map(|stage| (stage, key, was, now)))
        .collect();
    let Some(first) = changed.iter().map(|c| c.0).min() else {
        return Ok(());
    };
    let stale: Vec<PathBuf> =
        STAGES[first..].iter().flat_map(|(_, _, outs)| outs.iter().map(|o| out.join(o))).filter(|p| p.exists()).collect();
    if stale.is_empty() {
        return Ok(());
    }
    let settings: Vec<String> = changed
        .iter()
        .map(|(stage, key, was, now)| format!("  {key}: {was} -> {now} (affects the {} and later stages)", STAGES[*stage].0))
        .collect();
    let outputs: Vec<String> = stale.iter().map(|p| format!("  {}", p.display())).collect();
    Err(Error::invalid(
        "pipeline",
        format!(
            "{} was made with a different configuration ({}):\n{}\nso these outputs would be reused although they are stale:\n{}\n\
             Use a fresh output directory, or delete the outputs above to recompute them (and restore the old settings to keep them).",
            out.display(),
            path.display(),
            settings.join("\n"),
            outputs.join("\n")
        ),
    ))
}

/// `space` names a file, so editing the file in place changes no setting. The space the outputs
/// were made in is recorded by the supernet's checkpoint and the latency dataset; each is compared
/// with what the space is now, and a difference is the error [`check`] gives for a changed
/// setting, naming the first gene that differs.
fn check_space_contents(out: &Path, cfg: &PipelineConfig) -> Result<()> {
    let d = RunDir(out);
    let mut recorded: Vec<(PathBuf, serde_json::Value)> = Vec::new();
    let ck = crate::train::checkpoint::resolve_checkpoint_dir(&crate::train::mt::checkpoint_dir(&d.supernet()));
    if ck.exists() {
        let meta = crate::train::read_checkpoint_meta(&ck)?;
        recorded.push((ck.join(crate::train::checkpoint::META_FILE), meta.model_config.get("space").cloned().unwrap_or_default()));
    }
    let dataset = d.latency_dataset();
    if dataset.exists() {
        let bytes = std::fs::read(&dataset).map_err(|e| Error::io(&dataset, e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Format { path: dataset.clone(), msg: format!("not a latency dataset: {e}") })?;
        recorded.push((dataset, v.get("space").cloned().unwrap_or_default()));
    }
    if recorded.is_empty() {
        return Ok(());
    }
    let now = cfg.search_space()?;
    for (file, space) in recorded {
        // A file without a space is damaged in a way the stage that reads it reports.
        if space.is_null() {
            continue;
        }
        let then: SearchSpace = serde_json::from_value(space)
            .map_err(|e| Error::Format { path: file.clone(), msg: format!("no search space recorded: {e}") })?;
        if then == now {
            continue;
        }
        let gene = crate::model::space_difference(&then, &now).unwrap_or_default();
        let stale: Vec<String> = STAGES[1..]
            .iter()
            .flat_map(|(_, _, outs)| outs.iter().map(|o| out.join(o)))
            .filter(|p| p.exists())
            .map(|p| format!("  {}", p.display()))
            .collect();
        return Err(Error::invalid(
            "pipeline",
            format!(
                "the space `{}` is not the one {} was made in ({}: recorded vs now), so these outputs would be reused although they \
                 are stale:\n{}\nUse a fresh output directory, or delete the outputs above to recompute them (and restore the \
                 old space to keep them).",
                cfg.space,
                file.display(),
                gene,
                stale.join("\n")
            ),
        ));
    }
    Ok(())
}

fn to_value(cfg: &PipelineConfig) -> Result<toml::Value> {
    toml::Value::try_from(cfg).map_err(|e| Error::invalid("pipeline", format!("cannot serialise the configuration: {e}")))
}

/// The index in `STAGES` of the stage that reads the dotted `key`, if any.
fn stage_of(key: &str) -> Option<usize> {
    if UNSTAGED.contains(&key) {
        return None;
    }
    let covers = |k: &str| key == k || key.strip_prefix(k).is_some_and(|rest| rest.starts_with('.'));
    STAGES
        .iter()
        .enumerate()
        .flat_map(|(stage, (_, keys, _))| keys.iter().filter(|k| covers(k)).map(move |k| (k.len(), stage)))
        .max_by_key(|&(len, _)| len)
        .map(|(_, stage)| stage)
}

/// Every dotted key whose value differs between `old` and `new` (present in one only included),
/// with both values as TOML text ("unset" when absent), in key order.
fn changed_keys(old: &toml::Value, new: &toml::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}

fn walk(prefix: &str, old: Option<&toml::Value>, new: Option<&toml::Value>, out: &mut Vec<(String, String, String)>) {
    match (old, new) {
        (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                walk(&key, a.get(k), b.get(k), out);
            }
        }
        (a, b) if a != b => {
            let show = |v: Option<&toml::Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "unset".into());
            out.push((prefix.to_string(), show(a), show(b)));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(out: &Path, cfg: &PipelineConfig) {
        std::fs::write(out.join(CONFIG_FILE), toml::to_string(cfg).unwrap()).unwrap();
    }

    #[test]
    fn changed_settings_with_existing_outputs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        let cfg = PipelineConfig::demo().unwrap();
        // A new directory, and an unchanged configuration, are fine.
        check(out, &cfg).unwrap();
        write_config(out, &cfg);
        std::fs::create_dir_all(out.join("supernet")).unwrap();
        check(out, &cfg).unwrap();

        // A supernet setting with the supernet trained: refused, naming the setting and the output.
        let mut more = cfg.clone();
        more.supernet.updates += 1;
        let err = check(out, &more).unwrap_err().to_string();
        assert!(err.contains("supernet.updates") && err.contains(&out.join("supernet").display().to_string()), "{err}");

        // An evaluation setting before anything was evaluated: fine; after: refused.
        let mut beam = cfg.clone();
        beam.eval.beam += 1;
        check(out, &beam).unwrap();
        std::fs::create_dir_all(out.join("eval")).unwrap();
        let err = check(out, &beam).unwrap_err().to_string();
        assert!(err.contains("eval.beam") && !err.contains("supernet\n"), "{err}");

        // The label and the device change no result; more replicates only add training runs.
        let mut renamed = cfg.clone();
        renamed.name = "other".into();
        renamed.device = crate::Device::Emu;
        renamed.final_train.replicates = 3;
        std::fs::create_dir_all(out.join("systems")).unwrap();
        check(out, &renamed).unwrap();
        // Adding the homogeneous baseline to a searched run only adds its own search and system.
        let mut homogeneous = renamed.clone();
        homogeneous.search.homogeneous_baseline = true;
        std::fs::create_dir_all(out.join("search")).unwrap();
        check(out, &homogeneous).unwrap();
        // ... while any other final_train setting makes the trained systems stale.
        let mut longer = renamed.clone();
        longer.final_train.updates += 1;
        let err = check(out, &longer).unwrap_err().to_string();
        assert!(err.contains("final_train.updates") && !err.contains("replicates"), "{err}");

        // The test split is the evaluation's: renaming it (or cutting it differently) leaves the
        // supernet and the systems valid and makes only data/ and eval/ stale.
        let mut test = cfg.clone();
        test.data.test = "test_2017".into();
        let err = check(out, &test).unwrap_err().to_string();
        assert!(err.contains("data.test") && err.contains("evaluation") && !err.contains("supernet\n"), "{err}");
        std::fs::remove_dir(out.join("eval")).unwrap();
        check(out, &test).unwrap();
        std::fs::create_dir_all(out.join("data")).unwrap();
        let mut fewer = cfg.clone();
        fewer.eval.max_sentences += 1;
        let err = check(out, &fewer).unwrap_err().to_string();
        assert!(err.contains("eval.max_sentences") && err.contains(&out.join("data").display().to_string()), "{err}");
        // Any other data setting is still the first stage's.
        let mut vocab = cfg.clone();
        vocab.data.vocab_size += 1;
        let err = check(out, &vocab).unwrap_err().to_string();
        assert!(err.contains("data.vocab_size") && err.contains("tokenizer and data"), "{err}");
    }

    /// Every output the stages write (`layout::RunDir`) is guarded by some stage here, so a
    /// changed setting can never leave one of them behind unnoticed.
    #[test]
    fn every_output_of_the_layout_belongs_to_a_stage() {
        let out = Path::new("run");
        use super::super::layout::{RunDir, Search};
        let d = RunDir(out);
        let paths = [
            d.tokenizer(),
            d.supernet(),
            d.latency_dataset(),
            d.predictor(),
            d.search(Search::AutoMoe),
            d.search(Search::Dense),
            d.search(Search::Homogeneous),
            d.system("automoe"),
            d.data(),
            d.eval_result("automoe"),
            d.eval_translations("automoe"),
            d.export(),
        ];
        let guarded: Vec<PathBuf> = STAGES.iter().flat_map(|(_, _, outs)| outs.iter().map(|o| out.join(o))).collect();
        for p in paths {
            assert!(guarded.iter().any(|g| p.starts_with(g)), "{} is in no stage's outputs", p.display());
        }
    }

    #[test]
    fn an_unreadable_recorded_configuration_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(CONFIG_FILE), "seed = \"x\"").unwrap();
        let err = check(tmp.path(), &PipelineConfig::demo().unwrap()).unwrap_err().to_string();
        assert!(err.contains(CONFIG_FILE), "{err}");
    }
}
