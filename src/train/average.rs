//! Weight averaging: the trained model is the element-wise mean of the weights at the last few
//! snapshot points of the run rather than the weights after the last update, as fairseq's
//! `average_checkpoints.py` does for the Transformer translation models HAT and AutoMoE train
//! (they average the last ten checkpoints). The mean of nearby points of the optimizer's path sits
//! nearer the centre of the basin the run ends in and usually translates a little better.
//!
//! During training the [`Trainer`](super::Trainer) writes the weights to
//! `{snapshot_dir}/update-{k:08}.safetensors` at each snapshot point `k` of the schedule
//! ([`WeightAveraging::points`]); the points are anchored at `max_updates` so the final weights are
//! always one of them. Snapshots are plain weight files (no optimizer state), written atomically;
//! a resumed run finds those of its earlier sessions on disk. [`average_weight_files`] reads them
//! back, checks each against the model and averages them in f64.

use std::path::{Path, PathBuf};

use crate::autograd::ParamStore;
use crate::{Error, Result, Tensor};

use super::checkpoint::parse_weights_file;

/// The share of a run the averaged points spread over when no spacing is given (the CLI's
/// `--average` without `--average-every`, the pipeline's `average` without `average_every`).
pub const DEFAULT_AVERAGED_FRACTION: f64 = 0.25;

/// Most snapshots one run may average (each is a full copy of the weights on disk).
pub const MAX_SNAPSHOTS: usize = 100;

/// Which updates' weights are averaged: `snapshots` points, `every` updates apart, the last at
/// `max_updates`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WeightAveraging {
    pub snapshots: usize,
    pub every: u64,
}

impl WeightAveraging {
    /// `snapshots` points spread evenly over the last `fraction` of a run of `max_updates`
    /// updates (at least one update apart): the default spacing of the CLI and the pipeline.
    pub fn over_last_fraction(snapshots: usize, max_updates: u64, fraction: f64) -> Self {
        let span = (max_updates as f64 * fraction).floor() as u64;
        let every = if snapshots > 1 { (span / snapshots as u64).max(1) } else { 1 };
        WeightAveraging { snapshots, every }
    }

    /// What a user's two settings ask for, as the CLI's `--average N [--average-every U]` and the
    /// pipeline's `average`/`average_every` spell them: no averaging for 0 snapshots, and without a
    /// spacing the points spread over the last [`DEFAULT_AVERAGED_FRACTION`] of the run.
    pub fn from_settings(snapshots: usize, every: Option<u64>, max_updates: u64) -> Option<Self> {
        (snapshots > 0).then(|| match every {
            Some(every) => WeightAveraging { snapshots, every },
            None => WeightAveraging::over_last_fraction(snapshots, max_updates, DEFAULT_AVERAGED_FRACTION),
        })
    }

    /// Errors unless the schedule fits in a run of `max_updates` updates (every point after
    /// update 0).
    pub fn check(&self, max_updates: u64) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid("weight averaging", msg));
        if self.snapshots == 0 || self.snapshots > MAX_SNAPSHOTS {
            return bad(format!("{} snapshots must be between 1 and {MAX_SNAPSHOTS}", self.snapshots));
        }
        if self.every == 0 {
            return bad("snapshots must be at least 1 update apart (every = 0)".into());
        }
        let reach = (self.snapshots as u64 - 1).checked_mul(self.every);
        if reach.is_none_or(|r| r >= max_updates) {
            return bad(format!(
                "{} snapshots {} updates apart reach back before the first update of a run of {max_updates} updates \
                 (fewer snapshots or a smaller spacing)",
                self.snapshots, self.every
            ));
        }
        Ok(())
    }

    /// The snapshot updates in increasing order: `max_updates - i * every` for `i < snapshots`.
    /// Only meaningful for a schedule that passed [`WeightAveraging::check`].
    pub fn points(&self, max_updates: u64) -> Vec<u64> {
        (0..self.snapshots as u64).rev().filter_map(|i| max_updates.checked_sub(i * self.every)).filter(|&u| u > 0).collect()
    }
}

/// The file the snapshot of update `update` is written to.
pub fn snapshot_path(dir: &Path, update: u64) -> PathBuf {
    dir.join(format!("update-{update:08}.safetensors"))
}

/// Sets every parameter of `store` to the mean of its values in the weight files `paths` (written
/// by [`save_weights`](super::save_weights); each must hold exactly the store's parameters with
/// their shapes and dtypes). The sum runs in f64 and is rounded once to each parameter's dtype;
/// values stay on the store's device and gradients are cleared. On error (a missing or mismatched
/// file, named) the store is unchanged.
pub fn average_weight_files(paths: &[PathBuf], store: &mut ParamStore) -> Result<()> {
    if paths.is_empty() {
        return Err(Error::invalid("average_weight_files", "no weight files to average"));
    }
    let mut sums: Vec<Vec<f64>> = store.iter().map(|(_, p)| vec![0.0; p.value.numel()]).collect();
    for path in paths {
        for (i, (_, t)) in parse_weights_file(path, store)?.into_iter().enumerate() {
            for (s, v) in sums[i].iter_mut().zip(t.to_f64_vec()?) {
                *s += v;
            }
        }
    }
    let n = paths.len() as f64;
    let mut means = Vec::with_capacity(sums.len());
    for ((_, p), sum) in store.iter().zip(sums) {
        let mean = Tensor::from_vec(sum.into_iter().map(|s| s / n).collect::<Vec<f64>>(), p.value.shape())?;
        means.push(mean.to_dtype_device(p.value.dtype(), p.value.device())?);
    }
    for ((_, p), mean) in store.iter_mut().zip(means) {
        p.value = mean;
        p.grad = None;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::save_weights;
    use crate::DType;

    fn store_with(emb: Vec<f32>, bias: Vec<f64>, half: &[f32]) -> ParamStore {
        let mut s = ParamStore::new();
        s.add("emb", Tensor::from_vec(emb, &[2, 2]).unwrap()).unwrap();
        s.add("bias", Tensor::from_vec(bias, &[2]).unwrap()).unwrap();
        s.add("half", Tensor::from_vec(crate::tensor::f32_to_bf16(half), &[2]).unwrap()).unwrap();
        s
    }

    #[test]
    fn points_end_at_max_updates_and_check_rejects_schedules_that_do_not_fit() {
        let a = WeightAveraging { snapshots: 3, every: 5 };
        assert_eq!(a.points(100), vec![90, 95, 100]);
        assert_eq!(WeightAveraging { snapshots: 1, every: 7 }.points(10), vec![10]);
        a.check(11).unwrap();
        let err = a.check(10).unwrap_err().to_string();
        assert!(err.contains("3 snapshots 5 updates apart") && err.contains("10 updates"), "{err}");
        assert!(WeightAveraging { snapshots: 0, every: 1 }.check(10).is_err());
        assert!(WeightAveraging { snapshots: 2, every: 0 }.check(10).is_err());
        assert!(WeightAveraging { snapshots: 2, every: u64::MAX }.check(u64::MAX).is_err());
        // The default spacing spreads the snapshots over the requested tail of the run.
        assert_eq!(WeightAveraging::over_last_fraction(5, 1000, 0.25), WeightAveraging { snapshots: 5, every: 50 });
        assert_eq!(WeightAveraging::over_last_fraction(5, 8, 0.25), WeightAveraging { snapshots: 5, every: 1 });
        WeightAveraging::over_last_fraction(5, 8, 0.25).check(8).unwrap();
    }

    #[test]
    fn average_is_the_elementwise_mean_in_every_dtype_and_rejects_mismatched_files() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("s{i}.safetensors"))).collect();
        let snaps = [
            store_with(vec![1.0, 2.0, 3.0, 4.0], vec![0.1, -0.2], &[1.0, -2.0]),
            store_with(vec![2.0, 0.0, -3.0, 8.0], vec![0.4, 0.2], &[3.0, 2.0]),
            store_with(vec![6.0, 1.0, 3.0, 0.5], vec![-0.2, 0.3], &[2.0, 1.5]),
        ];
        for (s, f) in snaps.iter().zip(&files) {
            save_weights(f, s).unwrap();
        }
        let mut store = store_with(vec![9.0; 4], vec![9.0; 2], &[9.0, 9.0]);
        average_weight_files(&files, &mut store).unwrap();
        assert_eq!(store.value(store.id("emb").unwrap()).to_vec::<f32>().unwrap(), vec![3.0, 1.0, 1.0, 12.5 / 3.0]);
        let bias = store.value(store.id("bias").unwrap()).to_vec::<f64>().unwrap();
        approx::assert_abs_diff_eq!(bias.as_slice(), [0.1f64, 0.1].as_slice(), epsilon = 1e-15);
        let half = store.value(store.id("half").unwrap());
        assert_eq!(half.dtype(), DType::BF16);
        assert_eq!(half.to_f32_vec().unwrap(), vec![2.0, 0.5]);

        // A file of another model is named, and the store keeps its values.
        let other = dir.path().join("other.safetensors");
        let mut wrong = ParamStore::new();
        wrong.add("emb", Tensor::zeros(&[4], DType::F32)).unwrap();
        save_weights(&other, &wrong).unwrap();
        let before = store.value(store.id("emb").unwrap()).to_vec::<f32>().unwrap();
        let err = average_weight_files(&[files[0].clone(), other], &mut store).unwrap_err().to_string();
        assert!(err.contains("other.safetensors"), "{err}");
        assert_eq!(store.value(store.id("emb").unwrap()).to_vec::<f32>().unwrap(), before);
        let err = average_weight_files(&[dir.path().join("missing.safetensors")], &mut store).unwrap_err().to_string();
        assert!(err.contains("missing.safetensors") && err.contains("missing"), "{err}");
        assert!(average_weight_files(&[], &mut store).is_err());
    }
}
