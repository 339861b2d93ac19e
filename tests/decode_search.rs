//! Greedy and beam search on tiny random models: beam 1 is greedy, scores are the model's own
//! log-probabilities (rescored by the teacher-forced forward pass), length limits hold, batching
//! does not change a translation, empty sources give empty translations.

mod common;

use automoe::autograd::Tape;
use automoe::data::tokenizer::{BOS_ID, EOS_ID, PAD_ID};
use automoe::decode::{beam_search, greedy, translate_ids, SearchOptions};
use automoe::model::{Batch, ModelOptions, RunMode, SubnetConfig, Supernet};
use automoe::rng::seeded;
use automoe::{DType, Tensor};
use common::{dense_config, moe_config, tiny_space, VOCAB};
use rand::Rng;

fn supernet(seed: u64) -> Supernet {
    Supernet::new(tiny_space(), VOCAB, ModelOptions::default(), seed, DType::F64).unwrap()
}

/// Random sources of ordinary tokens (4..VOCAB), each ending in eos.
fn sources(lens: &[usize], seed: u64) -> Vec<Vec<u32>> {
    let mut rng = seeded(seed);
    lens.iter()
        .map(|&n| {
            let mut s: Vec<u32> = (0..n).map(|_| rng.random_range(4..VOCAB as u32)).collect();
            s.push(EOS_ID);
            s
        })
        .collect()
}

/// Sum of the teacher-forced log-probabilities of `tokens` followed by eos.
fn rescore(sup: &Supernet, cfg: &SubnetConfig, src: &[u32], tokens: &[u32]) -> f64 {
    let mut inp = vec![BOS_ID];
    inp.extend_from_slice(tokens);
    let b = Batch::from_sentences(&[src.to_vec()], &[inp], PAD_ID).unwrap();
    let mut tape = Tape::inference();
    let logits = sup.forward(&mut tape, cfg, &b, RunMode::inference()).unwrap().logits.value().to_f64_vec().unwrap();
    let targets: Vec<u32> = tokens.iter().copied().chain([EOS_ID]).collect();
    let mut total = 0.0;
    for (t, row) in logits.chunks(VOCAB).enumerate() {
        let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + row.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
        total += row[targets[t] as usize] - lse;
    }
    total
}

#[test]
fn beam_of_one_is_greedy() {
    for (seed, cfg) in [(1, dense_config()), (2, moe_config())] {
        let sup = supernet(seed);
        let view = sup.view(&cfg).unwrap();
        let src = sources(&[3, 7, 1, 5, 9], seed + 10);
        let opts = SearchOptions { beam: 1, ..SearchOptions::default() };
        let g = greedy(&view, &src, &opts).unwrap();
        let b = beam_search(&view, &src, &opts).unwrap();
        for (i, (g, b)) in g.iter().zip(&b).enumerate() {
            assert_eq!(b.len(), 1);
            assert_eq!(g, &b[0], "sentence {i}");
        }
        assert_eq!(translate_ids(&view, &src, &opts).unwrap(), g);
    }
}

#[test]
fn scores_are_the_models_log_probabilities() {
    let sup = supernet(3);
    let cfg = moe_config();
    let view = sup.view(&cfg).unwrap();
    let src = sources(&[4, 6], 5);
    let opts = SearchOptions { beam: 3, max_len_a: 0.0, max_len_b: 6, ..SearchOptions::default() };
    let nbest = beam_search(&view, &src, &opts).unwrap();
    for (s, hyps) in src.iter().zip(&nbest) {
        assert!(!hyps.is_empty() && hyps.len() <= 3);
        for w in hyps.windows(2) {
            assert!(w[0].score >= w[1].score, "n-best sorted best first");
        }
        for h in hyps {
            assert!(h.tokens.len() <= 6);
            assert!(h.tokens.iter().all(|&t| t != PAD_ID && t != BOS_ID && t != EOS_ID));
            let lp = rescore(&sup, &cfg, s, &h.tokens);
            assert!((lp - h.log_prob).abs() < 1e-9, "{lp} vs {}", h.log_prob);
            assert!((h.score - opts.normalize(h.log_prob, h.tokens.len())).abs() < 1e-12);
        }
    }
}

#[test]
fn length_limits_hold() {
    let sup = supernet(4);
    let cfg = dense_config();
    let view = sup.view(&cfg).unwrap();
    let src = sources(&[2, 8], 7);
    // min_len = max_len = 5: every hypothesis has exactly 5 tokens.
    let opts = SearchOptions { beam: 2, max_len_a: 0.0, max_len_b: 5, min_len: 5, ..SearchOptions::default() };
    for hyps in beam_search(&view, &src, &opts).unwrap() {
        assert!(hyps.iter().all(|h| h.tokens.len() == 5));
    }
    for h in greedy(&view, &src, &opts).unwrap() {
        assert_eq!(h.tokens.len(), 5);
    }
    // max_len_a scales with the source length (eos included): floor(0.5 * 3) + 1 = 2 and
    // floor(0.5 * 9) + 1 = 5.
    let opts = SearchOptions { beam: 3, max_len_a: 0.5, max_len_b: 1, ..SearchOptions::default() };
    let out = beam_search(&view, &src, &opts).unwrap();
    assert!(out[0].iter().all(|h| h.tokens.len() <= 2));
    assert!(out[1].iter().all(|h| h.tokens.len() <= 5));
    assert!(beam_search(&view, &src, &SearchOptions { beam: 0, ..SearchOptions::default() }).is_err());
}

#[test]
fn batching_does_not_change_translations() {
    let sup = supernet(6);
    let cfg = moe_config();
    let view = sup.view(&cfg).unwrap();
    let src = sources(&[5, 2, 9, 4], 9);
    let opts = SearchOptions { beam: 3, ..SearchOptions::default() };
    let together = beam_search(&view, &src, &opts).unwrap();
    for (i, s) in src.iter().enumerate() {
        let alone = beam_search(&view, std::slice::from_ref(s), &opts).unwrap();
        let (a, b) = (&alone[0], &together[i]);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.tokens, y.tokens, "sentence {i}");
            assert!((x.score - y.score).abs() < 1e-9);
        }
    }
    // A standalone extracted model translates the same.
    let model = sup.extract(&cfg).unwrap();
    let again = beam_search(&model.view().unwrap(), &src, &opts).unwrap();
    for (x, y) in again.iter().zip(&together) {
        assert_eq!(x[0].tokens, y[0].tokens);
    }
}

#[test]
fn empty_sources_give_empty_translations() {
    let sup = supernet(8);
    let cfg = dense_config();
    let view = sup.view(&cfg).unwrap();
    let mut src = sources(&[3], 1);
    src.insert(0, Vec::new());
    src.push(Vec::new());
    for beam in [1, 4] {
        let out = translate_ids(&view, &src, &SearchOptions { beam, ..SearchOptions::default() }).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out[0].tokens.is_empty() && out[2].tokens.is_empty());
        assert_eq!(out[0].score, 0.0);
    }
    assert!(translate_ids(&view, &[Vec::new()], &SearchOptions::default()).unwrap()[0].tokens.is_empty());
}

#[test]
fn latency_protocol_runs() {
    use automoe::decode::{measure, time_one_run, LatencyProtocol};
    let sup = supernet(9);
    let cfg = moe_config();
    let view = sup.view(&cfg).unwrap();
    let proto = LatencyProtocol { src_len: 6, steps: 4, beam: 3, warmup: 1, runs: 3, trim: 0.0, threads: Some(1), ..Default::default() };
    let r = measure(&view, &proto).unwrap();
    assert_eq!(r.threads, 1);
    assert_eq!(r.runs_kept, 3);
    assert!(r.encoder_ms > 0.0 && r.decoder_ms > 0.0);
    assert!((r.total_ms - r.encoder_ms - r.decoder_ms).abs() < 1e-12);
    let (e, d) = time_one_run(&view, &proto).unwrap();
    assert!(e > 0.0 && d > 0.0);
    assert!(measure(&view, &LatencyProtocol { beam: 0, ..proto }).is_err());
}

/// `translate_nbest`: the first `nbest` of beam search's finished hypotheses (best first, never
/// none), its first the 1-best of `translate_ids`; `nbest` outside 1..=beam is an error.
#[test]
fn nbest_is_the_head_of_the_beam() {
    use automoe::decode::translate_nbest;
    let sup = supernet(4);
    let cfg = moe_config();
    let view = sup.view(&cfg).unwrap();
    let src = sources(&[3, 6, 2], 40);
    let opts = SearchOptions { beam: 4, ..SearchOptions::default() };
    let all = beam_search(&view, &src, &opts).unwrap();
    let best = translate_ids(&view, &src, &opts).unwrap();
    for nbest in 1..=4 {
        let got = translate_nbest(&view, &src, &opts, nbest).unwrap();
        for (i, (g, a)) in got.iter().zip(&all).enumerate() {
            assert_eq!(g.len(), a.len().min(nbest), "sentence {i}, nbest {nbest}");
            assert_eq!(g[..], a[..g.len()], "sentence {i}, nbest {nbest}");
            assert_eq!(g[0], best[i]);
        }
    }
    assert!(all.iter().any(|a| a.len() > 1), "the test needs sentences with several finished hypotheses");
    for bad in [0, 5] {
        let e = translate_nbest(&view, &src, &opts, bad).unwrap_err().to_string();
        assert!(e.contains(&format!("{bad} translations per sentence: must be 1 to the beam size (4)")), "{e}");
    }
}

/// A model that wants to stop at once (the last decoder layer norm outputs the eos embedding, made
/// the longest row): by default (fairseq's min_len 1) every translation still has a token; with
/// min_len 0 the search returns the empty translation, which is what the default used to do.
#[test]
fn translations_are_not_empty_by_default() {
    let mut sup = supernet(8);
    let cfg = dense_config();
    let store = &mut sup.store;
    let embed_id = store.id("embed.weight").unwrap();
    let embed = store.value(embed_id).to_f64_vec().unwrap();
    let d_emb = store.value(embed_id).shape()[1];
    let mut boosted = embed.clone();
    for x in &mut boosted[EOS_ID as usize * d_emb..(EOS_ID as usize + 1) * d_emb] {
        *x *= 20.0;
    }
    store.get_mut(embed_id).value = Tensor::from_vec(boosted.clone(), &[VOCAB, d_emb]).unwrap().to_dtype(DType::F64).unwrap();
    let dd = cfg.decoder_embed_dim;
    let last = cfg.decoder.len() - 1;
    let eos_row: Vec<f64> = boosted[EOS_ID as usize * d_emb..][..dd].to_vec();
    let (g, b) = (
        store.id(&format!("decoder.layers.{last}.final_layer_norm.weight")).unwrap(),
        store.id(&format!("decoder.layers.{last}.final_layer_norm.bias")).unwrap(),
    );
    let full = store.value(g).shape()[0];
    store.get_mut(g).value = Tensor::zeros(&[full], DType::F64);
    let mut beta = vec![0.0; full];
    beta[..dd].copy_from_slice(&eos_row);
    store.get_mut(b).value = Tensor::from_vec(beta, &[full]).unwrap();
    let view = sup.view(&cfg).unwrap();
    let src = sources(&[3, 6], 9);

    let loose = SearchOptions { min_len: 0, ..SearchOptions::default() };
    assert!(beam_search(&view, &src, &loose).unwrap().iter().all(|h| h[0].tokens.is_empty()), "the model prefers to stop at once");
    for hyps in beam_search(&view, &src, &SearchOptions::default()).unwrap() {
        assert!(hyps.iter().all(|h| !h.tokens.is_empty()), "{hyps:?}");
    }
    assert!(greedy(&view, &src, &SearchOptions::default()).unwrap().iter().all(|h| !h.tokens.is_empty()));
}
