//! The MoE tape ops (top-k gating, permute, grouped expert FFN, combine) and the whole layer
//! (`moe_forward`) on every CUDA backend present (the emulator always, `cuda:0` when a device
//! exists) against the CPU: forward values and every gradient (inputs and parameters), in f32 and,
//! with looser tolerances, bf16. The CPU side is checked against finite differences in
//! tests/moe_layer.rs, so agreeing with it checks the CUDA halves.

mod common;

use common::{cuda_backends, rel_err};

use std::sync::Arc;

use automoe::autograd::{ParamStore, Tape, Var};
use automoe::moe::{moe_forward, moe_forward_routed, Activation, Dispatch, ExpertVars, MoeOptions, MoeParams, MoeRouting, MoeSubnet};
use automoe::rng::seeded;
use automoe::{DType, Device, Result, Tensor};

const F32_TOL: f64 = 2e-5;
/// bf16 errors are relative to the largest reference element, and two things push them past this on
/// some seeds without any kernel being wrong (checked 2026-12-02 over 24 seeds of the first layer
/// case: 22 stay under 3e-2). A ReLU pre-activation within a bf16 rounding of zero flips its mask
/// and with it a whole row of an expert's gradient: seed 105 gives 0.16 on expert 0's `w1` with ReLU
/// and 0.004 with GELU, same routing. And a bias gradient that is a sum of cancelling terms is small
/// next to its terms' rounding. The seeds below are ones where neither happens.
const BF16_TOL: f64 = 5e-2;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, DType::F32, &mut seeded(seed))
}

/// `t` rounded to bf16 and back (so the CPU reference sees what a bf16 backend sees).
fn round_bf16(t: &Tensor) -> Tensor {
    t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap()
}

// ---- Single ops ----------------------------------------------------------------------------------

/// Output and input gradients of `f` on `device` in `dtype`; the loss is `sum(y * r)` with a
/// fixed random `r`, so every output element matters.
#[allow(clippy::type_complexity)]
fn run(
    device: Device,
    dtype: DType,
    inputs: &[Tensor],
    f: &dyn Fn(&mut Tape, &[Var]) -> Result<Var>,
) -> Result<(Vec<f64>, Vec<Option<Vec<f64>>>)> {
    let mut t = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|x| Ok(t.input(x.to_dtype(dtype)?.to_device(device)?))).collect::<Result<_>>()?;
    let y = f(&mut t, &vars)?;
    assert_eq!(y.value().device(), device, "the output stays on the inputs' device");
    assert_eq!(y.value().dtype(), dtype, "the output keeps the inputs' dtype");
    let r = t.constant(rand(y.shape(), 9999).to_dtype(dtype)?.to_device(device)?);
    let p = t.mul(&y, &r)?;
    let loss = t.sum(&p)?;
    let grads = t.backward(&loss)?;
    let gs = vars
        .iter()
        .map(|v| {
            grads.wrt(v).map(|g| {
                assert_eq!(g.device(), device, "gradients stay on the device");
                assert_eq!(g.shape(), v.shape(), "gradient shape");
                g.to_f64_vec()
            })
        })
        .map(Option::transpose)
        .collect::<Result<_>>()?;
    Ok((y.value().to_f64_vec()?, gs))
}

fn check(name: &str, inputs: &[Tensor], f: impl Fn(&mut Tape, &[Var]) -> Result<Var>) {
    for (dtype, tol) in [(DType::F32, F32_TOL), (DType::BF16, BF16_TOL)] {
        // The reference sees the inputs the backend sees (bf16-rounded for bf16).
        let ins: Vec<Tensor> = if dtype == DType::BF16 { inputs.iter().map(round_bf16).collect() } else { inputs.to_vec() };
        let (want_y, want_g) = run(Device::Cpu, DType::F32, &ins, &f).unwrap_or_else(|e| panic!("{name} on the CPU: {e}"));
        for device in cuda_backends() {
            let (y, g) = run(device, dtype, &ins, &f).unwrap_or_else(|e| panic!("{name} on {device} ({dtype:?}): {e}"));
            let e = rel_err(&y, &want_y);
            assert!(e < tol, "{name} on {device} ({dtype:?}): forward error {e:.2e}");
            for (i, (gi, wi)) in g.iter().zip(&want_g).enumerate() {
                match (gi, wi) {
                    (Some(gi), Some(wi)) => {
                        let e = rel_err(gi, wi);
                        assert!(e < tol, "{name} on {device} ({dtype:?}): gradient of input {i} error {e:.2e}");
                    }
                    (None, None) => {}
                    _ => panic!("{name} on {device} ({dtype:?}): input {i} has a gradient on one side only"),
                }
            }
        }
    }
}

#[test]
fn topk_gating() {
    for (k, renorm) in [(1, false), (2, false), (2, true), (4, true)] {
        check(&format!("topk k={k} renorm={renorm}"), &[rand(&[10, 4], 20 + k as u64)], |t, v| {
            let probs = t.softmax(&v[0], &Default::default())?;
            let g = t.topk_gating(&probs, k, renorm)?;
            assert_eq!(g.gates.value().device(), v[0].value().device());
            Ok(g.gates)
        });
    }
}

/// The device top-k (`topk_select_*`) against the CPU's `moe::gating` on the same probabilities,
/// bit for bit: chosen experts, gates and the probabilities' gradient, in f32 and bf16, with and
/// without renormalisation, on fresh random rows and on rows full of exact ties.
#[test]
fn topk_select_matches_the_cpu_exactly() {
    use automoe::cuda::tensor::{topk_select, topk_select_backward};
    use automoe::moe::gating::{topk_bwd, topk_fwd};
    use rand::Rng;
    let mut rng = seeded(77);
    for device in cuda_backends() {
        for dtype in [DType::F32, DType::BF16] {
            for (t, e, k) in [(1, 1, 1), (0, 6, 2), (37, 6, 2), (5, 12, 8), (9, 100, 3), (3, 512, 8), (70, 2, 1)] {
                for renorm in [false, true] {
                    for ties in [false, true] {
                        let what = format!("{device} {dtype:?} t={t} e={e} k={k} renorm={renorm} ties={ties}");
                        // Ties: a handful of values per row, so most choices are between equals.
                        let raw: Vec<f32> = (0..t * e)
                            .map(|_| if ties { rng.random_range(0..4) as f32 / 8.0 + 0.125 } else { rng.random::<f32>() + 1e-3 })
                            .collect();
                        let probs = Tensor::from_vec(raw, &[t, e]).unwrap().to_dtype(dtype).unwrap();
                        let p32 = probs.to_f32_vec().unwrap();
                        let (want_idx, want_w) = topk_fwd(&p32, e, k, renorm);
                        let on = probs.to_device(device).unwrap();
                        let (ids, gates) = topk_select(&on, k, renorm).unwrap_or_else(|err| panic!("{what}: {err}"));
                        assert_eq!(ids.to_host().unwrap(), want_idx, "{what}: chosen experts");
                        let want_gates = Tensor::from_vec(want_w, &[t, k]).unwrap().to_dtype(dtype).unwrap();
                        assert_eq!(gates.dtype(), dtype, "{what}: gate dtype");
                        let got_w = gates.to_f32_vec().unwrap();
                        assert_eq!(bits(&got_w), bits(&want_gates.to_f32_vec().unwrap()), "{what}: gates");

                        let g = Tensor::randn(&[t, k], 1.0, DType::F32, &mut rng).to_dtype(dtype).unwrap();
                        let want_dp = topk_bwd(&p32, &want_idx, &got_w, &g.to_f32_vec().unwrap(), e, k, renorm);
                        let want_dp = Tensor::from_vec(want_dp, &[t, e]).unwrap().to_dtype(dtype).unwrap().to_f32_vec().unwrap();
                        let dp = topk_select_backward(&on, &ids, &gates, &g.to_device(device).unwrap(), renorm)
                            .unwrap_or_else(|err| panic!("{what} backward: {err}"));
                        assert_eq!(dp.shape(), [t, e], "{what}: gradient shape");
                        assert_eq!(bits(&dp.to_f32_vec().unwrap()), bits(&want_dp), "{what}: probabilities' gradient");
                    }
                }
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn permute_and_combine() {
    // T = 10, k = 2, E = 4: expert 3 gets nothing; with capacity 3 some pairs are dropped.
    let idx = [2u32, 0, 0, 2, 1, 0, 2, 1, 0, 1, 0, 2, 1, 2, 0, 1, 2, 0, 0, 2];
    for cap in [None, Some(3)] {
        let dis = Arc::new(Dispatch::new(&idx, 10, 2, 4, cap).unwrap());
        let rows = dis.rows();
        check(&format!("permute cap {cap:?}"), &[rand(&[10, 8], 30)], |t, v| t.moe_permute(&v[0], &dis));
        check(&format!("combine cap {cap:?}"), &[rand(&[rows, 8], 31), rand(&[10, 2], 32)], |t, v| t.moe_combine(&v[0], &v[1], &dis));
        check(&format!("permute then combine cap {cap:?}"), &[rand(&[10, 8], 33), rand(&[10, 2], 34)], |t, v| {
            let xp = t.moe_permute(&v[0], &dis)?;
            t.moe_combine(&xp, &v[1], &dis)
        });
    }
    // k = 1 over a single expert.
    let one = Arc::new(Dispatch::new(&[0; 10], 10, 1, 1, None).unwrap());
    check("combine 1 expert", &[rand(&[10, 8], 35), rand(&[10, 1], 36)], |t, v| t.moe_combine(&v[0], &v[1], &one));
}

#[test]
fn grouped_ffn_through_front_slices() {
    // Experts of widths {16, 8, 4, 8} front-sliced from max-size [16, 8] / [8, 16] weights, read
    // with d = 8 (whole rows) and d = 6 (row stride 8 and 16 != d); expert 2 gets no rows.
    let widths = [16usize, 8, 4, 8];
    let offsets = [0usize, 4, 7, 7, 10];
    for d in [8usize, 6] {
        let mut inputs = vec![rand(&[10, d], 40)];
        for e in 0..4 {
            let s = 41 + 4 * e as u64;
            inputs.extend([rand(&[16, 8], s), rand(&[16], s + 1), rand(&[8, 16], s + 2), rand(&[8], s + 3)]);
        }
        for act in [Activation::Relu, Activation::Gelu] {
            check(&format!("grouped_ffn d={d} {act:?}"), &inputs, |t, v| {
                let experts = (0..4)
                    .map(|e| {
                        let (h, b) = (widths[e], 1 + 4 * e);
                        Ok(ExpertVars {
                            w1: t.front_slice(&v[b], &[h, d])?,
                            b1: t.front_slice(&v[b + 1], &[h])?,
                            w2: t.front_slice(&v[b + 2], &[d, h])?,
                            b2: t.front_slice(&v[b + 3], &[d])?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                t.grouped_ffn(&v[0], &experts, &offsets, act)
            });
        }
    }
    // A transposed weight view is copied contiguous first; a single expert owning every row.
    check(
        "grouped_ffn transposed weight, 1 expert",
        &[rand(&[5, 8], 60), rand(&[8, 4], 61), rand(&[4], 62), rand(&[8, 4], 63), rand(&[8], 64)],
        |t, v| {
            let w1 = t.transpose(&v[1], 0, 1)?;
            let ev = ExpertVars { w1, b1: v[2].clone(), w2: v[3].clone(), b2: v[4].clone() };
            t.grouped_ffn(&v[0], &[ev], &[0, 5], Activation::Relu)
        },
    );
}

// ---- The whole layer -----------------------------------------------------------------------------

const D_MAX: usize = 8;
const N_MAX: usize = 4;
const H_MAX: usize = 16;

/// A layer with random biases; `starve` gets a router bias of -1e3 (no token). With `bf16`, every
/// parameter is rounded to bf16 (kept as f32).
fn layer(seed: u64, starve: Option<usize>, bf16: bool) -> (ParamStore, MoeParams) {
    let mut store = ParamStore::new();
    let p = MoeParams::new(&mut store, "moe", D_MAX, N_MAX, H_MAX, &mut seeded(seed)).unwrap();
    let ids: Vec<_> = store.iter().map(|(id, _)| id).collect();
    for (i, id) in ids.into_iter().enumerate() {
        let v = store.value(id).clone();
        let v = v.add(&rand(v.shape(), seed * 1000 + i as u64).scale(0.3).unwrap()).unwrap();
        store.get_mut(id).value = if bf16 { round_bf16(&v) } else { v };
    }
    if let Some(e) = starve {
        let mut b = store.value(p.router_b).to_f32_vec().unwrap();
        b[e] = -1e3;
        store.get_mut(p.router_b).value = Tensor::from_vec(b, &[N_MAX]).unwrap();
    }
    (store, p)
}

struct LayerRun {
    y: Vec<f64>,
    dx: Vec<f64>,
    /// Every parameter's gradient (None: the layer did not use it).
    params: Vec<Option<Vec<f64>>>,
    dispatch: Arc<Dispatch>,
    /// Whether the routing stayed on the device.
    device_routing: bool,
    /// Device-to-host copies made by the forward and by the backward.
    downloads: [u64; 2],
}

#[allow(clippy::too_many_arguments)]
fn run_layer(
    device: Device,
    dtype: DType,
    seed: u64,
    starve: Option<usize>,
    sub: &MoeSubnet,
    opts: &MoeOptions,
    routed: bool,
    x: &Tensor,
) -> Result<LayerRun> {
    let (mut store, p) = layer(seed, starve, dtype == DType::BF16);
    for (_, prm) in store.iter_mut() {
        prm.value = prm.value.to_dtype(dtype)?.to_device(device)?;
    }
    let mut tape = Tape::new();
    let xv = tape.input(x.to_dtype(dtype)?.to_device(device)?);
    let before = automoe::cuda::downloads_on_this_thread();
    let out = if routed {
        moe_forward_routed(&mut tape, &store, &p, sub, opts, &xv)?
    } else {
        moe_forward(&mut tape, &store, &p, sub, opts, &xv)?
    };
    let forward_downloads = automoe::cuda::downloads_on_this_thread() - before;
    assert_eq!(out.y.value().device(), device);
    let r = tape.constant(rand(out.y.shape(), 4242).to_dtype(dtype)?.to_device(device)?);
    let prod = tape.mul(&out.y, &r)?;
    let mut loss = tape.sum(&prod)?;
    if let Some(b) = &out.balance_loss {
        loss = tape.add(&loss, b)?;
    }
    let before = automoe::cuda::downloads_on_this_thread();
    let grads = tape.backward(&loss)?;
    let backward_downloads = automoe::cuda::downloads_on_this_thread() - before;
    store.accumulate(&grads)?;
    let params = store
        .iter()
        .map(|(_, prm)| {
            prm.grad
                .as_ref()
                .map(|g| {
                    assert_eq!(g.device(), device, "parameter gradients stay on the device");
                    assert_eq!(g.dtype(), dtype, "parameter gradients keep the parameters' dtype");
                    g.to_f64_vec()
                })
                .transpose()
        })
        .collect::<Result<_>>()?;
    let dx = grads.wrt(&xv).expect("x has a gradient").to_f64_vec()?;
    Ok(LayerRun {
        y: out.y.value().to_f64_vec()?,
        dx,
        params,
        device_routing: matches!(out.routing, MoeRouting::Device(_)),
        dispatch: out.routing.to_host()?,
        downloads: [forward_downloads, backward_downloads],
    })
}

#[test]
fn moe_layer_forward_and_backward() {
    let relu = MoeOptions { renormalize: false, ..Default::default() };
    // (name, subnet, options, starved expert, routed path forced, tokens)
    let cases = [
        (
            "k=2 renorm, starved expert",
            MoeSubnet { d: 8, widths: vec![16, 8, 4, 8], k: 2 },
            MoeOptions { renormalize: true, ..relu },
            Some(2),
            false,
        ),
        ("k=1, d=6 of 8", MoeSubnet { d: 6, widths: vec![16, 8, 4, 8], k: 1 }, relu, None, false),
        (
            "k=2 gelu, capacity, balance loss",
            MoeSubnet { d: 8, widths: vec![16, 8, 4, 8], k: 2 },
            MoeOptions { renormalize: false, activation: Activation::Gelu, capacity_factor: Some(0.6), balance_coef: 0.01 },
            None,
            false,
        ),
        ("1 expert dense", MoeSubnet { d: 8, widths: vec![12], k: 1 }, relu, None, false),
        ("1 expert routed", MoeSubnet { d: 8, widths: vec![12], k: 1 }, relu, None, true),
        (
            "k=2, balance loss (routing on the device)",
            MoeSubnet { d: 8, widths: vec![16, 8, 4, 8], k: 2 },
            MoeOptions { balance_coef: 0.01, ..relu },
            None,
            false,
        ),
    ];
    for (ci, (name, sub, opts, starve, routed)) in cases.iter().enumerate() {
        let seed = 100 + ci as u64;
        let x = rand(&[10, sub.d], 200 + ci as u64);
        for (dtype, tol) in [(DType::F32, F32_TOL), (DType::BF16, BF16_TOL)] {
            let xr = if dtype == DType::BF16 { round_bf16(&x) } else { x.clone() };
            let want = run_layer(Device::Cpu, DType::F32, seed, *starve, sub, opts, *routed, &xr)
                .unwrap_or_else(|e| panic!("{name} on the CPU: {e}"));
            if let Some(e) = starve {
                assert_eq!(want.dispatch.counts[*e], 0, "{name}: the starved expert gets no token");
            }
            if opts.capacity_factor.is_some() {
                assert!(want.dispatch.rows() < 10 * sub.k, "{name}: the capacity drops pairs");
            }
            for device in cuda_backends() {
                let what = format!("{name} on {device} ({dtype:?})");
                let got = run_layer(device, dtype, seed, *starve, sub, opts, *routed, &xr).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(got.dispatch, want.dispatch, "{what}: routing");
                // Without a capacity limit the routing stays on the device: the forward never
                // waits for it, the backward asks once which experts received rows (a layer of
                // one expert has no routing to ask about). With one, the host applies the limit.
                let routed_layer = sub.widths.len() > 1 || *routed;
                if opts.capacity_factor.is_none() {
                    assert_eq!(got.device_routing, routed_layer, "{what}: routing kept on the device");
                    assert_eq!(got.downloads, [0, routed_layer as u64], "{what}: device-to-host copies (forward, backward)");
                } else {
                    assert!(!got.device_routing, "{what}: a capacity limit routes on the host");
                }
                let e = rel_err(&got.y, &want.y);
                assert!(e < tol, "{what}: output error {e:.2e}");
                let e = rel_err(&got.dx, &want.dx);
                assert!(e < tol, "{what}: dx error {e:.2e}");
                assert_eq!(got.params.len(), want.params.len());
                for (i, (g, w)) in got.params.iter().zip(&want.params).enumerate() {
                    match (g, w) {
                        (Some(g), Some(w)) => {
                            let e = rel_err(g, w);
                            assert!(e < tol, "{what}: gradient of parameter {i} error {e:.2e}");
                        }
                        (None, None) => {}
                        _ => panic!("{what}: parameter {i} has a gradient on one side only"),
                    }
                }
            }
        }
    }
}

/// A routing kept on the device given CPU tensors (or a CPU tensor's grouped FFN given device
/// segments) is a clear error, not a panic or a silent download.
#[test]
fn device_routing_with_cpu_tensors_is_an_error() {
    use automoe::cuda::tensor::{topk_select, DeviceDispatch};
    use automoe::moe::Segments;
    let probs = rand(&[6, 4], 50).softmax(&Default::default()).unwrap().to_device(Device::Emu).unwrap();
    let (ids, _) = topk_select(&probs, 2, false).unwrap();
    let dis = Arc::new(DeviceDispatch::new(&ids).unwrap());
    assert_eq!(dis.rows(), 12);
    let routing = MoeRouting::Device(dis.clone());
    let mut t = Tape::new();
    let x = t.input(rand(&[6, 8], 51));
    let e = t.moe_permute(&x, &routing).expect_err("CPU tensors with a device routing").to_string();
    assert!(e.contains("CUDA backend"), "{e}");
    let xp = t.input(rand(&[12, 8], 52));
    let e = t.grouped_ffn_segments(&xp, &[], Segments::Device(dis), Activation::Relu).expect_err("no experts").to_string();
    assert!(e.contains("experts"), "{e}");
    // The host copy of the routing is the CPU's dispatch of the same ids.
    let host = routing.to_host().unwrap();
    let want = Dispatch::new(&ids.to_host().unwrap(), 6, 2, 4, None).unwrap();
    assert_eq!(*host, want);
}

/// `dispatch_fractions_f32` against the host: each expert's count over T * k, bit for bit, with the
/// counts taken from the host's `Dispatch` of the same ids (not the device's own counts, which
/// would agree with wrong fractions computed from them).
#[test]
fn dispatch_fractions_match_the_host_counts() {
    use automoe::cuda::tensor::{topk_select, DeviceDispatch};
    for device in cuda_backends() {
        for (t, e, k) in [(0, 6, 2), (1, 1, 1), (37, 6, 2), (300, 100, 3), (64, 512, 8)] {
            let probs = rand(&[t, e], 60 + t as u64).softmax(&Default::default()).unwrap().to_device(device).unwrap();
            let (ids, _) = topk_select(&probs, k, false).unwrap();
            let dis = DeviceDispatch::new(&ids).unwrap();
            let got = dis.fractions().unwrap().to_f32_vec().unwrap();
            let host = Dispatch::new(&ids.to_host().unwrap(), t, k, e, None).unwrap();
            let pairs = (t * k).max(1) as f64;
            let want: Vec<f32> = host.counts.iter().map(|&c| (c as f64 / pairs) as f32).collect();
            assert_eq!(bits(&got), bits(&want), "{device} t={t} e={e} k={k}");
            assert_eq!(dis.counts().unwrap(), host.counts, "{device} t={t} e={e} k={k}: the device's counts");
        }
    }
}
