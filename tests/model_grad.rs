//! Gradients of the full model: finite differences in f64 on a tiny supernet, and weight sharing
//! (a subnet's gradient lands only in the slices it used).

mod common;

use std::collections::HashMap;

use automoe::autograd::{ParamId, Tape};
use automoe::model::{Batch, ModelOptions, RunMode, SubnetConfig, Supernet};
use automoe::rng::seeded;
use automoe::DType;
use common::{batch, dense_config, moe_config, tiny_space, PAD, VOCAB};
use rand::Rng;

fn targets(b: &Batch, seed: u64) -> Vec<u32> {
    let mut rng = seeded(seed);
    b.tgt_pad.iter().map(|&p| if p { PAD } else { rng.random_range(2..VOCAB as u32) }).collect()
}

/// Label-smoothed CE (+ balance loss) of one training pass (dropout on, fixed seed).
fn loss(net: &Supernet, cfg: &SubnetConfig, b: &Batch, tgt: &[u32], tape: &mut Tape) -> automoe::autograd::Var {
    let out = net.forward(tape, cfg, b, RunMode::train(77)).unwrap();
    let (l, _) = tape.cross_entropy(&out.logits, tgt, 0.1, Some(PAD)).unwrap();
    match out.balance_loss {
        Some(bl) => tape.add(&l, &bl).unwrap(),
        None => l,
    }
}

/// The front-slice sizes a subnet uses of each parameter.
fn used_slices(net: &Supernet, cfg: &SubnetConfig) -> HashMap<ParamId, Vec<usize>> {
    let mut used = HashMap::new();
    net.params
        .map(cfg, VOCAB, |id, sizes| {
            used.insert(id, sizes.to_vec());
            Ok(id)
        })
        .unwrap();
    used
}

fn gradcheck(cfg: &SubnetConfig, balance_coef: f64) {
    let opts = ModelOptions { balance_coef, ..Default::default() };
    let mut net = Supernet::new(tiny_space(), VOCAB, opts, 21, DType::F64).unwrap();
    let b = batch(&[5, 3], &[4, 3], 9);
    let tgt = targets(&b, 10);
    let mut tape = Tape::new();
    let l = loss(&net, cfg, &b, &tgt, &mut tape);
    let grads: HashMap<ParamId, Vec<f64>> =
        tape.backward(&l).unwrap().param_grads().unwrap().into_iter().map(|(id, g)| (id, g.to_f64_vec().unwrap())).collect();
    let used = used_slices(&net, cfg);
    let names = [
        "embed.weight",
        "encoder.layers.0.self_attn.q_proj.weight",
        "encoder.layers.1.self_attn.v_proj.bias",
        "encoder.layers.0.moe.experts.0.fc1.weight",
        "encoder.layers.0.moe.router.weight",
        "encoder.layers.0.final_layer_norm.weight",
        "decoder.layers.0.encoder_attn.k_proj.weight",
        "decoder.layers.0.self_attn.out_proj.bias",
        "decoder.layers.0.moe.experts.1.fc2.weight",
        "decoder.layers.0.self_attn_layer_norm.bias",
    ];
    let h = 1e-5;
    let mut rng = seeded(5);
    let mut checked = 0;
    for name in names {
        let id = net.store.id(name).unwrap();
        let Some(sizes) = used.get(&id).cloned() else { continue };
        if sizes.contains(&0) {
            continue; // a dense layer's (empty) router
        }
        let full = net.store.value(id).shape().to_vec();
        for _ in 0..3 {
            // A random element inside the used slice, as a flat index into the full tensor.
            let coord: Vec<usize> = sizes.iter().map(|&s| rng.random_range(0..s)).collect();
            let flat = coord.iter().zip(&full).fold(0, |acc, (&c, &n)| acc * n + c);
            let mut eval = |delta: f64| -> f64 {
                net.store.get_mut(id).value.data_mut::<f64>().unwrap()[flat] += delta;
                let mut t = Tape::inference();
                let v = loss(&net, cfg, &b, &tgt, &mut t).value().to_scalar().unwrap();
                net.store.get_mut(id).value.data_mut::<f64>().unwrap()[flat] -= delta;
                v
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let analytic = grads.get(&id).map_or(0.0, |g| g[flat]);
            let err = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-3);
            assert!(err < 1e-6, "{name}{coord:?}: analytic {analytic} numeric {numeric} (rel err {err})");
            checked += 1;
        }
    }
    assert!(checked >= 24, "only {checked} elements checked");
}

#[test]
fn finite_differences_dense() {
    gradcheck(&dense_config(), 0.0);
}

#[test]
fn finite_differences_moe_with_balance_loss() {
    gradcheck(&moe_config(), 0.01);
}

#[test]
fn finite_differences_pre_norm() {
    let mut net_cfg = moe_config();
    net_cfg.decoder.truncate(1);
    // Pre-norm exercises the final LNs over every encoder output a span reads.
    let opts = ModelOptions { pre_norm: true, ..Default::default() };
    let mut net = Supernet::new(tiny_space(), VOCAB, opts, 2, DType::F64).unwrap();
    let b = batch(&[4], &[3], 1);
    let tgt = targets(&b, 2);
    let mut tape = Tape::new();
    let l = loss(&net, &net_cfg, &b, &tgt, &mut tape);
    let grads = tape.backward(&l).unwrap().param_grads().unwrap();
    let id = net.store.id("encoder.layer_norm.weight").unwrap();
    let g = grads.iter().find(|(p, _)| *p == id).unwrap().1.to_f64_vec().unwrap();
    for (e, &ge) in g.iter().enumerate().take(4) {
        let h = 1e-5;
        let mut eval = |delta: f64| {
            net.store.get_mut(id).value.data_mut::<f64>().unwrap()[e] += delta;
            let v = loss(&net, &net_cfg, &b, &tgt, &mut Tape::inference()).value().to_scalar().unwrap();
            net.store.get_mut(id).value.data_mut::<f64>().unwrap()[e] -= delta;
            v
        };
        let numeric = (eval(h) - eval(-h)) / (2.0 * h);
        assert!((ge - numeric).abs() <= 1e-6 * ge.abs().max(1e-3), "element {e}: {ge} vs {numeric}");
    }
}

#[test]
fn gradients_land_only_in_used_slices() {
    let net0 = Supernet::new(tiny_space(), VOCAB, ModelOptions::default(), 4, DType::F32).unwrap();
    let mut rng = seeded(12);
    let mut cfgs = vec![dense_config(), moe_config()];
    cfgs.extend((0..3).map(|_| net0.space.sample(&mut rng).unwrap()));
    for (i, cfg) in cfgs.iter().enumerate() {
        let mut net = Supernet::new(tiny_space(), VOCAB, ModelOptions { balance_coef: 0.01, ..Default::default() }, 4, DType::F32).unwrap();
        let b = batch(&[6, 4], &[5, 3], 30 + i as u64);
        let tgt = targets(&b, 31);
        let mut tape = Tape::new();
        let l = loss(&net, cfg, &b, &tgt, &mut tape);
        let grads = tape.backward(&l).unwrap();
        net.store.accumulate(&grads).unwrap();
        let used = used_slices(&net, cfg);
        for (id, p) in net.store.iter() {
            let Some(g) = &p.grad else {
                // Untouched: a parameter the subnet does not use (or an empty slice of it), or an
                // expert no token was routed to in this batch.
                let unused = used.get(&id).is_none_or(|s| s.contains(&0));
                assert!(unused || p.name.contains("experts"), "cfg {i}: {} has no gradient", p.name);
                continue;
            };
            let sizes = used.get(&id).unwrap_or_else(|| panic!("cfg {i}: {} is unused but got a gradient", p.name));
            let full = p.value.shape().to_vec();
            let v = g.to_f64_vec().unwrap();
            let mut inside_nonzero = false;
            for (flat, &x) in v.iter().enumerate() {
                let mut rest = flat;
                let mut inside = true;
                for d in (0..full.len()).rev() {
                    inside &= rest % full[d] < sizes[d];
                    rest /= full[d];
                }
                if inside {
                    inside_nonzero |= x != 0.0;
                } else {
                    assert_eq!(x, 0.0, "cfg {i}: {} has gradient outside its slice {sizes:?}", p.name);
                }
            }
            // An expert that received no token in this batch legitimately gets no gradient.
            assert!(inside_nonzero || p.name.contains("experts") || sizes.contains(&0), "cfg {i}: {} used but zero gradient", p.name);
        }
    }
}

/// Weight-sharing training in miniature: one sampled subnet per update (seeded by the update
/// number), Adam; the largest and the smallest subnet both get better on the training batch.
#[test]
fn supernet_training_lowers_the_loss_of_its_subnets() {
    use automoe::train::{Adam, AdamConfig};
    let opts = ModelOptions { dropout: 0.0, attention_dropout: 0.0, ..Default::default() };
    let mut net = Supernet::new(tiny_space(), VOCAB, opts, 6, DType::F32).unwrap();
    let b = batch(&[6, 5, 6, 4], &[5, 5, 3, 4], 50);
    let tgt = targets(&b, 51);
    let eval = |net: &Supernet, cfg: &SubnetConfig| loss(net, cfg, &b, &tgt, &mut Tape::inference()).value().to_scalar().unwrap();
    let largest = net.space.largest();
    let smallest = dense_config();
    let before = (eval(&net, &largest), eval(&net, &smallest));
    let mut adam = Adam::new(AdamConfig::default());
    for step in 0..60u64 {
        let cfg = net.space.sample(&mut seeded(step)).unwrap();
        net.store.zero_grads();
        let mut tape = Tape::new();
        let l = loss(&net, &cfg, &b, &tgt, &mut tape);
        let grads = tape.backward(&l).unwrap();
        net.store.accumulate(&grads).unwrap();
        adam.step(&mut net.store, 3e-3).unwrap();
    }
    let after = (eval(&net, &largest), eval(&net, &smallest));
    println!("before {before:?} after {after:?}");
    assert!(after.0 < before.0 - 0.5 && after.1 < before.1 - 0.5, "before {before:?} after {after:?}");
}
