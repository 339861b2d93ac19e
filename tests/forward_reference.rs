//! Forward results of the fast CPU kernels against the plain references in `automoe::cpu::reference`,
//! on random shapes and on non-contiguous views (transposes, front slices, permutes).

mod common;

use automoe::cpu::reference;
use automoe::rng::seeded;
use automoe::tensor::MaskSpec;
use automoe::{DType, Tensor};
use common::rel_diff;
use rand::Rng;
use std::sync::Arc;

fn rand(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, dtype, &mut seeded(seed))
}

#[test]
fn matmul_matches_reference_on_random_shapes_and_views() {
    let mut rng = seeded(1);
    for case in 0..20 {
        let (m, k, n) = (rng.random_range(1..70), rng.random_range(1..70), rng.random_range(1..70));
        for dtype in [DType::F32, DType::F64] {
            // a: a transposed view of a stored [k+2, m+3] matrix, front-sliced.
            let a_store = rand(&[k + 2, m + 3], dtype, 100 + case);
            let a = a_store.front_slice(&[k, m]).unwrap().t().unwrap();
            let b_store = rand(&[k + 1, n + 5], dtype, 200 + case);
            let b = b_store.narrow(0, 1, k).unwrap().narrow(1, 2, n).unwrap();
            assert!(!a.layout().is_contiguous() && !b.layout().is_contiguous());
            let got = a.matmul(&b).unwrap().to_f64_vec().unwrap();
            let want = reference::matmul(&a.to_f64_vec().unwrap(), &b.to_f64_vec().unwrap(), m, k, n);
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            assert!(rel_diff(&got, &want) < tol, "case {case} {dtype:?} ({m}x{k}x{n})");
        }
    }
}

#[test]
fn batched_matmul_matches_per_matrix_reference() {
    let a = rand(&[3, 2, 5, 7], DType::F64, 5).permute(&[1, 0, 2, 3]).unwrap(); // [2, 3, 5, 7], strided
    let b = rand(&[3, 7, 4], DType::F64, 6);
    let y = a.matmul(&b).unwrap();
    assert_eq!(y.shape(), &[2, 3, 5, 4]);
    let yv = y.to_f64_vec().unwrap();
    for i in 0..2 {
        for j in 0..3 {
            let am = a.narrow(0, i, 1).unwrap().narrow(1, j, 1).unwrap().to_f64_vec().unwrap();
            let bm = b.narrow(0, j, 1).unwrap().to_f64_vec().unwrap();
            let want = reference::matmul(&am, &bm, 5, 7, 4);
            let off = (i * 3 + j) * 20;
            assert!(rel_diff(&yv[off..off + 20], &want) < 1e-12);
        }
    }
}

#[test]
fn layer_norm_matches_reference() {
    for (rows, d) in [(1, 8), (37, 64), (300, 512)] {
        let x = rand(&[rows, d + 3], DType::F32, 7).narrow(1, 1, d).unwrap(); // strided rows
        let g = rand(&[d], DType::F32, 8);
        let b = rand(&[d], DType::F32, 9);
        let (y, _, _) = x.layer_norm(&g, &b, 1e-5).unwrap();
        let want = reference::layer_norm(&x.to_f64_vec().unwrap(), &g.to_f64_vec().unwrap(), &b.to_f64_vec().unwrap(), d, 1e-5);
        assert!(rel_diff(&y.to_f64_vec().unwrap(), &want) < 1e-5, "rows {rows} d {d}");
    }
}

#[test]
fn masked_softmax_matches_reference() {
    let (b, h, tq, tk) = (3, 2, 4, 6);
    let x = rand(&[b, h, tk, tq], DType::F32, 10).transpose(2, 3).unwrap(); // [b, h, tq, tk] view
    let pad: Vec<bool> = (0..b * tk).map(|i| i % tk >= tk - i / tk).collect(); // last `batch` keys padded
    let mask = MaskSpec { causal: true, key_padding: Some(Arc::new(pad.clone())) };
    let y = x.softmax(&mask).unwrap().to_f64_vec().unwrap();
    let want = reference::softmax(&x.to_f64_vec().unwrap(), tk, |r, j| {
        let (batch, i) = (r / (h * tq), r % tq);
        j > i + (tk - tq) || pad[batch * tk + j]
    });
    assert!(rel_diff(&y, &want) < 1e-6);
    // Batch 2 pads keys 3..6; query 0 sees keys 0..=2 only, so no row is fully masked here, but a
    // fully masked row must be zeros, not NaN:
    let all = MaskSpec { causal: false, key_padding: Some(Arc::new(vec![true; 2 * 3])) };
    let z = rand(&[2, 1, 3], DType::F32, 11).softmax(&all).unwrap().to_f64_vec().unwrap();
    assert!(z.iter().all(|&v| v == 0.0));
}

#[test]
fn cross_entropy_matches_reference() {
    let mut rng = seeded(12);
    let (rows, v) = (50, 33);
    let logits = rand(&[rows, v], DType::F32, 13);
    let targets: Vec<u32> = (0..rows).map(|_| rng.random_range(0..v as u32)).collect();
    let t = logits.cross_entropy_totals(&targets, 0.1, Some(0)).unwrap();
    let want = reference::cross_entropy(&logits.to_f64_vec().unwrap(), &targets, v, 0.1, Some(0)).loss;
    assert!((t.loss_sum / t.count as f64 - want).abs() < 1e-6 * want.abs());
    assert_eq!(t.count, targets.iter().filter(|&&x| x != 0).count());
    // A target outside the vocabulary is an error naming it.
    let err = logits.cross_entropy_totals(&[40; 50], 0.1, None).unwrap_err().to_string();
    assert!(err.contains("40"), "{err}");
}

#[test]
fn concat_permute_reshape_embedding() {
    let a = rand(&[2, 3], DType::F32, 14);
    let b = rand(&[2, 1], DType::F32, 15);
    let c = Tensor::concat(&[&a, &b], 1).unwrap();
    let (av, bv, cv) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap(), c.to_f64_vec().unwrap());
    assert_eq!(cv, vec![av[0], av[1], av[2], bv[0], av[3], av[4], av[5], bv[1]]);
    let p = rand(&[2, 3, 4], DType::F64, 16);
    let q = p.permute(&[2, 0, 1]).unwrap().contiguous().unwrap();
    let (pv, qv) = (p.to_f64_vec().unwrap(), q.to_f64_vec().unwrap());
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                assert_eq!(qv[k * 6 + i * 3 + j], pv[i * 12 + j * 4 + k]);
            }
        }
    }
    assert_eq!(q.reshape(&[4, usize::MAX]).unwrap().shape(), &[4, 6]);
    assert!(q.reshape(&[5, usize::MAX]).is_err());
    let table = rand(&[5, 3], DType::F32, 17);
    let e = table.embedding(&[4, 0]).unwrap().to_f64_vec().unwrap();
    let tv = table.to_f64_vec().unwrap();
    assert_eq!(e, [&tv[12..15], &tv[0..3]].concat());
    assert!(table.embedding(&[5]).is_err());
}

#[test]
fn views_share_storage() {
    let w = rand(&[8, 6], DType::F32, 18);
    let s = w.front_slice(&[4, 3]).unwrap();
    assert!(s.shares_storage_with(&w));
    assert!(w.t().unwrap().shares_storage_with(&w));
    assert_eq!(s.to_f64_vec().unwrap()[3], w.to_f64_vec().unwrap()[6]);
}

#[test]
fn bf16_is_storage_with_exact_rounding() {
    let x = Tensor::from_vec(vec![1.0f32, 1.0 + 1.0 / 256.0, -3.5e-3, 65504.0], &[4]).unwrap();
    let b = x.to_dtype(DType::BF16).unwrap();
    assert_eq!(b.dtype(), DType::BF16);
    let back = b.to_f32_vec().unwrap();
    // 1.00390625 = 1 + 2^-8 is a tie between bf16 neighbours 1 and 1 + 2^-7: round to even gives 1.
    assert_eq!(back[0], 1.0);
    assert_eq!(back[1], 1.0);
    assert!(b.relu().is_err(), "bf16 arithmetic on the CPU is refused with a clear error");
}

#[test]
fn cuda_request_without_device_is_an_error() {
    // The first ordinal with no device behind it: cuda:0 on a machine without one, cuda:n on a
    // machine with n devices, so the check runs everywhere.
    let n = automoe::cuda::device_count().unwrap_or(0);
    let t = Tensor::ones(&[2], DType::F32);
    let err = t.to_device(automoe::Device::Cuda(n)).unwrap_err();
    assert!(matches!(err, automoe::Error::NoCudaDevice { .. }), "cuda:{n}: {err}");
    let err = automoe::Device::Cuda(n).check_available().unwrap_err();
    assert!(matches!(err, automoe::Error::NoCudaDevice { .. }), "cuda:{n}: {err}");
}

#[test]
fn div_is_the_elementwise_quotient_with_broadcasting() {
    for (sa, sb) in [(vec![3, 700], vec![3, 700]), (vec![3, 700], vec![700]), (vec![3, 700], vec![3, 1]), (vec![3, 1], vec![1, 5])] {
        for dtype in [DType::F32, DType::F64] {
            let (a, b) = (rand(&sa, dtype, 30), rand(&sb, dtype, 31));
            let q = a.div(&b).unwrap();
            // [700] broadcasts as [1, 700] (the bias-like path of the kernel).
            let sb = if sb.len() == 1 { vec![1, sb[0]] } else { sb.clone() };
            let shape = vec![sa[0].max(sb[0]), sa[1].max(sb[1])];
            assert_eq!(q.shape(), shape.as_slice());
            let (av, bv, qv) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap(), q.to_f64_vec().unwrap());
            // Element (i, j) of an operand with a size-1 dimension is read at index 0 of that dimension.
            let at = |v: &[f64], s: &[usize], i: usize, j: usize| v[(i % s[0]) * s[1] + j % s[1]];
            for i in 0..shape[0] {
                for j in 0..shape[1] {
                    let want = at(&av, &sa, i, j) / at(&bv, &sb, i, j);
                    let got = qv[i * shape[1] + j];
                    assert!((got - want).abs() <= 1e-6 * want.abs(), "{sa:?} / {sb:?} {dtype:?} at ({i}, {j}): {got} vs {want}");
                }
            }
        }
    }
}
