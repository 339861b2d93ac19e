//! Plain, obviously-correct references that the fast kernels (CPU and CUDA) are tested against.
//! Everything here is f64, single-threaded and written for reading, not speed.

/// `c[m, n] = a[m, k] @ b[k, n]`, all row-major.
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                s += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = s;
        }
    }
    c
}

/// Layer norm of each row of length `d`.
pub fn layer_norm(x: &[f64], gamma: &[f64], beta: &[f64], d: usize, eps: f64) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        for j in 0..d {
            y.push((row[j] - mean) / (var + eps).sqrt() * gamma[j] + beta[j]);
        }
    }
    y
}

/// Softmax of each row, with `hidden(row, j)` marking keys to leave out; an all-hidden row is zeros.
pub fn softmax(x: &[f64], tk: usize, hidden: impl Fn(usize, usize) -> bool) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (r, row) in x.chunks(tk).enumerate() {
        let keep: Vec<usize> = (0..tk).filter(|&j| !hidden(r, j)).collect();
        if keep.is_empty() {
            continue;
        }
        let mx = keep.iter().map(|&j| row[j]).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = keep.iter().map(|&j| (row[j] - mx).exp()).sum();
        for &j in &keep {
            y[r * tk + j] = (row[j] - mx).exp() / z;
        }
    }
    y
}

/// Mean losses of [`cross_entropy`] over the counted rows (zero when no row is counted).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropy {
    /// Mean label-smoothed loss `-sum_j q_j log p_j`.
    pub loss: f64,
    /// Mean unsmoothed negative log-likelihood `-log p_t` (what perplexity is computed from).
    pub nll: f64,
    /// Rows whose target is not `ignore`.
    pub count: usize,
}

/// Mean label-smoothed cross-entropy over rows whose target is not `ignore`, with the plain NLL.
pub fn cross_entropy(logits: &[f64], targets: &[u32], v: usize, eps: f64, ignore: Option<u32>) -> CrossEntropy {
    let mut total = 0.0;
    let mut nll = 0.0;
    let mut count = 0;
    for (row, &t) in logits.chunks(v).zip(targets) {
        if Some(t) == ignore {
            continue;
        }
        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|x| (x - mx).exp()).sum();
        for (j, &x) in row.iter().enumerate() {
            let logp = x - mx - z.ln();
            let q = eps / v as f64 + if j == t as usize { 1.0 - eps } else { 0.0 };
            total -= q * logp;
            if j == t as usize {
                nll -= logp;
            }
        }
        count += 1;
    }
    let n = count.max(1) as f64;
    CrossEntropy { loss: total / n, nll: nll / n, count }
}

/// Gradient of `scale` times the summed label-smoothed cross-entropy with respect to the logits,
/// element by element: `scale * (p_j - q_j)` with `p = softmax(row)` and
/// `q_j = (1 - eps) [j == t] + eps / V`; rows whose target is `ignore` get zero.
pub fn cross_entropy_backward(logits: &[f64], targets: &[u32], v: usize, eps: f64, ignore: Option<u32>, scale: f64) -> Vec<f64> {
    let mut d = vec![0.0; logits.len()];
    for (r, (row, &t)) in logits.chunks(v).zip(targets).enumerate() {
        if Some(t) == ignore {
            continue;
        }
        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|x| (x - mx).exp()).sum();
        for (j, &x) in row.iter().enumerate() {
            let p = (x - mx).exp() / z;
            let q = eps / v as f64 + if j == t as usize { 1.0 - eps } else { 0.0 };
            d[r * v + j] = scale * (p - q);
        }
    }
    d
}

/// Backward of a row-wise softmax from its output `y` and the output gradient `dy`:
/// `dx_j = sum_i dy_i * J_ij` with the Jacobian `J_ij = y_i (delta_ij - y_j)` written out element
/// by element (masked keys have `y = 0` and so get no gradient).
pub fn softmax_backward(y: &[f64], dy: &[f64], tk: usize) -> Vec<f64> {
    let mut dx = vec![0.0; y.len()];
    for r in 0..y.len() / tk {
        let (yr, gr) = (&y[r * tk..(r + 1) * tk], &dy[r * tk..(r + 1) * tk]);
        for j in 0..tk {
            let mut s = 0.0;
            for i in 0..tk {
                let jac = yr[i] * (if i == j { 1.0 } else { 0.0 } - yr[j]);
                s += gr[i] * jac;
            }
            dx[r * tk + j] = s;
        }
    }
    dx
}

/// Gradients `(dx, dgamma, dbeta)` of [`layer_norm`] for the output gradient `dy`. `dx` goes
/// through the full Jacobian of the normalised row, `dxhat_j/dx_k = (delta_jk - 1/d - xhat_j
/// xhat_k / d) / sigma`, rather than the fused formula the kernels use.
pub fn layer_norm_backward(x: &[f64], gamma: &[f64], dy: &[f64], d: usize, eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut dgamma = vec![0.0; d];
    let mut dbeta = vec![0.0; d];
    for r in 0..x.len() / d {
        let (xr, gr) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let sigma = (var + eps).sqrt();
        let xhat: Vec<f64> = xr.iter().map(|v| (v - mean) / sigma).collect();
        for j in 0..d {
            dgamma[j] += gr[j] * xhat[j];
            dbeta[j] += gr[j];
        }
        for k in 0..d {
            let mut s = 0.0;
            for j in 0..d {
                let delta = if j == k { 1.0 } else { 0.0 };
                s += gr[j] * gamma[j] * (delta - 1.0 / d as f64 - xhat[j] * xhat[k] / d as f64) / sigma;
            }
            dx[r * d + k] = s;
        }
    }
    (dx, dgamma, dbeta)
}

/// `out[i, :] = weight[ids[i], :]` for a `[vocab, d]` table.
pub fn embedding(weight: &[f64], ids: &[u32], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; ids.len() * d];
    for (i, &id) in ids.iter().enumerate() {
        for j in 0..d {
            out[i * d + j] = weight[id as usize * d + j];
        }
    }
    out
}

/// Gradient of [`embedding`]: `dweight[v, :] = sum of dy[i, :] over the positions i with ids[i] == v`.
pub fn embedding_backward(dy: &[f64], ids: &[u32], vocab: usize, d: usize) -> Vec<f64> {
    let mut dw = vec![0.0; vocab * d];
    for v in 0..vocab {
        for (i, &id) in ids.iter().enumerate() {
            if id as usize == v {
                for j in 0..d {
                    dw[v * d + j] += dy[i * d + j];
                }
            }
        }
    }
    dw
}
