//! fastai 0.7's classifier head (spec 4.4): for each hidden size
//! `BatchNorm1d -> Dropout -> Linear -> ReLU`, then `BatchNorm1d -> Dropout -> Linear ->`
//! the final activation. Dropout layers with p = 0 are omitted (and take no index).

use tch::{Device, Kind, Tensor};

use super::{BatchNorm, ParamStore, Scope};
use crate::util::rng::Rng;
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
        let mut s = Scope::new(store, HEAD_GROUP);
        let mut idx = first_index;
        let mut n_in = nf;
        let mut blocks = Vec::new();
        let sizes: Vec<(i64, bool)> = hidden
            .iter()
            .map(|&h| (h, true))
            .chain(std::iter::once((c, false)))
            .collect();
        for (&(n_out, relu), &p) in sizes.iter().zip(ps) {
            let bn = BatchNorm::new(s.sub(idx), n_in);
            idx += 1;
            if p > 0.0 {
                idx += 1; // the Dropout layer
            }
            let std = (2.0 / n_in as f64).sqrt();
            let mut linear = s.sub(idx);
            let weight = linear.param("weight", Tensor::randn([n_out, n_in], opts) * std);
            let bias = linear.param("bias", Tensor::zeros([n_out], opts));
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

    /// The dropout probability of each BatchNorm/Dropout/Linear block, in order (0: the block
    /// has no Dropout layer): what the layer sizes of the store cannot tell, for rebuilding
    /// the head as PyTorch modules.
    pub fn dropouts(&self) -> Vec<f64> {
        self.blocks.iter().map(|b| b.p).collect()
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
/// `torch.nn.functional.dropout`. On the CPU the mask comes from our SplitMix stream
/// ([`DropoutMask`]), seeded by one draw from torch's generator (so `torch.manual_seed` still
/// makes runs repeatable): libtorch's CPU `bernoulli_` draws every element through MT19937,
/// which cost a fifth of a head-training step. CUDA keeps torch's own (fast) kernel.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    if x.device() != Device::Cpu || x.kind() != Kind::Float {
        return x.dropout(p, train);
    }
    let mask = DropoutMask::new(draw_seed(), p);
    let mut values = vec![0.0f32; x.numel()];
    mask.fill(0, &mut values);
    x * Tensor::from_slice(&values).view(x.size().as_slice())
}

/// One draw from torch's CPU generator, the seed of a dropout mask.
pub fn draw_seed() -> u64 {
    Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]) as u64
}

/// `n` draws at once: the same values as `n` calls of [`draw_seed`] (torch's `randint` takes
/// one generator value per element, in order), for the cost of one (each call is a tensor
/// and a kernel, 10-15 µs).
pub fn draw_seeds(n: usize) -> Vec<u64> {
    if n == 0 {
        return Vec::new();
    }
    let t = Tensor::randint(i64::MAX, [n as i64], (Kind::Int64, Device::Cpu));
    Vec::<i64>::try_from(&t)
        .map(|v| v.into_iter().map(|s| s as u64).collect())
        // Element by element from the same tensor (drawing again would take other values).
        .unwrap_or_else(|_| (0..n).map(|i| t.int64_value(&[i as i64]) as u64).collect())
}

/// The dropout mask of one layer call: element `e` (row-major over the layer's input) is
/// kept, scaled by 1/(1 − p), when the `e % 2` half of the `e / 2`-th 64-bit draw of the
/// SplitMix stream seeded with `seed` is below (1 − p)·2³². Any element can be computed on
/// its own (SplitMix jumps ahead in O(1)), so the hand-written head step
/// (`train::fused_head`) and [`dropout`] produce the same masks from the same seed.
pub struct DropoutMask {
    rng: Rng,
    threshold: u32,
    scale: f32,
}

impl DropoutMask {
    pub fn new(seed: u64, p: f64) -> Self {
        let keep = 1.0 - p;
        DropoutMask {
            rng: Rng::new(seed),
            threshold: (keep * 4_294_967_296.0).min(u32::MAX as f64) as u32,
            scale: (1.0 / keep) as f32,
        }
    }
    /// 1/(1 − p) for a kept element, 0 for a dropped one.
    #[inline]
    pub fn value(&self, e: usize) -> f32 {
        let (even, odd) = self.pair(e / 2);
        if e % 2 == 0 {
            even
        } else {
            odd
        }
    }

    /// Branch-free (a select, not a jump): whether an element is kept is a coin flip, which
    /// a branch would mispredict at every p-th element.
    #[inline(always)]
    fn of_half(&self, half: u32) -> f32 {
        self.scale * ((half < self.threshold) as u32 as f32)
    }

    /// `(value(2d), value(2d + 1))`: the two elements of draw `d`.
    #[inline]
    pub fn pair(&self, d: usize) -> (f32, f32) {
        let r = self.rng.nth(d as u64);
        (self.of_half(r as u32), self.of_half((r >> 32) as u32))
    }

    /// `out[k] = value(e0 + k)`, one draw per pair of elements.
    #[inline]
    pub fn fill(&self, e0: usize, out: &mut [f32]) {
        let mut k = 0;
        if e0 % 2 == 1 && !out.is_empty() {
            out[0] = self.value(e0);
            k = 1;
        }
        let mut d = ((e0 + k) / 2) as u64;
        while k + 1 < out.len() {
            let r = self.rng.nth(d);
            out[k] = self.of_half(r as u32);
            out[k + 1] = self.of_half((r >> 32) as u32);
            k += 2;
            d += 1;
        }
        if k < out.len() {
            out[k] = self.value(e0 + k);
        }
    }
}

/// The tensors of a head with one hidden layer (fastai's default: `BatchNorm1d(nf) ->
/// Dropout(p1) -> Linear(nf, nh) -> ReLU -> BatchNorm1d(nh) -> Dropout(p2) -> Linear(nh, c)`),
/// sharing storage with the model, for the hand-written training step.
pub struct OneHidden {
    pub bn1: BatchNorm,
    pub p1: f64,
    pub w1: Tensor,
    pub b1: Tensor,
    pub bn2: BatchNorm,
    pub p2: f64,
    pub w2: Tensor,
    pub b2: Tensor,
}

impl Head {
    /// This head's tensors when it has exactly one hidden layer and ends in LogSoftmax.
    pub fn one_hidden(&self) -> Option<OneHidden> {
        match (self.blocks.as_slice(), self.output) {
            ([h, o], Output::LogSoftmax) if h.relu && !o.relu => Some(OneHidden {
                bn1: h.bn.share(),
                p1: h.p,
                w1: h.weight.shallow_clone(),
                b1: h.bias.shallow_clone(),
                bn2: o.bn.share(),
                p2: o.p,
                w2: o.weight.shallow_clone(),
                b2: o.bias.shallow_clone(),
            }),
            _ => None,
        }
    }
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
    fn fill_equals_value() {
        let m = DropoutMask::new(7, 0.3);
        for (e0, len) in [(0, 10), (1, 10), (3, 1), (4, 0), (5, 6)] {
            let mut out = vec![-1.0; len];
            m.fill(e0, &mut out);
            for (k, v) in out.iter().enumerate() {
                assert_eq!(*v, m.value(e0 + k), "e0 {e0} k {k}");
            }
        }
    }
}
