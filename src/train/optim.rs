//! Adam / AdamW and global-norm gradient clipping over a [`ParamStore`].
//!
//! Parameters whose gradient is `None` (not used by this update's subnet at all) are skipped, as
//! PyTorch does; a parameter used through a front slice has a full-size gradient that is zero
//! outside the slice.

use rayon::prelude::*;

use crate::autograd::{ParamId, ParamStore};
use crate::tensor::{Float, Tensor};
use crate::{DType, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW (decay applied to the weights directly) when true; L2 added to the gradient when false.
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    /// AutoMoE's (fairseq's) settings: betas (0.9, 0.98), eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig { beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.0, decoupled_weight_decay: true }
    }
}

/// First and second moments of one parameter.
#[derive(Clone, Debug)]
pub struct AdamState {
    pub m: Tensor,
    pub v: Tensor,
    /// Updates applied to this parameter (bias correction counts per parameter, since a
    /// parameter a subnet did not use sits out that update).
    pub steps: u64,
}

#[derive(Clone, Debug)]
pub struct Adam {
    pub config: AdamConfig,
    state: Vec<Option<AdamState>>,
}

impl Adam {
    pub fn new(config: AdamConfig) -> Self {
        Adam { config, state: Vec::new() }
    }

    pub fn state(&self, id: ParamId) -> Option<&AdamState> {
        self.state.get(id.0).and_then(|s| s.as_ref())
    }

    /// Replaces the state of one parameter (restoring a checkpoint).
    pub fn set_state(&mut self, id: ParamId, s: AdamState) {
        if self.state.len() <= id.0 {
            self.state.resize(id.0 + 1, None);
        }
        self.state[id.0] = Some(s);
    }

    /// One update with learning rate `lr` from the gradients in the store.
    /// Moves every moment estimate to `device` (after loading a checkpoint on the host).
    pub fn to_device(&mut self, device: crate::Device) -> Result<()> {
        for s in self.state.iter_mut().flatten() {
            s.m = s.m.to_device(device)?;
            s.v = s.v.to_device(device)?;
        }
        Ok(())
    }

    pub fn step(&mut self, store: &mut ParamStore, lr: f64) -> Result<()> {
        if self.state.len() < store.len() {
            self.state.resize(store.len(), None);
        }
        let cfg = self.config;
        for (id, p) in store.iter_mut() {
            let Some(grad) = p.grad.as_ref() else { continue };
            if self.state[id.0].is_none() {
                let zeros = || Tensor::zeros_on(p.value.shape(), p.value.dtype(), p.value.device());
                self.state[id.0] = Some(AdamState { m: zeros()?, v: zeros()?, steps: 0 });
            }
            let Some(st) = self.state[id.0].as_mut() else { continue };
            st.steps += 1;
            if p.value.is_cuda() {
                let h = crate::cuda::tensor::AdamStep {
                    lr,
                    beta1: cfg.beta1,
                    beta2: cfg.beta2,
                    eps: cfg.eps,
                    weight_decay: cfg.weight_decay,
                    decoupled: cfg.decoupled_weight_decay,
                    step: st.steps,
                    grad_scale: 1.0,
                };
                crate::cuda::tensor::adam_step(&mut p.value, grad, &mut st.m, &mut st.v, h)
                    .map_err(|e| Error::invalid("Adam", format!("parameter `{}`: {e}", p.name)))?;
                continue;
            }
            match p.value.dtype() {
                DType::F32 => update::<f32>(&mut p.value, grad, st, cfg, lr)?,
                DType::F64 => update::<f64>(&mut p.value, grad, st, cfg, lr)?,
                DType::BF16 => return Err(Error::invalid("Adam", format!("parameter `{}` is bf16; keep f32 master weights", p.name))),
            }
        }
        Ok(())
    }
}

/// Adam's bias corrections `1 - beta^t` after `steps` steps; in f64 powers, so that a count past
/// `i32::MAX` (a very long run, or an edited checkpoint) does not wrap as `powi` would.
pub fn bias_corrections(beta1: f64, beta2: f64, steps: u64) -> (f64, f64) {
    (1.0 - beta1.powf(steps as f64), 1.0 - beta2.powf(steps as f64))
}

fn update<T: Float + crate::tensor::Element>(
    value: &mut Tensor,
    grad: &Tensor,
    st: &mut AdamState,
    cfg: AdamConfig,
    lr: f64,
) -> Result<()> {
    let g = grad.to_vec::<T>()?;
    let (bc1, bc2) = bias_corrections(cfg.beta1, cfg.beta2, st.steps);
    let m = st.m.data_mut::<T>()?;
    let v = st.v.data_mut::<T>()?;
    let w = value.data_mut::<T>()?;
    if m.len() != w.len() || v.len() != w.len() || g.len() != w.len() {
        return Err(Error::invalid("Adam", "parameter, gradient and moment sizes differ"));
    }
    // Elementwise, so splitting across threads changes no result.
    const CHUNK: usize = 1 << 14;
    w.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK)).zip(g.par_chunks(CHUNK)).for_each(
        |(((w, m), v), g)| {
            for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                let mut gi = g.as_f64();
                let wi = w.as_f64();
                if !cfg.decoupled_weight_decay {
                    gi += cfg.weight_decay * wi;
                }
                let mi = cfg.beta1 * m.as_f64() + (1.0 - cfg.beta1) * gi;
                let vi = cfg.beta2 * v.as_f64() + (1.0 - cfg.beta2) * gi * gi;
                *m = T::of_f64(mi);
                *v = T::of_f64(vi);
                let mut new = wi - lr * (mi / bc1) / ((vi / bc2).sqrt() + cfg.eps);
                if cfg.decoupled_weight_decay {
                    new -= lr * cfg.weight_decay * wi;
                }
                *w = T::of_f64(new);
            }
        },
    );
    Ok(())
}

/// Scales all gradients so that their global L2 norm is at most `max_norm` (no-op when
/// `max_norm <= 0`). Returns the norm before clipping; a non-finite norm is an error naming the
/// first parameter with a non-finite gradient.
pub fn clip_grad_norm(store: &mut ParamStore, max_norm: f64) -> Result<f64> {
    let grads: Vec<(&str, &Tensor)> = store.iter().filter_map(|(_, p)| p.grad.as_ref().map(|g| (p.name.as_str(), g))).collect();
    // CUDA gradients are reduced on their device, with one download for all of them.
    let on_cuda: Vec<&Tensor> = grads.iter().filter(|(_, g)| g.is_cuda()).map(|(_, g)| *g).collect();
    let mut cuda_sums = if on_cuda.is_empty() { vec![] } else { crate::cuda::tensor::sum_squares_many(&on_cuda)? }.into_iter();
    let mut sq = 0.0;
    for (name, g) in grads {
        let s: f64 = if g.is_cuda() {
            cuda_sums.next().ok_or_else(|| Error::invalid("clip_grad_norm", "a device gradient's sum is missing"))?
        } else {
            g.sum_squares()?
        };
        if !s.is_finite() {
            return Err(Error::NonFinite(format!("gradient of `{name}`")));
        }
        sq += s;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for (_, p) in store.iter_mut() {
            if let Some(g) = p.grad.take() {
                p.grad = Some(g.scale(s)?);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(w: Vec<f64>, g: Vec<f64>) -> (ParamStore, ParamId) {
        let mut s = ParamStore::new();
        let n = w.len();
        let id = s.add("w", Tensor::from_vec(w, &[n]).unwrap()).unwrap();
        s.get_mut(id).grad = Some(Tensor::from_vec(g, &[n]).unwrap());
        (s, id)
    }

    #[test]
    fn first_adam_step_moves_each_weight_by_lr() {
        // With bias correction the first step is lr * g / (|g| + eps) = lr * sign(g).
        let (mut s, id) = store_with(vec![1.0, -2.0, 0.5], vec![0.3, -4.0, 1e-3]);
        Adam::new(AdamConfig::default()).step(&mut s, 0.01).unwrap();
        let w = s.value(id).to_f64_vec().unwrap();
        for (got, want) in w.iter().zip([0.99, -1.99, 0.49]) {
            assert!((got - want).abs() < 1e-7, "{got} vs {want}");
        }
    }

    #[test]
    fn adamw_decays_weights_and_adam_l2_differs() {
        let cfg = AdamConfig { weight_decay: 0.1, ..Default::default() };
        let (mut s, id) = store_with(vec![2.0], vec![0.0]);
        Adam::new(cfg).step(&mut s, 0.5).unwrap();
        // Zero gradient: only the decoupled decay moves it, by lr * wd * w = 0.1.
        assert!((s.value(id).to_scalar().unwrap() - 1.9).abs() < 1e-12);
        let (mut s2, id2) = store_with(vec![2.0], vec![0.0]);
        Adam::new(AdamConfig { decoupled_weight_decay: false, ..cfg }).step(&mut s2, 0.5).unwrap();
        assert!((s2.value(id2).to_scalar().unwrap() - 1.5).abs() < 1e-6);
    }

    /// Five steps of Adam against the textbook update written out per scalar, with weight decay
    /// both ways. From step 2 on the bias corrections `1 - beta^t` no longer cancel, so a wrong
    /// step count or correction shows. A second parameter sits out step 3 (no gradient): its own
    /// count, not the optimizer's, drives its correction.
    #[test]
    fn five_adam_steps_match_the_scalar_formula() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for decoupled in [true, false] {
            let cfg = AdamConfig { beta1: 0.8, beta2: 0.9, eps: 1e-6, weight_decay: 0.05, decoupled_weight_decay: decoupled };
            let lr = 0.03;
            let n = 7;
            let mut s = ParamStore::new();
            let init: [Vec<f64>; 2] =
                [(0..n).map(|_| rng.random_range(-2.0..2.0)).collect(), (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()];
            let ids = [
                s.add("a", Tensor::from_vec(init[0].clone(), &[n]).unwrap()).unwrap(),
                s.add("b", Tensor::from_vec(init[1].clone(), &[n]).unwrap()).unwrap(),
            ];
            // The expected state per parameter: weights, moments and the count of its updates.
            struct Expected {
                w: Vec<f64>,
                m: Vec<f64>,
                v: Vec<f64>,
                t: i32,
            }
            let mut want: Vec<Expected> = init.iter().map(|w| Expected { w: w.clone(), m: vec![0.0; n], v: vec![0.0; n], t: 0 }).collect();
            let mut opt = Adam::new(cfg);
            for step in 1..=5 {
                for (p, &id) in ids.iter().enumerate() {
                    if p == 1 && step == 3 {
                        s.get_mut(id).grad = None;
                        continue;
                    }
                    let g: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let Expected { w, m, v, t } = &mut want[p];
                    *t += 1;
                    for i in 0..n {
                        let gi = if decoupled { g[i] } else { g[i] + cfg.weight_decay * w[i] };
                        m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * gi;
                        v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * gi * gi;
                        let m_hat = m[i] / (1.0 - cfg.beta1.powi(*t));
                        let v_hat = v[i] / (1.0 - cfg.beta2.powi(*t));
                        let decay = if decoupled { lr * cfg.weight_decay * w[i] } else { 0.0 };
                        w[i] = w[i] - lr * m_hat / (v_hat.sqrt() + cfg.eps) - decay;
                    }
                    s.get_mut(id).grad = Some(Tensor::from_vec(g, &[n]).unwrap());
                }
                opt.step(&mut s, lr).unwrap();
                for (p, &id) in ids.iter().enumerate() {
                    let got = s.value(id).to_f64_vec().unwrap();
                    for (a, b) in got.iter().zip(&want[p].w) {
                        assert!((a - b).abs() < 1e-12, "decoupled {decoupled}, step {step}, param {p}: {a} vs {b}");
                    }
                    assert_eq!(opt.state(id).unwrap().steps, want[p].t as u64);
                }
            }
        }
    }

    #[test]
    fn adam_minimises_a_quadratic() {
        let (mut s, id) = store_with(vec![3.0, -2.0], vec![0.0, 0.0]);
        let mut opt = Adam::new(AdamConfig { beta2: 0.999, ..Default::default() });
        for _ in 0..2000 {
            let w = s.value(id).to_f64_vec().unwrap();
            s.get_mut(id).grad = Some(Tensor::from_vec(w.iter().map(|x| 2.0 * (x - 1.0)).collect(), &[2]).unwrap());
            opt.step(&mut s, 0.01).unwrap();
        }
        for x in s.value(id).to_f64_vec().unwrap() {
            assert!((x - 1.0).abs() < 1e-2, "{x}");
        }
    }

    #[test]
    fn unused_parameters_are_skipped() {
        let (mut s, id) = store_with(vec![1.0], vec![1.0]);
        s.get_mut(id).grad = None;
        let mut opt = Adam::new(AdamConfig::default());
        opt.step(&mut s, 0.1).unwrap();
        assert_eq!(s.value(id).to_scalar().unwrap(), 1.0);
        assert!(opt.state(id).is_none());
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_reports_non_finite() {
        let (mut s, id) = store_with(vec![0.0, 0.0], vec![3.0, 4.0]);
        let norm = clip_grad_norm(&mut s, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12);
        let g = s.grad(id).unwrap().to_f64_vec().unwrap();
        assert!(((g[0] * g[0] + g[1] * g[1]).sqrt() - 1.0).abs() < 1e-5);
        let (mut s, _) = store_with(vec![0.0], vec![f64::NAN]);
        let err = clip_grad_norm(&mut s, 1.0).unwrap_err().to_string();
        assert!(err.contains("`w`"), "{err}");
    }

    /// The norm's sum of squares: every dtype, a strided view, sizes around the lane and block
    /// widths, against a plain f64 loop.
    #[test]
    fn sum_squares_matches_a_plain_loop() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for n in [0usize, 1, 15, 17, 4095, 4097, 70_001] {
            let v: Vec<f64> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
            let t = Tensor::from_vec(v.clone(), &[n]).unwrap();
            for dtype in [crate::DType::F64, crate::DType::F32, crate::DType::BF16] {
                let td = t.to_dtype(dtype).unwrap();
                let want: f64 = td.to_f64_vec().unwrap().iter().map(|x| x * x).sum();
                let got = td.sum_squares().unwrap();
                assert!((got - want).abs() <= 1e-12 * want.max(1.0), "n = {n}, {dtype:?}: {got} against {want}");
            }
        }
        let m = Tensor::from_vec((0..12).map(f64::from).collect(), &[3, 4]).unwrap().t().unwrap();
        assert_eq!(m.sum_squares().unwrap(), (0..12).map(|i| f64::from(i * i)).sum::<f64>());
    }

    #[test]
    fn bias_corrections_do_not_wrap_past_i32() {
        let (b1, b2) = (0.9, 0.98);
        assert_eq!(bias_corrections(b1, b2, 0), (0.0, 0.0));
        let (c1, c2) = bias_corrections(b1, b2, 3);
        assert!((c1 - (1.0 - 0.9f64.powi(3))).abs() < 1e-15 && (c2 - (1.0 - 0.98f64.powi(3))).abs() < 1e-15);
        // powi(2^31 as i32) is powi(i32::MIN): an infinite correction; the real one is 1.
        assert_eq!(bias_corrections(b1, b2, 1 << 31), (1.0, 1.0));
        assert_eq!(bias_corrections(b1, b2, u64::MAX), (1.0, 1.0));
    }
}
