//! Learning-rate schedules (spec 6.3 and 7) and the smoothed training loss (spec 6.6).
//! A schedule gives a multiplier for global batch index `t`; the same multiplier applies to
//! every layer group, so differential learning-rate ratios are preserved.

#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// `fit` without `cycle_len`.
    Constant,
    /// Cosine annealing with warm restarts (`cycle_len`): the first cycle lasts `first_cycle`
    /// batches, each next one `cycle_mult` times longer.
    CosAnneal { first_cycle: usize, cycle_mult: usize },
    /// The learning-rate range test: from 1 to `ratio` (= end_lr / last group's start lr)
    /// over `n_batches` batches, geometrically or linearly.
    LrFind { ratio: f64, n_batches: usize, linear: bool },
}

impl Schedule {
    pub fn multiplier(&self, t: usize) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::CosAnneal { first_cycle, cycle_mult } => {
                let (i, n) = cycle_position(t, first_cycle, cycle_mult);
                // fastai 0.7's warm-up: the global batch count against the current cycle's
                // length, at 1/100 of the rate (in practice the first 5% of the first cycle).
                if (t as f64) < n as f64 / 20.0 {
                    0.01
                } else {
                    0.5 * (1.0 + (std::f64::consts::PI * i as f64 / n as f64).cos())
                }
            }
            Schedule::LrFind { ratio, n_batches, linear } => {
                let frac = t as f64 / n_batches.max(1) as f64;
                if linear {
                    // The original started at 0 (ignoring start_lr); go from start to end.
                    1.0 + (ratio - 1.0) * frac
                } else {
                    ratio.powf(frac)
                }
            }
        }
    }
}

/// (position inside its cycle, cycle length) of global batch `t`.
pub fn cycle_position(t: usize, first_cycle: usize, cycle_mult: usize) -> (usize, usize) {
    let mut n = first_cycle.max(1);
    let mut start = 0;
    while t >= start + n {
        start += n;
        n = n.saturating_mul(cycle_mult.max(1));
    }
    (t - start, n)
}

/// Number of epochs of `n` cycles of `a`, `a*r`, `a*r^2`, ... epochs (spec 6.2).
pub fn sum_geom(a: usize, r: usize, n: usize) -> usize {
    if r == 1 {
        a * n
    } else {
        let (a, r) = (a as f64, r as f64);
        (a * (1.0 - r.powi(n as i32)) / (1.0 - r)).ceil() as usize
    }
}

/// Exponential moving average of the training loss with debiasing (beta = 0.98), over all
/// batches of one `fit` call.
#[derive(Clone, Debug, Default)]
pub struct SmoothedLoss {
    avg: f64,
    count: i32,
}

impl SmoothedLoss {
    pub fn update(&mut self, loss: f64) -> f64 {
        self.count += 1;
        self.avg = 0.98 * self.avg + 0.02 * loss;
        self.value()
    }
    pub fn value(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.avg / (1.0 - 0.98f64.powi(self.count))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn sum_geom_matches_spec_vectors() {
        assert_eq!(sum_geom(1, 2, 3), 7);
        assert_eq!(sum_geom(2, 2, 3), 14);
        assert_eq!(sum_geom(1, 1, 3), 3);
        assert_eq!(sum_geom(1, 3, 3), 13);
    }

    #[test]
    fn cos_anneal_matches_spec_vectors() {
        let s = Schedule::CosAnneal { first_cycle: 40, cycle_mult: 2 };
        // Spec section 12, rounded to 5 decimals there.
        for (t, want) in [(0, 0.01), (1, 0.01), (2, 0.99384), (20, 0.5), (39, 0.00154), (40, 1.0), (119, 0.00039), (120, 1.0)] {
            let got = s.multiplier(t);
            assert!(close(got, want, 5e-6), "t={t}: {got} != {want}");
        }
    }

    #[test]
    fn lr_find_matches_spec_vectors() {
        let s = Schedule::LrFind { ratio: 10.0 / 1e-5, n_batches: 360, linear: false };
        assert!(close(1e-5 * s.multiplier(180), 1e-2, 1e-12));
        assert!(close(s.multiplier(1), 1.03912, 1e-5));
        let lin = Schedule::LrFind { ratio: 10.0, n_batches: 100, linear: true };
        assert!(close(lin.multiplier(0), 1.0, 1e-12) && close(lin.multiplier(50), 5.5, 1e-12));
    }

    #[test]
    fn smoothed_constant_loss_is_exact() {
        let mut s = SmoothedLoss::default();
        for _ in 0..50 {
            assert!(close(s.update(0.7), 0.7, 1e-12));
        }
    }
}
