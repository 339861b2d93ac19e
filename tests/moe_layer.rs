//! The heterogeneous MoE layer against a naive per-token loop and against finite differences, on
//! random inputs with heterogeneous widths and random routing, plus the degenerate cases.

use std::sync::Arc;

use automoe::autograd::gradcheck::check_gradients;
use automoe::autograd::{ParamStore, Tape, Var};
use automoe::moe::{moe_forward, moe_forward_routed, Activation, Dispatch, ExpertVars, MoeOptions, MoeParams, MoeSubnet, DROPPED};
use automoe::rng::seeded;
use automoe::{DType, Result, Tensor};

fn rand(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, dtype, &mut seeded(seed))
}

fn sliced(store: &ParamStore, id: automoe::autograd::ParamId, sizes: &[usize]) -> Vec<f64> {
    store.value(id).front_slice(sizes).unwrap().to_f64_vec().unwrap()
}

/// The layer written as the method describes it, one token at a time, in f64.
fn reference_layer(store: &ParamStore, p: &MoeParams, sub: &MoeSubnet, opts: &MoeOptions, x: &[f64]) -> Vec<f64> {
    let (d, n, k) = (sub.d, sub.widths.len(), sub.k);
    let t = x.len() / d;
    let rw = sliced(store, p.router_w, &[n, d]);
    let rb = sliced(store, p.router_b, &[n]);
    // Routing first (capacity is applied in token order).
    let mut choices = Vec::new();
    for tok in 0..t {
        let xt = &x[tok * d..(tok + 1) * d];
        let logits: Vec<f64> = (0..n).map(|e| (0..d).map(|j| rw[e * d + j] * xt[j]).sum::<f64>() + rb[e]).collect();
        let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        let probs: Vec<f64> = logits.iter().map(|l| (l - mx).exp() / z).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap().then(a.cmp(&b)));
        let sum: f64 = order[..k].iter().map(|&e| probs[e]).sum();
        choices.push(order[..k].iter().map(|&e| (e, if opts.renormalize { probs[e] / sum } else { probs[e] })).collect::<Vec<_>>());
    }
    let cap = opts.capacity_factor.map(|cf| Dispatch::capacity_for(cf, t, k, n)).unwrap_or(usize::MAX);
    let mut used = vec![0; n];
    let mut y = vec![0.0; t * d];
    for tok in 0..t {
        let xt = &x[tok * d..(tok + 1) * d];
        for &(e, gate) in &choices[tok] {
            used[e] += 1;
            if used[e] > cap {
                continue;
            }
            let h = sub.widths[e];
            let ep = &p.experts[e];
            let (w1, b1) = (sliced(store, ep.fc1_w, &[h, d]), sliced(store, ep.fc1_b, &[h]));
            let (w2, b2) = (sliced(store, ep.fc2_w, &[d, h]), sliced(store, ep.fc2_b, &[d]));
            let a: Vec<f64> = (0..h).map(|i| ((0..d).map(|j| w1[i * d + j] * xt[j]).sum::<f64>() + b1[i]).max(0.0)).collect();
            for j in 0..d {
                y[tok * d + j] += gate * ((0..h).map(|i| w2[j * h + i] * a[i]).sum::<f64>() + b2[j]);
            }
        }
    }
    y
}

/// A layer whose biases are random too (so bias gradients and bias reads are exercised).
fn layer(d_max: usize, n_max: usize, h_max: usize, seed: u64, dtype: DType) -> (ParamStore, MoeParams) {
    let mut store = ParamStore::new();
    let p = MoeParams::new(&mut store, "moe", d_max, n_max, h_max, &mut seeded(seed)).unwrap();
    let ids: Vec<_> = store.iter().map(|(id, _)| id).collect();
    for (i, id) in ids.into_iter().enumerate() {
        let v = store.value(id).clone();
        let noise = rand(v.shape(), DType::F32, seed * 1000 + i as u64).scale(0.3).unwrap();
        store.get_mut(id).value = v.add(&noise).unwrap().to_dtype(dtype).unwrap();
    }
    (store, p)
}

/// `max |a - b| / max |b|`; NaN anywhere is infinite (`f64::max` would skip it).
fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let s = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| if x.is_nan() || y.is_nan() { f64::INFINITY } else { (x - y).abs() }).fold(0.0, f64::max) / s
}

#[test]
fn forward_matches_per_token_reference_with_heterogeneous_widths() {
    let widths = vec![2048, 1024, 512, 1024];
    let (store, p) = layer(40, 6, 2048, 1, DType::F32);
    for (k, renormalize, cf) in [(1, false, None), (2, false, None), (2, true, None), (1, false, Some(1.0)), (3, true, Some(1.25))] {
        let sub = MoeSubnet { d: 32, widths: widths.clone(), k };
        let opts = MoeOptions { renormalize, capacity_factor: cf, ..Default::default() };
        let x = rand(&[70, 32], DType::F32, 2 + k as u64);
        let mut tape = Tape::inference();
        let xv = tape.constant(x.clone());
        let out = moe_forward(&mut tape, &store, &p, &sub, &opts, &xv).unwrap();
        let want = reference_layer(&store, &p, &sub, &opts, &x.to_f64_vec().unwrap());
        let err = max_rel(&out.y.value().to_f64_vec().unwrap(), &want);
        assert!(err < 1e-5, "k={k} renorm={renormalize} cf={cf:?}: error {err}");
        assert!(
            out.routing.counts().unwrap().iter().filter(|&&c| c > 0).count() >= 2,
            "routing should spread: {:?}",
            out.routing.counts().unwrap()
        );
    }
}

#[test]
fn capacity_drops_tokens_to_zero_output() {
    let (store, p) = layer(8, 4, 16, 3, DType::F64);
    let sub = MoeSubnet { d: 8, widths: vec![16, 8, 4], k: 1 };
    let opts = MoeOptions { capacity_factor: Some(0.5), ..Default::default() };
    let x = rand(&[30, 8], DType::F64, 4);
    let mut tape = Tape::inference();
    let xv = tape.constant(x);
    let out = moe_forward(&mut tape, &store, &p, &sub, &opts, &xv).unwrap();
    let y = out.y.value().to_f64_vec().unwrap();
    let dropped: Vec<usize> = (0..30).filter(|&t| out.routing.to_host().unwrap().pos[t] == DROPPED).collect();
    assert!(!dropped.is_empty());
    for t in dropped {
        assert!(y[t * 8..(t + 1) * 8].iter().all(|&v| v == 0.0), "dropped token {t} must get zero");
    }
}

/// Biases on the router force the degenerate routings.
fn with_router_bias(store: &mut ParamStore, p: &MoeParams, bias: &[f64]) {
    let n = p.n_max;
    let mut b = vec![0.0; n];
    b[..bias.len()].copy_from_slice(bias);
    let dtype = store.value(p.router_b).dtype();
    store.get_mut(p.router_b).value = Tensor::from_vec(b, &[n]).unwrap().to_dtype(dtype).unwrap();
}

#[test]
fn degenerate_routings_zero_token_experts_and_all_on_one() {
    let (mut store, p) = layer(8, 4, 16, 5, DType::F64);
    let sub = MoeSubnet { d: 8, widths: vec![16, 4, 12, 8], k: 1 };
    let opts = MoeOptions::default();
    let x = rand(&[20, 8], DType::F64, 6);
    for bias in [vec![0.0, -1e3, 0.0, -1e3], vec![1e3, 0.0, 0.0, 0.0]] {
        with_router_bias(&mut store, &p, &bias);
        let mut tape = Tape::new();
        let xv = tape.input(x.clone());
        let out = moe_forward(&mut tape, &store, &p, &sub, &opts, &xv).unwrap();
        let want = reference_layer(&store, &p, &sub, &opts, &x.to_f64_vec().unwrap());
        assert!(max_rel(&out.y.value().to_f64_vec().unwrap(), &want) < 1e-12);
        assert!(out.routing.counts().unwrap().contains(&0));
        let loss = tape.sum(&out.y).unwrap();
        let grads = tape.backward(&loss).unwrap();
        store.accumulate(&grads).unwrap();
        // An expert that received no tokens gets no gradient at all.
        for (e, &c) in out.routing.counts().unwrap().iter().enumerate() {
            let g = store.grad(p.experts[e].fc1_w);
            assert_eq!(g.is_some(), c > 0, "expert {e} with {c} tokens");
        }
        store.zero_grads();
    }
}

#[test]
fn one_expert_routed_layer_equals_the_dense_ffn() {
    // Widths below and above the forward's hidden block (several blocks, the last one partial).
    for (h, seed) in [(20usize, 7u64), (600, 9)] {
        let (store, p) = layer(16, 3, h + 12, seed, DType::F32);
        let sub = MoeSubnet { d: 12, widths: vec![h], k: 1 };
        let x = rand(&[300, 12], DType::F32, seed + 1);
        let mut tape = Tape::inference();
        let xv = tape.constant(x);
        let dense = moe_forward(&mut tape, &store, &p, &sub, &MoeOptions::default(), &xv).unwrap();
        let routed = moe_forward_routed(&mut tape, &store, &p, &sub, &MoeOptions::default(), &xv).unwrap();
        assert!(tape.is_empty());
        let (a, b) = (dense.y.value().to_f64_vec().unwrap(), routed.y.value().to_f64_vec().unwrap());
        if h <= automoe::moe::experts::H_BLOCK {
            assert_eq!(a, b, "width {h}: a 1-expert layer is the dense FFN with gate exactly 1.0");
        } else {
            // The grouped forward sums the second GEMM over hidden blocks, so the routed path
            // rounds differently; `moe_forward` itself runs the dense FFN for one expert.
            assert!(max_rel(&b, &a) < 1e-6, "width {h}: routed {}", max_rel(&b, &a));
        }
    }
}

#[test]
fn k_larger_than_the_expert_count_is_an_error() {
    let (store, p) = layer(8, 4, 16, 9, DType::F32);
    let mut tape = Tape::inference();
    let xv = tape.constant(rand(&[4, 8], DType::F32, 10));
    let err = moe_forward(&mut tape, &store, &p, &MoeSubnet { d: 8, widths: vec![8, 8], k: 3 }, &MoeOptions::default(), &xv).unwrap_err();
    assert!(err.to_string().contains("k = 3"), "{err}");
    let err = moe_forward(&mut tape, &store, &p, &MoeSubnet { d: 8, widths: vec![8, 99], k: 1 }, &MoeOptions::default(), &xv).unwrap_err();
    assert!(err.to_string().contains("width 99"), "{err}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (store, p) = layer(32, 8, 600, 11, DType::F32);
    let sub = MoeSubnet { d: 32, widths: vec![600, 300, 17, 600, 256, 96], k: 2 };
    let x = rand(&[900, 32], DType::F32, 12);
    let run = || {
        let mut tape = Tape::new();
        let xv = tape.input(x.clone());
        let opts = MoeOptions { balance_coef: 0.01, ..Default::default() };
        let out = moe_forward(&mut tape, &store, &p, &sub, &opts, &xv).unwrap();
        let s = tape.sum(&out.y).unwrap();
        let loss = tape.add(&s, out.balance_loss.as_ref().unwrap()).unwrap();
        let grads = tape.backward(&loss).unwrap();
        (out.y.value().to_f64_vec().unwrap(), grads.wrt(&xv).unwrap().to_f64_vec().unwrap())
    };
    // Explicit pools: on a one-core machine the default pool has one thread, which would make
    // this compare a run with itself.
    let pool = |n: usize| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let four = pool(4).install(run);
    let single = pool(1).install(run);
    assert!(four == single, "outputs and gradients must be bit-identical across thread counts");
}

const TOL: f64 = 1e-6;

fn assert_grads(name: &str, inputs: &[Tensor], f: impl Fn(&mut Tape, &[Var]) -> Result<Var>) {
    let r = check_gradients(inputs, 1e-6, |t, v| {
        let y = f(t, v)?;
        let w = t.constant(rand(y.shape(), DType::F64, 777));
        let p = t.mul(&y, &w)?;
        t.sum(&p)
    })
    .unwrap();
    assert!(r.max_rel_error < TOL, "{name}: {r:?}");
}

#[test]
fn gradcheck_topk_gating() {
    for (k, renorm) in [(1, false), (2, false), (2, true), (3, true)] {
        assert_grads(&format!("topk k={k} renorm={renorm}"), &[rand(&[6, 5], DType::F64, 20 + k as u64)], |t, v| {
            let probs = t.softmax(&v[0], &Default::default())?;
            Ok(t.topk_gating(&probs, k, renorm)?.gates)
        });
    }
}

#[test]
fn gradcheck_permute_and_combine() {
    let idx = [2u32, 0, 0, 2, 1, 0, 2, 1, 0, 0];
    let dis = Arc::new(Dispatch::new(&idx, 5, 2, 4, None).unwrap()); // expert 3 gets nothing
    assert_grads("permute", &[rand(&[5, 3], DType::F64, 30)], |t, v| t.moe_permute(&v[0], &dis));
    assert_grads("combine", &[rand(&[10, 3], DType::F64, 31), rand(&[5, 2], DType::F64, 32)], |t, v| t.moe_combine(&v[0], &v[1], &dis));
    let capped = Arc::new(Dispatch::new(&idx, 5, 2, 4, Some(2)).unwrap());
    assert!(capped.rows() < idx.len(), "the cap must drop pairs");
    // Dropped pairs take no row, so their tokens' gradients come only from the kept pairs.
    assert_grads("permute with drops", &[rand(&[5, 3], DType::F64, 35)], |t, v| t.moe_permute(&v[0], &capped));
    assert_grads("combine with drops", &[rand(&[capped.rows(), 3], DType::F64, 33), rand(&[5, 2], DType::F64, 34)], |t, v| {
        t.moe_combine(&v[0], &v[1], &capped)
    });
}

#[test]
fn gradcheck_grouped_ffn_through_front_slices() {
    // Three experts of widths 5, 3, 4 sliced from max-size [6, 5] / [5, 6] weights; d = 4 of 5;
    // expert 1 receives no rows.
    let offsets = [0usize, 4, 4, 7];
    let widths = [5usize, 3, 4];
    let mut inputs = vec![rand(&[7, 4], DType::F64, 40)];
    for e in 0..3 {
        let s = 41 + 4 * e as u64;
        inputs.extend([
            rand(&[6, 5], DType::F64, s),
            rand(&[6], DType::F64, s + 1),
            rand(&[5, 6], DType::F64, s + 2),
            rand(&[5], DType::F64, s + 3),
        ]);
    }
    for act in [Activation::Relu, Activation::Gelu] {
        assert_grads(&format!("grouped_ffn {act:?}"), &inputs, |t, v| {
            let experts = (0..3)
                .map(|e| {
                    let (h, b) = (widths[e], 1 + 4 * e);
                    Ok(ExpertVars {
                        w1: t.front_slice(&v[b], &[h, 4])?,
                        b1: t.front_slice(&v[b + 1], &[h])?,
                        w2: t.front_slice(&v[b + 2], &[4, h])?,
                        b2: t.front_slice(&v[b + 3], &[4])?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            t.grouped_ffn(&v[0], &experts, &offsets, act)
        });
    }
}

/// The library's routed layer itself (`moe_forward_routed`, not a copy of it), by central
/// differences on its input and on elements inside the used slices of its parameters, for top-2
/// routing with renormalised gates and with a capacity that drops pairs. The loss is a random
/// projection of the output plus the balance loss.
#[test]
fn gradcheck_the_routed_layer_top2_with_renormalisation_and_capacity() {
    let sub = MoeSubnet { d: 5, widths: vec![8, 3, 6], k: 2 };
    for (opts, seed) in [
        (MoeOptions { renormalize: true, balance_coef: 0.5, ..Default::default() }, 50),
        (MoeOptions { capacity_factor: Some(0.7), balance_coef: 0.3, activation: Activation::Gelu, ..Default::default() }, 60),
    ] {
        let (mut store, p) = layer(6, 4, 8, seed, DType::F64);
        let mut x = rand(&[9, 5], DType::F64, seed + 1);
        let w = rand(&[9, 5], DType::F64, seed + 2);
        let loss = |t: &mut Tape, store: &ParamStore, x: &Var| -> Result<Var> {
            let out = moe_forward_routed(t, store, &p, &sub, &opts, x)?;
            let wv = t.constant(w.clone());
            let prod = t.mul(&out.y, &wv)?;
            let sum = t.sum(&prod)?;
            t.add(&sum, out.balance_loss.as_ref().expect("balance_coef > 0"))
        };
        let mut tape = Tape::new();
        let xv = tape.input(x.clone());
        let l = loss(&mut tape, &store, &xv).unwrap();
        let grads = tape.backward(&l).unwrap();
        let dx = grads.wrt(&xv).unwrap().to_f64_vec().unwrap();
        let dparams: std::collections::HashMap<_, _> =
            grads.param_grads().unwrap().into_iter().map(|(id, g)| (id, g.to_f64_vec().unwrap())).collect();
        if opts.capacity_factor.is_some() {
            let mut t = Tape::inference();
            let xv = t.constant(x.clone());
            let out = moe_forward_routed(&mut t, &store, &p, &sub, &opts, &xv).unwrap();
            let pos = out.routing.to_host().unwrap().pos.clone();
            assert!(pos.contains(&DROPPED), "the capacity case must drop pairs to test them");
        }
        let value = |store: &ParamStore, x: &Tensor| {
            let mut t = Tape::inference();
            let xv = t.constant(x.clone());
            loss(&mut t, store, &xv).unwrap().value().to_scalar().unwrap()
        };
        let h = 1e-6;
        let check = |what: String, analytic: f64, numeric: f64| {
            let err = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-3);
            assert!(err < 1e-6, "{what}: analytic {analytic} numeric {numeric} (rel err {err})");
        };
        for i in [0, 7, 23, 44] {
            let x0 = x.data_mut::<f64>().unwrap()[i];
            x.data_mut::<f64>().unwrap()[i] = x0 + h;
            let up = value(&store, &x);
            x.data_mut::<f64>().unwrap()[i] = x0 - h;
            let down = value(&store, &x);
            x.data_mut::<f64>().unwrap()[i] = x0;
            check(format!("x[{i}] (seed {seed})"), dx[i], (up - down) / (2.0 * h));
        }
        // (parameter, flat index inside its used slice: rows of the subnet's experts, columns of d)
        let e = &p.experts;
        let elements = [
            (p.router_w, 2 * 6 + 4), // router row 2 (the third expert), column 4
            (p.router_b, 1),
            (e[0].fc1_w, 7 * 6 + 3), // expert 0 (width 8): row 7, column 3
            (e[1].fc1_b, 2),         // expert 1 (width 3)
            (e[2].fc2_w, 4 * 8 + 5), // expert 2 (width 6): row 4, column 5
            (e[2].fc2_b, 0),
        ];
        for (id, i) in elements {
            let name = store.get(id).name.clone();
            let mut eval = |delta: f64| {
                store.get_mut(id).value.data_mut::<f64>().unwrap()[i] += delta;
                let v = value(&store, &x);
                store.get_mut(id).value.data_mut::<f64>().unwrap()[i] -= delta;
                v
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let analytic = dparams.get(&id).map_or(0.0, |g| g[i]);
            // Each element is one a routed token uses, so a zero gradient would be a lost path.
            assert!(analytic.abs() > 1e-6, "{name}[{i}] (seed {seed}): gradient {analytic}");
            check(format!("{name}[{i}] (seed {seed})"), analytic, numeric);
        }
    }
}

#[test]
fn balance_loss_is_coef_under_uniform_routing() {
    // Equal logits: every prob is 1/n; ties go to expert 0, so f = (1, 0, 0, 0) and the loss is
    // coef * n * (1 * 1/n) = coef. With two layers of different expert counts, each is `coef`.
    for n in [2usize, 4, 7] {
        let mut tape = Tape::new();
        let logits = tape.input(Tensor::zeros(&[10, n], DType::F64));
        let probs = tape.softmax(&logits, &Default::default()).unwrap();
        let g = tape.topk_gating(&probs, 1, false).unwrap();
        let dis = Dispatch::new(&g.idx.to_host().unwrap(), 10, 1, n, None).unwrap();
        let l = automoe::moe::balance_loss(&mut tape, &probs, &dis, 0.01).unwrap();
        assert!((l.value().to_scalar().unwrap() - 0.01).abs() < 1e-15, "n = {n}");
    }
}

#[test]
fn an_expert_with_several_row_tiles_and_hidden_blocks_matches_the_reference() {
    // Every token on expert 0: with 2 * ROW_TILE + 37 tokens its segment spans three row tiles
    // (the last one partial) and its width three hidden blocks of the forward (the last one
    // partial); with up to ROWWISE_MAX_ROWS tokens the forward reads the weights in place row by
    // row instead.
    let h = 2 * automoe::moe::experts::H_BLOCK + 88;
    let few = automoe::cpu::matmul::ROWWISE_MAX_ROWS;
    for t in [1, 2, few, few + 1, 2 * automoe::moe::experts::ROW_TILE + 37] {
        one_expert_routed_matches_reference_and_dense_gradients(h, t);
    }
}

fn one_expert_routed_matches_reference_and_dense_gradients(h: usize, t: usize) {
    let (mut store, p) = layer(8, 3, h, 60, DType::F64);
    with_router_bias(&mut store, &p, &[1e3, 0.0, 0.0]);
    let sub = MoeSubnet { d: 8, widths: vec![h, 8, 4], k: 1 };
    let x = rand(&[t, 8], DType::F64, 61);
    let mut tape = Tape::new();
    let xv = tape.input(x.clone());
    let out = moe_forward(&mut tape, &store, &p, &sub, &MoeOptions::default(), &xv).unwrap();
    assert_eq!(out.routing.counts().unwrap(), [t, 0, 0]);
    let want = reference_layer(&store, &p, &sub, &MoeOptions::default(), &x.to_f64_vec().unwrap());
    let y = out.y.value().to_f64_vec().unwrap();
    assert!(max_rel(&y, &want) < 1e-12, "{t} tokens");
    // Inference keeps no hidden state but must compute the same output, bit for bit.
    let mut ti = Tape::inference();
    let xi = ti.constant(x.clone());
    let inf = moe_forward(&mut ti, &store, &p, &sub, &MoeOptions::default(), &xi).unwrap();
    assert_eq!(inf.y.value().to_f64_vec().unwrap(), y, "{t} tokens");
    // The gradients of sum(y) equal the dense FFN's (a 1-expert layer with expert 0's weights),
    // since the +1e3 router bias makes the gate exactly 1 (exp(-1e3) is 0). This checks the
    // pre-activations the forward saved.
    let loss = tape.sum(&out.y).unwrap();
    let g = tape.backward(&loss).unwrap();
    let dx = g.wrt(&xv).unwrap().to_f64_vec().unwrap();
    let mut t2 = Tape::new();
    let xv2 = t2.input(x);
    let dense = moe_forward(&mut t2, &store, &p, &MoeSubnet { d: 8, widths: vec![h], k: 1 }, &MoeOptions::default(), &xv2).unwrap();
    let l2 = t2.sum(&dense.y).unwrap();
    let g2 = t2.backward(&l2).unwrap();
    assert!(max_rel(&dx, &g2.wrt(&xv2).unwrap().to_f64_vec().unwrap()) < 1e-9, "{t} tokens");
    let param_grad = |g: &automoe::autograd::Gradients, id| {
        let all = g.param_grads().unwrap();
        all.into_iter().find(|(pid, _)| *pid == id).map(|(_, t)| t.to_f64_vec().unwrap()).unwrap()
    };
    for id in [p.experts[0].fc1_w, p.experts[0].fc1_b, p.experts[0].fc2_w, p.experts[0].fc2_b] {
        assert!(max_rel(&param_grad(&g, id), &param_grad(&g2, id)) < 1e-9, "{t} tokens");
    }
}
