//! A finite-difference gradient check for every tape op, in f64. Each op's output is reduced with
//! fixed random weights (`sum(y * r)`) so that every output element matters to the loss.

use automoe::autograd::gradcheck::check_gradients;
use automoe::autograd::{Tape, Var};
use automoe::rng::seeded;
use automoe::tensor::MaskSpec;
use automoe::{DType, Result, Tensor};
use std::sync::Arc;

const TOL: f64 = 1e-6;
const H: f64 = 1e-5;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, DType::F64, &mut seeded(seed))
}

/// `sum(y * r)` with a fixed random `r` of y's shape.
fn weighted_sum(t: &mut Tape, y: &Var) -> Result<Var> {
    let r = t.constant(rand(y.shape(), 9999));
    let p = t.mul(y, &r)?;
    t.sum(&p)
}

fn check(name: &str, inputs: &[Tensor], f: impl Fn(&mut Tape, &[Var]) -> Result<Var>) {
    let report = check_gradients(inputs, H, |t, v| {
        let y = f(t, v)?;
        weighted_sum(t, &y)
    })
    .unwrap();
    assert!(report.max_rel_error < TOL, "{name}: gradient mismatch {report:?}");
}

#[test]
fn matmul_2d_batched_and_transposed() {
    check("matmul 2d", &[rand(&[3, 4], 1), rand(&[4, 5], 2)], |t, v| t.matmul(&v[0], &v[1]));
    check("matmul batched", &[rand(&[2, 3, 4], 3), rand(&[2, 4, 5], 4)], |t, v| t.matmul(&v[0], &v[1]));
    check("matmul batch x 2d", &[rand(&[2, 3, 4], 5), rand(&[4, 5], 6)], |t, v| t.matmul(&v[0], &v[1]));
    check("matmul broadcast batch", &[rand(&[2, 1, 3, 4], 7), rand(&[3, 4, 2], 8)], |t, v| t.matmul(&v[0], &v[1]));
    check("matmul transposed views", &[rand(&[4, 3], 9), rand(&[5, 4], 10)], |t, v| {
        let a = t.transpose(&v[0], 0, 1)?;
        let b = t.transpose(&v[1], 0, 1)?;
        t.matmul(&a, &b)
    });
}

#[test]
fn linear_and_bias() {
    check("linear", &[rand(&[2, 3, 4], 11), rand(&[5, 4], 12), rand(&[5], 13)], |t, v| t.linear(&v[0], &v[1], Some(&v[2])));
    check("add_bias", &[rand(&[3, 4], 14), rand(&[4], 15)], |t, v| t.add_bias(&v[0], &v[1]));
}

#[test]
fn broadcasting_binary_ops() {
    for (a, b) in [(vec![3, 4], vec![3, 4]), (vec![2, 3, 4], vec![4]), (vec![2, 3, 4], vec![3, 1]), (vec![3, 1], vec![1, 4])] {
        check("add", &[rand(&a, 16), rand(&b, 17)], |t, v| t.add(&v[0], &v[1]));
        check("sub", &[rand(&a, 18), rand(&b, 19)], |t, v| t.sub(&v[0], &v[1]));
        check("mul", &[rand(&a, 20), rand(&b, 21)], |t, v| t.mul(&v[0], &v[1]));
        check("div", &[rand(&a, 120), away_from_zero(&rand(&b, 121))], |t, v| t.div(&v[0], &v[1]));
    }
}

/// `x` with every element moved at least 0.5 away from zero (keeping its sign): a denominator
/// near zero would make `a / b` too curved for finite differences.
fn away_from_zero(x: &Tensor) -> Tensor {
    let v = x.to_f64_vec().unwrap().into_iter().map(|v| v.signum() * (v.abs() + 0.5)).collect();
    Tensor::from_vec::<f64>(v, x.shape()).unwrap()
}

#[test]
fn scale_relu_gelu() {
    check("scale", &[rand(&[3, 4], 22)], |t, v| t.scale(&v[0], -2.5));
    // Keep inputs away from ReLU's kink, where finite differences are meaningless.
    let x = rand(&[4, 5], 23).to_f64_vec().unwrap().into_iter().map(|v| if v.abs() < 0.1 { v + 0.3 } else { v }).collect();
    check("relu", &[Tensor::from_vec::<f64>(x, &[4, 5]).unwrap()], |t, v| t.relu(&v[0]));
    check("gelu", &[rand(&[4, 5], 24)], |t, v| t.gelu(&v[0]));
}

#[test]
fn layer_norm() {
    check("layer_norm", &[rand(&[3, 6], 25), rand(&[6], 26), rand(&[6], 27)], |t, v| t.layer_norm(&v[0], &v[1], &v[2], 1e-5));
}

#[test]
fn softmax_plain_and_masked() {
    check("softmax", &[rand(&[3, 5], 28)], |t, v| t.softmax(&v[0], &MaskSpec::default()));
    let causal = MaskSpec { causal: true, key_padding: None };
    check("causal softmax", &[rand(&[2, 2, 4, 4], 29)], |t, v| t.softmax(&v[0], &causal));
    let pad = MaskSpec { causal: false, key_padding: Some(Arc::new(vec![false, false, true, true, false, false, false, true])) };
    check("padded softmax", &[rand(&[2, 3, 2, 4], 30)], |t, v| t.softmax(&v[0], &pad));
    let both = MaskSpec { causal: true, key_padding: Some(Arc::new(vec![false, false, false, true, false, true, true, true])) };
    check("causal + padded softmax (incremental: tq < tk)", &[rand(&[2, 1, 2, 4], 31)], |t, v| t.softmax(&v[0], &both));
}

#[test]
fn dropout_is_a_fixed_mask_for_a_seed() {
    check("dropout", &[rand(&[4, 6], 32)], |t, v| t.dropout(&v[0], 0.3, 77));
}

#[test]
fn embedding_scatters_into_rows() {
    check("embedding", &[rand(&[5, 3], 33)], |t, v| t.embedding(&v[0], &[4, 1, 1, 0, 4, 4]));
}

#[test]
fn cross_entropy_with_smoothing_and_ignore() {
    // The loss is a scalar: checked as it is (upstream gradient 1) and scaled by 1.7 (upstream
    // gradient 1.7, which a backward that ignored it would get wrong), with and without smoothing.
    let targets = [2u32, 0, 1, 0, 3];
    for (case, (eps, ignore)) in [(0.1, Some(0)), (0.0, None)].into_iter().enumerate() {
        for scale in [1.0, 1.7] {
            let logits = rand(&[5, 4], 34 + case as u64);
            check_gradients(&[logits], H, |t, v| {
                let loss = t.cross_entropy(&v[0], &targets, eps, ignore)?.0;
                t.scale(&loss, scale)
            })
            .map(|r| assert!(r.max_rel_error < TOL, "cross_entropy eps {eps} ignore {ignore:?} x{scale}: {r:?}"))
            .unwrap();
        }
    }
}

#[test]
fn reductions() {
    check_gradients(&[rand(&[3, 4], 36)], H, |t, v| t.sum(&v[0])).map(|r| assert!(r.max_rel_error < TOL, "sum {r:?}")).unwrap();
    check_gradients(&[rand(&[3, 4], 37)], H, |t, v| t.mean(&v[0])).map(|r| assert!(r.max_rel_error < TOL, "mean {r:?}")).unwrap();
    check("sum_to rows", &[rand(&[2, 3, 4], 38)], |t, v| t.sum_to(&v[0], &[4]));
    check("sum_to middle", &[rand(&[2, 3, 4], 39)], |t, v| t.sum_to(&v[0], &[3, 1]));
}

#[test]
fn views_and_shapes() {
    check("concat dim 1", &[rand(&[2, 3], 40), rand(&[2, 2], 41)], |t, v| t.concat(&[&v[0], &v[1]], 1));
    check("concat dim 0", &[rand(&[2, 3], 42), rand(&[1, 3], 43)], |t, v| t.concat(&[&v[0], &v[1]], 0));
    check("narrow", &[rand(&[4, 5], 44)], |t, v| t.narrow(&v[0], 1, 1, 3));
    check("front_slice", &[rand(&[4, 5], 45)], |t, v| t.front_slice(&v[0], &[2, 3]));
    check("reshape", &[rand(&[2, 6], 46)], |t, v| t.reshape(&v[0], &[3, 4]));
    check("permute", &[rand(&[2, 3, 4], 47)], |t, v| t.permute(&v[0], &[2, 0, 1]));
    check("transpose then matmul", &[rand(&[3, 2], 48)], |t, v| {
        let tr = t.transpose(&v[0], 0, 1)?;
        t.matmul(&tr, &v[0])
    });
}

/// Two different front slices of one parameter: each gradient lands in its own slice, and where
/// the slices overlap the contributions add up.
#[test]
fn front_slice_gradients_land_in_and_add_up_in_their_slices() {
    use automoe::autograd::ParamStore;
    let mut store = ParamStore::new();
    let w = store.add("w", rand(&[4, 5], 50)).unwrap();
    let mut tape = Tape::new();
    let wv = tape.param(&store, w).unwrap();
    let small = tape.front_slice(&wv, &[2, 3]).unwrap();
    let large = tape.front_slice(&wv, &[3, 5]).unwrap();
    let (s1, s2) = (tape.sum(&small).unwrap(), tape.scale(&large, 2.0).unwrap());
    let s2 = tape.sum(&s2).unwrap();
    let loss = tape.add(&s1, &s2).unwrap();
    let grads = tape.backward(&loss).unwrap();
    store.accumulate(&grads).unwrap();
    let g = store.grad(w).unwrap().to_f64_vec().unwrap();
    for r in 0..4 {
        for c in 0..5 {
            let expect = if r < 2 && c < 3 { 1.0 } else { 0.0 } + if r < 3 { 2.0 } else { 0.0 };
            assert_eq!(g[r * 5 + c], expect, "element ({r}, {c})");
        }
    }
}

/// f64 -> f32 -> f64 casts: the gradient passes through converted. A looser check than the
/// others, because the f32 leg rounds every value (about 6e-8 relative).
#[test]
fn cast_round_trip() {
    let report = check_gradients(&[rand(&[3, 4], 60)], 1e-2, |t, v| {
        let x = t.cast(&v[0], DType::F32)?;
        let x = t.scale(&x, 3.0)?;
        let y = t.cast(&x, DType::F64)?;
        weighted_sum(t, &y)
    })
    .unwrap();
    assert!(report.max_rel_error < 1e-4, "cast: gradient mismatch {report:?}");
}
