//! SGD with momentum and classic L2 weight decay, as `torch.optim.SGD(momentum=0.9)`:
//! `g <- g + wd*w; v <- mu*v + g (v = g on the first step); w <- w - lr*v`.
//! Per-layer-group learning rates and weight decays. A new optimiser (fresh momentum) is made
//! for every `fit` / `lr_find`, as fastai 0.7 did.

use tch::Tensor;

use crate::models::{EntryKind, ParamStore};
use crate::{Error, Result};

pub struct Sgd {
    momentum: f64,
    /// (parameter, layer group, momentum buffer)
    params: Vec<(Tensor, usize, Option<Tensor>)>,
}

impl Sgd {
    /// Takes the parameters of the trainable groups at this moment.
    pub fn new(store: &ParamStore, trainable: [bool; 3], momentum: f64) -> Self {
        let params = store
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Param && trainable[e.group.min(2)])
            .map(|e| (e.tensor.shallow_clone(), e.group.min(2), None))
            .collect();
        Sgd { momentum, params }
    }

    /// Momentum for the next steps (schedules that cycle it: use_clr, use_clr_beta).
    pub fn set_momentum(&mut self, momentum: f64) {
        self.momentum = momentum;
    }

    pub fn momentum(&self) -> f64 {
        self.momentum
    }

    pub fn zero_grad(&mut self) {
        for (p, _, _) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    pub fn step(&mut self, lrs: &[f64; 3], wds: &[f64; 3]) -> Result<()> {
        let mu = self.momentum;
        tch::no_grad(|| -> Result<()> {
            for (p, group, buf) in &mut self.params {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let (lr, wd) = (lrs[*group], wds[*group]);
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
