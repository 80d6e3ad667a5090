//! torchvision's ResNets (v1.5: the stride sits in the 3x3 conv of a bottleneck), cut as
//! fastai 0.7 cuts them: everything before the average pool and the fc layer.
//!
//! Store keys use fastai 0.7's flat `nn.Sequential` numbering of torchvision's children:
//! conv1 = 0, bn1 = 1, (relu = 2, maxpool = 3), layer1..layer4 = 4..7. So `layer3.0.conv1.weight`
//! in a torchvision checkpoint is `6.0.conv1.weight` here, as in a fastai 0.7 `.h5` file.
//! Layer groups follow the table's split (fastai's `lr_cut`, 6 by default): children before
//! it (conv1 up to layer2) are group 0, layer3 and layer4 group 1.
//!
//! `xtra_cut` (fastai's `cut -= xtra_cut`) keeps only the first `cut` children: xtra_cut = 1
//! drops layer4, so the features come from layer3 (256 channels for resnet34, nf = 512). The
//! split does not move with the cut, as fastai's `split_by_idxs(children, [lr_cut])` keeps
//! it: with cut = 7 group 1 is layer3 alone, with cut <= 6 it holds no parameters (only the
//! parameter-free pool and flatten), and `lr`s for it have nothing to act on.

use tch::Tensor;

use super::{Backbone, BatchNorm, BnMode, Conv, ConvConfig, Meta, ParamStore, Scope};

enum Block {
    Basic {
        conv1: Conv,
        bn1: BatchNorm,
        conv2: Conv,
        bn2: BatchNorm,
        down: Option<(Conv, BatchNorm)>,
    },
    Bottleneck {
        conv1: Conv,
        bn1: BatchNorm,
        conv2: Conv,
        bn2: BatchNorm,
        conv3: Conv,
        bn3: BatchNorm,
        down: Option<(Conv, BatchNorm)>,
    },
}

impl Block {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (out, down) = match self {
            // In-place ReLU and residual add, as torchvision does: the BatchNorm backward
            // needs its input, not its output, so overwriting the output is safe and saves
            // an allocation per layer.
            Block::Basic {
                conv1,
                bn1,
                conv2,
                bn2,
                down,
            } => {
                let y = conv1.forward_bn(x, bn1, train).relu_();
                (conv2.forward_bn(&y, bn2, train), down)
            }
            Block::Bottleneck {
                conv1,
                bn1,
                conv2,
                bn2,
                conv3,
                bn3,
                down,
            } => {
                let y = conv1.forward_bn(x, bn1, train).relu_();
                let y = conv2.forward_bn(&y, bn2, train).relu_();
                (conv3.forward_bn(&y, bn3, train), down)
            }
        };
        let mut out = out;
        match down {
            Some((conv, bn)) => out += conv.forward_bn(x, bn, train),
            None => out += x,
        }
        out.relu_()
    }
}

/// A bias-free convolution padded to keep the size at stride 1 (every conv of a ResNet).
fn conv(s: Scope<'_>, c_in: i64, c_out: i64, k: i64, stride: i64) -> Conv {
    let config = ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ..Default::default()
    };
    Conv::new(s, c_in, c_out, k, config)
}

/// The 1x1 projection of a block's shortcut, when its shape changes (first block of a layer).
fn downsample(s: &mut Scope<'_>, in_c: i64, out_c: i64, stride: i64) -> Option<(Conv, BatchNorm)> {
    (stride != 1 || in_c != out_c).then(|| {
        let mut s = s.sub("downsample");
        (
            conv(s.sub(0), in_c, out_c, 1, stride),
            BatchNorm::new(s.sub(1), out_c),
        )
    })
}

impl Block {
    /// A residual block in scope `s`: `width` channels inside, `width * 4` out for a bottleneck.
    /// Created in torchvision's state-dict order (the downsample last).
    fn new(mut s: Scope<'_>, bottleneck: bool, in_c: i64, width: i64, stride: i64) -> Self {
        if bottleneck {
            let out_c = width * BOTTLENECK_EXPANSION;
            Block::Bottleneck {
                conv1: conv(s.sub("conv1"), in_c, width, 1, 1),
                bn1: BatchNorm::new(s.sub("bn1"), width),
                conv2: conv(s.sub("conv2"), width, width, 3, stride),
                bn2: BatchNorm::new(s.sub("bn2"), width),
                conv3: conv(s.sub("conv3"), width, out_c, 1, 1),
                bn3: BatchNorm::new(s.sub("bn3"), out_c),
                down: downsample(&mut s, in_c, out_c, stride),
            }
        } else {
            Block::Basic {
                conv1: conv(s.sub("conv1"), in_c, width, 3, stride),
                bn1: BatchNorm::new(s.sub("bn1"), width),
                conv2: conv(s.sub("conv2"), width, width, 3, 1),
                bn2: BatchNorm::new(s.sub("bn2"), width),
                down: downsample(&mut s, in_c, width, stride),
            }
        }
    }
}

const BOTTLENECK_EXPANSION: i64 = 4;

pub struct ResNet {
    conv1: Conv,
    /// None when the cut keeps conv1 alone (not allowed by `ConvNet`, but well-defined here).
    bn1: Option<(usize, BatchNorm)>,
    /// Children kept (8 = the whole body; 2 = conv1 and bn1; 3 adds relu, 4 maxpool, then
    /// one per residual layer).
    cut: usize,
    /// (layer group, blocks) for layer1..layer4.
    layers: Vec<(usize, Vec<Block>)>,
    out_channels: i64,
}

/// The layer group of child `child` when group 1 starts at child `split`.
fn group_of(child: usize, split: usize) -> usize {
    usize::from(child >= split)
}

/// Builds a ResNet body with `blocks[i]` blocks in layer i+1; `bottleneck` selects the
/// 1x1-3x3-1x1 block with expansion 4 (resnet50 and deeper). Only the first `meta.cut` (1..=8)
/// children are built: their parameters are the only ones in the store. Children from
/// `meta.split` on are layer group 1.
pub fn resnet(
    store: &mut ParamStore,
    blocks: [usize; 4],
    bottleneck: bool,
    meta: Meta,
) -> Box<dyn Backbone> {
    let cut = meta.cut.clamp(1, 8);
    let mut root = Scope::new(store, 0);
    let conv1 = conv(root.sub_in(group_of(0, meta.split), 0), 3, 64, 7, 2);
    let bn1 = (cut > 1).then(|| {
        let group = group_of(1, meta.split);
        (group, BatchNorm::new(root.sub_in(group, 1), 64))
    });
    let mut in_c = 64;
    let mut layers = Vec::new();
    for (li, &n) in blocks.iter().enumerate().take(cut.saturating_sub(4)) {
        let width = 64 << li;
        let child = 4 + li;
        let group = group_of(child, meta.split);
        let mut s = root.sub_in(group, child);
        let layer: Vec<Block> = (0..n)
            .map(|bi| {
                let stride = if li > 0 && bi == 0 { 2 } else { 1 };
                let block = Block::new(s.sub(bi), bottleneck, in_c, width, stride);
                in_c = if bottleneck {
                    width * BOTTLENECK_EXPANSION
                } else {
                    width
                };
                block
            })
            .collect();
        layers.push((group, layer));
    }
    Box::new(ResNet {
        conv1,
        bn1,
        cut,
        layers,
        out_channels: in_c,
    })
}

pub fn resnet18(s: &mut ParamStore, meta: Meta) -> Box<dyn Backbone> {
    resnet(s, [2, 2, 2, 2], false, meta)
}
pub fn resnet34(s: &mut ParamStore, meta: Meta) -> Box<dyn Backbone> {
    resnet(s, [3, 4, 6, 3], false, meta)
}
pub fn resnet50(s: &mut ParamStore, meta: Meta) -> Box<dyn Backbone> {
    resnet(s, [3, 4, 6, 3], true, meta)
}
pub fn resnet101(s: &mut ParamStore, meta: Meta) -> Box<dyn Backbone> {
    resnet(s, [3, 4, 23, 3], true, meta)
}
pub fn resnet152(s: &mut ParamStore, meta: Meta) -> Box<dyn Backbone> {
    resnet(s, [3, 8, 36, 3], true, meta)
}

impl Backbone for ResNet {
    fn forward_traced(
        &self,
        x: &Tensor,
        bn: BnMode,
        trace: &mut dyn FnMut(&str, &Tensor),
    ) -> Tensor {
        let x = self.conv1.forward(x);
        trace("Conv2d", &x);
        let Some((group, bn1)) = &self.bn1 else {
            return x;
        };
        let mut x = bn1.forward(&x, bn.train(*group));
        trace("BatchNorm2d", &x);
        if self.cut < 3 {
            return x;
        }
        let x = x.relu_();
        trace("ReLU", &x);
        if self.cut < 4 {
            return x;
        }
        let mut x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        trace("MaxPool2d", &x);
        for (group, blocks) in &self.layers {
            for block in blocks {
                x = block.forward(&x, bn.train(*group));
            }
            trace("Sequential", &x);
        }
        x
    }
    fn out_channels(&self) -> i64 {
        self.out_channels
    }
}

/// The child (0..8) a store key belongs to: its leading number.
pub fn child_of(key: &str) -> Option<usize> {
    key.split('.').next()?.parse().ok()
}

/// Maps a torchvision checkpoint key to our store key (`None`: not part of the body, e.g. fc).
pub fn checkpoint_key(key: &str) -> Option<String> {
    let (first, rest) = key.split_once('.')?;
    let child = match first {
        "conv1" => 0,
        "bn1" => 1,
        "layer1" => 4,
        "layer2" => 5,
        "layer3" => 6,
        "layer4" => 7,
        _ => return None,
    };
    if rest.ends_with("num_batches_tracked") {
        return None;
    }
    Some(format!("{child}.{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The children a cut keeps: xtra_cut = 1 on resnet34 keeps conv1..layer3 (keys 0..6),
    /// 256 channels out; cut = 4 keeps conv1, bn1, relu, maxpool (64 channels).
    #[test]
    fn cut_keeps_the_first_children() {
        for (cut, last_child, channels) in [(8, 7, 512), (7, 6, 256), (4, 1, 64)] {
            let mut store = ParamStore::new();
            let net = resnet34(&mut store, Meta { cut, split: 6 });
            assert_eq!(net.out_channels(), channels);
            let max = store.entries.iter().filter_map(|e| child_of(&e.key)).max();
            assert_eq!(max, Some(last_child));
            let y = tch::no_grad(|| {
                net.forward(
                    &Tensor::zeros([1, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu)),
                    BnMode::EVAL,
                )
            });
            assert_eq!(y.size()[1], channels);
        }
        assert_eq!(
            checkpoint_key("layer4.0.conv1.weight")
                .as_deref()
                .and_then(child_of),
            Some(7)
        );
    }
}
