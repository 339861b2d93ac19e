//! Every tape op on every CUDA backend present (the emulator always, `cuda:0` when a device
//! exists) against the CPU: the forward value and the gradient of every input, for f32 and, with
//! looser tolerances, bf16 tensors (the CPU reference then runs on the same bf16-rounded inputs). The CPU side is itself checked against finite differences in
//! tests/gradcheck_ops.rs, so agreeing with it checks both halves of each CUDA op.

mod common;

use common::{cuda_backends, rel_err};

use std::sync::Arc;

use automoe::autograd::{Tape, Var};
use automoe::rng::seeded;
use automoe::tensor::MaskSpec;
use automoe::{DType, Device, Result, Tensor};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, DType::F32, &mut seeded(seed))
}

/// Output and input gradients of `f` on `device` in `dtype`; the loss is `sum(y * r)` with a
/// fixed random `r`, so every output element matters.
fn run(device: Device, dtype: DType, inputs: &[Tensor], f: &dyn Fn(&mut Tape, &[Var]) -> Result<Var>) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let mut t = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|x| Ok(t.input(x.to_dtype(dtype)?.to_device(device)?))).collect::<Result<_>>()?;
    let y = f(&mut t, &vars)?;
    assert_eq!(y.value().device(), device, "the output stays on the inputs' device");
    // The weights in bf16's values for both sides, so that only the ops' rounding differs.
    let r = t.constant(round_bf16(&rand(y.shape(), 9999)).to_dtype(dtype)?.to_device(device)?);
    let p = t.mul(&y, &r)?;
    let loss = t.sum(&p)?;
    let grads = t.backward(&loss)?;
    let gs = vars.iter().map(|v| grads.wrt(v).map(|g| g.to_f64_vec()).transpose().map(|g| g.unwrap_or_default())).collect::<Result<_>>()?;
    Ok((y.value().to_f64_vec()?, gs))
}

/// `t`'s values rounded to bf16, kept in f32.
fn round_bf16(t: &Tensor) -> Tensor {
    t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap()
}

fn check(name: &str, inputs: &[Tensor], f: impl Fn(&mut Tape, &[Var]) -> Result<Var>) {
    for (dtype, tol) in [(DType::F32, 2e-5), (DType::BF16, BF16_TOL)] {
        // The reference sees the inputs the backend sees (bf16-rounded for bf16), so the tolerance
        // covers only the rounding of the ops' own outputs.
        let ins: Vec<Tensor> = if dtype == DType::BF16 { inputs.iter().map(round_bf16).collect() } else { inputs.to_vec() };
        let (want_y, want_g) = run(Device::Cpu, DType::F32, &ins, &f).unwrap_or_else(|e| panic!("{name} on the CPU: {e}"));
        for device in cuda_backends() {
            let (y, g) = run(device, dtype, &ins, &f).unwrap_or_else(|e| panic!("{name} on {device} ({dtype:?}): {e}"));
            let e = rel_err(&y, &want_y);
            assert!(e < tol, "{name} on {device} ({dtype:?}): forward error {e:.2e}");
            for (i, (gi, wi)) in g.iter().zip(&want_g).enumerate() {
                let e = rel_err(gi, wi);
                assert!(e < tol, "{name} on {device} ({dtype:?}): gradient of input {i} error {e:.2e}");
            }
        }
    }
}

/// bf16 errors are relative to the largest reference element. With the reference on the same
/// rounded inputs, the worst case here on the emulator was 5.1e-3 (the divisor's gradient of `div`,
/// a chain of three rounded ops), 2026-12-07; this leaves three times that.
const BF16_TOL: f64 = 1.5e-2;

/// `x` with every element moved at least 0.5 away from zero (keeping its sign), for denominators.
fn away_from_zero(x: &Tensor) -> Tensor {
    let v = x.to_f32_vec().unwrap().into_iter().map(|v| v.signum() * (v.abs() + 0.5)).collect();
    Tensor::from_vec::<f32>(v, x.shape()).unwrap()
}

#[test]
fn products() {
    check("matmul 2d", &[rand(&[3, 4], 1), rand(&[4, 5], 2)], |t, v| t.matmul(&v[0], &v[1]));
    check("matmul batched", &[rand(&[2, 3, 4], 3), rand(&[2, 4, 5], 4)], |t, v| t.matmul(&v[0], &v[1]));
    check("matmul batch x 2d", &[rand(&[2, 3, 4], 5), rand(&[4, 5], 6)], |t, v| t.matmul(&v[0], &v[1]));
    check("matmul broadcast batch", &[rand(&[2, 1, 3, 4], 7), rand(&[3, 4, 2], 8)], |t, v| t.matmul(&v[0], &v[1]));
    check("matmul transposed views", &[rand(&[4, 3], 9), rand(&[5, 4], 10)], |t, v| {
        let (a, b) = (t.transpose(&v[0], 0, 1)?, t.transpose(&v[1], 0, 1)?);
        t.matmul(&a, &b)
    });
    check("linear on a front slice of a weight", &[rand(&[2, 3, 4], 11), rand(&[7, 6], 12), rand(&[7], 13)], |t, v| {
        let w = t.front_slice(&v[1], &[5, 4])?;
        let b = t.front_slice(&v[2], &[5])?;
        t.linear(&v[0], &w, Some(&b))
    });
    check("attention-shaped batched products", &[rand(&[2, 3, 5, 4], 14), rand(&[2, 3, 6, 4], 15)], |t, v| {
        let kt = t.transpose(&v[1], 2, 3)?;
        t.matmul(&v[0], &kt)
    });
}

#[test]
fn elementwise_and_broadcasting() {
    for (a, b) in [(vec![3, 4], vec![3, 4]), (vec![2, 3, 4], vec![4]), (vec![2, 3, 4], vec![3, 1]), (vec![3, 1], vec![2, 1, 4])] {
        check("add", &[rand(&a, 16), rand(&b, 17)], |t, v| t.add(&v[0], &v[1]));
        check("sub", &[rand(&a, 18), rand(&b, 19)], |t, v| t.sub(&v[0], &v[1]));
        check("mul", &[rand(&a, 20), rand(&b, 21)], |t, v| t.mul(&v[0], &v[1]));
        check("div", &[rand(&a, 120), away_from_zero(&rand(&b, 121))], |t, v| t.div(&v[0], &v[1]));
    }
    check("add_bias", &[rand(&[3, 4], 22), rand(&[4], 23)], |t, v| t.add_bias(&v[0], &v[1]));
    check("scale", &[rand(&[3, 4], 24)], |t, v| t.scale(&v[0], -2.5));
    check("relu of a transposed view", &[rand(&[4, 5], 25)], |t, v| {
        let x = t.transpose(&v[0], 0, 1)?;
        t.relu(&x)
    });
    check("gelu", &[rand(&[4, 5], 26)], |t, v| t.gelu(&v[0]));
    check("dropout", &[rand(&[4, 6], 27)], |t, v| t.dropout(&v[0], 0.3, 77));
    check("cast to the other dtype and back", &[rand(&[4, 6], 28)], |t, v| {
        // f32 -> bf16 -> f32, and on bf16 tensors bf16 -> f32 -> bf16 (a cast to a tensor's own
        // dtype records nothing). No arithmetic between the casts: the CPU has no bf16 arithmetic.
        let dt = v[0].value().dtype();
        let other = if dt == DType::BF16 { DType::F32 } else { DType::BF16 };
        let b = t.cast(&v[0], other)?;
        assert_eq!(b.value().dtype(), other);
        t.cast(&b, dt)
    });
}

#[test]
fn reductions_views_and_shapes() {
    check("sum", &[rand(&[3, 4], 30)], |t, v| t.sum(&v[0]));
    check("mean", &[rand(&[3, 4], 31)], |t, v| t.mean(&v[0]));
    check("sum_to rows", &[rand(&[2, 3, 4], 32)], |t, v| t.sum_to(&v[0], &[4]));
    check("sum_to middle", &[rand(&[2, 3, 4], 33)], |t, v| t.sum_to(&v[0], &[3, 1]));
    check("concat dim 1", &[rand(&[2, 3], 34), rand(&[2, 2], 35)], |t, v| t.concat(&[&v[0], &v[1]], 1));
    check("concat dim 0", &[rand(&[2, 3], 36), rand(&[1, 3], 37)], |t, v| t.concat(&[&v[0], &v[1]], 0));
    check("narrow", &[rand(&[4, 5], 38)], |t, v| t.narrow(&v[0], 1, 1, 3));
    check("front_slice", &[rand(&[4, 5], 39)], |t, v| t.front_slice(&v[0], &[2, 3]));
    check("reshape", &[rand(&[2, 6], 40)], |t, v| t.reshape(&v[0], &[3, 4]));
    check("permute", &[rand(&[2, 3, 4], 41)], |t, v| t.permute(&v[0], &[2, 0, 1]));
    check("two overlapping front slices", &[rand(&[4, 5], 42)], |t, v| {
        let a = t.front_slice(&v[0], &[2, 3])?;
        let b = t.front_slice(&v[0], &[3, 3])?;
        let b = t.narrow(&b, 0, 1, 2)?;
        t.add(&a, &b)
    });
}

#[test]
fn normalisation_softmax_embedding_and_loss() {
    check("layer_norm", &[rand(&[3, 6], 50), rand(&[6], 51), rand(&[6], 52)], |t, v| t.layer_norm(&v[0], &v[1], &v[2], 1e-5));
    check("layer_norm wide rows", &[rand(&[4, 70], 53), rand(&[70], 54), rand(&[70], 55)], |t, v| t.layer_norm(&v[0], &v[1], &v[2], 1e-5));
    check("softmax", &[rand(&[3, 5], 56)], |t, v| t.softmax(&v[0], &MaskSpec::default()));
    let causal = MaskSpec { causal: true, key_padding: None };
    check("causal softmax", &[rand(&[2, 2, 4, 4], 57)], |t, v| t.softmax(&v[0], &causal));
    let pad = MaskSpec { causal: false, key_padding: Some(Arc::new(vec![false, false, true, true, false, false, false, true])) };
    check("padded softmax", &[rand(&[2, 3, 2, 4], 58)], |t, v| t.softmax(&v[0], &pad));
    let both = MaskSpec { causal: true, key_padding: Some(Arc::new(vec![false, false, false, true, false, true, true, true])) };
    check("causal + padded softmax (tq < tk)", &[rand(&[2, 1, 2, 4], 59)], |t, v| t.softmax(&v[0], &both));
    check("embedding", &[rand(&[5, 3], 60)], |t, v| t.embedding(&v[0], &[4, 1, 1, 0, 4, 4]));
    check("embedding of a front slice", &[rand(&[6, 5], 61)], |t, v| {
        let table = t.front_slice(&v[0], &[6, 3])?;
        t.embedding(&table, &[5, 0, 2, 2])
    });
    let targets = [2u32, 0, 1, 0, 3];
    check("cross_entropy smoothed, ignoring 0", &[rand(&[5, 4], 62)], |t, v| Ok(t.cross_entropy(&v[0], &targets, 0.1, Some(0))?.0));
    check("cross_entropy plain", &[rand(&[5, 4], 63)], |t, v| Ok(t.cross_entropy(&v[0], &targets, 0.0, None)?.0));
}

#[test]
fn casts_round_like_the_cpu_and_device_round_trips_are_exact() {
    let x = rand(&[7, 9], 70);
    for device in cuda_backends() {
        let on = x.to_device(device).unwrap();
        assert_eq!(on.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap(), "{device}: upload + download");
        let b = on.to_dtype(DType::BF16).unwrap();
        assert_eq!(b.device(), device);
        let want: Vec<u16> = x.to_dtype(DType::BF16).unwrap().to_vec::<half::bf16>().unwrap().iter().map(|v| v.to_bits()).collect();
        let got: Vec<u16> = b.to_vec::<half::bf16>().unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{device}: f32 -> bf16 rounding");
        let view = on.narrow(1, 2, 5).unwrap().t().unwrap().contiguous().unwrap();
        assert_eq!(view.to_vec::<f32>().unwrap(), x.narrow(1, 2, 5).unwrap().t().unwrap().contiguous().unwrap().to_vec::<f32>().unwrap());
    }
}

#[test]
fn mixed_devices_and_f64_are_clear_errors() {
    let x = rand(&[2, 2], 71);
    let e = x.to_device(Device::Emu).unwrap().add(&x).unwrap_err().to_string();
    assert!(e.contains("CPU tensor"), "{e}");
    let e = x.to_dtype(DType::F64).unwrap().to_device(Device::Emu).unwrap_err().to_string();
    assert!(e.contains("f64"), "{e}");
}

#[test]
fn adam_and_clipping_match_the_cpu() {
    use automoe::autograd::ParamStore;
    use automoe::train::{clip_grad_norm, Adam, AdamConfig};
    let cfgs = [
        AdamConfig::default(),
        AdamConfig { weight_decay: 0.1, ..AdamConfig::default() },
        AdamConfig { weight_decay: 0.1, decoupled_weight_decay: false, ..AdamConfig::default() },
    ];
    for device in cuda_backends() {
        for cfg in cfgs {
            let mut stores: Vec<ParamStore> = Vec::new();
            for d in [Device::Cpu, device] {
                let mut s = ParamStore::new();
                s.add("a", rand(&[5, 3], 80).to_device(d).unwrap()).unwrap();
                s.add("b", rand(&[7], 81).to_device(d).unwrap()).unwrap();
                stores.push(s);
            }
            let mut adams = [Adam::new(cfg), Adam::new(cfg)];
            for step in 0..3u64 {
                let mut norms = vec![];
                for (i, s) in stores.iter_mut().enumerate() {
                    let d = if i == 0 { Device::Cpu } else { device };
                    for (j, (_, p)) in s.iter_mut().enumerate() {
                        p.grad = Some(rand(p.value.shape(), 100 + step * 10 + j as u64).scale(3.0).unwrap().to_device(d).unwrap());
                    }
                    norms.push(clip_grad_norm(s, 1.0).unwrap());
                    adams[i].step(s, 0.01).unwrap();
                }
                assert!((norms[0] - norms[1]).abs() < 1e-5 * norms[0], "{device}: norms {norms:?}");
            }
            for ((_, a), (_, b)) in stores[0].iter().zip(stores[1].iter()) {
                assert_eq!(b.value.device(), device);
                let e = rel_err(&b.value.to_f64_vec().unwrap(), &a.value.to_f64_vec().unwrap());
                assert!(e < 1e-6, "{device} {cfg:?}: weights differ by {e:.2e}");
            }
        }
    }
}
