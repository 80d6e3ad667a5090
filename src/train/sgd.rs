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
                let mut d = if wds[*group] != 0.0 { grad.f_add(&(&*p * wds[*group])).map_err(Error::torch("sgd weight decay"))? } else { grad };
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
                let _ = p.f_sub_(&(d * lrs[*group])).map_err(Error::torch("sgd step"))?;
            }
            Ok(())
        })
    }
}
