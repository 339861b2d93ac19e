//! The tensor API with arguments a caller can get wrong: mismatched shapes, out-of-range
//! dimensions and ids, empty dimensions, element counts past `usize`. Each call must return an
//! error (or, for empty tensors, an empty result), never panic. Found by probing every public op;
//! the backward ops indexed past their inputs and `[3, 0]` inputs split rows into chunks of 0.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use automoe::rng::seeded;
use automoe::tensor::MaskSpec;
use automoe::{DType, Result, Tensor};

fn t(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f32 * 0.1).collect::<Vec<f32>>(), shape).unwrap()
}

/// Whether `f` gave an error (a panic propagates to the caller's `catch_unwind`, which names the case).
fn errs<T>(f: impl FnOnce() -> Result<T>) -> bool {
    f().is_err()
}

/// One call, returning whether it gave an error.
type Case<'a> = Box<dyn FnOnce() -> bool + 'a>;

#[test]
fn bad_arguments_are_errors() {
    let (a, z, z2) = (t(&[2, 3]), t(&[0, 3]), t(&[3, 0]));
    let a64 = a.to_dtype(DType::F64).unwrap();
    let pad = |n| MaskSpec { causal: false, key_padding: Some(Arc::new(vec![true; n])) };
    let cases: Vec<(&str, Case)> = vec![
        ("from_vec with a shape whose count wraps", Box::new(|| errs(|| Tensor::from_vec(Vec::<f32>::new(), &[1 << 33, 1 << 31])))),
        ("reshape to a wrapping count", Box::new(|| errs(|| t(&[2]).reshape(&[(1 << 63) + 1, 2])))),
        ("broadcast to a wrapping count", Box::new(|| errs(|| t(&[2]).broadcast_to(&[(1 << 63) + 1, 2])))),
        ("narrow past the end", Box::new(|| errs(|| a.narrow(1, usize::MAX, 2)))),
        ("narrow a missing dim", Box::new(|| errs(|| a.narrow(5, 0, 1)))),
        ("front slice too big", Box::new(|| errs(|| a.front_slice(&[3, 3])))),
        ("transpose a missing dim", Box::new(|| errs(|| a.transpose(0, 7)))),
        ("permute with a repeat", Box::new(|| errs(|| a.permute(&[0, 0])))),
        ("broadcast incompatible", Box::new(|| errs(|| a.broadcast_to(&[4, 3])))),
        ("concat nothing", Box::new(|| errs(|| Tensor::concat(&[], 0)))),
        ("concat mismatched", Box::new(|| errs(|| Tensor::concat(&[&a, &t(&[2, 4])], 0)))),
        ("concat dtypes", Box::new(|| errs(|| Tensor::concat(&[&a, &a64], 0)))),
        ("to_scalar of many", Box::new(|| errs(|| a.to_scalar()))),
        ("add mismatched", Box::new(|| errs(|| a.add(&t(&[3, 2]))))),
        ("add dtypes", Box::new(|| errs(|| a.add(&a64)))),
        ("matmul mismatched", Box::new(|| errs(|| a.matmul(&a)))),
        ("matmul 0-d", Box::new(|| errs(|| Tensor::scalar(1.0f32).matmul(&a)))),
        ("sum_to incompatible", Box::new(|| errs(|| a.sum_to(&[4])))),
        ("softmax padding mask of the wrong size", Box::new(|| errs(|| t(&[2, 2, 3]).softmax(&pad(5))))),
        ("softmax_backward mismatched", Box::new(|| errs(|| Tensor::softmax_backward(&a, &z)))),
        ("relu_backward mismatched", Box::new(|| errs(|| Tensor::relu_backward(&a, &z)))),
        ("gelu_backward mismatched", Box::new(|| errs(|| Tensor::gelu_backward(&a, &z)))),
        ("layer_norm gamma of the wrong size", Box::new(|| errs(|| a.layer_norm(&t(&[2]), &t(&[3]), 1e-5)))),
        ("layer_norm with a negative eps", Box::new(|| errs(|| a.layer_norm(&t(&[3]), &t(&[3]), -1.0)))),
        ("layer_norm over 0 features", Box::new(|| errs(|| z2.layer_norm(&t(&[0]), &t(&[0]), 1e-5)))),
        (
            "layer_norm_backward stats of the wrong size",
            Box::new(|| errs(|| Tensor::layer_norm_backward(&a, &t(&[3]), &t(&[1]), &t(&[2]), &a))),
        ),
        ("layer_norm_backward dy mismatched", Box::new(|| errs(|| Tensor::layer_norm_backward(&a, &t(&[3]), &t(&[2]), &t(&[2]), &z)))),
        ("embedding id out of range", Box::new(|| errs(|| a.embedding(&[5])))),
        ("embedding_backward id out of range", Box::new(|| errs(|| Tensor::embedding_backward(&a, &[9, 9], 2)))),
        ("embedding_backward id count", Box::new(|| errs(|| Tensor::embedding_backward(&a, &[0], 2)))),
        ("cross_entropy target out of range", Box::new(|| errs(|| a.cross_entropy_totals(&[7, 0], 0.1, None)))),
        ("cross_entropy target count", Box::new(|| errs(|| a.cross_entropy_totals(&[0], 0.1, None)))),
        ("cross_entropy_backward target out of range", Box::new(|| errs(|| a.cross_entropy_backward(&[7, 0], 0.1, None, 1.0)))),
        ("rand_uniform empty range", Box::new(|| errs(|| Tensor::rand_uniform(&[3], 1.0, 0.0, DType::F32, &mut seeded(0))))),
        ("rand_uniform infinite bound", Box::new(|| errs(|| Tensor::rand_uniform(&[3], 0.0, f64::INFINITY, DType::F32, &mut seeded(0))))),
        ("a missing CUDA device", Box::new(|| errs(|| a.to_device(automoe::Device::Cuda(7))))),
    ];
    for (what, case) in cases {
        let failed = catch_unwind(AssertUnwindSafe(case)).unwrap_or_else(|_| panic!("{what} panicked"));
        assert!(failed, "{what} was accepted");
    }
}

#[test]
fn empty_dimensions_give_empty_results() {
    let (z, z2) = (t(&[0, 3]), t(&[3, 0]));
    let ok = |what: &str, r: Result<Tensor>, shape: &[usize]| {
        let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.shape(), shape, "{what}");
    };
    ok("matmul of 0 rows", z.matmul(&t(&[3, 4])), &[0, 4]);
    ok("matmul over k = 0", z2.matmul(&t(&[0, 4])), &[3, 4]);
    assert_eq!(z2.matmul(&t(&[0, 4])).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 12], "an empty sum is 0");
    ok("softmax of 0 rows", z.softmax(&MaskSpec::default()), &[0, 3]);
    ok("softmax over 0 keys", z2.softmax(&MaskSpec::default()), &[3, 0]);
    ok("softmax_backward over 0 keys", Tensor::softmax_backward(&z2, &z2), &[3, 0]);
    ok("layer_norm of 0 rows", z.layer_norm(&t(&[3]), &t(&[3]), 1e-5).map(|(y, _, _)| y), &[0, 3]);
    ok("sum_to of 0 rows", z.sum_to(&[3]), &[3]);
    ok("embedding of no ids", t(&[2, 3]).embedding(&[]), &[0, 3]);
    ok("contiguous transposed empty", z.transpose(0, 1).unwrap().contiguous(), &[3, 0]);
    assert_eq!(z.sum_all().unwrap().to_scalar().unwrap(), 0.0);
    // No classes: every target is out of range.
    assert!(z2.cross_entropy_totals(&[0, 0, 0], 0.1, None).is_err());
    assert!(z.cross_entropy_totals(&[], 0.1, None).is_ok_and(|t| t.count == 0), "no rows, no tokens");
}

/// The fallible constructors refuse what cannot be allocated: an element count past `usize`, a
/// byte count past `isize::MAX`, and 4 PiB (more than a 47-bit address space holds), each with an
/// error naming the size, where `Tensor::zeros` would panic or abort.
#[test]
fn fallible_constructors_refuse_impossible_sizes() {
    let cases: [(&[usize], &str); 3] =
        [(&[usize::MAX, 2], "more elements"), (&[1 << 61], "cannot be allocated"), (&[1 << 50], "cannot be allocated")];
    for (shape, want) in cases {
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            let err = Tensor::zeros_on(shape, dtype, automoe::Device::Cpu).unwrap_err().to_string();
            assert!(err.contains(want), "{shape:?} {dtype:?}: {err}");
        }
    }
    let ok = Tensor::full_on(&[3, 2], 1.5, DType::BF16, automoe::Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    assert_eq!(ok.to_vec::<f32>().unwrap(), vec![1.5; 6]);
}
