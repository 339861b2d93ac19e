//! The whole supernet (with MoE layers) forward and backward on every CUDA backend present, against
//! the CPU: the loss and every parameter gradient, in f32 (inference mode: no dropout).

mod common;

use automoe::autograd::Tape;
use automoe::model::{ModelOptions, RunMode, Supernet};
use automoe::{DType, Device};
use common::{batch, cuda_backends, moe_config, tiny_space, PAD, VOCAB};

/// max |a - b| / max(max |b|, 1e-2): the floor skips gradients that are zero up to rounding (the
/// key projections' biases, to which softmax attention is invariant).
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-2f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| if x.is_nan() || y.is_nan() { f64::INFINITY } else { m.max((x - y).abs()) }) / scale
}

/// Each parameter's name and gradient (None: unused).
type Grads = Vec<(String, Option<Vec<f64>>)>;

/// Loss and parameter gradients of one pass on `device`.
fn pass(device: Device) -> (f64, Grads) {
    let opts = ModelOptions { balance_coef: 0.01, ..Default::default() };
    let mut net = Supernet::new(tiny_space(), VOCAB, opts, 21, DType::F32).unwrap();
    for (_, p) in net.store.iter_mut() {
        p.value = p.value.to_device(device).unwrap();
    }
    let cfg = moe_config();
    let b = batch(&[5, 3], &[4, 3], 9);
    let tgt: Vec<u32> = b.tgt_pad.iter().enumerate().map(|(i, &p)| if p { PAD } else { 2 + (i as u32 * 7) % (VOCAB as u32 - 2) }).collect();
    let mut tape = Tape::new();
    let out = net.forward(&mut tape, &cfg, &b, RunMode::inference()).unwrap();
    assert_eq!(out.logits.value().device(), device);
    let (l, _) = tape.cross_entropy(&out.logits, &tgt, 0.1, Some(PAD)).unwrap();
    let l = match out.balance_loss {
        Some(bl) => tape.add(&l, &bl).unwrap(),
        None => l,
    };
    let grads = tape.backward(&l).unwrap();
    net.store.accumulate(&grads).unwrap();
    let gs = net.store.iter().map(|(_, p)| (p.name.clone(), p.grad.as_ref().map(|g| g.to_f64_vec().unwrap()))).collect();
    (l.value().to_scalar().unwrap(), gs)
}

#[test]
fn moe_supernet_matches_the_cpu() {
    let (want_l, want_g) = pass(Device::Cpu);
    for device in cuda_backends() {
        let (l, g) = pass(device);
        assert!((l - want_l).abs() <= 1e-5 * want_l.abs().max(1.0), "{device}: loss {l} vs {want_l}");
        assert_eq!(g.len(), want_g.len());
        for ((name, g), (_, w)) in g.iter().zip(&want_g) {
            match (g, w) {
                (Some(g), Some(w)) => {
                    let e = rel_err(g, w);
                    assert!(e < 2e-5, "{device}: gradient of {name} error {e:.2e}");
                }
                (None, None) => {}
                _ => panic!("{device}: parameter {name} has a gradient on one side only"),
            }
        }
    }
}
