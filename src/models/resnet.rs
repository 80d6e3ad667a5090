//! torchvision's ResNets (v1.5: the stride sits in the 3x3 conv of a bottleneck), cut as
//! fastai 0.7 cuts them: everything before the average pool and the fc layer.
//!
//! Store keys use fastai 0.7's flat `nn.Sequential` numbering of torchvision's children:
//! conv1 = 0, bn1 = 1, (relu = 2, maxpool = 3), layer1..layer4 = 4..7. So `layer3.0.conv1.weight`
//! in a torchvision checkpoint is `6.0.conv1.weight` here, as in a fastai 0.7 `.h5` file.
//! Layer groups follow fastai's `lr_cut` of 6: children 0..5 (up to layer2) are group 0,
//! layer3 and layer4 group 1.
//!
//! `xtra_cut` (fastai's `cut -= xtra_cut`) keeps only the first `cut` children: xtra_cut = 1
//! drops layer4, so the features come from layer3 (256 channels for resnet34, nf = 512). The
//! split stays at child 6, as fastai's `split_by_idxs(children, [lr_cut])` keeps it: with
//! cut = 7 group 1 is layer3 alone, with cut <= 6 it holds no parameters (only the
//! parameter-free pool and flatten), and `lr`s for it have nothing to act on.

use tch::Tensor;

use super::{Backbone, BatchNorm, BnMode, Conv, ParamStore};

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
                let y = bn1.forward(&conv1.forward(x), train).relu_();
                (bn2.forward(&conv2.forward(&y), train), down)
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
                let y = bn1.forward(&conv1.forward(x), train).relu_();
                let y = bn2.forward(&conv2.forward(&y), train).relu_();
                (bn3.forward(&conv3.forward(&y), train), down)
            }
        };
        let mut out = out;
        match down {
            Some((conv, bn)) => out += bn.forward(&conv.forward(x), train),
            None => out += x,
        }
        out.relu_()
    }
}

/// The 1x1 projection of a block's shortcut, when its shape changes (first block of a layer).
fn downsample(
    store: &mut ParamStore,
    key: &str,
    group: usize,
    in_c: i64,
    out_c: i64,
    stride: i64,
) -> Option<(Conv, BatchNorm)> {
    (stride != 1 || in_c != out_c).then(|| {
        (
            Conv::new(
                store,
                &format!("{key}.downsample.0"),
                group,
                in_c,
                out_c,
                1,
                stride,
                0,
                1,
                false,
            ),
            BatchNorm::new(store, &format!("{key}.downsample.1"), group, out_c),
        )
    })
}

pub struct ResNet {
    conv1: Conv,
    /// None when the cut keeps conv1 alone (not allowed by `ConvNet`, but well-defined here).
    bn1: Option<BatchNorm>,
    /// Children kept (8 = the whole body; 2 = conv1 and bn1; 3 adds relu, 4 maxpool, then
    /// one per residual layer).
    cut: usize,
    /// (layer group, blocks) for layer1..layer4.
    layers: Vec<(usize, Vec<Block>)>,
    out_channels: i64,
}

/// Builds a ResNet body with `blocks[i]` blocks in layer i+1; `bottleneck` selects the
/// 1x1-3x3-1x1 block with expansion 4 (resnet50 and deeper). Only the first `cut` (1..=8)
/// children are built: their parameters are the only ones in the store.
pub fn resnet(
    store: &mut ParamStore,
    blocks: [usize; 4],
    bottleneck: bool,
    cut: usize,
) -> Box<dyn Backbone> {
    let cut = cut.clamp(1, 8);
    let expansion = if bottleneck { 4 } else { 1 };
    let conv1 = Conv::new(store, "0", 0, 3, 64, 7, 2, 3, 1, false);
    let bn1 = (cut > 1).then(|| BatchNorm::new(store, "1", 0, 64));
    let mut in_c = 64;
    let mut layers = Vec::new();
    for (li, &n) in blocks.iter().enumerate().take(cut.saturating_sub(4)) {
        let width = 64 << li;
        let child = 4 + li;
        let group = if child < 6 { 0 } else { 1 };
        let mut layer = Vec::new();
        for bi in 0..n {
            let stride = if li > 0 && bi == 0 { 2 } else { 1 };
            let key = format!("{child}.{bi}");
            let out_c = width * expansion;
            // Created after the convs: torchvision's state dicts list downsample last.
            let block = if bottleneck {
                let conv1 = Conv::new(
                    store,
                    &format!("{key}.conv1"),
                    group,
                    in_c,
                    width,
                    1,
                    1,
                    0,
                    1,
                    false,
                );
                let bn1 = BatchNorm::new(store, &format!("{key}.bn1"), group, width);
                let conv2 = Conv::new(
                    store,
                    &format!("{key}.conv2"),
                    group,
                    width,
                    width,
                    3,
                    stride,
                    1,
                    1,
                    false,
                );
                let bn2 = BatchNorm::new(store, &format!("{key}.bn2"), group, width);
                let conv3 = Conv::new(
                    store,
                    &format!("{key}.conv3"),
                    group,
                    width,
                    out_c,
                    1,
                    1,
                    0,
                    1,
                    false,
                );
                let bn3 = BatchNorm::new(store, &format!("{key}.bn3"), group, out_c);
                let down = downsample(store, &key, group, in_c, out_c, stride);
                Block::Bottleneck {
                    conv1,
                    bn1,
                    conv2,
                    bn2,
                    conv3,
                    bn3,
                    down,
                }
            } else {
                let conv1 = Conv::new(
                    store,
                    &format!("{key}.conv1"),
                    group,
                    in_c,
                    width,
                    3,
                    stride,
                    1,
                    1,
                    false,
                );
                let bn1 = BatchNorm::new(store, &format!("{key}.bn1"), group, width);
                let conv2 = Conv::new(
                    store,
                    &format!("{key}.conv2"),
                    group,
                    width,
                    width,
                    3,
                    1,
                    1,
                    1,
                    false,
                );
                let bn2 = BatchNorm::new(store, &format!("{key}.bn2"), group, width);
                let down = downsample(store, &key, group, in_c, out_c, stride);
                Block::Basic {
                    conv1,
                    bn1,
                    conv2,
                    bn2,
                    down,
                }
            };
            layer.push(block);
            in_c = out_c;
        }
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

impl Backbone for ResNet {
    fn forward_traced(
        &self,
        x: &Tensor,
        bn: BnMode,
        trace: &mut dyn FnMut(&str, &Tensor),
    ) -> Tensor {
        let x = self.conv1.forward(x);
        trace("Conv2d", &x);
        let Some(bn1) = &self.bn1 else { return x };
        let mut x = bn1.forward(&x, bn.train(0));
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
            let net = resnet(&mut store, [3, 4, 6, 3], false, cut);
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
