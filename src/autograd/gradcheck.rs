//! Finite-difference gradient checking, used by the tests of every tape op (and available to users
//! writing their own ops). Run it in f64: central differences then agree with the analytic
//! gradient to about 1e-8 relative, so a tolerance of 1e-6 catches real mistakes.

use super::{Tape, Var};
use crate::tensor::Tensor;
use crate::{DType, Error, Result};

/// The worst disagreement found, relative to the gradient's scale.
#[derive(Clone, Debug)]
pub struct GradCheckReport {
    pub max_rel_error: f64,
    /// (input index, element index) of the worst element.
    pub worst: (usize, usize),
    pub analytic: f64,
    pub numeric: f64,
}

/// Compares the tape's gradient of `f(inputs)` (which must return a one-element value) with
/// central finite differences of step `h`, for every element of every input. Inputs must be f64.
/// The error of each element is `|a - n| / max(1, max |analytic|)`.
pub fn check_gradients(inputs: &[Tensor], h: f64, f: impl Fn(&mut Tape, &[Var]) -> Result<Var>) -> Result<GradCheckReport> {
    for t in inputs {
        if t.dtype() != DType::F64 {
            return Err(Error::DTypeMismatch { op: "check_gradients", expected: DType::F64, got: t.dtype() });
        }
    }
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| Ok(tape.input(t.contiguous()?))).collect::<Result<_>>()?;
    let loss = f(&mut tape, &vars)?;
    let grads = tape.backward(&loss)?;
    let analytic: Vec<Vec<f64>> = vars
        .iter()
        .map(|v| match grads.wrt(v) {
            Some(g) => g.to_f64_vec(),
            None => Ok(vec![0.0; v.value().numel()]),
        })
        .collect::<Result<_>>()?;
    let scale = analytic.iter().flatten().fold(1.0f64, |m, v| m.max(v.abs()));

    let eval = |i: usize, data: Vec<f64>| -> Result<f64> {
        let mut t = Tape::inference();
        let vars: Vec<Var> = inputs
            .iter()
            .enumerate()
            .map(|(j, x)| if j == i { Tensor::from_vec(data.clone(), x.shape()) } else { Ok(x.clone()) })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .map(|x| t.constant(x))
            .collect();
        f(&mut t, &vars)?.value().to_scalar()
    };
    let mut report = GradCheckReport { max_rel_error: 0.0, worst: (0, 0), analytic: 0.0, numeric: 0.0 };
    for (i, x) in inputs.iter().enumerate() {
        let base = x.to_f64_vec()?;
        for e in 0..base.len() {
            let mut plus = base.clone();
            plus[e] += h;
            let mut minus = base.clone();
            minus[e] -= h;
            let numeric = (eval(i, plus)? - eval(i, minus)?) / (2.0 * h);
            let err = (analytic[i][e] - numeric).abs() / scale;
            if err > report.max_rel_error || !err.is_finite() {
                report = GradCheckReport { max_rel_error: err, worst: (i, e), analytic: analytic[i][e], numeric };
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker must be able to fail: a function whose recorded gradient (2) differs from the
    /// slope its plain evaluation has (3) is reported.
    #[test]
    fn reports_a_wrong_gradient() {
        let x = Tensor::from_vec(vec![0.5f64, -1.0], &[2]).unwrap();
        let report = check_gradients(&[x], 1e-5, |t, v| {
            let s = if t.is_recording() { 2.0 } else { 3.0 };
            let y = t.scale(&v[0], s)?;
            t.sum(&y)
        })
        .unwrap();
        assert!(report.max_rel_error > 0.1, "{report:?}");
    }
}
