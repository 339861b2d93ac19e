//! The inline-PTX helpers of cuda/common.cuh (mma.sync m16n8k16 bf16, ldmatrix x4, cp.async, and on
//! sm_90a wgmma m64n128k16 bf16 with its fences and descriptors) run
//! through cuda/ptx_selftest.cu on every backend present. Expected values follow the PTX ISA's
//! documented fragment layouts, written out here independently of the emulator twins; on a device
//! the same tests check the twins' layouts against the hardware.

use automoe::cuda::abi::EmuTestParams;
use automoe::cuda::moe_exec::Exec;
use automoe::cuda::moe_ops::Geometry;
use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn one_warp(smem_bytes: u32) -> Geometry {
    Geometry { grid: 1, block: 32, smem_bytes }
}

fn mma<X: Exec>(x: &X) {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let a: Vec<bf16> = (0..256).map(|_| bf16::from_f32(rng.random_range(-2.0..2.0))).collect(); // [16, 16]
    let b: Vec<bf16> = (0..128).map(|_| bf16::from_f32(rng.random_range(-2.0..2.0))).collect(); // [16, 8]
    let c: Vec<f32> = (0..128).map(|_| rng.random_range(-1.0..1.0)).collect(); // [16, 8]
    let mut bits: Vec<u16> = a.iter().map(|v| v.to_bits()).collect();
    for n in 0..8 {
        for k in 0..16 {
            bits.push(b[k * 8 + n].to_bits()); // B^T [8, 16]
        }
    }
    let inp = x.upload(&bits).unwrap();
    let mut out = x.upload(&c).unwrap();
    let p = EmuTestParams { in_: x.addr(&inp), out: x.addr_mut(&mut out), n: 0, flag: 0 };
    // SAFETY: in holds 384 u16, out 128 f32, as the kernel reads and writes.
    unsafe { x.launch("ptx_selftest.cu", "ptxtest_mma_bf16", one_warp(0), &p).unwrap() };
    let d = x.download(&out).unwrap();
    for i in 0..16 {
        for j in 0..8 {
            let want: f64 = c[i * 8 + j] as f64 + (0..16).map(|k| a[i * 16 + k].to_f64() * b[k * 8 + j].to_f64()).sum::<f64>();
            assert!(
                (d[i * 8 + j] as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "{} D[{i}][{j}] = {} want {want}",
                x.backend_name(),
                d[i * 8 + j]
            );
        }
    }
}

fn ldmatrix<X: Exec>(x: &X) {
    let m: Vec<u16> = (0..256).map(|i| 1000 + i as u16 * 3).collect(); // [4, 8, 8]
    let at = |mat: usize, row: usize, col: usize| m[mat * 64 + row * 8 + col] as u32;
    for trans in [false, true] {
        let inp = x.upload(&m).unwrap();
        let mut out = x.upload(&[0u32; 128]).unwrap();
        let p = EmuTestParams { in_: x.addr(&inp), out: x.addr_mut(&mut out), n: 0, flag: trans as i32 };
        // SAFETY: in holds 256 u16, out 128 u32.
        unsafe { x.launch("ptx_selftest.cu", "ptxtest_ldmatrix_b16", one_warp(0), &p).unwrap() };
        let r = x.download(&out).unwrap();
        for l in 0..32 {
            for mat in 0..4 {
                let (lo, hi) = if trans {
                    (at(mat, 2 * (l % 4), l / 4), at(mat, 2 * (l % 4) + 1, l / 4))
                } else {
                    (at(mat, l / 4, 2 * (l % 4)), at(mat, l / 4, 2 * (l % 4) + 1))
                };
                assert_eq!(r[l * 4 + mat], lo | (hi << 16), "{} trans={trans} lane {l} matrix {mat}", x.backend_name());
            }
        }
    }
}

/// `strict`: the backend performs cp.async copies only at wait_group (the emulator does; hardware
/// may complete them earlier, so the early read is only checked there).
fn cp_async<X: Exec>(x: &X, strict: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let v: Vec<f32> = (0..256).map(|_| rng.random_range(1.0..2.0)).collect();
    let inp = x.upload(&v).unwrap();
    for flag in [0, 1] {
        if flag == 1 && !strict {
            continue;
        }
        let mut out = x.upload(&[0f32; 256]).unwrap();
        let p = EmuTestParams { in_: x.addr(&inp), out: x.addr_mut(&mut out), n: 256, flag };
        // SAFETY: in and out hold 256 f32; dynamic shared memory holds 256 f32.
        unsafe { x.launch("ptx_selftest.cu", "ptxtest_cpasync_f32", one_warp(1024), &p).unwrap() };
        let s = x.download(&out).unwrap();
        assert_eq!(s[..128], v[..128], "{} first group, flag {flag}", x.backend_name());
        if flag == 0 {
            assert_eq!(s[128..254], v[128..254], "{} second group", x.backend_name());
            assert_eq!(s[254..], [0.0, 0.0], "{} zero-fill past src_bytes", x.backend_name());
        } else {
            assert!(s[128..].iter().all(|f| f.is_nan()), "emulator: the second group must still be pending after wait_group 1");
        }
    }
}

/// wgmma.m64n128k16 (sm_90a): D = C + A B for each of A and B K-major or MN-major in shared memory;
/// D read back through the documented accumulator layout (done by the kernel, checked here whole).
fn wgmma<X: Exec>(x: &X) {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let a: Vec<bf16> = (0..64 * 16).map(|_| bf16::from_f32(rng.random_range(-2.0..2.0))).collect(); // [64, 16]
    let b: Vec<bf16> = (0..16 * 128).map(|_| bf16::from_f32(rng.random_range(-2.0..2.0))).collect(); // [16, 128]
    let c: Vec<f32> = (0..64 * 128).map(|_| rng.random_range(-1.0..1.0)).collect();
    let bits: Vec<u16> = a.iter().chain(&b).map(|v| v.to_bits()).collect();
    let inp = x.upload(&bits).unwrap();
    for flag in 0..4 {
        let mut out = x.upload(&c).unwrap();
        let p = EmuTestParams { in_: x.addr(&inp), out: x.addr_mut(&mut out), n: 0, flag };
        let g = Geometry { grid: 1, block: 128, smem_bytes: 8192 };
        // SAFETY: in holds 64*16 + 16*128 u16, out 64*128 f32; 8 KiB of shared memory as staged.
        unsafe { x.launch("ptx_selftest.cu", "ptxtest_wgmma_bf16", g, &p).unwrap() };
        let d = x.download(&out).unwrap();
        for i in 0..64 {
            for j in 0..128 {
                let want: f64 = c[i * 128 + j] as f64 + (0..16).map(|k| a[i * 16 + k].to_f64() * b[k * 128 + j].to_f64()).sum::<f64>();
                let got = d[i * 128 + j] as f64;
                assert!(
                    (got - want).abs() < 1e-5 * want.abs().max(1.0),
                    "{} flag {flag}: D[{i}][{j}] = {got} want {want}",
                    x.backend_name()
                );
            }
        }
    }
}

#[test]
fn mma_m16n8k16_bf16_emulator() {
    mma(&automoe::cuda::Emu::default());
}

#[test]
fn ldmatrix_x4_emulator() {
    ldmatrix(&automoe::cuda::Emu::default());
}

#[test]
fn cp_async_emulator() {
    cp_async(&automoe::cuda::Emu::default(), true);
}

#[test]
fn wgmma_m64n128k16_bf16_emulator() {
    wgmma(&automoe::cuda::Emu::default());
    wgmma(&automoe::cuda::Emu { seed: 5 });
}

#[test]
fn ptx_helpers_on_cuda_device() {
    match automoe::cuda::CudaExec::new(0) {
        Ok(x) => {
            mma(&x);
            ldmatrix(&x);
            cp_async(&x, false);
            if x.has_wgmma() {
                wgmma(&x);
            } else {
                eprintln!("wgmma skipped: {} is not sm_90a", x.backend_name());
            }
        }
        Err(e) => automoe::cuda::skip_unless_required("AUTOMOE_REQUIRE_CUDA", &format!("cuda: {e}")),
    }
}
