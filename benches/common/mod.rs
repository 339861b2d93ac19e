//! What the training benchmarks share: the run description of a model of the small space and the
//! timed loop of optimizer updates (`train_throughput` on the CPU, `cuda_train_translate` on a GPU).

use std::time::Instant;

use automoe::model::{ModelOptions, RunMode};
use automoe::train::mt::data::{DataConfig, MtData};
use automoe::train::mt::{self, Mode, RunDescription};
use automoe::train::{LrSchedule, TrainConfig, Trainer};

/// The two models both benchmarks train, with their table labels: the small space's supernet (a
/// uniformly sampled subnet per update) and its dense baseline subnet.
pub fn models(space: &automoe::model::SearchSpace) -> [(&'static str, Mode); 2] {
    [
        ("supernet (small space, sampled)", Mode::Supernet { space: space.clone() }),
        ("dense baseline (128, 3+3, 512)", Mode::Subnet { config: space.dense() }),
    ]
}

/// One timed run: the model's parameter count, the seconds of the timed updates and the real
/// target tokens they trained on.
pub struct Timed {
    pub params: usize,
    pub secs: f64,
    pub tokens: usize,
}

/// Builds `mode`'s model (dropout 0.1, label smoothing 0.1) and runs `warmup` untimed then `timed`
/// timed updates (clip 1.0, constant lr 5e-4) under `base` (its device and precision; the update
/// count, schedule, seed and quiet are set here).
pub fn time_updates(
    mode: &Mode,
    data: &MtData,
    data_cfg: &DataConfig,
    base: TrainConfig,
    warmup: u64,
    timed: u64,
) -> automoe::Result<Timed> {
    let desc = RunDescription {
        mode: mode.clone(),
        options: ModelOptions { dropout: 0.1, attention_dropout: 0.1, ..ModelOptions::default() },
        vocab: data.tokenizer.vocab_size(),
        label_smoothing: 0.1,
        data: data_cfg.clone(),
    };
    let net = mt::build_net(&desc, 1)?;
    let params = net.store.numel();
    let cfg = TrainConfig {
        max_updates: warmup + timed,
        clip_norm: 1.0,
        schedule: LrSchedule::Constant { lr: 5e-4 },
        seed: 1,
        quiet: true,
        ..base
    };
    let mut trainer = Trainer::new(cfg, net.store)?;
    let mut loss_fn = |tape: &mut automoe::autograd::Tape,
                       store: &automoe::autograd::ParamStore,
                       batch: &automoe::data::Batch,
                       ctx: automoe::train::UpdateCtx| {
        let sub = match &desc.mode {
            Mode::Supernet { space } => mt::sampled_subnet(space, 1, ctx.update)?,
            Mode::Subnet { config } => config.clone(),
        };
        mt::batch_loss(tape, store, &net.params, &desc, &sub, batch, RunMode::train(ctx.seed))
    };
    for _ in 0..warmup {
        trainer.step(&data.train, &mut loss_fn)?;
    }
    let t0 = Instant::now();
    let mut tokens = 0;
    for _ in 0..timed {
        tokens += trainer.step(&data.train, &mut loss_fn)?.tokens;
    }
    // step() reads the loss back every micro-batch, so a device is idle when the clock stops.
    Ok(Timed { params, secs: t0.elapsed().as_secs_f64(), tokens })
}
