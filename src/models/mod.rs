//! Networks written as plain functions over named tensors.
//!
//! Why not `tch::nn` modules: fastai needs per-layer-group control that `nn` does not give
//! (frozen groups keep BatchNorm in eval mode while the head trains; differential learning
//! rates; state-dict keys in fastai 0.7's flat `nn.Sequential` naming). So every parameter and
//! buffer lives in a [`ParamStore`] entry that knows its state-dict key and layer group, and
//! each architecture is a [`Backbone`] whose `forward` receives, per layer group, whether its
//! BatchNorm layers use batch statistics.

pub mod efficientnet;
pub mod store;

pub use store::{BatchNorm, Conv, Entry, EntryKind, ParamStore};

use tch::Tensor;

/// Which layer groups run their BatchNorm layers in training mode (batch statistics, running
/// statistics updated). Index = layer group (0 and 1 are backbone groups, 2 is the head).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BnMode(pub [bool; 3]);

impl BnMode {
    pub const EVAL: BnMode = BnMode([false; 3]);
    pub fn train(self, group: usize) -> bool {
        self.0.get(group).copied().unwrap_or(false)
    }
}

/// A backbone cut as fastai 0.7 cuts it (everything before the global pool and classifier).
pub trait Backbone: Send {
    /// `x`: (N, 3, H, W) normalised images -> (N, C, h, w) feature map; `trace` is called with
    /// each direct child's name and output (what `learn.summary()` shows).
    fn forward_traced(&self, x: &Tensor, bn: BnMode, trace: &mut dyn FnMut(&str, &Tensor)) -> Tensor;
    fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor {
        self.forward_traced(x, bn, &mut |_, _| {})
    }
    /// C of the feature map (512 for resnet34); the head's input is 2*C (concat pooling).
    fn out_channels(&self) -> i64;
}

pub mod head;
pub mod resnet;

pub use head::{Head, Output, HEAD_GROUP};

use tch::Device;

use crate::{Error, Result};

/// What fastai 0.7's `model_meta` and torchvision's constructors say about one architecture.
pub struct ArchSpec {
    pub name: &'static str,
    build: fn(&mut ParamStore) -> Box<dyn Backbone>,
    /// Maps a key of the architecture's published checkpoint to our store key.
    pub checkpoint_key: fn(&str) -> Option<String>,
    /// Direct children of the cut body in fastai's flat Sequential (8 for ResNets); the
    /// concat pool and flatten follow, so the head's first key is `body_children + 2`.
    pub body_children: usize,
}

fn resnet18(s: &mut ParamStore) -> Box<dyn Backbone> {
    resnet::resnet(s, [2, 2, 2, 2], false)
}
fn resnet34(s: &mut ParamStore) -> Box<dyn Backbone> {
    resnet::resnet(s, [3, 4, 6, 3], false)
}
fn resnet50(s: &mut ParamStore) -> Box<dyn Backbone> {
    resnet::resnet(s, [3, 4, 6, 3], true)
}
fn resnet101(s: &mut ParamStore) -> Box<dyn Backbone> {
    resnet::resnet(s, [3, 4, 23, 3], true)
}
fn resnet152(s: &mut ParamStore) -> Box<dyn Backbone> {
    resnet::resnet(s, [3, 8, 36, 3], true)
}

const ARCHS: &[ArchSpec] = &[
    ArchSpec { name: "resnet18", build: resnet18, checkpoint_key: resnet::checkpoint_key, body_children: 8 },
    ArchSpec { name: "resnet34", build: resnet34, checkpoint_key: resnet::checkpoint_key, body_children: 8 },
    ArchSpec { name: "resnet50", build: resnet50, checkpoint_key: resnet::checkpoint_key, body_children: 8 },
    ArchSpec { name: "resnet101", build: resnet101, checkpoint_key: resnet::checkpoint_key, body_children: 8 },
    ArchSpec { name: "resnet152", build: resnet152, checkpoint_key: resnet::checkpoint_key, body_children: 8 },
    // fastai 0.7 had no EfficientNet: its body keeps the checkpoint's own key names, and the
    // head is numbered as if the body were 7 children (stem conv, bn, act, blocks, head conv,
    // bn, act), so head keys start at 9.
    ArchSpec {
        name: "efficientnet_lite0",
        build: efficientnet::efficientnet_lite0,
        checkpoint_key: efficientnet::checkpoint_key,
        body_children: 7,
    },
];

pub fn arch_names() -> Vec<&'static str> {
    ARCHS.iter().map(|a| a.name).collect()
}

pub fn arch(name: &str) -> Result<&'static ArchSpec> {
    ARCHS.iter().find(|a| a.name == name).ok_or_else(|| {
        Error::InvalidArgument(format!("unknown architecture {name:?}; available: {}", arch_names().join(", ")))
    })
}

/// Body + concat pool + flatten + head: the model `ConvLearner.pretrained` builds.
pub struct ConvNet {
    pub store: ParamStore,
    pub arch: &'static ArchSpec,
    body: Box<dyn Backbone>,
    head: Head,
    /// Width of the pooled features (2 x the body's channels).
    pub nf: i64,
    /// Index of the head's first layer in the flat Sequential numbering.
    pub head_start: usize,
}

impl ConvNet {
    pub fn new(arch_name: &str, c: i64, output: Output, ps: Option<Vec<f64>>, xtra_fc: Option<Vec<i64>>) -> Result<Self> {
        let arch = arch(arch_name)?;
        if c < 1 {
            return Err(Error::InvalidArgument(format!("the data has {c} classes; need at least 1")));
        }
        let mut store = ParamStore::new();
        let body = (arch.build)(&mut store);
        let nf = 2 * body.out_channels();
        let hidden = xtra_fc.unwrap_or_else(|| vec![512]);
        let ps = head::resolve_ps(ps, hidden.len())?;
        let head_start = arch.body_children + 2;
        let head = Head::new(&mut store, head_start, nf, &hidden, &ps, c, output);
        Ok(ConvNet { store, arch, body, head, nf, head_start })
    }

    /// Body, then AdaptiveConcatPool2d (max first, then average) and Flatten: (N, nf).
    pub fn features(&self, x: &Tensor, bn: BnMode) -> Tensor {
        let f = self.body.forward(x, bn);
        let (max, _) = f.adaptive_max_pool2d([1, 1]);
        let avg = f.adaptive_avg_pool2d([1, 1]);
        Tensor::cat(&[max, avg], 1).flatten(1, -1)
    }

    pub fn head_forward(&self, features: &Tensor, train: bool, bn: BnMode) -> Tensor {
        self.head.forward(features, train, bn.train(HEAD_GROUP))
    }

    pub fn forward(&self, x: &Tensor, train: bool, bn: BnMode) -> Tensor {
        self.head_forward(&self.features(x, bn), train, bn)
    }

    /// (layer, output shape) of every layer of the flat model for one (3, sz, sz) input,
    /// in eval mode.
    pub fn summary(&self, sz: i64) -> Vec<(String, Vec<i64>)> {
        let mut rows = Vec::new();
        tch::no_grad(|| {
            let x = Tensor::zeros([1, 3, sz, sz], (tch::Kind::Float, self.device()));
            let mut trace = |name: &str, t: &Tensor| rows.push((name.to_string(), t.size()));
            let f = self.body.forward_traced(&x, BnMode::EVAL, &mut trace);
            let (max, _) = f.adaptive_max_pool2d([1, 1]);
            let pooled = Tensor::cat(&[max, f.adaptive_avg_pool2d([1, 1])], 1);
            trace("AdaptiveConcatPool2d", &pooled);
            let flat = pooled.flatten(1, -1);
            trace("Flatten", &flat);
            let _ = self.head.forward_traced(&flat, false, false, &mut trace);
        });
        rows
    }

    pub fn output(&self) -> Output {
        self.head.output
    }

    pub fn device(&self) -> Device {
        self.store.device()
    }

    /// Moves every parameter and buffer in place (layers share them, so they follow).
    pub fn to_device(&self, device: Device) {
        tch::no_grad(|| {
            for e in &self.store.entries {
                let moved = e.tensor.to_device(device);
                e.tensor.shallow_clone().set_data(&moved);
            }
        });
    }

    /// Copies a published checkpoint (e.g. torchvision's) into the body. Every body entry
    /// must be present with the right shape; keys the architecture does not use (the 1000-way
    /// classifier) are ignored; anything else is an error that lists the offending keys.
    pub fn load_backbone(&self, entries: &[(String, Tensor)], source: &str) -> Result<()> {
        let mut mapped = Vec::new();
        let mut unexpected = Vec::new();
        for (k, t) in entries {
            match (self.arch.checkpoint_key)(k) {
                Some(key) if self.store.get(&key).is_some() => mapped.push((key, t)),
                Some(_) => unexpected.push(k.clone()),
                None => {}
            }
        }
        let body_keys: Vec<&str> = self.store.entries.iter().filter(|e| e.group != HEAD_GROUP).map(|e| e.key.as_str()).collect();
        let missing: Vec<&str> = body_keys.iter().copied().filter(|k| !mapped.iter().any(|(m, _)| m == k)).collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(Error::Weights {
                context: source.to_string(),
                reason: format!(
                    "does not fit {}: {} missing key(s) [{}], {} unexpected key(s) [{}]",
                    self.arch.name, missing.len(), preview(&missing), unexpected.len(),
                    preview(&unexpected.iter().map(String::as_str).collect::<Vec<_>>())
                ),
            });
        }
        for (key, t) in mapped {
            self.store.assign(&key, t).map_err(|e| with_context(e, source))?;
        }
        Ok(())
    }

    /// The full state dict in fastai 0.7's flat naming, tensors copied to the CPU.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.store.entries.iter().map(|e| (e.key.clone(), e.tensor.detach().to_device(Device::Cpu).copy())).collect()
    }

    /// Loads a full state dict saved by `state` (or by fastai 0.7 for the same model):
    /// keys must match exactly.
    pub fn load_state(&self, entries: &[(String, Tensor)], source: &str) -> Result<()> {
        let missing: Vec<&str> = self.store.entries.iter().map(|e| e.key.as_str()).filter(|k| !entries.iter().any(|(n, _)| n == k)).collect();
        let unexpected: Vec<&str> = entries
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| self.store.get(n).is_none() && !n.ends_with("num_batches_tracked"))
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(Error::Weights {
                context: source.to_string(),
                reason: format!(
                    "does not fit this {} model: {} missing key(s) [{}], {} unexpected key(s) [{}]",
                    self.arch.name, missing.len(), preview(&missing), unexpected.len(), preview(&unexpected)
                ),
            });
        }
        for (k, t) in entries {
            if self.store.get(k).is_some() {
                self.store.assign(k, t).map_err(|e| with_context(e, source))?;
            }
        }
        Ok(())
    }
}

fn preview(keys: &[&str]) -> String {
    let mut s = keys.iter().take(6).copied().collect::<Vec<_>>().join(", ");
    if keys.len() > 6 {
        s.push_str(", ...");
    }
    s
}

fn with_context(e: Error, source: &str) -> Error {
    match e {
        Error::Weights { context, reason } => Error::Weights { context: format!("{source}: {context}"), reason },
        other => other,
    }
}
