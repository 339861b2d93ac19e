//! The Transformer forward pass: arbitrary-attention memory, a hand-written reference for dense
//! subnets, padding and dropout behaviour, errors on bad input.

mod common;

use std::sync::Arc;

use automoe::autograd::{ParamId, ParamStore, Tape, Var};
use automoe::model::{cross_attention_memory, sinusoidal_positions, Batch, ModelOptions, RunMode, SubnetConfig, Supernet};
use automoe::rng::seeded;
use automoe::tensor::MaskSpec;
use automoe::{DType, Tensor};
use common::{batch, dense_config, moe_config, rel_diff, tiny_space, VOCAB};

fn supernet(pre_norm: bool, dtype: DType) -> Supernet {
    Supernet::new(tiny_space(), VOCAB, ModelOptions { pre_norm, ..ModelOptions::default() }, 42, dtype).unwrap()
}

fn logits(net: &Supernet, cfg: &SubnetConfig, b: &Batch, run: RunMode) -> Vec<f64> {
    let mut tape = Tape::inference();
    net.forward(&mut tape, cfg, b, run).unwrap().logits.value().to_f64_vec().unwrap()
}

#[test]
fn arbitrary_attention_memory_concatenates_layers_and_masks() {
    let (batch, s, d) = (2, 3, 4);
    let mut tape = Tape::inference();
    // Encoder layer l's output holds 100*l + row*d + col, so every element says where it came from.
    let states: Vec<Var> = (0..3)
        .map(|l| {
            let v: Vec<f64> = (0..batch * s * d).map(|i| (100 * l + i) as f64).collect();
            tape.constant(Tensor::from_vec(v, &[batch * s, d]).unwrap())
        })
        .collect();
    let pad = vec![false, false, true, false, true, true];
    let (mem, mask) = cross_attention_memory(&mut tape, &states, &pad, batch, s, 1).unwrap();
    assert_eq!(mem.shape(), &[batch * s, d]);
    assert_eq!(mem.value().to_f64_vec().unwrap(), states[2].value().to_f64_vec().unwrap());
    assert_eq!(*mask, pad);

    let (mem, mask) = cross_attention_memory(&mut tape, &states, &pad, batch, s, 3).unwrap();
    assert_eq!(mem.shape(), &[batch * 3 * s, d]);
    let v = mem.value().to_f64_vec().unwrap();
    // Sentence b's memory is layers 0, 1, 2 of sentence b, one after another along time.
    for b in 0..batch {
        for l in 0..3 {
            for t in 0..s {
                let row = b * 3 * s + l * s + t;
                assert_eq!(v[row * d], (100 * l + (b * s + t) * d) as f64, "b {b} layer {l} t {t}");
            }
        }
    }
    assert_eq!(
        *mask,
        vec![false, false, true, false, false, true, false, false, true, false, true, true, false, true, true, false, true, true]
    );

    let (mem, mask) = cross_attention_memory(&mut tape, &states, &pad, batch, s, 2).unwrap();
    assert_eq!(mem.shape(), &[batch * 2 * s, d]);
    assert_eq!(mem.value().to_f64_vec().unwrap()[0], 100.0);
    assert_eq!(mask.len(), batch * 2 * s);

    assert!(cross_attention_memory(&mut tape, &states, &pad, batch, s, 4).unwrap_err().to_string().contains("encoder has 3"));
    assert!(cross_attention_memory(&mut tape, &states, &pad[..5], batch, s, 1).is_err());
}

/// The part of a stored parameter a subnet uses, as a constant.
fn w(t: &mut Tape, store: &ParamStore, id: ParamId, sizes: &[usize]) -> Var {
    t.constant(store.value(id).front_slice(sizes).unwrap().contiguous().unwrap())
}

fn lin(t: &mut Tape, x: &Var, store: &ParamStore, wi: ParamId, bi: ParamId, out: usize) -> Var {
    let inp = x.shape()[1];
    let wv = w(t, store, wi, &[out, inp]);
    let bv = w(t, store, bi, &[out]);
    t.linear(x, &wv, Some(&bv)).unwrap()
}

fn ln(t: &mut Tape, x: &Var, store: &ParamStore, p: &automoe::model::params::LnParams, d: usize) -> Var {
    let g = w(t, store, p.gamma, &[d]);
    let b = w(t, store, p.beta, &[d]);
    t.layer_norm(x, &g, &b, 1e-5).unwrap()
}

/// Attention computed one sentence and one head at a time with 2-D products.
#[allow(clippy::too_many_arguments)]
fn ref_attention(
    t: &mut Tape,
    store: &ParamStore,
    p: &automoe::model::params::AttnParams,
    x: &Var,
    mem: &Var,
    b: usize,
    tq: usize,
    tk: usize,
    heads: usize,
    key_pad: &[bool],
    causal: bool,
) -> Var {
    let qkv = 8;
    let hd = qkv / heads;
    let d = x.shape()[1];
    let q = lin(t, x, store, p.q_w, p.q_b, qkv);
    let k = lin(t, mem, store, p.k_w, p.k_b, qkv);
    let v = lin(t, mem, store, p.v_w, p.v_b, qkv);
    let mut rows = Vec::new();
    for s in 0..b {
        let mut hs = Vec::new();
        for h in 0..heads {
            let qs = t.narrow(&q, 0, s * tq, tq).unwrap();
            let qs = t.narrow(&qs, 1, h * hd, hd).unwrap();
            let ks = t.narrow(&k, 0, s * tk, tk).unwrap();
            let ks = t.narrow(&ks, 1, h * hd, hd).unwrap();
            let vs = t.narrow(&v, 0, s * tk, tk).unwrap();
            let vs = t.narrow(&vs, 1, h * hd, hd).unwrap();
            let kt = t.transpose(&ks, 0, 1).unwrap();
            let sc = t.matmul(&qs, &kt).unwrap();
            let sc = t.scale(&sc, 1.0 / (hd as f64).sqrt()).unwrap();
            let sc = t.reshape(&sc, &[1, tq, tk]).unwrap();
            let mask = MaskSpec { causal, key_padding: Some(Arc::new(key_pad[s * tk..(s + 1) * tk].to_vec())) };
            let pr = t.softmax(&sc, &mask).unwrap();
            let pr = t.reshape(&pr, &[tq, tk]).unwrap();
            hs.push(t.matmul(&pr, &vs).unwrap());
        }
        let refs: Vec<&Var> = hs.iter().collect();
        rows.push(t.concat(&refs, 1).unwrap());
    }
    let refs: Vec<&Var> = rows.iter().collect();
    let c = t.concat(&refs, 0).unwrap();
    lin(t, &c, store, p.o_w, p.o_b, d)
}

/// A dense FFN written out: relu(x W1^T + b1) W2^T + b2 from expert 0's slices.
fn ref_ffn(t: &mut Tape, store: &ParamStore, p: &automoe::moe::MoeParams, x: &Var, h: usize) -> Var {
    let e = &p.experts[0];
    let d = x.shape()[1];
    let a = lin(t, x, store, e.fc1_w, e.fc1_b, h);
    let a = t.relu(&a).unwrap();
    let wv = w(t, store, e.fc2_w, &[d, h]);
    let bv = w(t, store, e.fc2_b, &[d]);
    t.linear(&a, &wv, Some(&bv)).unwrap()
}

/// A post-LN Transformer for a dense config, written with plain tape ops on copies of the
/// supernet's slices: no MoE layer, no reshaped multi-head products, no sliced views.
fn reference_logits(net: &Supernet, cfg: &SubnetConfig, b: &Batch) -> Vec<f64> {
    let st = &net.store;
    let p = &net.params;
    let mut t = Tape::inference();
    let (de, dd) = (cfg.encoder_embed_dim, cfg.decoder_embed_dim);
    let embed = |t: &mut Tape, ids: &[u32], len: usize, d: usize| -> Var {
        let table = w(t, st, p.embed, &[VOCAB, d]);
        let x = t.embedding(&table, ids).unwrap();
        let x = t.scale(&x, (d as f64).sqrt()).unwrap();
        let pos = sinusoidal_positions(len, d, DType::F64).unwrap();
        let pos = t.constant(pos);
        let mut rows = Vec::new();
        for s in 0..b.batch {
            let xs = t.narrow(&x, 0, s * len, len).unwrap();
            rows.push(t.add(&xs, &pos).unwrap());
        }
        let refs: Vec<&Var> = rows.iter().collect();
        t.concat(&refs, 0).unwrap()
    };
    let mut x = embed(&mut t, &b.src, b.src_len, de);
    let mut states = Vec::new();
    for (l, lp) in cfg.encoder.iter().zip(&p.encoder) {
        let a = ref_attention(&mut t, st, &lp.self_attn, &x, &x, b.batch, b.src_len, b.src_len, l.self_heads, &b.src_pad, false);
        let s = t.add(&x, &a).unwrap();
        x = ln(&mut t, &s, st, &lp.self_ln, de);
        let f = ref_ffn(&mut t, st, &lp.ffn, &x, l.expert_widths[0]);
        let s = t.add(&x, &f).unwrap();
        x = ln(&mut t, &s, st, &lp.ffn_ln, de);
        states.push(x.clone());
    }
    let mut y = embed(&mut t, &b.tgt, b.tgt_len, dd);
    for (l, lp) in cfg.decoder.iter().zip(&p.decoder) {
        let a = ref_attention(&mut t, st, &lp.self_attn, &y, &y, b.batch, b.tgt_len, b.tgt_len, l.self_heads, &b.tgt_pad, true);
        let s = t.add(&y, &a).unwrap();
        y = ln(&mut t, &s, st, &lp.self_ln, dd);
        // Memory: per sentence, the last m encoder outputs one after another.
        let m = if l.cross_span == -1 { 1 } else { l.cross_span as usize + 1 };
        let mut parts = Vec::new();
        let mut pad = Vec::new();
        for s in 0..b.batch {
            for e in &states[states.len() - m..] {
                parts.push(t.narrow(e, 0, s * b.src_len, b.src_len).unwrap());
                pad.extend_from_slice(&b.src_pad[s * b.src_len..(s + 1) * b.src_len]);
            }
        }
        let refs: Vec<&Var> = parts.iter().collect();
        let mem = t.concat(&refs, 0).unwrap();
        let a = ref_attention(&mut t, st, &lp.cross_attn, &y, &mem, b.batch, b.tgt_len, m * b.src_len, l.cross_heads, &pad, false);
        let s = t.add(&y, &a).unwrap();
        y = ln(&mut t, &s, st, &lp.cross_ln, dd);
        let f = ref_ffn(&mut t, st, &lp.ffn, &y, l.expert_widths[0]);
        let s = t.add(&y, &f).unwrap();
        y = ln(&mut t, &s, st, &lp.ffn_ln, dd);
    }
    let table = w(&mut t, st, p.embed, &[VOCAB, dd]);
    t.linear(&y, &table, None).unwrap().value().to_f64_vec().unwrap()
}

/// Rows of `[B*T, V]` logits at non-pad target positions.
fn real_rows(v: &[f64], pad: &[bool]) -> Vec<f64> {
    pad.iter().enumerate().filter(|(_, &p)| !p).flat_map(|(i, _)| v[i * VOCAB..(i + 1) * VOCAB].to_vec()).collect()
}

#[test]
fn dense_subnet_equals_a_plain_transformer() {
    let net = supernet(false, DType::F64);
    let cfg = dense_config();
    // No padding: every row compares (pad rows are garbage by design in both).
    let b = batch(&[5, 5], &[4, 4], 1);
    let got = logits(&net, &cfg, &b, RunMode::inference());
    let want = reference_logits(&net, &cfg, &b);
    assert!(rel_diff(&got, &want) < 1e-10, "{}", rel_diff(&got, &want));
    // With padding, the non-pad rows still agree (pad rows differ: the model zeroes their FFN).
    let b = batch(&[5, 3], &[4, 2], 2);
    let got = logits(&net, &cfg, &b, RunMode::inference());
    let want = reference_logits(&net, &cfg, &b);
    let (g, w) = (real_rows(&got, &b.tgt_pad), real_rows(&want, &b.tgt_pad));
    assert!(rel_diff(&g, &w) < 1e-10, "{}", rel_diff(&g, &w));
}

/// A sentence's logits do not depend on what else is in its batch or on the pad ids.
fn padding_invariance(cfg: &SubnetConfig, pre_norm: bool) {
    let net = supernet(pre_norm, DType::F64);
    let alone = batch(&[4], &[3], 5);
    let mut both =
        Batch::from_sentences(&[alone.src.clone(), vec![7, 8, 9, 10, 11, 12]], &[alone.tgt.clone(), vec![3, 4, 5, 6, 7]], common::PAD)
            .unwrap();
    let a = logits(&net, cfg, &alone, RunMode::inference());
    let b1 = logits(&net, cfg, &both, RunMode::inference());
    // Sentence 0 is padded to 6 source / 5 target positions in the pair; its first 3 target rows.
    let got = &b1[..3 * VOCAB];
    assert!(rel_diff(got, &a) < 1e-10, "{}", rel_diff(got, &a));
    // Changing the pad ids changes nothing at real positions.
    for (id, &p) in both.src.iter_mut().zip(&both.src_pad) {
        if p {
            *id = 5;
        }
    }
    let b2 = logits(&net, cfg, &both, RunMode::inference());
    let (r1, r2) = (real_rows(&b1, &both.tgt_pad), real_rows(&b2, &both.tgt_pad));
    assert!(rel_diff(&r2, &r1) < 1e-12);
}

#[test]
fn padding_is_invisible_dense() {
    padding_invariance(&dense_config(), false);
    padding_invariance(&dense_config(), true);
}

#[test]
fn padding_is_invisible_moe() {
    padding_invariance(&moe_config(), false);
}

#[test]
fn dropout_is_seeded_and_off_at_inference() {
    let net = supernet(false, DType::F32);
    let cfg = dense_config();
    let b = batch(&[5, 4], &[4, 3], 3);
    let inf = logits(&net, &cfg, &b, RunMode::inference());
    assert_eq!(inf, logits(&net, &cfg, &b, RunMode::inference()));
    let t1 = logits(&net, &cfg, &b, RunMode::train(9));
    assert_eq!(t1, logits(&net, &cfg, &b, RunMode::train(9)));
    assert_ne!(t1, logits(&net, &cfg, &b, RunMode::train(10)));
    assert_ne!(t1, inf);
    let no_drop =
        Supernet::new(tiny_space(), VOCAB, ModelOptions { dropout: 0.0, attention_dropout: 0.0, ..Default::default() }, 42, DType::F32)
            .unwrap();
    assert_eq!(logits(&no_drop, &cfg, &b, RunMode::train(9)), logits(&no_drop, &cfg, &b, RunMode::inference()));
}

#[test]
fn output_shapes() {
    let net = supernet(true, DType::F32);
    let b = batch(&[5, 4, 2], &[4, 6, 1], 3);
    for cfg in [dense_config(), tiny_space().largest()] {
        let mut tape = Tape::new();
        let out = net.forward(&mut tape, &cfg, &b, RunMode::train(1)).unwrap();
        assert_eq!(out.logits.shape(), &[3 * 6, VOCAB]);
        assert_eq!(out.routing.encoder.len(), cfg.encoder.len());
        assert_eq!(out.routing.decoder.len(), cfg.decoder.len());
        // Padding is taken out before the FFN: only real tokens are routed.
        assert!(out.routing.encoder.iter().all(|r| r.tokens == 11));
        assert!(out.routing.decoder.iter().all(|r| r.tokens == 11));
    }
}

#[test]
fn bad_input_is_an_error() {
    let net = supernet(false, DType::F32);
    let mut tape = Tape::inference();
    let mut b = batch(&[3], &[3], 1);
    b.src[0] = VOCAB as u32;
    let e = net.forward(&mut tape, &dense_config(), &b, RunMode::inference()).err().unwrap().to_string();
    assert!(e.contains("source token id 23"), "{e}");
    let b = batch(&[3], &[3], 1);
    let mut cfg = dense_config();
    cfg.encoder[0].expert_widths = vec![32];
    assert!(net.forward(&mut tape, &cfg, &b, RunMode::inference()).is_err());
    assert!(Batch::new(2, 3, 3, vec![0; 6], vec![false; 5], vec![0; 6], vec![false; 6]).unwrap_err().to_string().contains("src_pad"));
    assert!(Supernet::new(tiny_space(), 0, ModelOptions::default(), 1, DType::F32).is_err());
    assert!(Supernet::new(tiny_space(), VOCAB, ModelOptions { dropout: 1.5, ..Default::default() }, 1, DType::F32).is_err());
    let _ = seeded(0);
}
