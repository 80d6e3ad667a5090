//! Learning-rate schedules (spec 6.3 and 7) and the smoothed training loss (spec 6.6).
//! A schedule gives a multiplier for global batch index `t`; the same multiplier applies to
//! every layer group, so differential learning-rate ratios are preserved.

#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// `fit` without `cycle_len`.
    Constant,
    /// Cosine annealing with warm restarts (`cycle_len`): the first cycle lasts `first_cycle`
    /// batches, each next one `cycle_mult` times longer.
    CosAnneal {
        first_cycle: usize,
        cycle_mult: usize,
    },
    /// The learning-rate range test: from 1 to `ratio` (= end_lr / last group's start lr)
    /// over `n_batches` batches, geometrically or linearly.
    LrFind {
        ratio: f64,
        n_batches: usize,
        linear: bool,
    },
    /// `use_clr=(div, cut_div[, mom_hi, mom_lo])`: in every cycle of `cycle` batches the rate
    /// rises linearly from 1/div to 1 over the first `cycle / cut_div` batches, then falls
    /// linearly back towards 1/div; momentum, when given, moves the opposite way.
    Clr {
        cycle: usize,
        div: f64,
        cut_div: f64,
        moms: Option<(f64, f64)>,
    },
    /// `use_clr_beta=(div, pct[, mom1, mom2])` ("1cycle"): with m = ⌊cycle·(1 − pct/100)/2⌋,
    /// up from 1/div to 1 over m batches, down to 1/div over m more, then linearly towards
    /// 1/(100·div); momentum mom1 → mom2 → mom1, then stays at mom1.
    ClrBeta {
        cycle: usize,
        div: f64,
        pct: f64,
        moms: Option<(f64, f64)>,
    },
}

impl Schedule {
    pub fn multiplier(&self, t: usize) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::CosAnneal {
                first_cycle,
                cycle_mult,
            } => {
                let (i, n) = cycle_position(t, first_cycle, cycle_mult);
                // fastai 0.7's warm-up: the global batch count against the current cycle's
                // length, at 1/100 of the rate (in practice the first 5% of the first cycle).
                if (t as f64) < n as f64 / 20.0 {
                    0.01
                } else {
                    0.5 * (1.0 + (std::f64::consts::PI * i as f64 / n as f64).cos())
                }
            }
            Schedule::LrFind {
                ratio,
                n_batches,
                linear,
            } => {
                let frac = t as f64 / n_batches.max(1) as f64;
                if linear {
                    // The original started at 0 (ignoring start_lr); go from start to end.
                    1.0 + (ratio - 1.0) * frac
                } else {
                    ratio.powf(frac)
                }
            }
            Schedule::Clr {
                cycle,
                div,
                cut_div,
                ..
            } => {
                let (i, n, cut) = clr_position(t, cycle, cut_div);
                let p = clr_rise(i, n, cut);
                (1.0 + p * (div - 1.0)) / div
            }
            Schedule::ClrBeta {
                cycle, div, pct, ..
            } => {
                let (i, n, m) = beta_position(t, cycle, pct);
                if i > 2 * m {
                    // The tail: from 1/div down towards 1/(100·div).
                    let p = (i - 2 * m) as f64 / (n - 2 * m).max(1) as f64;
                    (1.0 - p * (1.0 - 0.01)) / div
                } else {
                    // The symmetric triangle: use_clr's with the cut in the middle.
                    let p = clr_rise(i, 2 * m, m);
                    (1.0 + p * (div - 1.0)) / div
                }
            }
        }
    }

    /// The momentum of batch `t` when the schedule cycles it, else None (constant 0.9).
    /// Evaluated at the same batch position as the learning rate.
    pub fn momentum(&self, t: usize) -> Option<f64> {
        match *self {
            Schedule::Clr {
                cycle,
                cut_div,
                moms: Some((hi, lo)),
                ..
            } => {
                let (i, n, cut) = clr_position(t, cycle, cut_div);
                Some(hi + clr_rise(i, n, cut) * (lo - hi))
            }
            Schedule::ClrBeta {
                cycle,
                pct,
                moms: Some((m1, m2)),
                ..
            } => {
                let (i, _, m) = beta_position(t, cycle, pct);
                Some(if i > 2 * m {
                    m1
                } else {
                    m1 + clr_rise(i, 2 * m, m) * (m2 - m1)
                })
            }
            _ => None,
        }
    }
}

/// (position in the cycle, cycle length, cut point) for `use_clr`.
fn clr_position(t: usize, cycle: usize, cut_div: f64) -> (usize, usize, usize) {
    let n = cycle.max(1);
    let cut = ((n as f64 / cut_div).floor() as usize).clamp(1, n);
    (t % n, n, cut)
}

/// How far up the triangle position `i` is: 0 at the ends, 1 at the cut.
fn clr_rise(i: usize, n: usize, cut: usize) -> f64 {
    if i > cut {
        1.0 - (i - cut) as f64 / (n - cut).max(1) as f64
    } else {
        i as f64 / cut as f64
    }
}

/// (position in the cycle, cycle length, half-width m of the triangle) for `use_clr_beta`.
fn beta_position(t: usize, cycle: usize, pct: f64) -> (usize, usize, usize) {
    let n = cycle.max(1);
    let m = ((n as f64 * (1.0 - pct / 100.0) / 2.0).floor() as usize).max(1);
    (t % n, n, m)
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
    fn cos_anneal_matches_spec_vectors() {
        let s = Schedule::CosAnneal {
            first_cycle: 40,
            cycle_mult: 2,
        };
        // Spec section 12, rounded to 5 decimals there.
        for (t, want) in [
            (0, 0.01),
            (1, 0.01),
            (2, 0.99384),
            (20, 0.5),
            (39, 0.00154),
            (40, 1.0),
            (119, 0.00039),
            (120, 1.0),
        ] {
            let got = s.multiplier(t);
            assert!(close(got, want, 5e-6), "t={t}: {got} != {want}");
        }
    }

    #[test]
    fn lr_find_matches_spec_vectors() {
        let s = Schedule::LrFind {
            ratio: 10.0 / 1e-5,
            n_batches: 360,
            linear: false,
        };
        assert!(close(1e-5 * s.multiplier(180), 1e-2, 1e-12));
        assert!(close(s.multiplier(1), 1.03912, 1e-5));
        let lin = Schedule::LrFind {
            ratio: 10.0,
            n_batches: 100,
            linear: true,
        };
        assert!(close(lin.multiplier(0), 1.0, 1e-12) && close(lin.multiplier(50), 5.5, 1e-12));
    }

    /// (batch, lr multiplier, momentum) computed by hand.
    fn check_lr_and_momentum(s: &Schedule, cases: &[(usize, f64, f64)]) {
        for &(t, lr, mom) in cases {
            assert!(
                close(s.multiplier(t), lr, 1e-12),
                "t={t}: lr {}",
                s.multiplier(t)
            );
            assert!(
                close(s.momentum(t).unwrap(), mom, 1e-12),
                "t={t}: mom {:?}",
                s.momentum(t)
            );
        }
    }

    #[test]
    fn clr_triangle_and_momentum_by_hand() {
        // cycle 10, cut = 10 // 4 = 2: up over 2 batches, down over 8.
        let s = Schedule::Clr {
            cycle: 10,
            div: 10.0,
            cut_div: 4.0,
            moms: Some((0.95, 0.85)),
        };
        check_lr_and_momentum(
            &s,
            &[
                (0, 0.1, 0.95),
                (1, 0.55, 0.90),
                (2, 1.0, 0.85),
                (3, 0.8875, 0.8625),
                (9, 0.2125, 0.9375),
                (10, 0.1, 0.95),
            ],
        );
        assert_eq!(
            Schedule::Clr {
                cycle: 10,
                div: 10.0,
                cut_div: 4.0,
                moms: None
            }
            .momentum(3),
            None
        );
    }

    #[test]
    fn one_cycle_by_hand() {
        // cycle 20, pct 10: m = floor(20 * 0.9 / 2) = 9; up 0..9, down 9..18, tail 18..20.
        let s = Schedule::ClrBeta {
            cycle: 20,
            div: 10.0,
            pct: 10.0,
            moms: Some((0.95, 0.85)),
        };
        check_lr_and_momentum(
            &s,
            &[
                (0, 0.1, 0.95),
                (9, 1.0, 0.85),
                (13, 0.6, 0.85 + 0.4 / 9.0),
                (18, 0.1, 0.95),
                (19, 0.0505, 0.95),
                (20, 0.1, 0.95),
            ],
        );
    }

    #[test]
    fn smoothed_constant_loss_is_exact() {
        let mut s = SmoothedLoss::default();
        for _ in 0..50 {
            assert!(close(s.update(0.7), 0.7, 1e-12));
        }
    }
}
