//! The MoE layer end to end through the CUDA kernels (gating, dispatch, permute, grouped GEMMs,
//! bias sums, combine; forward and backward) against the CPU layer `automoe::moe::moe_forward` on
//! the same parameters and input: output, dx, and every parameter gradient (router included), on
//! the emulator always and on a CUDA device when one exists. In f32 (CUDA-core GEMMs, tolerance
//! 1e-5) and bf16 (tensor-core GEMMs, tolerance 1e-2; the CPU layer then runs on the same
//! bf16-rounded parameters and input, in f32).

use std::collections::BTreeMap;

use automoe::autograd::{ParamId, ParamStore, Tape};
use automoe::cuda::moe_exec::Exec;
use automoe::cuda::moe_layer::ExecMoeLayer;
use automoe::cuda::moe_ops::KernelFloat;
use automoe::moe::{moe_forward, MoeOptions, MoeParams, MoeSubnet};
use automoe::rng::seeded;
use automoe::{DType, Tensor};

const D_MAX: usize = 72;
const N_MAX: usize = 6;
const H_MAX: usize = 100;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, DType::F32, &mut seeded(seed))
}

/// A layer with random biases (so every bias read and bias gradient matters); `starve` gets a
/// router bias of -1e3, so it receives no token.
/// With `round_bf16`, every parameter is rounded to bf16 (kept as f32).
fn layer(seed: u64, starve: Option<usize>, round_bf16: bool) -> (ParamStore, MoeParams) {
    let mut store = ParamStore::new();
    let p = MoeParams::new(&mut store, "moe", D_MAX, N_MAX, H_MAX, &mut seeded(seed)).unwrap();
    let ids: Vec<_> = store.iter().map(|(id, _)| id).collect();
    for (i, id) in ids.into_iter().enumerate() {
        let v = store.value(id).clone();
        let noise = rand(v.shape(), seed * 1000 + i as u64).scale(0.3).unwrap();
        let v = v.add(&noise).unwrap();
        store.get_mut(id).value = if round_bf16 { v.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap() } else { v };
    }
    if let Some(e) = starve {
        let mut b = store.value(p.router_b).to_f32_vec().unwrap();
        b[e] = -1e3;
        store.get_mut(p.router_b).value = Tensor::from_vec(b, &[N_MAX]).unwrap();
    }
    (store, p)
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    if got.iter().any(|v| v.is_nan()) {
        return f64::INFINITY;
    }
    let s = want.iter().fold(1e-6f64, |m, v| m.max(v.abs() as f64));
    got.iter().zip(want).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max) / s
}

fn body<X: Exec, T: KernelFloat>(x: &X) {
    let bf = T::SUFFIX == "bf16";
    // (subnet, renormalize, tokens, starved expert): heterogeneous widths {3072..96}/32 with an
    // empty expert and k = 2; a segment longer than one 64-row tile; the dense 1-expert layer.
    let cases = [
        (MoeSubnet { d: 64, widths: vec![96, 64, 32, 16, 3], k: 2 }, true, 40, Some(1)),
        (MoeSubnet { d: 40, widths: vec![96, 17, 64], k: 1 }, false, 150, None),
        (MoeSubnet { d: 64, widths: vec![48], k: 1 }, false, 20, None),
    ];
    for (ci, (sub, renorm, t, starve)) in cases.into_iter().enumerate() {
        let (store, p) = layer(60 + ci as u64, starve, bf);
        let opts = MoeOptions { renormalize: renorm, ..Default::default() };
        let mut xin = rand(&[t, sub.d], 70 + ci as u64);
        if bf {
            xin = xin.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
        }
        let gy = rand(&[t, sub.d], 80 + ci as u64);

        let mut tape = Tape::new();
        let xv = tape.input(xin.clone());
        let out = moe_forward(&mut tape, &store, &p, &sub, &opts, &xv).unwrap();
        let g = tape.constant(gy.clone());
        let prod = tape.mul(&out.y, &g).unwrap();
        let loss = tape.sum(&prod).unwrap();
        let grads = tape.backward(&loss).unwrap();
        let pg: BTreeMap<ParamId, Vec<f32>> =
            grads.param_grads().unwrap().into_iter().map(|(id, t)| (id, t.to_f32_vec().unwrap())).collect();
        // A parameter the loss does not reach (a starved expert, the router of a dense layer) has
        // no CPU gradient: the CUDA layer's is zero.
        let cpu = |id: ParamId| pg.get(&id).cloned().unwrap_or_else(|| vec![0.0; store.value(id).shape().iter().product()]);

        let layer = ExecMoeLayer::<X, T>::new(x, &store, &p, &sub, &opts).unwrap();
        let saved = layer.forward(&xin.to_f32_vec().unwrap()).unwrap();
        let cg = layer.backward(&saved, &gy.to_f32_vec().unwrap()).unwrap();
        let ctx = format!("{} {} case {ci} ({:?}, k={}, T={t})", x.backend_name(), T::SUFFIX, sub.widths, sub.k);
        let tol = if bf { 1e-2 } else { 1e-5 };
        let check = |what: &str, got: &[f32], want: &[f32]| {
            let e = rel_err(got, want);
            eprintln!("{ctx}: {what}: {e:.1e}");
            assert!(e < tol, "{ctx}: {what}: relative error {e}");
        };
        check("y", &saved.y, &out.y.value().to_f32_vec().unwrap());
        check("dx", &cg.dx, &grads.wrt(&xv).unwrap().to_f32_vec().unwrap());
        check("router.weight", &cg.router_w, &cpu(p.router_w));
        check("router.bias", &cg.router_b, &cpu(p.router_b));
        for (e, ep) in p.experts[..sub.widths.len()].iter().enumerate() {
            check(&format!("expert {e} fc1.weight"), &cg.fc1_w[e], &cpu(ep.fc1_w));
            check(&format!("expert {e} fc1.bias"), &cg.fc1_b[e], &cpu(ep.fc1_b));
            check(&format!("expert {e} fc2.weight"), &cg.fc2_w[e], &cpu(ep.fc2_w));
            check(&format!("expert {e} fc2.bias"), &cg.fc2_b[e], &cpu(ep.fc2_b));
        }
        if let Some(e) = starve {
            assert!(cg.fc1_w[e].iter().all(|&v| v == 0.0), "{ctx}: the starved expert got a gradient");
        }
    }
}

fn unsupported_options_are_errors<X: Exec>(x: &X) {
    let (store, p) = layer(1, None, false);
    let sub = MoeSubnet { d: 8, widths: vec![8, 8], k: 1 };
    let capped = MoeOptions { capacity_factor: Some(1.0), ..Default::default() };
    assert!(ExecMoeLayer::<X>::new(x, &store, &p, &sub, &capped).is_err());
    let bad = MoeSubnet { d: 8, widths: vec![8, H_MAX + 1], k: 1 };
    assert!(ExecMoeLayer::<X>::new(x, &store, &p, &bad, &MoeOptions::default()).is_err());
    let l = ExecMoeLayer::<X>::new(x, &store, &p, &sub, &MoeOptions::default()).unwrap();
    assert!(l.forward(&[0.5; 7]).is_err(), "input not [T, d]");
    let s = l.forward(&[0.5; 16]).unwrap();
    assert!(l.backward(&s, &[0.5; 8]).is_err(), "dy of the wrong size");
}

#[test]
fn moe_layer_matches_cpu_on_emulator() {
    body::<_, f32>(&automoe::cuda::Emu::default());
}

#[test]
fn moe_layer_bf16_matches_cpu_on_emulator() {
    body::<_, half::bf16>(&automoe::cuda::Emu::default());
}

#[test]
fn moe_layer_matches_cpu_on_emulator_shuffled() {
    body::<_, f32>(&automoe::cuda::Emu { seed: 4242 });
}

#[test]
fn moe_layer_rejects_bad_input_on_emulator() {
    unsupported_options_are_errors(&automoe::cuda::Emu::default());
}

#[test]
fn moe_layer_matches_cpu_on_cuda_device() {
    match automoe::cuda::CudaExec::new(0) {
        Ok(x) => {
            body::<_, f32>(&x);
            body::<_, half::bf16>(&x);
            unsupported_options_are_errors(&x);
        }
        Err(e) => automoe::cuda::skip_unless_required("AUTOMOE_REQUIRE_CUDA", &format!("cuda: {e}")),
    }
}
