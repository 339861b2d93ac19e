//! Shared-memory bank conflicts of the bf16 grouped GEMMs' hot loops, counted by the emulator
//! (docs/EMULATOR.md, "Bank conflicts"): every configuration's `cp.async` writes of the operand
//! tiles and, on the `mma.sync` path, its `ldmatrix` reads, in each stage's operand orientation.
//! The layouts are chosen so that each 8-lane phase of these 16-byte accesses hits 8 different bank
//! quads (one wavefront); a conflict would multiply the shared-memory time of the pipeline, which
//! no device is here to show. (The `wgmma` path reads its operands through descriptors, a whole
//! 128-byte core matrix at a time, so only its copies are counted.)

use automoe::cuda::emu::{last_launch_smem_stats, SmemStats};
use automoe::cuda::grouped_gemm::{grouped_gemm_with, GemmStage, HostGemm, HostGroup, BF16_KERNELS};
use automoe::cuda::Emu;
use half::bf16;

/// One aligned group (every operand on the `cp.async` path): M = 144 and N = 136 (partial second
/// tiles), K = 200 (several k-tiles, the last partial).
fn run(stage: GemmStage, kernel: automoe::cuda::grouped_gemm::Bf16Kernel) -> SmemStats {
    let (m, n, k) = (144usize, 136usize, 200usize);
    let (ar, ac) = if stage.a_km() { (k, m) } else { (m, k) };
    let (br, bc) = if stage.b_nk() { (n, k) } else { (k, n) };
    let a: Vec<bf16> = (0..ar * ac).map(|i| bf16::from_f32(((i * 7919) % 17) as f32 / 17.0 - 0.5)).collect();
    let b: Vec<bf16> = (0..br * bc).map(|i| bf16::from_f32(((i * 104729) % 13) as f32 / 13.0 - 0.5)).collect();
    let g = HostGroup { m, n, k, a_off: 0, lda: ac, b_off: 0, ldb: bc, c_off: 0, ldc: n, bias_off: None };
    let op = HostGemm { stage, a: &a, b: &b, bias: None, aux: None, flags: 0 };
    let x = Emu::default();
    if stage == GemmStage::Wgrad {
        let mut c = vec![0f32; m * n];
        grouped_gemm_with(&x, &op, &[g], None, &mut c, kernel).unwrap();
    } else {
        let mut c = vec![bf16::ZERO; m * n];
        grouped_gemm_with(&x, &op, &[g], None, &mut c, kernel).unwrap();
    }
    // The GEMM is the last launch of grouped_gemm_with (after the plan kernel), on this thread.
    last_launch_smem_stats()
}

#[test]
fn bf16_grouped_gemm_tiles_are_bank_conflict_free() {
    let mut report = String::new();
    let mut bad = Vec::new();
    for stage in [GemmStage::Fwd, GemmStage::Dgrad, GemmStage::Wgrad] {
        for kernel in BF16_KERNELS {
            let s = run(stage, kernel);
            let name = format!("{}{}", stage.kernel::<bf16>(), kernel.suffix);
            report += &format!(
                "{name}: cp.async {} wavefronts / {} phases, ldmatrix {} / {}, untracked {}\n",
                s.cp_async_wavefronts, s.cp_async_phases, s.ldmatrix_wavefronts, s.ldmatrix_phases, s.untracked
            );
            // Every copy and matrix load is accounted, and there are some (so this can fail).
            let counted = s.cp_async_phases > 0 && s.untracked == 0 && (kernel.wgmma == (s.ldmatrix_phases == 0));
            if !counted || s.cp_async_wavefronts != s.cp_async_phases || s.ldmatrix_wavefronts != s.ldmatrix_phases {
                bad.push(name);
            }
        }
    }
    eprint!("{report}");
    assert!(bad.is_empty(), "bank conflicts or unaccounted accesses in {bad:?}:\n{report}");
}
