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

/// Mean label-smoothed cross-entropy over rows whose target is not `ignore`.
pub fn cross_entropy(logits: &[f64], targets: &[u32], v: usize, eps: f64, ignore: Option<u32>) -> f64 {
    let mut total = 0.0;
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
        }
        count += 1;
    }
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}
