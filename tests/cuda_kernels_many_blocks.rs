//! The elementwise (cuda/elementwise.cu, dropout masks included), reduction (cuda/reduce.cu) and Adam (cuda/optim.cu)
//! kernels through their tensor ops, on every CUDA backend present against the CPU, on shapes that
//! span several blocks of 256 threads and, for the reductions, loops that go round more than once
//! (the tape-op checks of tests/cuda_tape_ops.rs fit in one block). Fresh random f32 inputs; the
//! emulator poisons outputs with NaN, so an element no thread writes fails the comparison.
//! Inputs are f32, and bf16 too for the sum of squares and the dropout masks.

mod common;

use common::{cuda_backends, rel_err};

use automoe::autograd::ParamStore;
use automoe::rng::seeded;
use automoe::tensor::BinaryOp;
use automoe::train::{Adam, AdamConfig};
use automoe::{DType, Device, Tensor};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, DType::F32, &mut seeded(seed))
}

/// `x` with every element moved at least 0.5 away from zero, for denominators.
fn away_from_zero(x: &Tensor) -> Tensor {
    let v = x.to_f32_vec().unwrap().into_iter().map(|v| v.signum() * (v.abs() + 0.5)).collect();
    Tensor::from_vec::<f32>(v, x.shape()).unwrap()
}

fn on(t: &Tensor, device: Device) -> Tensor {
    t.to_device(device).unwrap()
}

#[test]
fn broadcast_binary_ops_over_several_blocks() {
    // 2100 outputs: 9 blocks. Same shape, a row, a column, an outer product, and a transposed
    // (strided) left operand.
    let cases: Vec<(Tensor, Tensor)> = vec![
        (rand(&[3, 700], 1), rand(&[3, 700], 2)),
        (rand(&[3, 700], 3), rand(&[700], 4)),
        (rand(&[3, 700], 5), rand(&[3, 1], 6)),
        (rand(&[3, 1], 7), rand(&[1, 700], 8)),
        (rand(&[700, 3], 9).t().unwrap(), rand(&[1, 700], 10)),
    ];
    for device in cuda_backends() {
        for (i, (a, b)) in cases.iter().enumerate() {
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                let b = if op == BinaryOp::Div { away_from_zero(b) } else { b.clone() };
                let want = a.binary(&b, op).unwrap();
                let got = on(a, device).binary(&on(&b, device), op).unwrap();
                assert_eq!(got.shape(), want.shape());
                let e = rel_err(&got.to_f64_vec().unwrap(), &want.to_f64_vec().unwrap());
                assert!(e < 1e-6, "{device} case {i} {op:?}: error {e:.2e}");
            }
        }
    }
}

#[test]
fn unary_ops_over_several_blocks() {
    let (x, dy) = (rand(&[3, 700], 20), rand(&[3, 700], 21));
    for device in cuda_backends() {
        let (xd, dyd) = (on(&x, device), on(&dy, device));
        let pairs = [
            ("scale", x.scale(-1.5).unwrap(), xd.scale(-1.5).unwrap()),
            ("relu", x.relu().unwrap(), xd.relu().unwrap()),
            ("gelu", x.gelu().unwrap(), xd.gelu().unwrap()),
            ("relu_backward", Tensor::relu_backward(&x, &dy).unwrap(), Tensor::relu_backward(&xd, &dyd).unwrap()),
            ("gelu_backward", Tensor::gelu_backward(&x, &dy).unwrap(), Tensor::gelu_backward(&xd, &dyd).unwrap()),
        ];
        for (name, want, got) in pairs {
            let e = rel_err(&got.to_f64_vec().unwrap(), &want.to_f64_vec().unwrap());
            assert!(e < 1e-5, "{device} {name}: error {e:.2e}");
        }
    }
}

/// Sums of `x: [rows, cols]` (given as f64) down to `to`, one of `[cols]`, `[rows, 1]` or `[]`.
fn sum_reference(x: &[f64], rows: usize, cols: usize, to: &[usize]) -> Vec<f64> {
    match to {
        [] => vec![x.iter().sum()],
        [c] if *c == cols => (0..cols).map(|j| (0..rows).map(|i| x[i * cols + j]).sum()).collect(),
        [r, 1] if *r == rows => (0..rows).map(|i| x[i * cols..(i + 1) * cols].iter().sum()).collect(),
        _ => unreachable!("{to:?}"),
    }
}

#[test]
fn sum_to_and_sum_all_over_several_blocks() {
    // [1000, 3] -> [3]: each output's 1000 inputs are more than one pass of the block's 256 threads.
    // [3, 700] -> [700]: 700 output blocks. [3, 700] -> [3, 1] and a transposed [3, 700] view.
    let cases = [
        (rand(&[1000, 3], 30), vec![3]),
        (rand(&[3, 700], 31), vec![700]),
        (rand(&[3, 700], 32), vec![3, 1]),
        (rand(&[700, 3], 33).t().unwrap(), vec![3, 1]),
        (rand(&[200, 201], 34), vec![]),
    ];
    for device in cuda_backends() {
        for (x, to) in &cases {
            let (rows, cols) = (x.shape()[0], x.shape()[1]);
            let want = sum_reference(&x.to_f64_vec().unwrap(), rows, cols, to);
            let xd = on(x, device);
            let got = if to.is_empty() { xd.sum_all().unwrap() } else { xd.sum_to(to).unwrap() };
            assert_eq!(got.shape(), to.as_slice());
            let e = rel_err(&got.to_f64_vec().unwrap(), &want);
            assert!(e < 1e-5, "{device} {:?} -> {to:?}: error {e:.2e}", x.shape());
        }
    }
}

#[test]
fn sum_squares_with_a_grid_stride_loop() {
    // The kernel runs at most 64 blocks of 256 threads (16384), so 40001 elements loop three times.
    // Both element types: `sumsq_partial_bf16` runs on a bf16 tensor (the reference is the f64
    // sum of the bf16-rounded values, so the tolerance is the f32 accumulation's, not bf16's).
    for device in cuda_backends() {
        for dtype in [DType::F32, DType::BF16] {
            for n in [300, 16_385, 40_001] {
                let x = rand(&[n], 40 + n as u64).to_dtype(dtype).unwrap();
                let want: f64 = x.to_f64_vec().unwrap().iter().map(|v| v * v).sum();
                let got = on(&x, device).sum_squares().unwrap();
                assert!((got - want).abs() < 1e-5 * want, "{device} {dtype:?} n={n}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn dropout_masks_over_several_blocks_match_the_cpu_bit_for_bit() {
    // 2100 elements (9 blocks) and 40001 (157): the device kernel and the CPU draw the same
    // counter-hash mask, so every element must agree exactly, whatever block computes it.
    for device in cuda_backends() {
        for dtype in [DType::F32, DType::BF16] {
            for (shape, p, seed) in [(vec![3, 700], 0.1, 5), (vec![3, 700], 0.5, 6), (vec![40_001], 0.3, 7)] {
                let want = Tensor::dropout_mask(&shape, p, seed, dtype).unwrap().to_f64_vec().unwrap();
                let got = Tensor::dropout_mask_on(&shape, p, seed, dtype, device).unwrap();
                assert_eq!(got.device(), device);
                assert_eq!(got.shape(), shape.as_slice());
                let got = got.to_f64_vec().unwrap();
                let differ = got.iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
                assert_eq!(differ, 0, "{device} {dtype:?} {shape:?} p={p}: {differ} elements differ");
                // Not a constant: some dropped, some kept at 1 / (1 - p).
                let dropped = want.iter().filter(|&&v| v == 0.0).count();
                assert!(dropped > 0 && dropped < want.len(), "{shape:?} p={p}: {dropped} dropped");
            }
        }
    }
}

#[test]
fn adam_over_several_blocks_matches_the_cpu() {
    // 3000 weights: 12 blocks. Three steps, so the bias corrections differ from step 1's.
    let cfgs = [
        AdamConfig { weight_decay: 0.1, ..AdamConfig::default() },
        AdamConfig { weight_decay: 0.1, decoupled_weight_decay: false, ..AdamConfig::default() },
    ];
    for device in cuda_backends() {
        for cfg in cfgs {
            let mut stores = [ParamStore::new(), ParamStore::new()];
            let devices = [Device::Cpu, device];
            let pid: Vec<_> = stores.iter_mut().zip(devices).map(|(s, d)| s.add("w", on(&rand(&[3000], 50), d)).unwrap()).collect();
            let mut adams = [Adam::new(cfg), Adam::new(cfg)];
            for step in 0..3 {
                let g = rand(&[3000], 60 + step);
                for (i, s) in stores.iter_mut().enumerate() {
                    s.get_mut(pid[i]).grad = Some(on(&g, devices[i]));
                    adams[i].step(s, 0.01).unwrap();
                }
            }
            let (cpu, dev) = (adams[0].state(pid[0]).unwrap(), adams[1].state(pid[1]).unwrap());
            let pairs = [("weights", stores[0].value(pid[0]), stores[1].value(pid[1])), ("m", &cpu.m, &dev.m), ("v", &cpu.v, &dev.v)];
            for (what, want, got) in pairs {
                assert_eq!(got.device(), device);
                let e = rel_err(&got.to_f64_vec().unwrap(), &want.to_f64_vec().unwrap());
                assert!(e < 1e-5, "{device} {cfg:?}: {what} differ by {e:.2e}");
            }
        }
    }
}
