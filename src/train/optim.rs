//! The optimisers of `fit` and `lr_find`, with per-layer-group learning rates and weight
//! decays. A new optimiser (fresh state) is made for every `fit` / `lr_find`, as fastai 0.7 did.
//!
//! - SGD with momentum and classic L2 weight decay, as `torch.optim.SGD(momentum=0.9)` (the
//!   default): `g <- g + wd*w; v <- mu*v + g (v = g on the first step); w <- w - lr*v`.
//! - Adam (`opt_fn=optim.Adam`), as `torch.optim.Adam` with L2 weight decay added to the
//!   gradient (not AdamW) and bias correction, in torch's operation order.
//!
//! Schedules that cycle momentum (`use_clr`, `use_clr_beta`) set SGD's momentum or Adam's
//! β1, as fastai 0.7 did.

use tch::Tensor;

use crate::models::{Entry, EntryKind, ParamStore};
use crate::{Error, Result};

/// Which update rule, with its constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Algo {
    Sgd { momentum: f64 },
    Adam { beta1: f64, beta2: f64, eps: f64 },
}

/// A parameter, its layer group and its state (SGD: the momentum buffer; Adam: the two
/// moments).
struct Slot {
    param: Tensor,
    group: usize,
    buf: Option<Tensor>,
    buf2: Option<Tensor>,
}

pub struct Optimizer {
    algo: Algo,
    /// Adam's step count (shared by all parameters: they all step together).
    steps: i32,
    params: Vec<Slot>,
}

impl Optimizer {
    /// Takes the parameters `select` picks among the store's parameters (the learner picks
    /// those that require a gradient now, in a layer group, as fastai 0.7's optimiser took
    /// each group's trainable parameters). A parameter steps with its group's rates.
    pub fn new(store: &ParamStore, select: impl Fn(&Entry) -> bool, algo: Algo) -> Self {
        let params = store
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Param && select(e))
            .map(|e| Slot {
                param: e.tensor.shallow_clone(),
                group: e.group,
                buf: None,
                buf2: None,
            })
            .collect();
        Optimizer {
            algo,
            steps: 0,
            params,
        }
    }

    /// SGD's momentum, or Adam's β1, for the next steps (schedules that cycle it).
    pub fn set_momentum(&mut self, momentum: f64) {
        match &mut self.algo {
            Algo::Sgd { momentum: m } => *m = momentum,
            Algo::Adam { beta1, .. } => *beta1 = momentum,
        }
    }

    /// The momentum of SGD, or None for other rules (the hand-written head step does SGD only).
    pub fn sgd_momentum(&self) -> Option<f64> {
        match self.algo {
            Algo::Sgd { momentum } => Some(momentum),
            Algo::Adam { .. } => None,
        }
    }

    pub fn zero_grad(&mut self) {
        for s in &mut self.params {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Scales the gradients of the parameters this optimiser steps so that their total L2
    /// norm is at most `max_norm`: fastai 0.7's `clip`, which called
    /// `torch.nn.utils.clip_grad_norm_` between the backward pass and the step. Every gradient
    /// is multiplied by min(1, max_norm / (norm + 1e-6)), in float32 as torch computes it (a
    /// NaN norm makes every gradient NaN there too). Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        let e = || Error::torch("clipping the gradient norm");
        tch::no_grad(|| -> Result<f64> {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|s| s.param.grad())
                .filter(|g| g.defined())
                .collect();
            if grads.is_empty() {
                return Ok(0.0);
            }
            let norms = grads
                .iter()
                .map(|g| g.f_norm())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(e())?;
            let total = Tensor::f_stack(&norms, 0)
                .and_then(|t| t.f_norm())
                .map_err(e())?;
            // torch's `max_norm / (total + 1e-6)` on a tensor is reciprocal times max_norm.
            let coef = total
                .f_add_scalar(1e-6)
                .and_then(|t| t.f_reciprocal())
                .and_then(|t| t.f_mul_scalar(max_norm))
                .and_then(|t| t.f_clamp_max(1.0))
                .map_err(e())?;
            for mut g in grads {
                let _ = g.f_mul_(&coef).map_err(e())?;
            }
            Ok(total.double_value(&[]))
        })
    }

    pub fn step(&mut self, lrs: &[f64], wds: &[f64]) -> Result<()> {
        match self.algo {
            Algo::Sgd { momentum } => self.sgd_step(lrs, wds, momentum),
            Algo::Adam { beta1, beta2, eps } => self.adam_step(lrs, wds, beta1, beta2, eps),
        }
    }

    /// torch.optim.Adam's single-tensor update (what it runs on CPU tensors), operation for
    /// operation: g += wd·w; m = lerp(m, g, 1 − β1); v = β2·v + (1 − β2)·g²;
    /// w -= lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps).
    fn adam_step(&mut self, lrs: &[f64], wds: &[f64], b1: f64, b2: f64, eps: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps;
        let step_size = |lr: f64| lr / (1.0 - b1.powi(t));
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let e = || Error::torch("adam step");
        tch::no_grad(|| -> Result<()> {
            for s in &mut self.params {
                let grad = s.param.grad();
                if !grad.defined() {
                    continue;
                }
                let (lr, wd) = rates(lrs, wds, s.group);
                let g = if wd != 0.0 {
                    grad.f_add(&(&s.param * wd)).map_err(e())?
                } else {
                    grad
                };
                let m = s.buf.get_or_insert_with(|| s.param.zeros_like());
                let _ = m.f_lerp_(&g, 1.0 - b1).map_err(e())?;
                let v = s.buf2.get_or_insert_with(|| s.param.zeros_like());
                let _ = v.f_mul_scalar_(b2).map_err(e())?;
                let _ = v.f_addcmul_(&(&g * (1.0 - b2)), &g).map_err(e())?;
                let denom = (v.f_sqrt().map_err(e())? / bc2_sqrt)
                    .f_add_scalar(eps)
                    .map_err(e())?;
                // addcdiv(m, denom, value=−step) computes w + (−step·m)/denom.
                let _ = s
                    .param
                    .f_addcdiv_(&(&*m * -step_size(lr)), &denom)
                    .map_err(e())?;
            }
            Ok(())
        })
    }

    fn sgd_step(&mut self, lrs: &[f64], wds: &[f64], mu: f64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for Slot {
                param: p,
                group,
                buf,
                ..
            } in &mut self.params
            {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let (lr, wd) = rates(lrs, wds, *group);
                if mu != 0.0 && fused_cpu_step(p, &grad, buf, lr, wd, mu) {
                    continue;
                }
                let mut d = if wd != 0.0 {
                    grad.f_add(&(&*p * wd))
                        .map_err(Error::torch("sgd weight decay"))?
                } else {
                    grad
                };
                if mu != 0.0 {
                    let b = match buf.take() {
                        None => d.detach().copy(),
                        Some(mut b) => {
                            let _ = b.f_mul_scalar_(mu).map_err(Error::torch("sgd momentum"))?;
                            let _ = b.f_add_(&d).map_err(Error::torch("sgd momentum"))?;
                            b
                        }
                    };
                    d = b.shallow_clone();
                    *buf = Some(b);
                }
                let _ = p.f_sub_(&(d * lr)).map_err(Error::torch("sgd step"))?;
            }
            Ok(())
        })
    }
}

/// The learning rate and weight decay of layer group `group` (the learner checks that every
/// selected parameter's group has both; 0 for a group beyond them steps nothing).
fn rates(lrs: &[f64], wds: &[f64], group: usize) -> (f64, f64) {
    (
        lrs.get(group).copied().unwrap_or(0.0),
        wds.get(group).copied().unwrap_or(0.0),
    )
}

/// The whole update of one contiguous float32 CPU parameter in a single pass over memory
/// (weight decay, momentum, step), with the same arithmetic order as the tensor-op path and
/// torch.optim.SGD: d = g + wd·w; v = mu·v + d (v = d at first); w = w − lr·v. Returns false,
/// touching nothing, when the tensors do not qualify (CUDA, other dtypes, strided).
fn fused_cpu_step(
    p: &mut Tensor,
    grad: &Tensor,
    buf: &mut Option<Tensor>,
    lr: f64,
    wd: f64,
    mu: f64,
) -> bool {
    let plain = |t: &Tensor| {
        t.device() == tch::Device::Cpu && t.kind() == tch::Kind::Float && t.is_contiguous()
    };
    if !plain(p) || !plain(grad) || grad.numel() != p.numel() {
        return false;
    }
    let first = buf.is_none();
    if first {
        *buf = Some(p.zeros_like());
    }
    let Some(b) = buf.as_mut() else { return false };
    if !plain(b) || b.numel() != p.numel() {
        return false;
    }
    let n = p.numel();
    let (lr, wd, mu) = (lr as f32, wd as f32, mu as f32);
    // SAFETY: three distinct contiguous float32 CPU tensors of n elements each (checked
    // above; the momentum buffer is ours, the gradient is autograd's own tensor, not a view of
    // the parameter), alive for the whole loop; no other thread touches them during a step.
    let (w, g, v) = unsafe {
        (
            std::slice::from_raw_parts_mut(p.data_ptr() as *mut f32, n),
            std::slice::from_raw_parts(grad.data_ptr() as *const f32, n),
            std::slice::from_raw_parts_mut(b.data_ptr() as *mut f32, n),
        )
    };
    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
        let d = if wd != 0.0 { g + *w * wd } else { g };
        *v = if first { d } else { *v * mu + d };
        *w -= lr * *v;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters a (group 0, frozen), b and c (group 2) whose gradients are set by hand:
    /// b's gradient is (3, 4), c's is (12), so the trainable norm is 13.
    fn store_with_grads() -> (ParamStore, [Tensor; 3]) {
        let mut store = ParamStore::new();
        let a = store.param("a", Tensor::from_slice(&[1f32, 1.0]), 0);
        let b = store.param("b", Tensor::from_slice(&[1f32, 1.0]), 2);
        let c = store.param("c", Tensor::from_slice(&[1f32]), 2);
        let grads = [[100f32, 100.0].as_slice(), &[3.0, 4.0], &[12.0]];
        for (p, g) in [&a, &b, &c].into_iter().zip(grads) {
            (p * Tensor::from_slice(g)).sum(tch::Kind::Float).backward();
        }
        (store, [a, b, c])
    }

    fn grad(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.grad()).unwrap()
    }

    #[test]
    fn clip_scales_the_trainable_gradients_to_the_norm() {
        let (store, [a, b, c]) = store_with_grads();
        let mut opt = Optimizer::new(&store, |e| e.group == 2, Algo::Sgd { momentum: 0.9 });
        let norm = opt.clip_grad_norm(6.5).unwrap();
        assert!((norm - 13.0).abs() < 1e-6);
        // Scaled by 6.5 / (13 + 1e-6); the frozen parameter's gradient is not part of it.
        let k = 6.5 / (13.0 + 1e-6);
        for (got, want) in grad(&b).iter().chain(&grad(&c)).zip([3.0, 4.0, 12.0]) {
            assert!((got - want * k).abs() < 1e-6, "{got} vs {}", want * k);
        }
        assert_eq!(grad(&a), vec![100.0, 100.0]);
    }

    #[test]
    fn clip_leaves_gradients_under_the_norm_alone() {
        let (store, [_, b, c]) = store_with_grads();
        let mut opt = Optimizer::new(&store, |e| e.group == 2, Algo::Sgd { momentum: 0.9 });
        assert!((opt.clip_grad_norm(20.0).unwrap() - 13.0).abs() < 1e-6);
        assert_eq!(grad(&b), vec![3.0, 4.0]);
        assert_eq!(grad(&c), vec![12.0]);
    }
}
