//! Row reductions and exponentials that vectorise: the inner loops of softmax, cross-entropy,
//! layer norm and the decoder's log-softmax.
//!
//! Why: a plain `row.iter().map(|v| v as f64).sum::<f64>()` is one dependent f64 add per element
//! (IEEE order forbids the compiler to split it), and `f32::exp` is a scalar libm call. On a
//! training step those loops cost more than the arithmetic they do (`docs/BENCHMARKS.md`, CPU
//! training throughput). Here sums run in `LANES` independent f64 accumulators in a fixed order,
//! and `exp` is a branch-free polynomial the compiler can put in vector registers.
//!
//! The f32 entry points are compiled for AVX-512 and for AVX2 besides the baseline and picked at
//! run time (`multiversion`). No `mul_add` is used, so every version rounds the same way: the
//! results are bit-identical whichever one runs, and a test checks it.

use multiversion::multiversion;

/// Independent accumulators per reduction: two AVX-512 registers of f64, enough to hide the add
/// latency behind the loads and the exponential.
const LANES: usize = 16;

/// Below this, `exp` of an f32 is under f32's smallest normal (2^-126) and is returned as 0.
const EXP_MIN_ARG: f32 = -87.336_54;
/// Above this, `2^n` of the reduction would overflow; `exp` returns +inf (true overflow is at 88.72).
const EXP_MAX_ARG: f32 = 88.376_26;

/// `e^x` for f32, within 2 ulp of the correctly rounded value for `x` in
/// [`EXP_MIN_ARG`, `EXP_MAX_ARG`]; 0 below (where the true value is subnormal or 0), +inf above,
/// NaN for NaN. Branch-free, so a loop of it vectorises.
///
/// Method: `x = n ln2 + r` with `n = round(x / ln2)` and `|r| <= ln2 / 2` (Cody-Waite: `ln2` in a
/// high part with 9 significant bits, so `n * LN2_HI` is exact, and a low part), `e^r` by its Taylor
/// series to degree 7 (truncation error `r^8 / 8! < 6e-9` relative, a tenth of an ulp), and `2^n`
/// built in the exponent field.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0x3f31_8000: 355 / 512
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 - LN2_HI

    // Adding 1.5 * 2^23 rounds to an integer (ties to even) and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // `clamp` passes NaN through, and the arithmetic below turns it into NaN.
    let xc = x.clamp(EXP_MIN_ARG, EXP_MAX_ARG);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p =
        1.0 + r * (1.0 + r * (1.0 / 2.0 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    let y = p * scale;
    if x < EXP_MIN_ARG {
        0.0
    } else if x > EXP_MAX_ARG {
        f32::INFINITY
    } else {
        y
    }
}

/// Folds `f(x[i])` into `LANES` f64 accumulators (element `i` into lane `i % LANES`), then adds
/// the lanes in order: a fixed order whatever the machine. Even compiled for the baseline target
/// (two f64 per register) this runs several times faster than a single running sum, whose every
/// add waits for the previous one. (Slices, not indices: a closure indexing captured slices keeps
/// its bounds checks, and they stop the compiler from vectorising.)
#[inline(always)]
pub fn lane_sum<A: Copy>(x: &[A], f: impl Fn(A) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
    acc.iter().sum()
}

/// [`lane_sum`] of `f(x[i], y[i])` over equal-length slices.
#[inline(always)]
pub fn lane_sum2<A: Copy, B: Copy>(x: &[A], y: &[B], f: impl Fn(A, B) -> f64) -> f64 {
    assert_eq!(x.len(), y.len(), "lane_sum2: lengths differ");
    let mut acc = [0f64; LANES];
    let (mut cx, mut cy) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    for (a, b) in (&mut cx).zip(&mut cy) {
        for ((s, &u), &v) in acc.iter_mut().zip(a).zip(b) {
            *s += f(u, v);
        }
    }
    for ((s, &u), &v) in acc.iter_mut().zip(cx.remainder()).zip(cy.remainder()) {
        *s += f(u, v);
    }
    acc.iter().sum()
}

/// [`lane_sum`] of `f(x[i], y[i], z[i])` over equal-length slices.
#[inline(always)]
pub fn lane_sum3<A: Copy, B: Copy, C: Copy>(x: &[A], y: &[B], z: &[C], f: impl Fn(A, B, C) -> f64) -> f64 {
    assert!(x.len() == y.len() && y.len() == z.len(), "lane_sum3: lengths differ");
    let mut acc = [0f64; LANES];
    let (mut cx, mut cy, mut cz) = (x.chunks_exact(LANES), y.chunks_exact(LANES), z.chunks_exact(LANES));
    for ((a, b), c) in (&mut cx).zip(&mut cy).zip(&mut cz) {
        for (((s, &u), &v), &w) in acc.iter_mut().zip(a).zip(b).zip(c) {
            *s += f(u, v, w);
        }
    }
    for (((s, &u), &v), &w) in acc.iter_mut().zip(cx.remainder()).zip(cy.remainder()).zip(cz.remainder()) {
        *s += f(u, v, w);
    }
    acc.iter().sum()
}

#[inline(always)]
fn max_body(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            m[l] = m[l].max(c[l]);
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        m[l] = m[l].max(v);
    }
    m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

#[inline(always)]
fn exp_shifted_body(x: &[f32], shift: f32, out: &mut [f32]) -> f64 {
    assert_eq!(x.len(), out.len(), "exp_shifted: input and output lengths differ");
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp_f32(v - shift);
    }
    lane_sum(out, |e| e as f64)
}

#[inline(always)]
fn exp_shifted_in_place_body(buf: &mut [f32], shift: f32) -> f64 {
    for v in buf.iter_mut() {
        *v = exp_f32(*v - shift);
    }
    lane_sum(buf, |e| e as f64)
}

#[inline(always)]
fn exp_shifted_sum_body(x: &[f32], shift: f32) -> f64 {
    lane_sum(x, |v| exp_f32(v - shift) as f64)
}

/// Sum of `x` in f64.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn sum_f32(x: &[f32]) -> f64 {
    lane_sum(x, |v| v as f64)
}

/// Largest element of `x` (NaNs ignored, as `f32::max` does); -inf when empty.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn max_f32(x: &[f32]) -> f32 {
    max_body(x)
}

/// `out[j] = e^(x[j] - shift)`; returns their sum in f64.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn exp_shifted_f32(x: &[f32], shift: f32, out: &mut [f32]) -> f64 {
    exp_shifted_body(x, shift, out)
}

/// `buf[j] = e^(buf[j] - shift)`; returns their sum in f64.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn exp_shifted_in_place_f32(buf: &mut [f32], shift: f32) -> f64 {
    exp_shifted_in_place_body(buf, shift)
}

/// `sum_j e^(x[j] - shift)` in f64, without storing the exponentials.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
pub fn exp_shifted_sum_f32(x: &[f32], shift: f32) -> f64 {
    exp_shifted_sum_body(x, shift)
}

/// The row operations of the CPU kernels, for each element type. f64 (the gradient checks' type)
/// keeps the standard library's `exp`; its sums use the same lanes.
pub trait RowMath: Copy + Sized {
    /// Sum in f64.
    fn row_sum(x: &[Self]) -> f64;
    /// Largest element (NaNs ignored); -inf when empty.
    fn row_max(x: &[Self]) -> Self;
    /// `out[j] = e^(x[j] - shift)`, returning their sum in f64.
    fn exp_shifted(x: &[Self], shift: Self, out: &mut [Self]) -> f64;
    /// `buf[j] = e^(buf[j] - shift)`, returning their sum in f64.
    fn exp_shifted_in_place(buf: &mut [Self], shift: Self) -> f64;
    /// `sum_j e^(x[j] - shift)` in f64.
    fn exp_shifted_sum(x: &[Self], shift: Self) -> f64;
}

impl RowMath for f32 {
    fn row_sum(x: &[f32]) -> f64 {
        sum_f32(x)
    }
    fn row_max(x: &[f32]) -> f32 {
        max_f32(x)
    }
    fn exp_shifted(x: &[f32], shift: f32, out: &mut [f32]) -> f64 {
        exp_shifted_f32(x, shift, out)
    }
    fn exp_shifted_in_place(buf: &mut [f32], shift: f32) -> f64 {
        exp_shifted_in_place_f32(buf, shift)
    }
    fn exp_shifted_sum(x: &[f32], shift: f32) -> f64 {
        exp_shifted_sum_f32(x, shift)
    }
}

impl RowMath for f64 {
    fn row_sum(x: &[f64]) -> f64 {
        lane_sum(x, |v| v)
    }
    fn row_max(x: &[f64]) -> f64 {
        x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v))
    }
    fn exp_shifted(x: &[f64], shift: f64, out: &mut [f64]) -> f64 {
        assert_eq!(x.len(), out.len(), "exp_shifted: input and output lengths differ");
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - shift).exp();
        }
        lane_sum(out, |e| e)
    }
    fn exp_shifted_in_place(buf: &mut [f64], shift: f64) -> f64 {
        for v in buf.iter_mut() {
            *v = (*v - shift).exp();
        }
        lane_sum(buf, |e| e)
    }
    fn exp_shifted_sum(x: &[f64], shift: f64) -> f64 {
        lane_sum(x, |v| (v - shift).exp())
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Distance in units in the last place between `got` and the f64 value `want` rounded to f32.
    fn ulps(got: f32, want: f64) -> i64 {
        let w = want as f32;
        (got.to_bits() as i64 - w.to_bits() as i64).abs()
    }

    #[test]
    fn exp_is_within_two_ulp_over_its_range() {
        let mut worst = (0i64, 0f32);
        let n = 2_000_000;
        for i in 0..=n {
            let x = EXP_MIN_ARG + (EXP_MAX_ARG - EXP_MIN_ARG) * (i as f32 / n as f32);
            let u = ulps(exp_f32(x), (x as f64).exp());
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 2, "exp_f32 is {} ulp off at x = {}", worst.0, worst.1);
        // Arguments where n changes and near zero, where r is smallest.
        for x in [0.0f32, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 0.346_573_6, -0.346_573_6, 0.346_573_7, -1.039_720_8] {
            assert!(ulps(exp_f32(x), (x as f64).exp()) <= 2, "x = {x}");
        }
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0, "below 2^-126 the result is 0 (true value < 1.2e-38)");
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(EXP_MIN_ARG) > 0.0 && exp_f32(EXP_MIN_ARG).is_normal());
        assert!(exp_f32(EXP_MAX_ARG).is_finite());
    }

    fn row(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-20.0f32..20.0)).collect()
    }

    #[test]
    fn reductions_match_plain_loops() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for n in [0usize, 1, 2, 15, 16, 17, 31, 33, 100, 1698] {
            let x = row(&mut rng, n);
            let plain_sum: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((f32::row_sum(&x) - plain_sum).abs() <= 1e-12 * (1.0 + plain_sum.abs()), "sum, n = {n}");
            let plain_max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            assert_eq!(f32::row_max(&x), plain_max, "max, n = {n}");
            let shift = if n == 0 { 0.0 } else { plain_max };
            let mut out = vec![f32::NAN; n];
            let s = f32::exp_shifted(&x, shift, &mut out);
            let mut want_sum = 0f64;
            for (j, (&o, &v)) in out.iter().zip(&x).enumerate() {
                let want = ((v - shift) as f64).exp();
                want_sum += want;
                assert!(ulps(o, want) <= 2, "exp, n = {n}, j = {j}: {o} against {want}");
            }
            assert!((s - want_sum).abs() <= 1e-6 * want_sum.max(1e-30), "exp sum, n = {n}: {s} against {want_sum}");
            assert_eq!(f32::exp_shifted_sum(&x, shift), s, "the two exp sums, n = {n}");
            let mut buf = x.clone();
            assert_eq!(f32::exp_shifted_in_place(&mut buf, shift), s, "in place, n = {n}");
            assert_eq!(buf, out, "in place, n = {n}");
            // f64 keeps std's exp.
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let mut out64 = vec![f64::NAN; n];
            let s64 = f64::exp_shifted(&x64, shift as f64, &mut out64);
            assert!((s64 - want_sum).abs() <= 1e-12 * want_sum.max(1e-30), "f64 exp sum, n = {n}");
            assert_eq!(f64::exp_shifted_sum(&x64, shift as f64), s64);
            let mut buf64 = x64.clone();
            assert_eq!(f64::exp_shifted_in_place(&mut buf64, shift as f64), s64);
            assert_eq!(buf64, out64);
            assert!((f64::row_sum(&x64) - plain_sum).abs() <= 1e-12 * (1.0 + plain_sum.abs()));
        }
        assert_eq!(f32::row_max(&[f32::NAN, 1.0, f32::NAN]), 1.0, "NaNs are ignored as f32::max does");
        let mut out = [0f32; 3];
        assert!(f32::exp_shifted(&[0.0, f32::NAN, -1.0], 0.0, &mut out).is_nan(), "a NaN reaches the sum");
        assert_eq!(out[0], 1.0);
        assert!(out[1].is_nan());
    }

    /// The run-time-selected versions (AVX-512 here) round exactly as the baseline build of the
    /// same code does.
    #[test]
    fn every_target_version_gives_the_same_bits() {
        // Without AVX2 the dispatcher picks the baseline, and this would compare it with itself.
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("every_target_version_gives_the_same_bits: skipped, this CPU has neither AVX2 nor AVX-512");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for n in [1usize, 17, 1698, 4099] {
            let x = row(&mut rng, n);
            let shift = max_body(&x);
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            let sa = exp_shifted_f32(&x, shift, &mut a);
            let sb = exp_shifted_body(&x, shift, &mut b);
            assert_eq!(sa.to_bits(), sb.to_bits(), "sum, n = {n}");
            assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "exponentials, n = {n}");
            assert_eq!(sum_f32(&x).to_bits(), lane_sum(&x, |v| v as f64).to_bits());
            assert_eq!(exp_shifted_sum_f32(&x, shift).to_bits(), exp_shifted_sum_body(&x, shift).to_bits());
            let (mut c, mut d) = (x.clone(), x.clone());
            assert_eq!(exp_shifted_in_place_f32(&mut c, shift).to_bits(), exp_shifted_in_place_body(&mut d, shift).to_bits());
            assert!(c.iter().zip(&d).all(|(p, q)| p.to_bits() == q.to_bits()));
            assert_eq!(max_f32(&x), max_body(&x));
        }
    }
}
