//! Self-tests of the emulator: each mechanism the kernels rely on, checked against plain Rust.

use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn params(inp: automoe_dptr, out: automoe_dptr, n: usize, flag: i32) -> EmuTestParams {
    EmuTestParams { in_: inp, out, n: n as i32, flag }
}

#[test]
fn block_reduce_sums_every_block_under_any_schedule() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (blocks, n) = (3usize, 200usize);
    let x: Vec<f32> = (0..blocks * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    for seed in [0, 7, 99] {
        let mut out = vec![f32::NAN; blocks];
        let cfg = LaunchCfg { seed, ..LaunchCfg::linear(blocks as u32, 256, 0) };
        // SAFETY: x is [blocks, n], out is [blocks].
        unsafe { launch(EMUTEST_BLOCK_REDUCE_F32, &cfg, &params(addr(&x), addr_mut(&mut out), n, 0)).unwrap() };
        for b in 0..blocks {
            let want: f32 = x[b * n..(b + 1) * n].iter().sum();
            assert!((out[b] - want).abs() < 1e-4, "seed {seed} block {b}: {} vs {want}", out[b]);
        }
    }
}

#[test]
fn shared_memory_transpose() {
    let n = 40usize; // not a multiple of the 32-wide tile: exercises the edge guards
    let x: Vec<f32> = (0..n * n).map(|i| i as f32 * 0.5 + 1.0).collect();
    let mut out = vec![f32::NAN; n * n];
    let cfg = LaunchCfg { grid: [2, 2, 1], block: [32, 8, 1], smem_bytes: 0, seed: 0 };
    // SAFETY: both buffers are [n, n].
    unsafe { launch(EMUTEST_TRANSPOSE_F32, &cfg, &params(addr(&x), addr_mut(&mut out), n, 0)).unwrap() };
    for i in 0..n {
        for j in 0..n {
            assert_eq!(out[i * n + j], x[j * n + i], "({i}, {j})");
        }
    }
}

#[test]
fn warp_shuffle_scan() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x: Vec<i32> = (0..128).map(|_| rng.random_range(-50..50)).collect();
    let mut out = vec![i32::MIN; 128];
    // SAFETY: both buffers hold grid * block = 128 ints.
    unsafe { launch(EMUTEST_WARP_SCAN_I32, &LaunchCfg::linear(2, 64, 0), &params(addr(&x), addr_mut(&mut out), 128, 0)).unwrap() };
    for (w, chunk) in x.chunks(32).enumerate() {
        let mut acc = 0;
        for (l, &v) in chunk.iter().enumerate() {
            acc += v;
            assert_eq!(out[w * 32 + l], acc, "warp {w} lane {l}");
        }
    }
}

#[test]
fn warp_intrinsics_follow_cuda_semantics() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 64usize;
    // Warp 0 random in -100..100 with lane 3 at -95 (so `all(v > -90)` is false there); warp 1
    // in -89..100 (all true) with lane 37 at 7 (`any(v == 7)` true): each vote both ways.
    let x: Vec<i32> = (0..n)
        .map(|i| match i {
            3 => -95,
            37 => 7,
            _ if i < 32 => rng.random_range(-100..100),
            _ => rng.random_range(-89..100),
        })
        .collect();
    let mut out = vec![i32::MIN; n * 8];
    // SAFETY: x is [n], out is [n, 8].
    unsafe { launch(EMUTEST_WARP_OPS_I32, &LaunchCfg::linear(1, n as u32, 0), &params(addr(&x), addr_mut(&mut out), n, 0)).unwrap() };
    for i in 0..n {
        let (w, lane) = (i / 32, i % 32);
        let at = |l: usize| x[w * 32 + l];
        let o = &out[i * 8..i * 8 + 8];
        assert_eq!(o[0], at((x[i] & 31) as usize), "shfl lane {i}");
        assert_eq!(o[1], at(lane ^ 5), "shfl_xor lane {i}");
        assert_eq!(o[2], if lane + 3 < 32 { at(lane + 3) } else { x[i] }, "shfl_down lane {i}");
        let ballot = (0..32).fold(0u32, |m, l| m | (((at(l) > 0) as u32) << l));
        assert_eq!(o[3] as u32, ballot, "ballot lane {i}");
        assert_eq!(o[4], (0..32).any(|l| at(l) == 7) as i32, "any lane {i}");
        assert_eq!(o[5], (0..32).all(|l| at(l) > -90) as i32, "all lane {i}");
        assert_eq!(o[5], w as i32, "warp {w} must vote false in warp 0 and true in warp 1");
        assert_eq!(o[6], (x[i] as u32).count_ones() as i32, "popc lane {i}");
        assert_eq!(o[7], if x[i] == 0 { 0 } else { x[i].trailing_zeros() as i32 + 1 }, "ffs lane {i}");
    }
}

fn run_race(x: &[f32], synced: bool, seed: u32) -> Vec<f32> {
    let n = x.len();
    let mut out = vec![f32::NAN; n];
    let cfg = LaunchCfg { seed, ..LaunchCfg::linear(1, n as u32, (n * 4) as u32) };
    // SAFETY: x and out are [n]; dynamic shared memory holds n floats.
    unsafe { launch(EMUTEST_RACE_F32, &cfg, &params(addr(x), addr_mut(&mut out), n, synced as i32)).unwrap() };
    out
}

#[test]
fn planted_missing_syncthreads_race_is_caught() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let n = 64usize;
    let mut wrong_runs = 0;
    for run in 0..6u32 {
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(1.0..2.0)).collect();
        let want: Vec<f32> = (0..n).map(|t| x[(t + 1) % n]).collect();
        assert_eq!(run_race(&x, true, run), want, "with __syncthreads, run {run}");
        if run_race(&x, false, run) != want {
            wrong_runs += 1;
        }
    }
    assert!(wrong_runs > 0, "the racy kernel gave the right answer in every run");
}

#[test]
fn integer_atomics_histogram() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (blocks, threads, bins) = (4usize, 64usize, 10usize);
    let x: Vec<i32> = (0..blocks * threads).map(|_| rng.random_range(0..1000)).collect();
    let mut out = vec![0i32; bins];
    // SAFETY: x is [blocks * threads], out is [bins] and zeroed as the kernel requires.
    unsafe {
        launch(EMUTEST_ATOMIC_I32, &LaunchCfg::linear(blocks as u32, threads as u32, 0), &params(addr(&x), addr_mut(&mut out), bins, 0))
            .unwrap()
    };
    let mut want = vec![0i32; bins];
    for &v in &x {
        want[v as usize % bins] += 1;
    }
    assert_eq!(out, want);
}

#[test]
fn bf16_conversion_rounds_to_nearest_even() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut x: Vec<f32> = (0..200).map(|_| rng.random_range(-1e4..1e4)).collect();
    // Exact ties (round to even both ways), overflow to inf, subnormals, signed zero.
    x.extend([
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0x3f81_8000),
        f32::MAX,
        f32::INFINITY,
        -0.0,
        f32::from_bits(0x0000_8001),
        f32::MIN_POSITIVE,
    ]);
    let mut out = vec![i32::MIN; x.len()];
    let n = x.len();
    // SAFETY: x and out are [n].
    unsafe {
        launch(EMUTEST_BF16_I32, &LaunchCfg::linear(n.div_ceil(64) as u32, 64, 0), &params(addr(&x), addr_mut(&mut out), n, 0)).unwrap()
    };
    for (i, &v) in x.iter().enumerate() {
        assert_eq!(out[i] as u16, bf16::from_f32(v).to_bits(), "{v:e} ({:#x})", v.to_bits());
    }
    let mut nan_out = [0i32];
    // SAFETY: one element in, one out.
    unsafe { launch(EMUTEST_BF16_I32, &LaunchCfg::linear(1, 32, 0), &params(addr(&[f32::NAN]), addr_mut(&mut nan_out), 1, 0)).unwrap() };
    assert_eq!(nan_out[0], 0x7fff, "NaN converts to the canonical 0x7fff as cuda_bf16.h does");
}

#[test]
fn divergent_warp_intrinsic_is_reported_not_hung() {
    let mut out = vec![0i32; 32];
    // SAFETY: out is [32]; the kernel reads nothing.
    let err = unsafe { launch(EMUTEST_DIVERGENT_SHFL_I32, &LaunchCfg::linear(1, 32, 0), &params(0, addr_mut(&mut out), 32, 0)) };
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("divergent warp"), "{msg}");
}

#[test]
fn deadlock_is_reported_not_hung() {
    let mut out = vec![0i32; 64];
    // SAFETY: out is [64]; the kernel reads nothing.
    let err = unsafe { launch(EMUTEST_DEADLOCK_I32, &LaunchCfg::linear(1, 64, 0), &params(0, addr_mut(&mut out), 64, 0)) };
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("deadlock") && msg.contains("emutest_deadlock_i32"), "{msg}");
}

#[test]
fn bad_launch_configuration_is_an_error() {
    let mut out = vec![0f32; 1];
    let cfg = LaunchCfg::linear(1, 2048, 0);
    // SAFETY: the launch is rejected before any thread runs.
    let err = unsafe { launch(EMUTEST_BLOCK_REDUCE_F32, &cfg, &params(0, addr_mut(&mut out), 1, 0)) };
    assert!(err.unwrap_err().to_string().contains("1024"));
}

/// 16-byte aligned source rows for cp.async (a `Vec<i32>` is only 4-byte aligned by its type).
#[repr(C, align(16))]
struct Aligned([i32; 128]);

fn aligned_src() -> Box<Aligned> {
    Box::new(Aligned(std::array::from_fn(|i| i as i32)))
}

#[test]
fn bank_accounting_counts_conflicting_lanes_per_phase() {
    let src = aligned_src();
    let src = &src.0[..];
    // (cp.async stride, ldmatrix row stride) in bytes, and the wavefronts of the 4 phases of each:
    // stride 16 or 80 puts a phase's 8 lanes on 8 different bank quads (80 = 5 quads, odd); 0 is
    // one shared slot; 32 puts two slots on each of 4 quads; 64 four slots on 2 quads; 128 (a full
    // bank cycle) all eight slots on one quad.
    let cases = [(16, 128, 4, 32), (128, 16, 32, 4), (32, 80, 8, 4), (0, 64, 4, 16)];
    for seed in [0, 5] {
        for (cp, ld, cp_wf, ld_wf) in cases {
            let mut out = vec![0i32; 128];
            let cfg = LaunchCfg { seed, ..LaunchCfg::linear(1, 32, 4096 + 16) };
            // SAFETY: src and out are [32, 4]; the kernel touches shared memory below 4096 + 16.
            unsafe { launch(EMUTEST_BANK_CONFLICTS_I32, &cfg, &params(addr(src), addr_mut(&mut out), cp, ld)).unwrap() };
            let want =
                SmemStats { cp_async_phases: 4, cp_async_wavefronts: cp_wf, ldmatrix_phases: 4, ldmatrix_wavefronts: ld_wf, untracked: 0 };
            assert_eq!(last_launch_smem_stats(), want, "seed {seed}, strides {cp} / {ld}");
        }
    }
    // Static shared memory has no device address here: counted as untracked, not accounted.
    let mut out = vec![0i32; 128];
    // SAFETY: as above; flag -1 uses the kernel's static buffer and skips the ldmatrix.
    unsafe {
        launch(EMUTEST_BANK_CONFLICTS_I32, &LaunchCfg::linear(1, 32, 4096 + 16), &params(addr(src), addr_mut(&mut out), 16, -1)).unwrap()
    };
    assert_eq!(last_launch_smem_stats(), SmemStats { untracked: 32, ..Default::default() });
}

#[test]
fn misaligned_cp_async_and_ldmatrix_are_reported() {
    // The instructions fault on a device; the twins must not quietly work on x86.
    let src = aligned_src();
    let src = &src.0[..];
    for (cp, ld, what) in [(8, 16, "cp.async"), (16, 8, "ldmatrix")] {
        let mut out = vec![0i32; 128];
        // SAFETY: as in the bank test; the launch stops at the misaligned access.
        let err = unsafe {
            launch(EMUTEST_BANK_CONFLICTS_I32, &LaunchCfg::linear(1, 32, 4096 + 16), &params(addr(src), addr_mut(&mut out), cp, ld))
        };
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains(what) && msg.contains("aligned"), "{msg}");
    }
}

#[test]
fn misaligned_vector_access_is_reported() {
    let src = aligned_src();
    let mut out = aligned_src(); // 16-byte aligned, as the kernel's uint4 store needs
                                 // SAFETY: src holds 512 bytes, out 512; the kernel reads 16 bytes at offset n and writes 16.
    unsafe {
        launch(EMUTEST_VEC_LOAD_I32, &LaunchCfg::linear(1, 1, 0), &params(addr(&src.0[..]), addr_mut(&mut out.0[..]), 32, 0)).unwrap()
    };
    assert_eq!(out.0[..4], [8, 9, 10, 11]);
    // SAFETY: as above.
    let err =
        unsafe { launch(EMUTEST_VEC_LOAD_I32, &LaunchCfg::linear(1, 1, 0), &params(addr(&src.0[..]), addr_mut(&mut out.0[..]), 4, 0)) };
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("not aligned"), "{msg}");
}
