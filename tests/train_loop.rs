//! The training loop and checkpoints on a tiny model defined here (embedding -> dropout -> linear ->
//! cross-entropy over the next target token), so that the trainer is tested without the supernet.

use std::fs;
use std::path::Path;

use automoe::autograd::{LossStats, ParamStore, Tape, Var};
use automoe::data::{Batch, TokenizedPair, PAD_ID};
use automoe::train::{load_checkpoint, read_checkpoint_meta, LogLine, LrSchedule, TrainConfig, Trainer, UpdateCtx, WeightAveraging};
use automoe::{DType, Error, Result, Tensor};
use rand::Rng;

const VOCAB: usize = 16;
const DIM: usize = 8;

fn model(seed: u64, dtype: DType) -> ParamStore {
    let mut rng = automoe::rng::seeded(seed);
    let mut s = ParamStore::new();
    s.add("emb", Tensor::randn(&[VOCAB, DIM], 0.5, dtype, &mut rng)).unwrap();
    s.add("out.w", Tensor::randn(&[VOCAB, DIM], 0.5, dtype, &mut rng)).unwrap();
    s.add("out.b", Tensor::zeros(&[VOCAB], dtype)).unwrap();
    s
}

/// Mean cross-entropy of predicting `tgt_out` from `tgt_in`, token by token; `dropout` uses the
/// update's seed so that resumed runs must reproduce it.
fn loss_fn(dropout: f64) -> impl FnMut(&mut Tape, &ParamStore, &Batch, UpdateCtx) -> Result<(Var, LossStats)> {
    move |tape, store, batch, ctx| {
        let emb = tape.param(store, store.id("emb").unwrap())?;
        let w = tape.param(store, store.id("out.w").unwrap())?;
        let b = tape.param(store, store.id("out.b").unwrap())?;
        let x = tape.embedding(&emb, &batch.tgt_in)?;
        let x = tape.dropout(&x, dropout, ctx.seed)?;
        let logits = tape.linear(&x, &w, Some(&b))?;
        tape.cross_entropy(&logits, &batch.tgt_out, 0.0, Some(PAD_ID))
    }
}

/// Targets follow a fixed successor rule (t -> t+1 over the ids 4..VOCAB), so the next token is
/// learnable from the current one.
fn pairs(n: usize, seed: u64) -> Vec<TokenizedPair> {
    let mut rng = automoe::rng::seeded(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(2..7);
            let start = rng.random_range(4..VOCAB as u32);
            let tgt = (0..len).map(|i| 4 + (start - 4 + i) % (VOCAB as u32 - 4)).collect();
            TokenizedPair { src: vec![5, 6], tgt }
        })
        .collect()
}

fn batches(n_batches: usize, per_batch: usize) -> Vec<Batch> {
    let p = pairs(n_batches * per_batch, 7);
    (0..n_batches).map(|i| Batch::from_pairs(&p, &(i * per_batch..(i + 1) * per_batch).collect::<Vec<_>>()).unwrap()).collect()
}

fn config(max_updates: u64) -> TrainConfig {
    TrainConfig {
        max_updates,
        accumulate: 2,
        clip_norm: 1.0,
        schedule: LrSchedule::WarmupCosine { lr: 0.05, warmup: 3, total: 12, min_lr: 0.005 },
        log_every: 2,
        seed: 11,
        quiet: true,
        ..TrainConfig::default()
    }
}

fn param_bytes(s: &ParamStore) -> Vec<(String, Vec<u32>)> {
    s.iter().map(|(_, p)| (p.name.clone(), p.value.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect())).collect()
}

#[test]
fn loss_decreases() {
    let data = batches(6, 4);
    let cfg = TrainConfig { max_updates: 60, schedule: LrSchedule::Constant { lr: 0.05 }, ..config(60) };
    let mut t = Trainer::new(cfg, model(1, DType::F32)).unwrap();
    let report = t.train(&data, loss_fn(0.0)).unwrap();
    assert_eq!(report.updates.len(), 60);
    let first: f64 = report.updates[..5].iter().map(|r| r.loss).sum::<f64>() / 5.0;
    let last: f64 = report.updates[55..].iter().map(|r| r.loss).sum::<f64>() / 5.0;
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
    assert!(report.updates.iter().all(|r| r.tokens > 0 && r.grad_norm.is_finite()));
}

#[test]
fn resuming_mid_run_is_bit_identical() {
    // 5 batches with 2 per update: epochs end in the middle of updates.
    let data = batches(5, 3);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let log = dir.path().join("train.jsonl");

    let mut straight = Trainer::new(config(12), model(1, DType::F32)).unwrap();
    let full = straight.train(&data, loss_fn(0.2)).unwrap();
    // Each update reports the epoch of its last micro-batch (batch 2k - 1, counted from 0), also
    // when that batch is an epoch's last (updates 5 and 10).
    let base = full.updates[0].epoch;
    for r in &full.updates {
        assert_eq!(r.epoch - base, (2 * r.update - 1) / 5, "update {}", r.update);
    }

    let first_half = TrainConfig { checkpoint_dir: Some(ck.clone()), log_path: Some(log.clone()), ..config(6) };
    let mut a = Trainer::new(first_half, model(1, DType::F32)).unwrap();
    let r1 = a.train(&data, loss_fn(0.2)).unwrap();
    assert_eq!(r1.last_checkpoint, Some((ck.clone(), 6)));
    assert_eq!(read_checkpoint_meta(&ck).unwrap().epoch_pos, 2, "12 batches of 5 consumed: epoch 2, position 2");
    drop(a);

    // A crash after checkpoint 6 would have left lines about later updates; the resumed run logs
    // those updates again, so the stale lines are dropped rather than duplicated.
    let mut with_stale = fs::read_to_string(&log).unwrap();
    with_stale.push_str("{\"update\":8,\"stale\":true}\n");
    fs::write(&log, with_stale).unwrap();

    // A differently initialised store: every value must come from the checkpoint.
    let second_half = TrainConfig { checkpoint_dir: Some(ck.clone()), log_path: Some(log.clone()), ..config(12) };
    // The same schedule: nothing to say. A cosine stretched to more updates: the jump is named.
    let LrSchedule::WarmupCosine { lr, warmup, min_lr, .. } = config(12).schedule else { panic!("config() is a cosine") };
    let longer = LrSchedule::WarmupCosine { lr, warmup, total: 24, min_lr };
    let stretched = TrainConfig { schedule: longer, ..config(24) };
    let note = Trainer::resume(stretched, model(99, DType::F32), &ck).unwrap().schedule_change().expect("the schedule changed");
    let rate = |s: LrSchedule| format!("{:.3e}", s.lr(7));
    assert!(note.contains("update 7") && note.contains(&rate(config(6).schedule)) && note.contains(&rate(longer)), "{note}");
    assert_ne!(rate(config(6).schedule), rate(longer));
    let mut b = Trainer::resume(second_half, model(99, DType::F32), &ck).unwrap();
    assert_eq!(b.schedule_change(), None);
    assert_eq!(b.update(), 6);
    let r2 = b.train(&data, loss_fn(0.2)).unwrap();

    let resumed: Vec<_> = r1.updates.iter().chain(&r2.updates).map(|r| (r.update, r.loss.to_bits(), r.grad_norm.to_bits())).collect();
    let straight_: Vec<_> = full.updates.iter().map(|r| (r.update, r.loss.to_bits(), r.grad_norm.to_bits())).collect();
    assert_eq!(resumed, straight_);
    assert_eq!(param_bytes(b.store()), param_bytes(straight.store()));
    for (id, _) in straight.store().iter() {
        let (x, y) = (straight.adam().state(id).unwrap(), b.adam().state(id).unwrap());
        assert_eq!(x.steps, y.steps);
        assert_eq!(x.m.to_vec::<f32>().unwrap(), y.m.to_vec::<f32>().unwrap());
        assert_eq!(x.v.to_vec::<f32>().unwrap(), y.v.to_vec::<f32>().unwrap());
    }

    // The log continued across the resume: one line every 2 updates.
    let lines: Vec<LogLine> = fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l.update).collect::<Vec<_>>(), vec![2, 4, 6, 8, 10, 12]);
    assert!(lines.iter().all(|l| l.tokens > 0 && l.loss.is_finite() && l.lr > 0.0));
}

#[test]
fn a_nan_loss_stops_at_its_update_and_the_last_checkpoint_loads() {
    let data = batches(4, 3);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let cfg = TrainConfig { checkpoint_dir: Some(ck.clone()), checkpoint_every: 2, ..config(10) };
    let mut t = Trainer::new(cfg, model(1, DType::F32)).unwrap();
    let mut inner = loss_fn(0.0);
    let err = t
        .train(&data, |tape: &mut Tape, store: &ParamStore, batch: &Batch, ctx: UpdateCtx| {
            let (loss, stats) = inner(tape, store, batch, ctx)?;
            if ctx.update == 5 && ctx.micro == 1 {
                return Ok((tape.scale(&loss, f64::NAN)?, stats));
            }
            Ok((loss, stats))
        })
        .unwrap_err();
    assert!(matches!(err, Error::TrainingDiverged { update: 5, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("update 5") && msg.contains("update 4") && msg.contains("micro-batch 1"), "{msg}");
    assert_eq!(t.update(), 4);

    let mut fresh = model(3, DType::F32);
    let (meta, adam) = load_checkpoint(&ck, &mut fresh).unwrap();
    assert_eq!(meta.update, 4);
    assert_eq!(param_bytes(&fresh), param_bytes(t.store()), "the failed update changed nothing");
    assert_eq!(adam.state(fresh.id("emb").unwrap()).unwrap().steps, 4);
}

#[test]
fn damaged_checkpoints_give_errors_naming_the_file_and_parameter() {
    let data = batches(2, 2);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let mut t = Trainer::new(TrainConfig { checkpoint_dir: Some(ck.clone()), ..config(2) }, model(1, DType::F32)).unwrap();
    t.train(&data, loss_fn(0.0)).unwrap();
    let resume_err = |path: &Path| Trainer::resume(config(4), model(1, DType::F32), path).err().unwrap().to_string();

    let copy = |name: &str| {
        let d = dir.path().join(name);
        fs::create_dir(&d).unwrap();
        for f in ["weights.safetensors", "optimizer.safetensors", "meta.json"] {
            fs::copy(ck.join(f), d.join(f)).unwrap();
        }
        d
    };

    let missing = copy("missing");
    fs::remove_file(missing.join("optimizer.safetensors")).unwrap();
    let e = resume_err(&missing);
    assert!(e.contains("optimizer.safetensors") && e.contains("missing"), "{e}");

    let truncated = copy("truncated");
    let w = fs::read(truncated.join("weights.safetensors")).unwrap();
    fs::write(truncated.join("weights.safetensors"), &w[..w.len() - 5]).unwrap();
    let e = resume_err(&truncated);
    assert!(e.contains("weights.safetensors") && e.contains("not a valid safetensors"), "{e}");

    let bad_meta = copy("bad_meta");
    fs::write(bad_meta.join("meta.json"), "{\"update\": ").unwrap();
    let e = resume_err(&bad_meta);
    assert!(e.contains("meta.json"), "{e}");

    // A data position past the end of the epoch (an edited file) is refused, not indexed.
    let past_end = copy("past_end");
    let mut meta: serde_json::Value = serde_json::from_slice(&fs::read(past_end.join("meta.json")).unwrap()).unwrap();
    meta["epoch_pos"] = serde_json::json!(999);
    fs::write(past_end.join("meta.json"), meta.to_string()).unwrap();
    let e = resume_err(&past_end);
    assert!(e.contains("meta.json") && e.contains("epoch_pos 999"), "{e}");

    let e = resume_err(&dir.path().join("nowhere"));
    assert!(e.contains("meta.json") && e.contains("missing"), "{e}");

    // A model with an extra parameter, and one with a reshaped parameter.
    let mut bigger = model(1, DType::F32);
    bigger.add("extra.w", Tensor::zeros(&[2], DType::F32)).unwrap();
    let e = Trainer::resume(config(4), bigger, &ck).err().unwrap().to_string();
    assert!(e.contains("`extra.w`") && e.contains("weights.safetensors"), "{e}");
    let mut reshaped = ParamStore::new();
    reshaped.add("emb", Tensor::zeros(&[VOCAB, DIM + 1], DType::F32)).unwrap();
    reshaped.add("out.w", Tensor::zeros(&[VOCAB, DIM], DType::F32)).unwrap();
    reshaped.add("out.b", Tensor::zeros(&[VOCAB], DType::F32)).unwrap();
    let e = Trainer::resume(config(4), reshaped, &ck).err().unwrap().to_string();
    assert!(e.contains("`emb`") && e.contains("shape"), "{e}");

    // Resuming with another seed or other data is refused, since the data order would differ.
    let e = Trainer::resume(TrainConfig { seed: 12, ..config(4) }, model(1, DType::F32), &ck).err().unwrap().to_string();
    assert!(e.contains("seed"), "{e}");
    let mut t = Trainer::resume(config(4), model(1, DType::F32), &ck).unwrap();
    let e = t.train(&batches(3, 2), loss_fn(0.0)).unwrap_err().to_string();
    assert!(e.contains("2 batches"), "{e}");
}

#[test]
fn accumulating_two_micro_batches_equals_one_update_on_their_union() {
    let p = pairs(6, 5);
    let a = Batch::from_pairs(&p, &[0, 1, 2]).unwrap();
    let b = Batch::from_pairs(&p, &[3, 4, 5]).unwrap();
    let both = Batch::from_pairs(&p, &[0, 1, 2, 3, 4, 5]).unwrap();
    assert_ne!(a.n_tokens, b.n_tokens, "unequal token counts make the weighting matter");
    let cfg = TrainConfig { max_updates: 1, clip_norm: 0.0, schedule: LrSchedule::Constant { lr: 1e-3 }, ..config(1) };
    let mut split = Trainer::new(TrainConfig { accumulate: 2, ..cfg.clone() }, model(1, DType::F64)).unwrap();
    let rs = split.train(&[a, b], loss_fn(0.0)).unwrap();
    let mut whole = Trainer::new(TrainConfig { accumulate: 1, ..cfg }, model(1, DType::F64)).unwrap();
    let rw = whole.train(&[both], loss_fn(0.0)).unwrap();
    assert!((rs.updates[0].loss - rw.updates[0].loss).abs() < 1e-12);
    assert_eq!(rs.updates[0].tokens, rw.updates[0].tokens);
    let max_diff = |x: &Tensor, y: &Tensor| {
        let (x, y) = (x.to_f64_vec().unwrap(), y.to_f64_vec().unwrap());
        // NaN counts as infinite (`f64::max` would skip it).
        x.iter().zip(&y).map(|(x, y)| if x.is_nan() || y.is_nan() { f64::INFINITY } else { (x - y).abs() }).fold(0.0, f64::max)
    };
    for ((_, ps), (_, pw)) in split.store().iter().zip(whole.store().iter()) {
        // The trainer leaves the last update's gradients in the store.
        let diff = max_diff(ps.grad.as_ref().unwrap(), pw.grad.as_ref().unwrap());
        assert!(diff < 1e-6, "gradient of {}: max difference {diff}", ps.name);
        let diff = max_diff(&ps.value, &pw.value);
        assert!(diff < 1e-6, "value of {}: max difference {diff}", ps.name);
    }
}

#[test]
fn validation_runs_on_schedule_and_is_logged() {
    let data = batches(3, 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/train.jsonl");
    let cfg = TrainConfig { valid_every: 3, log_path: Some(log.clone()), ..config(7) };
    let mut t = Trainer::new(cfg, model(1, DType::F32)).unwrap();
    let report = t
        .train_with_validation(&data, loss_fn(0.0), |store: &ParamStore, update: u64| {
            Ok([("loss".to_string(), update as f64), ("params".to_string(), store.numel() as f64)].into())
        })
        .unwrap();
    assert_eq!(report.valid.iter().map(|(u, m)| (*u, m["loss"])).collect::<Vec<_>>(), vec![(3, 3.0), (6, 6.0)]);
    let text = fs::read_to_string(&log).unwrap();
    let valid: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|v| v.get("valid").is_some()).collect();
    assert_eq!(valid.len(), 2);
    assert_eq!(valid[1]["valid"]["params"], serde_json::json!(store_numel()));
}

fn store_numel() -> f64 {
    model(0, DType::F32).numel() as f64
}

/// Weight averaging: the averaged store is the mean of the weights after exactly the schedule's
/// points (checked against stores captured by stepping a second trainer by hand), survives a
/// resume across the points, and a resume that passed points without snapshots is refused.
#[test]
fn averaged_weights_are_the_mean_of_the_schedules_points_across_a_resume() {
    let data = batches(5, 3);
    let dir = tempfile::tempdir().unwrap();
    let averaging = Some(WeightAveraging { snapshots: 3, every: 2 });
    let cfg = |max, sub: &str| TrainConfig {
        averaging,
        snapshot_dir: Some(dir.path().join(sub).join("snapshots")),
        checkpoint_dir: Some(dir.path().join(sub).join("ck")),
        ..config(max)
    };

    // Reference: step by hand and average the stores after updates 6, 8 and 10 in f64.
    let mut manual = Trainer::new(config(10), model(1, DType::F32)).unwrap();
    let mut loss = loss_fn(0.2);
    let mut sums: Vec<Vec<f64>> = manual.store().iter().map(|(_, p)| vec![0.0; p.value.numel()]).collect();
    for k in 1..=10 {
        manual.step(&data, &mut loss).unwrap();
        if [6, 8, 10].contains(&k) {
            for (sum, (_, p)) in sums.iter_mut().zip(manual.store().iter()) {
                for (s, v) in sum.iter_mut().zip(p.value.to_f64_vec().unwrap()) {
                    *s += v;
                }
            }
        }
    }
    let expected: Vec<Vec<f32>> = sums.iter().map(|s| s.iter().map(|x| (x / 3.0) as f32).collect()).collect();
    let values = |s: &ParamStore| s.iter().map(|(_, p)| p.value.to_vec::<f32>().unwrap()).collect::<Vec<_>>();

    // Straight through.
    let mut straight = Trainer::new(cfg(10, "a"), model(1, DType::F32)).unwrap();
    straight.train(&data, loss_fn(0.2)).unwrap();
    let files: Vec<String> = {
        let mut f: Vec<String> =
            fs::read_dir(dir.path().join("a/snapshots")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        f.sort();
        f
    };
    assert_eq!(files, ["update-00000006.safetensors", "update-00000008.safetensors", "update-00000010.safetensors"]);
    let averaged = straight.averaged_store().unwrap().unwrap();
    assert_eq!(values(&averaged), expected);
    assert_eq!(param_bytes(straight.store()), param_bytes(manual.store()), "averaging leaves the trained weights alone");

    // Interrupted in update 8 (one point passed, checkpoint at 7), resumed with a fresh initialisation.
    let mut first = Trainer::new(TrainConfig { checkpoint_every: 1, ..cfg(10, "b") }, model(1, DType::F32)).unwrap();
    let mut inner = loss_fn(0.2);
    let interrupted = first.train(&data, |tape: &mut Tape, store: &ParamStore, batch: &Batch, ctx: UpdateCtx| {
        if ctx.update == 8 {
            return Err(Error::invalid("test", "interrupted"));
        }
        inner(tape, store, batch, ctx)
    });
    assert!(interrupted.is_err());
    let err = first.averaged_store().unwrap_err().to_string();
    assert!(err.contains("update 7 of 10"), "{err}");
    let mut second = Trainer::resume(cfg(10, "b"), model(5, DType::F32), &dir.path().join("b/ck")).unwrap();
    second.train(&data, loss_fn(0.2)).unwrap();
    assert_eq!(values(&second.averaged_store().unwrap().unwrap()), expected);

    // A run that passed update 6 without averaging cannot average it later.
    let plain = TrainConfig { checkpoint_dir: Some(dir.path().join("c/ck")), ..config(7) };
    Trainer::new(plain, model(1, DType::F32)).unwrap().train(&data, loss_fn(0.2)).unwrap();
    let mut late = Trainer::resume(cfg(10, "c"), model(1, DType::F32), &dir.path().join("c/ck")).unwrap();
    let err = late.train(&data, loss_fn(0.2)).unwrap_err().to_string();
    assert!(err.contains("update-00000006.safetensors") && err.contains("missing"), "{err}");
    assert_eq!(late.update(), 7, "nothing was trained");

    // Averaging without a snapshot directory, or with points before the run's start, is refused.
    assert!(Trainer::new(TrainConfig { averaging, ..config(10) }, model(1, DType::F32)).is_err());
    let err = TrainConfig { averaging: Some(WeightAveraging { snapshots: 6, every: 2 }), ..config(10) }.check().unwrap_err();
    assert!(err.to_string().contains("6 snapshots 2 updates apart"), "{err}");
}
