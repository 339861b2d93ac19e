//! Incremental decoding against full recomputation: at every step, the logits of the cached
//! decoder equal the teacher-forced forward pass at that position (dense and MoE subnets, spans
//! -1/1/2, post- and pre-LN, padded batches, supernet and extracted models, reordered rows).

mod common;

use automoe::model::{Batch, ModelOptions, ModelView, RunMode, SourceBatch, SubnetConfig, Supernet};
use automoe::{autograd::Tape, DType};
use common::{batch, dense_config, moe_config, rel_diff, tiny_space, VOCAB};

fn supernet(pre_norm: bool, dtype: DType, seed: u64) -> Supernet {
    let opts = ModelOptions { pre_norm, ..ModelOptions::default() };
    Supernet::new(tiny_space(), VOCAB, opts, seed, dtype).unwrap()
}

/// Full teacher-forced logits `[B*T, V]` as f64.
fn full_logits(sup: &Supernet, cfg: &SubnetConfig, b: &Batch) -> Vec<f64> {
    let mut tape = Tape::inference();
    sup.forward(&mut tape, cfg, b, RunMode::inference()).unwrap().logits.value().to_f64_vec().unwrap()
}

fn source(b: &Batch) -> SourceBatch {
    SourceBatch { batch: b.batch, src_len: b.src_len, ids: b.src.clone(), pad: b.src_pad.clone() }
}

/// Steps through the target of `b` and compares every real position with `full`.
fn check_steps(view: &ModelView, b: &Batch, full: &[f64], tol: f64) {
    let v = view.vocab();
    let enc = view.encode(&source(b)).unwrap();
    let mut state = view.start(&enc).unwrap();
    for t in 0..b.tgt_len {
        let tokens: Vec<u32> = (0..b.batch).map(|i| b.tgt[i * b.tgt_len + t]).collect();
        let logits = view.step(&mut state, &tokens).unwrap().to_f64_vec().unwrap();
        assert_eq!(logits.len(), b.batch * v);
        for i in 0..b.batch {
            if b.tgt_pad[i * b.tgt_len + t] {
                continue; // past this sentence's end: the full pass masks it, nothing to compare
            }
            let want = &full[(i * b.tgt_len + t) * v..(i * b.tgt_len + t + 1) * v];
            let got = &logits[i * v..(i + 1) * v];
            let d = rel_diff(got, want);
            assert!(d < tol, "step {t}, sentence {i}: relative difference {d:e}");
        }
    }
    assert_eq!(state.position(), b.tgt_len);
}

fn check_config(cfg: &SubnetConfig, pre_norm: bool, dtype: DType, tol: f64) {
    let sup = supernet(pre_norm, dtype, 7);
    // Padding on both sides: sources of 5, 3, 7 tokens, targets of 6, 2, 4.
    let b = batch(&[5, 3, 7], &[6, 2, 4], 11);
    let full = full_logits(&sup, cfg, &b);
    check_steps(&sup.view(cfg).unwrap(), &b, &full, tol);
    let model = sup.extract(cfg).unwrap();
    check_steps(&model.view().unwrap(), &b, &full, tol);
}

#[test]
fn dense_post_norm_matches_full_forward() {
    check_config(&dense_config(), false, DType::F64, 1e-10);
}

#[test]
fn dense_pre_norm_matches_full_forward() {
    check_config(&dense_config(), true, DType::F64, 1e-10);
}

#[test]
fn moe_post_norm_matches_full_forward() {
    check_config(&moe_config(), false, DType::F64, 1e-10);
}

#[test]
fn moe_pre_norm_matches_full_forward() {
    check_config(&moe_config(), true, DType::F64, 1e-10);
}

#[test]
fn every_span_matches_full_forward_in_f32() {
    for span in [-1, 1, 2] {
        let mut cfg = moe_config();
        for l in &mut cfg.decoder {
            l.cross_span = span;
        }
        check_config(&cfg, span == 1, DType::F32, 1e-4);
    }
}

#[test]
fn unpadded_single_sentence_matches() {
    let sup = supernet(false, DType::F64, 3);
    let cfg = moe_config();
    let b = batch(&[4], &[5], 2);
    let full = full_logits(&sup, &cfg, &b);
    check_steps(&sup.view(&cfg).unwrap(), &b, &full, 1e-10);
}

/// Reordering rows (beam search's gather: drop, repeat, swap sentences) keeps each row's own
/// history: after the reorder every row continues exactly as its source sentence would.
#[test]
fn reorder_keeps_each_rows_history() {
    let sup = supernet(false, DType::F64, 5);
    let cfg = moe_config();
    let b = batch(&[5, 3, 7], &[6, 6, 6], 13);
    let full = full_logits(&sup, &cfg, &b);
    let view = sup.view(&cfg).unwrap();
    let v = view.vocab();
    let mut state = view.start(&view.encode(&source(&b)).unwrap()).unwrap();
    let mut rows: Vec<usize> = vec![0, 1, 2];
    for t in 0..b.tgt_len {
        if t == 2 {
            // Sentence 2 twice, then 0; sentence 1 dropped.
            state.reorder(&[2, 0, 2]).unwrap();
            rows = vec![2, 0, 2];
            assert_eq!(state.row_sources(), &[2, 0, 2]);
        }
        if t == 4 {
            state.reorder(&[1, 2]).unwrap();
            rows = vec![0, 2];
        }
        let tokens: Vec<u32> = rows.iter().map(|&i| b.tgt[i * b.tgt_len + t]).collect();
        let logits = view.step(&mut state, &tokens).unwrap().to_f64_vec().unwrap();
        for (r, &i) in rows.iter().enumerate() {
            let want = &full[(i * b.tgt_len + t) * v..(i * b.tgt_len + t + 1) * v];
            let d = rel_diff(&logits[r * v..(r + 1) * v], want);
            assert!(d < 1e-10, "step {t}, row {r} (sentence {i}): {d:e}");
        }
    }
    assert!(state.reorder(&[5]).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let sup = supernet(false, DType::F32, 1);
    let cfg = dense_config();
    let view = sup.view(&cfg).unwrap();
    assert!(SourceBatch::from_sentences(&[vec![3, 2], vec![]], 0).is_err());
    let src = SourceBatch::from_sentences(&[vec![3, 4, 2], vec![5, 2]], 0).unwrap();
    let mut state = view.start(&view.encode(&src).unwrap()).unwrap();
    assert!(view.step(&mut state, &[1]).is_err(), "one token for two rows");
    assert!(view.step(&mut state, &[1, VOCAB as u32]).is_err(), "token outside the vocabulary");
    let bad = SourceBatch::from_sentences(&[vec![VOCAB as u32 + 1]], 0).unwrap();
    assert!(view.encode(&bad).is_err());
}
