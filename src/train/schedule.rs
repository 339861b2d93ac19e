//! Learning-rate schedules. Steps count optimizer updates from 1: update `n` uses `lr(n)`.
//! fairseq sets the rate after each update for the next one, so its update `n` uses the rate of
//! step `n - 1` (its first update runs at the warmup's initial rate); the schedules here are that
//! curve one update earlier, which no run of hundreds of updates can tell apart.

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// Constant learning rate.
    Constant { lr: f64 },
    /// fairseq's `inverse_sqrt`: linear warmup from `init_lr` to `lr` over `warmup` steps, then
    /// `lr * sqrt(warmup / step)`.
    InverseSqrt { lr: f64, warmup: u64, init_lr: f64 },
    /// Linear warmup from 0 to `lr` over `warmup` steps, then a cosine decay to `min_lr` at
    /// `total` steps, and `min_lr` after that (AutoMoE's recipe).
    WarmupCosine { lr: f64, warmup: u64, total: u64, min_lr: f64 },
}

impl LrSchedule {
    /// The peak rate must be positive and finite; the floors (`init_lr`, `min_lr`) finite, not
    /// negative and not above the peak (a "decay" to a higher floor would raise the rate).
    pub fn check(&self) -> crate::Result<()> {
        let (lr, floor) = match *self {
            LrSchedule::Constant { lr } => (lr, 0.0),
            LrSchedule::InverseSqrt { lr, init_lr, .. } => (lr, init_lr),
            LrSchedule::WarmupCosine { lr, min_lr, .. } => (lr, min_lr),
        };
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(crate::Error::invalid("LrSchedule", format!("the learning rate must be positive and finite, got {lr}")));
        }
        if !(floor >= 0.0 && floor.is_finite()) {
            return Err(crate::Error::invalid(
                "LrSchedule",
                format!("the initial / final learning rate must be finite and >= 0, got {floor}"),
            ));
        }
        if floor > lr {
            return Err(crate::Error::invalid(
                "LrSchedule",
                format!("the initial / final learning rate {floor} is above the peak learning rate {lr}"),
            ));
        }
        Ok(())
    }

    /// What a run of `updates` updates would likely not want, though it is legal: a warmup that
    /// does not end within the run (a short trial run with the default warmup, say), so the rate
    /// never reaches its peak. The CLI and the pipeline print it; it stops nothing.
    pub fn warning(&self, updates: u64) -> Option<String> {
        let warmup = match *self {
            LrSchedule::Constant { .. } => return None,
            LrSchedule::InverseSqrt { warmup, .. } | LrSchedule::WarmupCosine { warmup, .. } => warmup,
        };
        (warmup >= updates).then(|| {
            format!(
                "the warmup ({warmup} updates) does not end within the run's {updates} updates: the learning rate never reaches its peak"
            )
        })
    }

    pub fn lr(&self, step: u64) -> f64 {
        let step = step.max(1);
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::InverseSqrt { lr, warmup, init_lr } => {
                if step < warmup {
                    init_lr + (lr - init_lr) * step as f64 / warmup as f64
                } else {
                    lr * (warmup.max(1) as f64 / step as f64).sqrt()
                }
            }
            LrSchedule::WarmupCosine { lr, warmup, total, min_lr } => {
                if step <= warmup {
                    lr * step as f64 / warmup.max(1) as f64
                } else if step >= total {
                    min_lr
                } else {
                    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_wants_a_positive_peak_and_non_negative_floors() {
        assert!(LrSchedule::Constant { lr: 1e-3 }.check().is_ok());
        for bad in [
            LrSchedule::Constant { lr: 0.0 },
            LrSchedule::Constant { lr: f64::NAN },
            LrSchedule::InverseSqrt { lr: f64::INFINITY, warmup: 10, init_lr: 0.0 },
            LrSchedule::InverseSqrt { lr: 1e-3, warmup: 10, init_lr: -1e-4 },
            LrSchedule::WarmupCosine { lr: 1e-3, warmup: 10, total: 100, min_lr: f64::NAN },
            LrSchedule::WarmupCosine { lr: 5e-6, warmup: 10, total: 100, min_lr: 1e-5 },
            LrSchedule::InverseSqrt { lr: 1e-3, warmup: 10, init_lr: 2e-3 },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        assert!(LrSchedule::WarmupCosine { lr: 1e-3, warmup: 10, total: 100, min_lr: 0.0 }.check().is_ok());
        // A warmup longer than the run is legal, and warned about.
        let long_warmup = LrSchedule::WarmupCosine { lr: 1e-3, warmup: 200, total: 100, min_lr: 0.0 };
        assert!(long_warmup.check().is_ok());
        assert!(long_warmup.warning(100).is_some_and(|w| w.contains("200 updates") && w.contains("100 updates")));
        assert_eq!(LrSchedule::WarmupCosine { lr: 1e-3, warmup: 99, total: 100, min_lr: 0.0 }.warning(100), None);
        assert_eq!(LrSchedule::Constant { lr: 1e-3 }.warning(1), None);
    }

    #[test]
    fn inverse_sqrt_warms_up_then_decays() {
        let s = LrSchedule::InverseSqrt { lr: 1e-3, warmup: 100, init_lr: 0.0 };
        assert!((s.lr(50) - 5e-4).abs() < 1e-12);
        assert!((s.lr(100) - 1e-3).abs() < 1e-12);
        assert!((s.lr(400) - 5e-4).abs() < 1e-12);
    }

    #[test]
    fn warmup_cosine_shape() {
        let s = LrSchedule::WarmupCosine { lr: 1.0, warmup: 10, total: 110, min_lr: 0.1 };
        assert!((s.lr(5) - 0.5).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.55).abs() < 1e-12);
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
        assert!((s.lr(1000) - 0.1).abs() < 1e-12);
        assert!((1..110).all(|t| s.lr(t + 1) <= s.lr(t) || t < 10));
    }
}
