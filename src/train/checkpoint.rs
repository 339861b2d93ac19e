//! Checkpoints: a directory holding
//!
//! - `weights.safetensors`: every parameter of the [`ParamStore`] by name (shape and dtype as stored);
//! - `optimizer.safetensors`: Adam's moments as `{name}.m` / `{name}.v` for every parameter that has
//!   optimizer state, and the per-parameter step counts as a JSON object `{name: steps}` under the
//!   header metadata key `adam_steps` (bias correction counts steps per parameter, because a
//!   parameter a subnet did not use sits out that update);
//! - `meta.json`: [`CheckpointMeta`] (model config, data position, seed, schedule, ...).
//!
//! A checkpoint is written into the sibling directory `{name}.tmp`, every file and the directory are
//! fsynced, then the previous checkpoint is renamed to `{name}.old`, the new one renamed into place,
//! and only then `{name}.old` removed. A crash at any point leaves either the old or the new
//! checkpoint complete: if it lands between the two renames, only `{name}.old` exists, and
//! [`load_checkpoint`] falls back to it. (POSIX cannot rename a directory over a non-empty one, hence
//! two renames rather than one.)
//!
//! Loading validates everything before touching the store, so a failed load leaves the model as it
//! was: missing files, parameters present on one side only, and shape or dtype mismatches are errors
//! that name the parameter and the file. Values are stored little-endian as safetensors requires.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

use super::optim::{Adam, AdamConfig, AdamState};
use super::schedule::LrSchedule;
use crate::autograd::{ParamId, ParamStore};
pub use crate::fsio::write_dir_atomic;
use crate::fsio::{sibling, write_atomic, write_file_synced};
use crate::tensor::{parse_safetensors, serialize_safetensors, tensor_from_safetensors};
use crate::{Error, Result, Tensor};

pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const META_FILE: &str = "meta.json";
/// Bumped when the layout of a checkpoint changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
const STEPS_KEY: &str = "adam_steps";

/// Everything besides tensors that a run needs to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    pub format_version: u32,
    /// `CARGO_PKG_VERSION` of the crate that wrote it.
    pub crate_version: String,
    /// The model's configuration as the caller describes it (the trainer never interprets it).
    pub model_config: serde_json::Value,
    /// Optimizer updates completed.
    pub update: u64,
    /// Data position: the epoch in progress and how many batches of its order were consumed.
    pub epoch: u64,
    pub epoch_pos: usize,
    /// Length of the batch list the position refers to (a resume with other data is refused).
    pub num_batches: usize,
    /// The run's seed. The trainer keeps no RNG stream state: batch order is drawn from
    /// (seed, epoch) and per-update seeds from (seed, update), so the seed is the whole RNG state.
    pub seed: u64,
    pub tokenizer_hash: Option<String>,
    pub schedule: LrSchedule,
    pub adam: AdamConfig,
    /// Wall-clock time of the save, seconds since the Unix epoch.
    pub saved_at_unix_s: f64,
    /// Training time accumulated over all sessions up to this checkpoint.
    pub elapsed_s: f64,
}

impl CheckpointMeta {
    /// A record for `update` with the current crate version and time; data position zero.
    pub fn new(update: u64, seed: u64, schedule: LrSchedule, adam: AdamConfig) -> Self {
        CheckpointMeta {
            format_version: FORMAT_VERSION,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            model_config: serde_json::Value::Null,
            update,
            epoch: 0,
            epoch_pos: 0,
            num_batches: 0,
            seed,
            tokenizer_hash: None,
            schedule,
            adam,
            saved_at_unix_s: unix_now(),
            elapsed_s: 0.0,
        }
    }
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Writes a checkpoint of `store`, `adam` and `meta` to the directory `dir`, atomically (see the
/// module docs). `meta.saved_at_unix_s` is set to the time of writing.
pub fn save_checkpoint(dir: &Path, store: &ParamStore, adam: &Adam, meta: &CheckpointMeta) -> Result<()> {
    let mut meta = meta.clone();
    meta.saved_at_unix_s = unix_now();
    let meta_json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Format { path: dir.join(META_FILE), msg: e.to_string() })?;
    let weights = weights_bytes(store, dir.join(WEIGHTS_FILE))?;
    let optimizer = optimizer_bytes(store, adam, dir.join(OPTIMIZER_FILE))?;
    write_dir_atomic(dir, |tmp| {
        write_file_synced(&tmp.join(WEIGHTS_FILE), &weights)?;
        write_file_synced(&tmp.join(OPTIMIZER_FILE), &optimizer)?;
        write_file_synced(&tmp.join(META_FILE), &meta_json)
    })
}

/// Reads a checkpoint into `store` (whose parameters must match the file's exactly) and returns its
/// metadata and the restored optimizer (configured with the checkpoint's `AdamConfig`). The store is
/// modified only when everything validated.
pub fn load_checkpoint(dir: &Path, store: &mut ParamStore) -> Result<(CheckpointMeta, Adam)> {
    let dir = resolve_checkpoint_dir(dir);
    let meta = read_checkpoint_meta(&dir)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let weights = parse_weights(&read_existing(&weights_path)?, &weights_path, store)?;
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let states = parse_optimizer(&read_existing(&optimizer_path)?, &optimizer_path, store)?;
    // One Adam step per update at most: a larger count is a corrupt or edited file, and would
    // skew the bias correction of every later step.
    if let Some((id, st)) = states.iter().find(|(_, st)| st.steps > meta.update) {
        return Err(Error::Format {
            path: optimizer_path,
            msg: format!("`{}` took {} Adam steps, more than the checkpoint's {} updates", store.get(*id).name, st.steps, meta.update),
        });
    }
    let mut adam = Adam::new(meta.adam);
    for (id, st) in states {
        adam.set_state(id, st);
    }
    commit_weights(store, weights);
    Ok((meta, adam))
}

/// The metadata of a checkpoint alone.
pub fn read_checkpoint_meta(dir: &Path) -> Result<CheckpointMeta> {
    let dir = resolve_checkpoint_dir(dir);
    let path = dir.join(META_FILE);
    let bytes = read_existing(&path)?;
    let meta: CheckpointMeta = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Format { path: path.clone(), msg: format!("not a valid checkpoint meta.json: {e}") })?;
    if meta.format_version != FORMAT_VERSION {
        return Err(Error::Format {
            path,
            msg: format!("checkpoint format version {} (this build reads version {FORMAT_VERSION})", meta.format_version),
        });
    }
    // The trainer indexes its epoch order with the position; an edited or corrupted file must
    // not reach it past the end.
    if meta.epoch_pos > meta.num_batches {
        return Err(Error::Format {
            path,
            msg: format!("epoch_pos {} is past the end of an epoch of {} batches", meta.epoch_pos, meta.num_batches),
        });
    }
    Ok(meta)
}

/// `dir` itself, or `{dir}.old` when `dir` is missing and a save was interrupted between its two
/// renames (the old checkpoint is then complete and the newest one on disk).
pub fn resolve_checkpoint_dir(dir: &Path) -> PathBuf {
    let old = sibling(dir, "old");
    if !dir.exists() && old.join(META_FILE).is_file() {
        old
    } else {
        dir.to_path_buf()
    }
}

/// Writes every parameter of `store` to the safetensors file `path` (atomically: an existing file
/// is replaced only by a complete one).
pub fn save_weights(path: &Path, store: &ParamStore) -> Result<()> {
    write_atomic(path, &weights_bytes(store, path.to_path_buf())?)
}

/// Reads the safetensors file `path` into `store`; the file and the store must hold the same
/// parameters with the same shapes and dtypes. Gradients are cleared.
pub fn load_weights(path: &Path, store: &mut ParamStore) -> Result<()> {
    let weights = parse_weights_file(path, store)?;
    commit_weights(store, weights);
    Ok(())
}

/// The tensors of the weight file `path`, checked against `store`'s parameters and in its order.
pub(crate) fn parse_weights_file(path: &Path, store: &ParamStore) -> Result<Vec<(ParamId, Tensor)>> {
    parse_weights(&read_existing(path)?, path, store)
}

fn read_existing(path: &Path) -> Result<Vec<u8>> {
    if !path.exists() {
        return Err(Error::Format { path: path.to_path_buf(), msg: "file is missing".into() });
    }
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// Serialises named tensors (with optional header metadata) to safetensors bytes.
fn serialize(entries: &[(String, Tensor)], metadata: Option<HashMap<String, String>>, path: &Path) -> Result<Vec<u8>> {
    let named: Vec<(&str, &Tensor)> = entries.iter().map(|(n, t)| (n.as_str(), t)).collect();
    serialize_safetensors(&named, metadata, path)
}

fn weights_bytes(store: &ParamStore, path: PathBuf) -> Result<Vec<u8>> {
    let entries: Vec<(String, Tensor)> = store.iter().map(|(_, p)| (p.name.clone(), p.value.clone())).collect();
    let mut meta = HashMap::new();
    meta.insert("automoe_version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    serialize(&entries, Some(meta), &path)
}

fn optimizer_bytes(store: &ParamStore, adam: &Adam, path: PathBuf) -> Result<Vec<u8>> {
    let mut entries = Vec::new();
    let mut steps = BTreeMap::new();
    for (id, p) in store.iter() {
        if let Some(st) = adam.state(id) {
            entries.push((format!("{}.m", p.name), st.m.clone()));
            entries.push((format!("{}.v", p.name), st.v.clone()));
            steps.insert(p.name.clone(), st.steps);
        }
    }
    let steps_json = serde_json::to_string(&steps).map_err(|e| Error::Format { path: path.clone(), msg: e.to_string() })?;
    serialize(&entries, Some(HashMap::from([(STEPS_KEY.to_string(), steps_json)])), &path)
}

fn deserialize<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    parse_safetensors(bytes, path)
}

/// Checks that `name` in the file has the shape and dtype of `like` and converts it.
fn checked_tensor(st: &SafeTensors<'_>, name: &str, like: &Tensor, param: &str, path: &Path) -> Result<Tensor> {
    let view = st
        .tensor(name)
        .map_err(|_| Error::Format { path: path.to_path_buf(), msg: format!("tensor `{name}` is missing from the file") })?;
    if view.dtype() != like.dtype().to_safetensors() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            msg: format!("parameter `{param}`: dtype {:?} in the file, {:?} in the model", view.dtype(), like.dtype()),
        });
    }
    if view.shape() != like.shape() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            msg: format!("parameter `{param}`: shape {:?} in the file, {:?} in the model", view.shape(), like.shape()),
        });
    }
    tensor_from_safetensors(&view, name, path)
}

fn parse_weights(bytes: &[u8], path: &Path, store: &ParamStore) -> Result<Vec<(ParamId, Tensor)>> {
    let st = deserialize(bytes, path)?;
    let mut names = st.names();
    names.sort_unstable();
    if let Some(extra) = names.iter().find(|n| store.id(n).is_none()) {
        return Err(Error::Format { path: path.to_path_buf(), msg: format!("parameter `{extra}` is in the file but not in the model") });
    }
    let mut out = Vec::with_capacity(store.len());
    for (id, p) in store.iter() {
        if st.tensor(&p.name).is_err() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                msg: format!("parameter `{}` of the model is missing from the file", p.name),
            });
        }
        out.push((id, checked_tensor(&st, &p.name, &p.value, &p.name, path)?));
    }
    Ok(out)
}

fn parse_optimizer(bytes: &[u8], path: &Path, store: &ParamStore) -> Result<Vec<(ParamId, AdamState)>> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::Format { path: path.to_path_buf(), msg: format!("not a valid safetensors file: {e}") })?;
    let steps_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STEPS_KEY))
        .ok_or_else(|| Error::Format { path: path.to_path_buf(), msg: format!("header metadata lacks `{STEPS_KEY}`") })?;
    let steps: BTreeMap<String, u64> = serde_json::from_str(steps_json)
        .map_err(|e| Error::Format { path: path.to_path_buf(), msg: format!("`{STEPS_KEY}` is not a map of step counts: {e}") })?;
    let st = deserialize(bytes, path)?;
    let mut out = Vec::with_capacity(steps.len());
    for (name, &n) in &steps {
        let id = store.id(name).ok_or_else(|| Error::Format {
            path: path.to_path_buf(),
            msg: format!("optimizer state for `{name}`, which is not in the model"),
        })?;
        let like = store.value(id);
        let m = checked_tensor(&st, &format!("{name}.m"), like, name, path)?;
        let v = checked_tensor(&st, &format!("{name}.v"), like, name, path)?;
        out.push((id, AdamState { m, v, steps: n }));
    }
    if st.len() != 2 * steps.len() {
        let mut names = st.names();
        names.sort_unstable();
        let stray = names
            .into_iter()
            .find(|n| !n.rsplit_once('.').is_some_and(|(p, s)| (s == "m" || s == "v") && steps.contains_key(p)))
            .unwrap_or_default();
        return Err(Error::Format { path: path.to_path_buf(), msg: format!("tensor `{stray}` has no step count in `{STEPS_KEY}`") });
    }
    Ok(out)
}

fn commit_weights(store: &mut ParamStore, weights: Vec<(ParamId, Tensor)>) {
    for (id, t) in weights {
        let p = store.get_mut(id);
        p.value = t;
        p.grad = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    fn store() -> ParamStore {
        let mut s = ParamStore::new();
        s.add("emb", Tensor::from_vec(vec![1.0f32, -2.5, 3.25, 4.0, 5.0, 6.5], &[3, 2]).unwrap()).unwrap();
        s.add("bias", Tensor::from_vec(vec![0.5f64, -0.125], &[2]).unwrap()).unwrap();
        s.add("half", Tensor::from_vec(crate::tensor::f32_to_bf16(&[1.5, -3.0]), &[2]).unwrap()).unwrap();
        s
    }

    fn bytes_of(s: &ParamStore) -> Vec<Vec<u8>> {
        s.iter().map(|(_, p)| p.value.to_le_bytes().unwrap()).collect()
    }

    #[test]
    fn weights_round_trip_all_dtypes_and_reject_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let src = store();
        save_weights(&path, &src).unwrap();
        let mut dst = store();
        for (_, p) in dst.iter_mut() {
            p.value = Tensor::zeros(p.value.shape(), p.value.dtype());
        }
        load_weights(&path, &mut dst).unwrap();
        assert_eq!(bytes_of(&src), bytes_of(&dst));

        let mut wrong_shape = ParamStore::new();
        wrong_shape.add("emb", Tensor::zeros(&[2, 3], DType::F32)).unwrap();
        wrong_shape.add("bias", Tensor::zeros(&[2], DType::F64)).unwrap();
        wrong_shape.add("half", Tensor::zeros(&[2], DType::BF16)).unwrap();
        let err = load_weights(&path, &mut wrong_shape).unwrap_err().to_string();
        assert!(err.contains("`emb`") && err.contains("shape") && err.contains("w.safetensors"), "{err}");
        // Unchanged after a failed load.
        assert_eq!(wrong_shape.value(ParamId(0)).to_vec::<f32>().unwrap(), vec![0.0; 6]);

        let mut wrong_dtype = store();
        wrong_dtype.get_mut(ParamId(1)).value = Tensor::zeros(&[2], DType::F32);
        let err = load_weights(&path, &mut wrong_dtype).unwrap_err().to_string();
        assert!(err.contains("`bias`") && err.contains("dtype"), "{err}");

        let mut fewer = ParamStore::new();
        fewer.add("emb", Tensor::zeros(&[3, 2], DType::F32)).unwrap();
        let err = load_weights(&path, &mut fewer).unwrap_err().to_string();
        assert!(err.contains("in the file but not in the model"), "{err}");

        let mut more = store();
        more.add("extra", Tensor::zeros(&[1], DType::F32)).unwrap();
        let err = load_weights(&path, &mut more).unwrap_err().to_string();
        assert!(err.contains("`extra`") && err.contains("missing from the file"), "{err}");
    }

    #[test]
    fn optimizer_state_round_trips_with_step_counts() {
        let dir = tempfile::tempdir().unwrap();
        let s = store();
        let mut adam = Adam::new(AdamConfig::default());
        let m = Tensor::from_vec(vec![0.1f64, 0.2], &[2]).unwrap();
        let v = Tensor::from_vec(vec![0.3f64, 0.4], &[2]).unwrap();
        adam.set_state(ParamId(1), AdamState { m: m.clone(), v: v.clone(), steps: 7 });
        let meta = CheckpointMeta::new(7, 42, LrSchedule::Constant { lr: 1e-3 }, AdamConfig::default());
        let ck = dir.path().join("ck");
        save_checkpoint(&ck, &s, &adam, &meta).unwrap();
        let mut fresh = store();
        let (got_meta, got_adam) = load_checkpoint(&ck, &mut fresh).unwrap();
        assert_eq!(got_meta.update, 7);
        assert_eq!(got_meta.seed, 42);
        assert!(got_adam.state(ParamId(0)).is_none());
        let st = got_adam.state(ParamId(1)).unwrap();
        assert_eq!(st.steps, 7);
        assert_eq!(st.m.to_vec::<f64>().unwrap(), m.to_vec::<f64>().unwrap());
        assert_eq!(st.v.to_vec::<f64>().unwrap(), v.to_vec::<f64>().unwrap());
        // More Adam steps than the checkpoint has updates: a corrupt count, refused by name.
        adam.set_state(ParamId(1), AdamState { m, v, steps: 1 << 31 });
        save_checkpoint(&ck, &s, &adam, &meta).unwrap();
        let err = load_checkpoint(&ck, &mut store()).unwrap_err().to_string();
        assert!(
            err.contains("optimizer.safetensors") && err.contains("`bias` took 2147483648 Adam steps, more than the checkpoint's 7"),
            "{err}"
        );
    }

    #[test]
    fn atomic_write_keeps_the_old_directory_when_filling_fails() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ck");
        write_dir_atomic(&target, |d| write_file_synced(&d.join("a"), b"old")).unwrap();
        let err = write_dir_atomic(&target, |d| {
            write_file_synced(&d.join("a"), b"half-written")?;
            Err(Error::invalid("test", "disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(fs::read(target.join("a")).unwrap(), b"old");
        assert!(!sibling(&target, "tmp").exists() && !sibling(&target, "old").exists());
        write_dir_atomic(&target, |d| write_file_synced(&d.join("a"), b"new")).unwrap();
        assert_eq!(fs::read(target.join("a")).unwrap(), b"new");
        // An I/O error while filling names the file by where it was going, not the temporary
        // directory (gone by then), and says the old contents are kept.
        let err = write_dir_atomic(&target, |d| write_file_synced(&d.join("sub/b"), b"x")).unwrap_err().to_string();
        let want = target.join("sub/b").display().to_string();
        assert!(err.starts_with(&want) && err.contains("the previous version is unchanged") && !err.contains("ck.tmp"), "{err}");
        assert_eq!(fs::read(target.join("a")).unwrap(), b"new");
    }

    #[test]
    fn a_save_interrupted_between_the_renames_loads_from_old() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("ck");
        let s = store();
        let meta = CheckpointMeta::new(3, 1, LrSchedule::Constant { lr: 1e-3 }, AdamConfig::default());
        save_checkpoint(&ck, &s, &Adam::new(AdamConfig::default()), &meta).unwrap();
        // The state right after `rename(target, old)`: a crash there leaves only `.old`, plus a
        // stale `.tmp`.
        fs::rename(&ck, sibling(&ck, "old")).unwrap();
        fs::create_dir(sibling(&ck, "tmp")).unwrap();
        let mut fresh = store();
        assert_eq!(load_checkpoint(&ck, &mut fresh).unwrap().0.update, 3);
        save_checkpoint(&ck, &s, &Adam::new(AdamConfig::default()), &CheckpointMeta { update: 4, ..meta }).unwrap();
        assert_eq!(read_checkpoint_meta(&ck).unwrap().update, 4);
        assert!(!sibling(&ck, "old").exists() && !sibling(&ck, "tmp").exists());
    }
}
