//! The CPU MoE layer's fast kernels against `moe::reference`, the specification that the CUDA
//! kernels are tested against too: one chain of agreement from the per-token loops to the GPU.

use automoe::moe::{gating, permute, reference, Dispatch};
use automoe::rng::seeded;
use automoe::{DType, Tensor};

fn randv(n: usize, seed: u64) -> Vec<f32> {
    Tensor::randn(&[n], 1.0, DType::F32, &mut seeded(seed)).to_vec::<f32>().unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn gating_dispatch_permute_combine_agree_with_the_reference() {
    for (case, &(t, e, k, renorm)) in
        [(1usize, 6usize, 1usize, false), (37, 6, 2, true), (64, 12, 3, false), (50, 100, 2, true)].iter().enumerate()
    {
        let seed = 100 * case as u64;
        let logits = randv(t * e, seed);
        let (ridx, rw, rprobs) = reference::topk_gating_fwd(&logits, t, e, k, renorm).unwrap();
        // The CPU layer gates from the softmax probabilities (computed by the tape's softmax).
        let probs = Tensor::from_vec(logits.clone(), &[t, e]).unwrap().softmax(&Default::default()).unwrap().to_vec::<f32>().unwrap();
        assert!(max_abs(&probs, &rprobs) < 1e-6);
        let (idx, w) = gating::topk_fwd(&probs, e, k, renorm);
        assert_eq!(idx.iter().map(|&i| i as i32).collect::<Vec<_>>(), ridx, "case {case}: chosen experts");
        assert!(max_abs(&w, &rw) < 1e-6, "case {case}: gates");

        let dw = randv(t * k, seed + 1);
        let rd = reference::topk_gating_bwd(&rprobs, &ridx, &rw, &dw, t, e, k, renorm).unwrap();
        // The reference gives dlogits; ours gives dprobs, which the softmax backward turns into dlogits.
        let dp = gating::topk_bwd(&probs, &idx, &w, &dw, e, k, renorm);
        let dlogits = automoe::cpu::softmax::softmax_bwd(&probs, &dp, e);
        assert!(max_abs(&dlogits, &rd) < 1e-6, "case {case}: gating backward");

        let dis = Dispatch::new(&idx, t, k, e, None).unwrap();
        let rdis = reference::dispatch(&ridx, t, k, e, 1).unwrap();
        assert_eq!(dis.counts.iter().map(|&c| c as i32).collect::<Vec<_>>(), rdis.counts);
        assert_eq!(dis.offsets.iter().map(|&c| c as i32).collect::<Vec<_>>(), rdis.offsets);
        assert_eq!(dis.pos.iter().map(|&c| c as i32).collect::<Vec<_>>(), rdis.pos);
        assert_eq!(dis.src_row.iter().map(|&c| c as i32).collect::<Vec<_>>(), rdis.src_row);

        let d = 24;
        let x = randv(t * d, seed + 2);
        let xp = permute::permute_fwd(&x, d, &dis);
        assert_eq!(xp, reference::permute_fwd(&x, &rdis.src_row, t, d).unwrap());
        let dxp = randv(xp.len(), seed + 3);
        assert!(max_abs(&permute::permute_bwd(&dxp, d, &dis), &reference::permute_bwd(&dxp, &rdis.pos, t, k, d).unwrap()) < 1e-5);
        let yp = randv(xp.len(), seed + 4);
        assert!(max_abs(&permute::combine_fwd(&yp, &w, d, &dis), &reference::combine_fwd(&yp, &rdis.pos, &w, t, k, d).unwrap()) < 1e-5);
        let dy = randv(t * d, seed + 5);
        let (dyp, dwc) = permute::combine_bwd(&yp, &w, &dy, d, &dis);
        let (rdyp, rdwc) = reference::combine_bwd(&dy, &yp, &rdis.pos, &w, t, k, d).unwrap();
        assert!(max_abs(&dyp, &rdyp) < 1e-6 && max_abs(&dwc, &rdwc) < 1e-4, "case {case}: combine backward");
    }
}
