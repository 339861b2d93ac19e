//! The grouped variable-width GEMMs (cuda/grouped_gemm.cu) against a plain f64 CPU reference on
//! random heterogeneous problems, one test body per (stage, dtype) run on every backend present:
//! the emulator (in order and shuffled) always, a CUDA device when one exists.
//!
//! Shapes are AutoMoE's scaled down for the emulator: expert widths {3072, 2048, 1024, 512, 96} / 32
//! = {96, 64, 32, 16, 3}, d = 72 (not a multiple of the 32-deep K tile), token counts {17, 0, 150,
//! 1, 40} (empty, single, more than one 128-row tile), weights read as front slices of parents
//! [h_max = 104, d_max = 76] (76 is not a multiple of 8: the bf16 path's scalar loads; 104 is: the
//! cp.async path). Outputs are poisoned with NaN, and elements outside every group must stay NaN.

use automoe::cuda::abi::*;
use automoe::cuda::grouped_gemm::{
    grouped_dbias, grouped_gemm, grouped_gemm_with, Bf16Kernel, GemmStage, HostGemm, HostGroup, BF16_KERNELS,
};
use automoe::cuda::moe_exec::Exec;
use automoe::cuda::moe_ops::KernelFloat;
use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WIDTHS: [usize; 5] = [96, 64, 32, 16, 3];
const COUNTS: [usize; 5] = [17, 0, 150, 1, 40];
const D: usize = 72;
const D_MAX: usize = 76;
const H_MAX: usize = 104;

fn offsets() -> Vec<i32> {
    let mut o = vec![0i32];
    for c in COUNTS {
        o.push(o.last().unwrap() + c as i32);
    }
    o
}

fn rows() -> usize {
    COUNTS.iter().sum()
}

fn rand_vec<T: KernelFloat>(rng: &mut ChaCha8Rng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f32(rng.random_range(-1.0..1.0))).collect()
}

fn tol<T: KernelFloat>() -> f64 {
    if T::SUFFIX == "f32" {
        1e-5
    } else {
        1e-2
    }
}

/// One stage's problem: the groups (token counts come from the offsets) and the expected layout.
struct Problem {
    groups: Vec<HostGroup>,
    a_len: usize,
    b_len: usize,
    c_len: usize,
}

/// fc1-shaped problems (N or K = h_e, the other d); `second`: the fc2 shapes instead.
fn problem(stage: GemmStage, second: bool) -> Problem {
    let r = rows();
    let mut groups = Vec::new();
    for (e, &h) in WIDTHS.iter().enumerate() {
        let w1 = e * H_MAX * D_MAX; // fc1 parent [H_MAX, D_MAX]
        let w2 = e * D_MAX * H_MAX; // fc2 parent [D_MAX, H_MAX]
        let g = match (stage, second) {
            // y[:, :h] = x W1^T + b1
            (GemmStage::Fwd, false) => {
                HostGroup { n: h, k: D, lda: D, b_off: w1, ldb: D_MAX, ldc: H_MAX, bias_off: Some(e * H_MAX), ..Default::default() }
            }
            // y = a[:, :h] W2^T + b2
            (GemmStage::Fwd, true) => {
                HostGroup { n: D, k: h, lda: H_MAX, b_off: w2, ldb: H_MAX, ldc: D, bias_off: Some(e * D_MAX), ..Default::default() }
            }
            // dx = da[:, :h] W1
            (GemmStage::Dgrad, false) => HostGroup { n: D, k: h, lda: H_MAX, b_off: w1, ldb: D_MAX, ldc: D, ..Default::default() },
            // da[:, :h] = dy W2 (masked)
            (GemmStage::Dgrad, true) => HostGroup { n: h, k: D, lda: D, b_off: w2, ldb: H_MAX, ldc: H_MAX, ..Default::default() },
            // dW1[:h, :d] += da^T x
            (GemmStage::Wgrad, false) => HostGroup { m: h, n: D, lda: H_MAX, ldb: D, c_off: w1, ldc: D_MAX, ..Default::default() },
            // dW2[:d, :h] += dy^T a
            (GemmStage::Wgrad, true) => HostGroup { m: D, n: h, lda: D, ldb: H_MAX, c_off: w2, ldc: H_MAX, ..Default::default() },
        };
        groups.push(g);
    }
    let parents = WIDTHS.len() * H_MAX * D_MAX;
    let (a_len, b_len, c_len) = match (stage, second) {
        (GemmStage::Fwd, false) => (r * D, parents, r * H_MAX),
        (GemmStage::Fwd, true) => (r * H_MAX, parents, r * D),
        (GemmStage::Dgrad, false) => (r * H_MAX, parents, r * D),
        (GemmStage::Dgrad, true) => (r * D, parents, r * H_MAX),
        (GemmStage::Wgrad, false) => (r * H_MAX, r * D, parents),
        (GemmStage::Wgrad, true) => (r * D, r * H_MAX, parents),
    };
    Problem { groups, a_len, b_len, c_len }
}

#[allow(clippy::too_many_arguments)]
/// f64 reference of every group's C block; returns `(index, value)` pairs of the written elements.
fn reference(
    stage: GemmStage,
    p: &Problem,
    a: &[f64],
    b: &[f64],
    bias: &[f64],
    aux: Option<&[f64]>,
    c0: &[f64],
    flags: u32,
) -> Vec<(usize, f64)> {
    let o = offsets();
    let mut out = Vec::new();
    for (e, g) in p.groups.iter().enumerate() {
        let (r0, cnt) = (o[e] as usize, (o[e + 1] - o[e]) as usize);
        let (m, k) = if stage == GemmStage::Wgrad { (g.m, cnt) } else { (cnt, g.k) };
        // Token operands start at the segment's first row.
        let (a_off, b_off, c_off) = match stage {
            GemmStage::Wgrad => (g.a_off + r0 * g.lda, g.b_off + r0 * g.ldb, g.c_off),
            _ => (g.a_off + r0 * g.lda, g.b_off, g.c_off + r0 * g.ldc),
        };
        for i in 0..m {
            for j in 0..g.n {
                let mut v = 0f64;
                for kk in 0..k {
                    let av = if stage.a_km() { a[a_off + kk * g.lda + i] } else { a[a_off + i * g.lda + kk] };
                    let bv = if stage.b_nk() { b[b_off + j * g.ldb + kk] } else { b[b_off + kk * g.ldb + j] };
                    v += av * bv;
                }
                let idx = c_off + i * g.ldc + j;
                let acc = if flags & AUTOMOE_GEMM_ACCUMULATE != 0 { c0[idx] } else { 0.0 };
                out.push((idx, epilogue(v, g.bias_off.map(|bo| bias[bo + j]), flags, aux.map(|x| x[idx]), acc)));
            }
        }
    }
    out
}

/// The kernels' epilogue of one element `v` in f64, in their order: bias, ReLU, the ReLU mask (from
/// the element's aux, when there is one), accumulation onto `c0` (0 without the flag).
fn epilogue(mut v: f64, bias: Option<f64>, flags: u32, aux: Option<f64>, c0: f64) -> f64 {
    if let Some(b) = bias {
        v += b;
    }
    if flags & AUTOMOE_GEMM_RELU != 0 {
        v = v.max(0.0);
    }
    if flags & AUTOMOE_GEMM_RELU_MASK != 0 && aux.is_some_and(|x| x <= 0.0) {
        v = 0.0;
    }
    if flags & AUTOMOE_GEMM_ACCUMULATE != 0 {
        v += c0;
    }
    v
}

/// Fails unless every element of `got` that no `want` entry names has the bits of `start`.
fn assert_unchanged_outside<C: KernelFloat>(ctx: &str, got: &[C], start: &[C], want: &[(usize, f64)]) {
    let mut inside = vec![false; got.len()];
    for &(i, _) in want {
        inside[i] = true;
    }
    let changed = (0..got.len()).filter(|&i| !inside[i] && got[i].to_f32().to_bits() != start[i].to_f32().to_bits()).count();
    assert_eq!(changed, 0, "{ctx}: {changed} elements outside the groups changed");
}

fn f64s<T: KernelFloat>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f32() as f64).collect()
}

fn check<C: KernelFloat>(ctx: &str, got: &[C], want: &[(usize, f64)], poisoned: bool, tol: f64) {
    let scale = want.iter().fold(1e-6f64, |m, (_, v)| m.max(v.abs()));
    let mut written = vec![false; got.len()];
    let mut err = 0f64;
    for &(i, v) in want {
        written[i] = true;
        let g = got[i].to_f32() as f64;
        err = err.max(if g.is_nan() { f64::INFINITY } else { (g - v).abs() });
    }
    assert!(err / scale < tol, "{ctx}: max error {} relative to max|ref| {scale}", err / scale);
    if poisoned {
        let stray = got.iter().zip(&written).filter(|(v, &w)| !w && !v.to_f32().is_nan()).count();
        assert_eq!(stray, 0, "{ctx}: {stray} elements outside every group were written");
    }
}

/// `kernel`: the bf16 configuration (ignored for f32).
fn run_stage<X: Exec, T: KernelFloat>(x: &X, stage: GemmStage, kernel: Bf16Kernel) {
    if T::SUFFIX == "bf16" && !kernel.runs_on(x) {
        eprintln!("{} not run on {}: it needs sm_90a", kernel.suffix, x.backend_name());
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(40 + stage as u64);
    for second in [false, true] {
        let p = problem(stage, second);
        let a: Vec<T> = rand_vec(&mut rng, p.a_len);
        let b: Vec<T> = rand_vec(&mut rng, p.b_len);
        let bias: Vec<f32> = rand_vec(&mut rng, WIDTHS.len() * H_MAX.max(D_MAX));
        let aux: Vec<T> = rand_vec(&mut rng, p.c_len);
        let ctx = format!("{} {}{} second={second}", x.backend_name(), stage.kernel::<T>(), kernel.suffix);
        let off = offsets();
        match stage {
            GemmStage::Fwd | GemmStage::Dgrad => {
                let (flags, use_aux) = match stage {
                    GemmStage::Fwd => (if second { 0 } else { AUTOMOE_GEMM_RELU }, false),
                    _ => (if second { AUTOMOE_GEMM_RELU_MASK } else { 0 }, second),
                };
                let groups: Vec<HostGroup> = p
                    .groups
                    .iter()
                    .map(|g| HostGroup { bias_off: if stage == GemmStage::Fwd { g.bias_off } else { None }, ..*g })
                    .collect();
                let op = HostGemm { stage, a: &a, b: &b, bias: Some(&bias), aux: use_aux.then_some(&aux[..]), flags };
                let mut c = vec![T::poison(); p.c_len];
                grouped_gemm_with(x, &op, &groups, Some(&off), &mut c, kernel).unwrap();
                let pb = Problem { groups, ..p };
                let bias64: Vec<f64> = bias.iter().map(|&v| v as f64).collect();
                let aux64 = f64s(&aux);
                let want = reference(stage, &pb, &f64s(&a), &f64s(&b), &bias64, use_aux.then_some(&aux64[..]), &[], flags);
                check(&ctx, &c, &want, true, tol::<T>());
            }
            GemmStage::Wgrad => {
                // Accumulates into the parents' gradient: start from random values, not poison.
                let c0: Vec<f32> = rand_vec(&mut rng, p.c_len);
                let mut c = c0.clone();
                let op = HostGemm { stage, a: &a, b: &b, bias: None, aux: None, flags: AUTOMOE_GEMM_ACCUMULATE };
                grouped_gemm_with(x, &op, &p.groups, Some(&off), &mut c, kernel).unwrap();
                let c064: Vec<f64> = c0.iter().map(|&v| v as f64).collect();
                let want = reference(stage, &p, &f64s(&a), &f64s(&b), &[], None, &c064, AUTOMOE_GEMM_ACCUMULATE);
                check(&ctx, &c, &want, false, tol::<T>());
                // Outside the groups' slices (and for the empty expert) nothing changes.
                assert_unchanged_outside(&ctx, &c, &c0, &want);
                // Deterministic by construction (no atomics, one block per output tile): a second
                // run gives the same bits (meaningful on a device, where blocks really race).
                let mut again = c0.clone();
                grouped_gemm_with(x, &op, &p.groups, Some(&off), &mut again, kernel).unwrap();
                assert!(again.iter().zip(&c).all(|(a, b)| a.to_bits() == b.to_bits()), "{ctx}: two runs differ");
            }
        }
    }
}

/// Every bf16 configuration (or the f32 kernel) on products deep enough (K = 270: nine 32-deep
/// k-tiles, the last partial; 34 of the f32 kernel's 8-deep ones) to run the pipelines' steady
/// state, not only their prologues, in each stage's operand orientation; two groups of M = 130 and
/// N = 136 (partial second tiles in both), one an empty neighbour away. Nine k-tiles end in the
/// first shared-memory stage for two and four stages, the stage the next tile's prologue refills
/// first: the shuffled emulator's laggard warp exposes a missing barrier between the two. Leading
/// dimensions 270 and 130 take the f32 kernel's scalar loads, 136 its float4 loads.
fn deep_k<X: Exec, T: KernelFloat>(x: &X) {
    let mut rng = ChaCha8Rng::seed_from_u64(70);
    let (m, n, k) = (130usize, 136usize, 270usize);
    let kernels: Vec<Bf16Kernel> =
        if T::SUFFIX == "bf16" { BF16_KERNELS.into_iter().filter(|k| k.runs_on(x)).collect() } else { vec![BF16_KERNELS[0]] };
    for stage in [GemmStage::Fwd, GemmStage::Dgrad, GemmStage::Wgrad] {
        let (ar, ac) = if stage.a_km() { (k, m) } else { (m, k) };
        let (br, bc) = if stage.b_nk() { (n, k) } else { (k, n) };
        let a: Vec<T> = rand_vec(&mut rng, 2 * ar * ac);
        let b: Vec<T> = rand_vec(&mut rng, 2 * br * bc);
        let group = |i: usize| HostGroup {
            m,
            n,
            k,
            a_off: i * ar * ac,
            lda: ac,
            b_off: i * br * bc,
            ldb: bc,
            c_off: i * m * n,
            ldc: n,
            bias_off: None,
        };
        let groups = [group(0), HostGroup { m: 0, ..group(1) }, group(1)];
        let want: Vec<(usize, f64)> = [0usize, 1]
            .iter()
            .flat_map(|&i| {
                let (a, b) = (&a, &b);
                (0..m).flat_map(move |r| {
                    (0..n).map(move |c| {
                        let v: f64 = (0..k)
                            .map(|kk| {
                                let av = if stage.a_km() { a[i * ar * ac + kk * ac + r] } else { a[i * ar * ac + r * ac + kk] };
                                let bv = if stage.b_nk() { b[i * br * bc + c * bc + kk] } else { b[i * br * bc + kk * bc + c] };
                                av.to_f32() as f64 * bv.to_f32() as f64
                            })
                            .sum();
                        (i * m * n + r * n + c, v)
                    })
                })
            })
            .collect();
        for &kernel in &kernels {
            let op = HostGemm { stage, a: &a, b: &b, bias: None, aux: None, flags: 0 };
            let ctx = format!("{} deep {}{}", x.backend_name(), stage.kernel::<T>(), if T::SUFFIX == "bf16" { kernel.suffix } else { "" });
            if stage == GemmStage::Wgrad {
                let mut c = vec![f32::NAN; 2 * m * n];
                grouped_gemm_with(x, &op, &groups, None, &mut c, kernel).unwrap();
                check(&ctx, &c, &want, true, tol::<T>());
            } else {
                let mut c = vec![T::poison(); 2 * m * n];
                grouped_gemm_with(x, &op, &groups, None, &mut c, kernel).unwrap();
                check(&ctx, &c, &want, true, tol::<T>());
            }
        }
    }
}

/// The epilogue's every flag combination (ReLU, accumulate, ReLU mask), with no bias, an aligned
/// bias and a bias off its 8-byte alignment, and C (with aux) off its pair alignment: the
/// combinations the MoE layer uses take the kernels' per-tile fast path (`store_grid_fast`), the
/// rest the per-pair one, and both must match the reference. Group 0 has an even N that is not a
/// multiple of 8 (a thread's last pair partly past N), group 1 an odd N (always per pair), group 2
/// no rows. Forward stage only: the stages share the epilogue.
fn epilogue_flags<X: Exec, T: KernelFloat>(x: &X) {
    let mut rng = ChaCha8Rng::seed_from_u64(90);
    let k = 40usize;
    let ldc = 26usize;
    let shapes = [(20usize, 22usize), (9, 13), (0, 8)];
    let a: Vec<T> = rand_vec(&mut rng, 29 * k);
    let b: Vec<T> = rand_vec(&mut rng, 43 * k);
    let bias: Vec<f32> = rand_vec(&mut rng, 64);
    let c_len = 1 + 29 * ldc;
    let aux: Vec<T> = rand_vec(&mut rng, c_len);
    let c0: Vec<T> = rand_vec(&mut rng, c_len);
    let kernels: Vec<Bf16Kernel> =
        if T::SUFFIX == "bf16" { BF16_KERNELS.into_iter().filter(|k| k.runs_on(x)).collect() } else { vec![BF16_KERNELS[0]] };
    // (bias offset, C offset): no bias; aligned bias; bias 4 bytes off; C and aux one element off.
    let placements = [(None, 0usize), (Some(0usize), 0usize), (Some(1), 0), (Some(0), 1)];
    for &kernel in &kernels {
        for flags in 0..8u32 {
            for &(bias_at, c_at) in &placements {
                let (mut row, mut col) = (0usize, 0usize);
                let groups: Vec<HostGroup> = shapes
                    .iter()
                    .map(|&(m, n)| {
                        let g = HostGroup {
                            m,
                            n,
                            k,
                            a_off: row * k,
                            lda: k,
                            b_off: col * k,
                            ldb: k,
                            c_off: c_at + row * ldc,
                            ldc,
                            bias_off: bias_at.map(|o| o + col),
                        };
                        row += m;
                        col += n;
                        g
                    })
                    .collect();
                let mut want = Vec::new();
                for g in &groups {
                    for i in 0..g.m {
                        for j in 0..g.n {
                            let v: f64 =
                                (0..k).map(|kk| a[g.a_off + i * k + kk].to_f32() as f64 * b[g.b_off + j * k + kk].to_f32() as f64).sum();
                            let idx = g.c_off + i * ldc + j;
                            let bias_j = g.bias_off.map(|bo| bias[bo + j] as f64);
                            let aux_ij = Some(aux[idx].to_f32() as f64);
                            want.push((idx, epilogue(v, bias_j, flags, aux_ij, c0[idx].to_f32() as f64)));
                        }
                    }
                }
                let accumulate = flags & AUTOMOE_GEMM_ACCUMULATE != 0;
                let mask = flags & AUTOMOE_GEMM_RELU_MASK != 0;
                let op = HostGemm { stage: GemmStage::Fwd, a: &a, b: &b, bias: Some(&bias), aux: mask.then_some(&aux[..]), flags };
                let mut c = if accumulate { c0.clone() } else { vec![T::poison(); c_len] };
                grouped_gemm_with(x, &op, &groups, None, &mut c, kernel).unwrap();
                let ctx = format!(
                    "{} epilogue {}{} flags {flags} bias at {bias_at:?} C at {c_at}",
                    x.backend_name(),
                    GemmStage::Fwd.kernel::<T>(),
                    if T::SUFFIX == "bf16" { kernel.suffix } else { "" }
                );
                check(&ctx, &c, &want, !accumulate, tol::<T>());
                if accumulate {
                    assert_unchanged_outside(&ctx, &c, &c0, &want);
                }
            }
        }
    }
}

fn dbias_body<X: Exec, T: KernelFloat>(x: &X) {
    let mut rng = ChaCha8Rng::seed_from_u64(50);
    let ld = H_MAX;
    let src: Vec<T> = rand_vec(&mut rng, rows() * ld);
    let out0: Vec<f32> = rand_vec(&mut rng, WIDTHS.len() * H_MAX);
    let mut out = out0.clone();
    let off = offsets();
    grouped_dbias(x, &src, ld, &off, &WIDTHS, &mut out, H_MAX).unwrap();
    for (e, &w) in WIDTHS.iter().enumerate() {
        for c in 0..H_MAX {
            let i = e * H_MAX + c;
            if c >= w {
                assert_eq!(out[i].to_bits(), out0[i].to_bits(), "column {c} of group {e} is past its width");
                continue;
            }
            let s: f64 = (off[e] as usize..off[e + 1] as usize).map(|r| src[r * ld + c].to_f32() as f64).sum::<f64>() + out0[i] as f64;
            assert!((out[i] as f64 - s).abs() < 1e-4 * s.abs().max(1.0), "{} group {e} col {c}: {} vs {s}", x.backend_name(), out[i]);
        }
    }
}

/// 300 groups (more than the plan's 256 threads, so its loops stride) of 0..=3 rows, with
/// M from the template (no offsets) and from offsets: the scan and the binary search over many
/// groups, most of them sharing a tile start with an empty neighbour.
fn many_groups<X: Exec, T: KernelFloat>(x: &X) {
    let mut rng = ChaCha8Rng::seed_from_u64(60);
    let (g, n, k) = (300usize, 5usize, 9usize);
    // Mostly empty (each nonempty group is a whole tile on the emulator, where tiles are slow).
    let counts: Vec<usize> = (0..g).map(|e| if e % 25 == 3 { rng.random_range(1..=3) } else { 0 }).collect();
    let mut off = vec![0i32];
    for &c in &counts {
        off.push(off.last().unwrap() + c as i32);
    }
    let rows = *off.last().unwrap() as usize;
    let a: Vec<T> = rand_vec(&mut rng, rows * k);
    let b: Vec<T> = rand_vec(&mut rng, g * n * k);
    for from_offsets in [false, true] {
        let groups: Vec<HostGroup> = (0..g)
            .map(|e| HostGroup {
                m: counts[e],
                n,
                k,
                a_off: if from_offsets { 0 } else { off[e] as usize * k },
                lda: k,
                b_off: e * n * k,
                ldb: k,
                c_off: if from_offsets { 0 } else { off[e] as usize * n },
                ldc: n,
                bias_off: None,
            })
            .collect();
        let op = HostGemm { stage: GemmStage::Fwd, a: &a, b: &b, bias: None, aux: None, flags: 0 };
        let mut c = vec![T::poison(); rows * n];
        grouped_gemm(x, &op, &groups, from_offsets.then_some(&off[..]), &mut c).unwrap();
        for e in 0..g {
            for i in off[e] as usize..off[e + 1] as usize {
                for j in 0..n {
                    let want: f64 = (0..k).map(|kk| a[i * k + kk].to_f32() as f64 * b[e * n * k + j * k + kk].to_f32() as f64).sum();
                    let got = c[i * n + j].to_f32() as f64;
                    assert!(
                        // Relative to the result (bf16 rounds it to 2^-9 of its size), with a floor of
                        // 1 for results near zero; NaN (the poison) fails.
                        (got - want).abs() < tol::<T>() * want.abs().max(1.0),
                        "{} {} offsets={from_offsets} group {e} row {i}: {got} vs {want}",
                        x.backend_name(),
                        T::SUFFIX
                    );
                }
            }
        }
    }
}

fn bad_input<X: Exec>(x: &X) {
    let a = vec![0.5f32; 64];
    let b = vec![0.5f32; 64];
    let g = HostGroup { m: 8, n: 8, k: 8, lda: 8, ldb: 8, ldc: 8, ..Default::default() };
    let op = HostGemm { stage: GemmStage::Fwd, a: &a, b: &b, bias: None, aux: None, flags: 0 };
    let mut c = vec![0f32; 64];
    assert!(grouped_gemm(x, &op, &[g], None, &mut c).is_ok());
    assert!(grouped_gemm(x, &op, &[HostGroup { m: 9, ..g }], None, &mut c).is_err(), "A too short");
    assert!(grouped_gemm(x, &op, &[HostGroup { n: 9, ..g }], None, &mut c).is_err(), "n > ldc");
    assert!(grouped_gemm(x, &op, &[HostGroup { bias_off: Some(0), ..g }], None, &mut c).is_err(), "bias missing");
    assert!(grouped_gemm(x, &op, &[g], Some(&[0, 9]), &mut c).is_err(), "segment past A");
    assert!(grouped_gemm(x, &op, &[g], Some(&[3, 1]), &mut c).is_err(), "decreasing offsets");
    assert!(grouped_gemm(x, &op, &[], None, &mut c).is_err(), "no groups");
    assert!(grouped_gemm(x, &op, &[HostGroup { a_off: usize::MAX, ..g }], None, &mut c).is_err(), "absurd offset");
    assert!(grouped_gemm(x, &op, &[HostGroup { a_off: usize::MAX, ..g }], Some(&[0, 8]), &mut c).is_err(), "absurd offset, shifted");
    let empty = HostGroup { m: 0, a_off: usize::MAX, c_off: usize::MAX, ..g };
    assert!(grouped_gemm(x, &op, &[empty, g], None, &mut c).is_ok(), "an empty group's offsets are never used");
    let mut cb = vec![bf16::ZERO; 64];
    assert!(grouped_gemm(x, &op, &[g], None, &mut cb).is_err(), "f32 fwd with a bf16 output");
    let wg = HostGemm { stage: GemmStage::Wgrad, ..op };
    let ab: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
    let wgb = HostGemm { stage: GemmStage::Wgrad, a: &ab, b: &ab, bias: None, aux: None, flags: 0 };
    assert!(grouped_gemm(x, &wgb, &[g], None, &mut cb).is_err(), "bf16 wgrad must accumulate into f32");
    assert!(grouped_gemm(x, &wg, &[g], None, &mut c).is_ok());
    assert!(grouped_gemm(x, &HostGemm { flags: 64, ..op }, &[g], None, &mut c).is_err(), "unknown flag");
}

macro_rules! backend_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            macro_rules! run {
                ($body:expr) => {
                    match $make {
                        Ok(b) => $body(&b),
                        Err(e) => automoe::cuda::skip_unless_required("AUTOMOE_REQUIRE_CUDA", &format!("{}: {e}", stringify!($module))),
                    }
                };
            }

            #[test]
            fn grouped_gemm_fwd_f32() {
                run!(|x| run_stage::<_, f32>(x, GemmStage::Fwd, BF16_KERNELS[0]))
            }
            #[test]
            fn grouped_gemm_fwd_bf16() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Fwd, BF16_KERNELS[0]))
            }
            #[test]
            fn grouped_gemm_fwd_bf16_w8s4() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Fwd, BF16_KERNELS[1]))
            }
            #[test]
            fn grouped_gemm_fwd_bf16_w8s2() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Fwd, BF16_KERNELS[2]))
            }
            #[test]
            fn grouped_gemm_fwd_bf16_sm90() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Fwd, BF16_KERNELS[3]))
            }
            #[test]
            fn grouped_gemm_fwd_bf16_sm90x2() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Fwd, BF16_KERNELS[4]))
            }
            #[test]
            fn grouped_gemm_dgrad_f32() {
                run!(|x| run_stage::<_, f32>(x, GemmStage::Dgrad, BF16_KERNELS[0]))
            }
            #[test]
            fn grouped_gemm_dgrad_bf16() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Dgrad, BF16_KERNELS[0]))
            }
            #[test]
            fn grouped_gemm_dgrad_bf16_w8s4() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Dgrad, BF16_KERNELS[1]))
            }
            #[test]
            fn grouped_gemm_dgrad_bf16_w8s2() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Dgrad, BF16_KERNELS[2]))
            }
            #[test]
            fn grouped_gemm_dgrad_bf16_sm90() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Dgrad, BF16_KERNELS[3]))
            }
            #[test]
            fn grouped_gemm_dgrad_bf16_sm90x2() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Dgrad, BF16_KERNELS[4]))
            }
            #[test]
            fn grouped_gemm_wgrad_f32() {
                run!(|x| run_stage::<_, f32>(x, GemmStage::Wgrad, BF16_KERNELS[0]))
            }
            #[test]
            fn grouped_gemm_wgrad_bf16() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Wgrad, BF16_KERNELS[0]))
            }
            #[test]
            fn grouped_gemm_wgrad_bf16_w8s4() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Wgrad, BF16_KERNELS[1]))
            }
            #[test]
            fn grouped_gemm_wgrad_bf16_w8s2() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Wgrad, BF16_KERNELS[2]))
            }
            #[test]
            fn grouped_gemm_wgrad_bf16_sm90() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Wgrad, BF16_KERNELS[3]))
            }
            #[test]
            fn grouped_gemm_wgrad_bf16_sm90x2() {
                run!(|x| run_stage::<_, bf16>(x, GemmStage::Wgrad, BF16_KERNELS[4]))
            }
            #[test]
            fn deep_k_all_bf16_kernels() {
                run!(deep_k::<_, bf16>)
            }
            #[test]
            fn deep_k_f32() {
                run!(deep_k::<_, f32>)
            }
            #[test]
            fn grouped_gemm_dbias_f32() {
                run!(dbias_body::<_, f32>)
            }
            #[test]
            fn grouped_gemm_dbias_bf16() {
                run!(dbias_body::<_, bf16>)
            }
            #[test]
            fn many_groups_f32() {
                run!(many_groups::<_, f32>)
            }
            #[test]
            fn many_groups_bf16() {
                run!(many_groups::<_, bf16>)
            }
            #[test]
            fn epilogue_flags_f32() {
                run!(epilogue_flags::<_, f32>)
            }
            #[test]
            fn epilogue_flags_bf16() {
                run!(epilogue_flags::<_, bf16>)
            }
            #[test]
            fn rejects_bad_input() {
                run!(bad_input)
            }
        }
    };
}

backend_tests!(emulator, Ok::<_, automoe::Error>(automoe::cuda::Emu::default()));
backend_tests!(emulator_shuffled, Ok::<_, automoe::Error>(automoe::cuda::Emu { seed: 777 }));
backend_tests!(cuda, automoe::cuda::CudaExec::new(0));
