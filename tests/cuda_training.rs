//! Supernet training on the CUDA backends against the CPU: the same updates (sampled subnets,
//! dropout, balance loss, clipping, Adam) on the emulator (and on cuda:0 when present) give the
//! same losses, gradient norms and weights as on the CPU, within f32 tolerance; mixed precision
//! (bf16 activations over f32 master weights) stays within bf16 tolerance of them; and a trained
//! model translates the same on every backend.

mod common;

use common::cuda_backends;

use automoe::autograd::{ParamStore, Tape};
use automoe::data::Batch;
use automoe::model::{ModelOptions, RunMode, SearchSpace};
use automoe::train::mt::data::{prepare, DataConfig, DataSource, MtData};
use automoe::train::mt::{self, Mode, RunDescription};
use automoe::train::{LrSchedule, TrainConfig, Trainer, UpdateCtx, UpdateRecord};
use automoe::Device;

const TINY_SPACE: &str = r#"
name = "tiny"
encoder_embed_dim = [32, 16]
decoder_embed_dim = [32, 16]
qkv_dim = 32
encoder_layers = [2, 1]
decoder_layers = [1, 2]
encoder_heads = [2, 1]
decoder_self_heads = [2, 1]
decoder_cross_heads = [2, 1]
cross_attention_span = [-1, 1]
ffn_widths = [64, 32]
max_experts = 3
route_k = [1, 2]
"#;

fn data() -> (DataConfig, MtData) {
    let mut cfg = DataConfig::new(DataSource::Synthetic { seed: 3, n_train: 300, n_valid: 20 });
    cfg.vocab_size = 120;
    cfg.max_tokens = 96;
    let d = prepare(&cfg, None, 5).unwrap();
    (cfg, d)
}

/// `updates` supernet updates on `device`; the update records and the final weights (on the host).
fn train(device: Device, mixed: bool, updates: u64, data_cfg: &DataConfig, data: &MtData) -> (Vec<UpdateRecord>, ParamStore) {
    let space = SearchSpace::from_toml_str(TINY_SPACE).unwrap();
    let desc = RunDescription {
        mode: Mode::Supernet { space },
        options: ModelOptions { dropout: 0.1, attention_dropout: 0.1, balance_coef: 0.01, ..ModelOptions::default() },
        vocab: data.tokenizer.vocab_size(),
        label_smoothing: 0.1,
        data: data_cfg.clone(),
    };
    let net = mt::build_net(&desc, 7).unwrap();
    let cfg = TrainConfig {
        max_updates: updates,
        accumulate: 2,
        clip_norm: 1.0,
        schedule: LrSchedule::Constant { lr: 3e-3 },
        seed: 7,
        quiet: true,
        device,
        mixed_precision: mixed,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(cfg, net.store).unwrap();
    let mut loss_fn = |tape: &mut Tape, store: &ParamStore, batch: &Batch, ctx: UpdateCtx| {
        let Mode::Supernet { space } = &desc.mode else { unreachable!() };
        let sub = mt::sampled_subnet(space, 7, ctx.update)?;
        mt::batch_loss(tape, store, &net.params, &desc, &sub, batch, RunMode::train(ctx.seed))
    };
    let records = (0..updates).map(|_| trainer.step(&data.train, &mut loss_fn).unwrap()).collect();
    let store = trainer.into_store().to_device(Device::Cpu).unwrap();
    (records, store)
}

/// The largest per-parameter `max |a - b| / max |b|`, with the parameter's name.
fn max_rel(a: &ParamStore, b: &ParamStore) -> (f64, String) {
    let mut worst = (0.0f64, String::new());
    for ((_, p), (_, q)) in a.iter().zip(b.iter()) {
        // A key projection's bias adds the same amount to every score of a query, which softmax
        // ignores: its true gradient is zero, and Adam turns the rounding noise left in its place
        // into full-size steps whose signs differ between backends.
        if p.name.ends_with("k_proj.bias") {
            continue;
        }
        let (x, y) = (p.value.to_f64_vec().unwrap(), q.value.to_f64_vec().unwrap());
        let scale = y.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        // NaN counts as infinite (`f64::max` would skip it).
        let e =
            x.iter().zip(&y).fold(0.0f64, |m, (u, v)| if u.is_nan() || v.is_nan() { f64::INFINITY } else { m.max((u - v).abs()) }) / scale;
        if e > worst.0 || (e.is_infinite() && worst.0.is_finite()) {
            worst = (e, p.name.clone());
        }
    }
    worst
}

#[test]
fn supernet_updates_match_the_cpu() {
    let (cfg, d) = data();
    let updates = 4;
    let (want, want_store) = train(Device::Cpu, false, updates, &cfg, &d);
    for device in cuda_backends() {
        let (got, store) = train(device, false, updates, &cfg, &d);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.tokens, w.tokens);
            let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-9);
            assert!(rel(g.loss, w.loss) < 1e-4, "{device} update {}: loss {} vs CPU {}", g.update, g.loss, w.loss);
            assert!(rel(g.grad_norm, w.grad_norm) < 1e-3, "{device} update {}: grad norm {} vs CPU {}", g.update, g.grad_norm, w.grad_norm);
        }
        let (e, name) = max_rel(&store, &want_store);
        assert!(e < 1e-3, "{device}: weights after {updates} updates differ from the CPU's by {e:.2e} (worst: {name})");
    }
}

#[test]
fn mixed_precision_stays_close_to_f32_and_keeps_f32_masters() {
    let (cfg, d) = data();
    let (want, _) = train(Device::Cpu, false, 2, &cfg, &d);
    let (got, store) = train(Device::Emu, true, 2, &cfg, &d);
    for (g, w) in got.iter().zip(&want) {
        assert!((g.loss - w.loss).abs() / w.loss < 3e-2, "update {}: bf16 loss {} vs f32 {}", g.update, g.loss, w.loss);
    }
    for (_, p) in store.iter() {
        assert_eq!(p.value.dtype(), automoe::DType::F32, "{} is not an f32 master weight", p.name);
    }
}

#[test]
fn mixed_precision_on_the_cpu_is_a_clear_error() {
    let cfg = TrainConfig { mixed_precision: true, ..TrainConfig::default() };
    let e = Trainer::new(cfg, ParamStore::new()).err().expect("must be refused").to_string();
    assert!(e.contains("CUDA"), "{e}");
}

/// Batched beam and greedy search (encoder, incremental decoder with KV caches, beam reordering)
/// on every CUDA backend give the CPU's translations, for a heterogeneous MoE subnet.
#[test]
fn translation_matches_the_cpu() {
    use automoe::decode::{translate_ids, SearchOptions};
    use automoe::model::Supernet;
    let space = SearchSpace::from_toml_str(TINY_SPACE).unwrap();
    let supernet = Supernet::new(space.clone(), 60, ModelOptions::default(), 11, automoe::DType::F32).unwrap();
    let mut cfg = space.largest();
    for l in &mut cfg.decoder {
        (l.experts, l.expert_widths) = (3, vec![64, 32, 64]);
    }
    let model = supernet.extract(&cfg).unwrap();
    // Sources of different lengths (padding in the batch), ending with eos (id 2).
    let sources: Vec<Vec<u32>> = vec![vec![7, 9, 11, 13, 2], vec![20, 21, 2], vec![30, 31, 32, 33, 34, 35, 2]];
    // Beams up to 32 select their candidates on the device (cuda/decode.cu); 40 (80 candidates a
    // row) reads the logits back and selects them on the host.
    for beam in [1, 3, 40] {
        let opts = SearchOptions { beam, max_len_a: 0.0, max_len_b: 6, ..SearchOptions::default() };
        let want: Vec<Vec<u32>> = translate_ids(&model.view().unwrap(), &sources, &opts).unwrap().into_iter().map(|h| h.tokens).collect();
        assert!(want.iter().map(Vec::len).sum::<usize>() >= 6, "the reference decodes too little to compare: {want:?}");
        for device in cuda_backends() {
            let on = supernet.extract(&cfg).unwrap().to_device(device).unwrap();
            let got: Vec<Vec<u32>> = translate_ids(&on.view().unwrap(), &sources, &opts).unwrap().into_iter().map(|h| h.tokens).collect();
            assert_eq!(got, want, "{device}, beam {beam}");
        }
    }
}

/// The encoder and the incremental decoder steps of an MoE subnet (MoE layers on both sides) queue
/// on a CUDA backend without a single device-to-host copy: the routing stays on the device, so a
/// step never waits for the GPU before its logits are read.
#[test]
fn moe_encoder_and_decoder_steps_never_wait_for_the_device() {
    use automoe::model::{SourceBatch, Supernet};
    let space = SearchSpace::from_toml_str(TINY_SPACE).unwrap();
    let supernet = Supernet::new(space.clone(), 60, ModelOptions::default(), 12, automoe::DType::F32).unwrap();
    let mut cfg = space.largest();
    for l in &mut cfg.encoder {
        (l.experts, l.expert_widths) = (2, vec![64, 32]);
    }
    for l in &mut cfg.decoder {
        (l.experts, l.expert_widths) = (3, vec![64, 32, 64]);
    }
    let src = SourceBatch::from_sentences(&[vec![7, 9, 11, 13, 2], vec![20, 21, 2]], 1).unwrap();
    for device in cuda_backends() {
        let model = supernet.extract(&cfg).unwrap().to_device(device).unwrap();
        let view = model.view().unwrap();
        let before = automoe::cuda::downloads_on_this_thread();
        let enc = view.encode(&src).unwrap();
        let mut state = view.start(&enc).unwrap();
        let mut logits = Vec::new();
        for tokens in [[0u32, 0], [5, 6], [7, 8]] {
            logits.push(view.step(&mut state, &tokens).unwrap());
        }
        assert_eq!(automoe::cuda::downloads_on_this_thread() - before, 0, "{device}: device-to-host copies while queueing");
        // The steps did run: the logits are finite.
        for l in &logits {
            assert!(l.to_f32_vec().unwrap().iter().all(|v| v.is_finite()), "{device}: logits");
        }
    }
}
