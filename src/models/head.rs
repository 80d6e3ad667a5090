//! fastai 0.7's classifier head (spec 4.4): for each hidden size
//! `BatchNorm1d -> Dropout -> Linear -> ReLU`, then `BatchNorm1d -> Dropout -> Linear ->`
//! the final activation. Dropout layers with p = 0 are omitted (and take no index).

use tch::{Device, Kind, Tensor};

use super::{BatchNorm, ParamStore};
use crate::rng::Rng;
use crate::{Error, Result};

/// What the last layer turns the scores into (and so which loss goes with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Single-label classification: log-probabilities, NLL loss.
    LogSoftmax,
    /// Multi-label: independent probabilities, binary cross-entropy.
    Sigmoid,
    /// Regression: raw values, L1 loss.
    Identity,
}

struct Block {
    bn: BatchNorm,
    p: f64,
    weight: Tensor,
    bias: Tensor,
    relu: bool,
}

pub struct Head {
    blocks: Vec<Block>,
    pub output: Output,
}

pub const HEAD_GROUP: usize = 2;

/// Resolves fastai's `ps` argument: None -> 0.25 per hidden layer and 0.5 last; a single
/// number -> that value everywhere; a list must have one entry per Linear layer.
pub fn resolve_ps(ps: Option<Vec<f64>>, n_hidden: usize) -> Result<Vec<f64>> {
    let ps = match ps {
        None => {
            let mut v = vec![0.25; n_hidden];
            v.push(0.5);
            v
        }
        Some(v) if v.len() == 1 => vec![v[0]; n_hidden + 1],
        Some(v) => v,
    };
    if ps.len() != n_hidden + 1 {
        return Err(Error::InvalidArgument(format!(
            "ps has {} values but the head has {} Linear layers (xtra_fc has {} entries, plus the output layer)",
            ps.len(), n_hidden + 1, n_hidden
        )));
    }
    if let Some(p) = ps.iter().find(|p| !(0.0..1.0).contains(*p)) {
        return Err(Error::InvalidArgument(format!(
            "dropout probability {p} is not in [0, 1)"
        )));
    }
    Ok(ps)
}

impl Head {
    /// Builds the head with its keys numbered from `first_index` (10 for a ResNet: the body has
    /// 8 children, then AdaptiveConcatPool2d and Flatten). Linear weights get Kaiming-normal
    /// (fan_in, gain sqrt 2) and zero bias; BatchNorm gamma = 1, beta = 0 (spec 4.5).
    pub fn new(
        store: &mut ParamStore,
        first_index: usize,
        nf: i64,
        hidden: &[i64],
        ps: &[f64],
        c: i64,
        output: Output,
    ) -> Self {
        let opts = (Kind::Float, Device::Cpu);
        let mut idx = first_index;
        let mut n_in = nf;
        let mut blocks = Vec::new();
        let sizes: Vec<(i64, bool)> = hidden
            .iter()
            .map(|&h| (h, true))
            .chain(std::iter::once((c, false)))
            .collect();
        for (&(n_out, relu), &p) in sizes.iter().zip(ps) {
            let bn = BatchNorm::new(store, &idx.to_string(), HEAD_GROUP, n_in);
            idx += 1;
            if p > 0.0 {
                idx += 1; // the Dropout layer
            }
            let std = (2.0 / n_in as f64).sqrt();
            let weight = store.param(
                format!("{idx}.weight"),
                Tensor::randn([n_out, n_in], opts) * std,
                HEAD_GROUP,
            );
            let bias = store.param(
                format!("{idx}.bias"),
                Tensor::zeros([n_out], opts),
                HEAD_GROUP,
            );
            idx += 1;
            if relu {
                idx += 1;
            }
            blocks.push(Block {
                bn,
                p,
                weight,
                bias,
                relu,
            });
            n_in = n_out;
        }
        Head { blocks, output }
    }

    /// `train`: dropout active and BatchNorm on batch statistics (unless `bn_frozen`).
    pub fn forward(&self, x: &Tensor, train: bool, bn_train: bool) -> Tensor {
        self.forward_traced(x, train, bn_train, &mut |_, _| {})
    }

    /// As `forward`, calling `trace` with each layer's name and output.
    pub fn forward_traced(
        &self,
        x: &Tensor,
        train: bool,
        bn_train: bool,
        trace: &mut dyn FnMut(&str, &Tensor),
    ) -> Tensor {
        let mut x = x.shallow_clone();
        for b in &self.blocks {
            x = b.bn.forward(&x, bn_train);
            trace("BatchNorm1d", &x);
            if b.p > 0.0 {
                x = dropout(&x, b.p, train);
                trace("Dropout", &x);
            }
            x = x.linear(&b.weight, Some(&b.bias));
            trace("Linear", &x);
            if b.relu {
                x = x.relu();
                trace("ReLU", &x);
            }
        }
        let (name, out) = match self.output {
            Output::LogSoftmax => ("LogSoftmax", x.log_softmax(1, Kind::Float)),
            Output::Sigmoid => ("Sigmoid", x.sigmoid()),
            Output::Identity => return x,
        };
        trace(name, &out);
        out
    }
}

/// Inverted dropout (zero with probability `p`, scale the rest by 1/(1 − p)), as
/// `torch.nn.functional.dropout`. On the CPU the mask comes from our SplitMix stream, seeded
/// by one draw from torch's generator (so `torch.manual_seed` still makes runs repeatable):
/// libtorch's CPU `bernoulli_` draws every element through MT19937, which cost a fifth of a
/// head-training step. CUDA keeps torch's own (fast) kernel.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    if x.device() != Device::Cpu || x.kind() != Kind::Float {
        return x.dropout(p, train);
    }
    let seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]) as u64;
    let mut rng = Rng::new(seed);
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    // Two 32-bit decisions per draw; keep when u < keep·2³².
    let threshold = (keep * 4_294_967_296.0).min(u32::MAX as f64) as u32;
    let n = x.numel();
    let mut mask = Vec::with_capacity(n + 1);
    while mask.len() < n {
        let r = rng.next_u64();
        for half in [r as u32, (r >> 32) as u32] {
            mask.push(if half < threshold { scale } else { 0.0 });
        }
    }
    mask.truncate(n);
    x * Tensor::from_slice(&mask).view(x.size().as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_zeroes_p_and_scales_the_rest() {
        let x = Tensor::ones([200, 500], (Kind::Float, Device::Cpu));
        for p in [0.25, 0.5] {
            let y = dropout(&x, p, true);
            let zero_frac = y
                .eq(0.0)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
            assert!((zero_frac - p).abs() < 0.01, "p={p}: {zero_frac} zeroed");
            let kept = y.masked_select(&y.ne(0.0));
            let expect = 1.0 / (1.0 - p);
            assert!((kept.min().double_value(&[]) - expect).abs() < 1e-6);
            assert!((kept.max().double_value(&[]) - expect).abs() < 1e-6);
        }
        // Eval mode and p = 0 are the identity.
        assert!(dropout(&x, 0.5, false).equal(&x));
        assert!(dropout(&x, 0.0, true).equal(&x));
    }

    #[test]
    fn dropout_follows_torch_manual_seed() {
        let x = Tensor::ones([64, 1024], (Kind::Float, Device::Cpu));
        tch::manual_seed(3);
        let a = dropout(&x, 0.5, true);
        let b = dropout(&x, 0.5, true);
        tch::manual_seed(3);
        let c = dropout(&x, 0.5, true);
        assert!(a.equal(&c), "same seed, same mask");
        assert!(!a.equal(&b), "consecutive masks differ");
    }
}
