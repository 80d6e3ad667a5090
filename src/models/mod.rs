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
    fn forward_traced(
        &self,
        x: &Tensor,
        bn: BnMode,
        trace: &mut dyn FnMut(&str, &Tensor),
    ) -> Tensor;
    fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor {
        self.forward_traced(x, bn, &mut |_, _| {})
    }
    /// C of the feature map (512 for resnet34); the head's input is 2*C (concat pooling).
    fn out_channels(&self) -> i64;
}

pub mod head;
pub mod resnet;

pub use head::{Head, Output, HEAD_GROUP};

/// A head written outside Rust (fastai's `custom_head`, a PyTorch module run by the Python
/// binding). It receives the raw body feature map (no pooling, as in fastai 0.7) and its
/// parameters and buffers live in the model's [`ParamStore`] (shared tensors), so the
/// optimiser, freezing, save/load and snapshots treat them like our own.
pub trait ExternalHead: Send {
    /// `train`: training mode (dropout on); `bn_train`: its BatchNorm layers use batch
    /// statistics. Fallible: the head is user code.
    fn forward(&self, x: &Tensor, train: bool, bn_train: bool) -> Result<Tensor>;
    /// The layer name `learn.summary()` shows for it (the module's class name).
    fn name(&self) -> String;
}

/// Which head sits on the body.
pub enum HeadChoice {
    /// fastai 0.7's head (spec 4.4): concat pool, flatten, then the BN/Dropout/Linear blocks.
    Fastai {
        ps: Option<Vec<f64>>,
        xtra_fc: Option<Vec<i64>>,
    },
    /// A user head and its state entries (key within the head, tensor, kind), in its own
    /// state-dict order; the keys are prefixed with the cut (`<cut>.<key>`).
    External {
        head: Box<dyn ExternalHead>,
        entries: Vec<(String, Tensor, EntryKind)>,
    },
}

enum HeadImpl {
    Fastai(Head),
    External(Box<dyn ExternalHead>),
}

use tch::Device;

use crate::{Error, Result};

/// What fastai 0.7's `model_meta` and torchvision's constructors say about one architecture.
pub struct ArchSpec {
    pub name: &'static str,
    /// Builds the first `cut` direct children of the body (`cut <= body_children`).
    build: fn(&mut ParamStore, usize) -> Box<dyn Backbone>,
    /// Maps a key of the architecture's published checkpoint to our store key.
    pub checkpoint_key: fn(&str) -> Option<String>,
    /// Which direct child of the body a store key belongs to (to skip the weights of
    /// children that `xtra_cut` removed).
    pub child_of: fn(&str) -> Option<usize>,
    /// Direct children of the uncut body in fastai's flat Sequential (8 for ResNets:
    /// model_meta's cut); `xtra_cut` removes that many from the end. The concat pool and
    /// flatten follow, so the head's first key is `cut + 2` (`cut` for a custom head).
    pub body_children: usize,
}

fn resnet18(s: &mut ParamStore, cut: usize) -> Box<dyn Backbone> {
    resnet::resnet(s, [2, 2, 2, 2], false, cut)
}
fn resnet34(s: &mut ParamStore, cut: usize) -> Box<dyn Backbone> {
    resnet::resnet(s, [3, 4, 6, 3], false, cut)
}
fn resnet50(s: &mut ParamStore, cut: usize) -> Box<dyn Backbone> {
    resnet::resnet(s, [3, 4, 6, 3], true, cut)
}
fn resnet101(s: &mut ParamStore, cut: usize) -> Box<dyn Backbone> {
    resnet::resnet(s, [3, 4, 23, 3], true, cut)
}
fn resnet152(s: &mut ParamStore, cut: usize) -> Box<dyn Backbone> {
    resnet::resnet(s, [3, 8, 36, 3], true, cut)
}

const fn resnet_spec(
    name: &'static str,
    build: fn(&mut ParamStore, usize) -> Box<dyn Backbone>,
) -> ArchSpec {
    ArchSpec {
        name,
        build,
        checkpoint_key: resnet::checkpoint_key,
        child_of: resnet::child_of,
        body_children: 8,
    }
}

const ARCHS: &[ArchSpec] = &[
    resnet_spec("resnet18", resnet18),
    resnet_spec("resnet34", resnet34),
    resnet_spec("resnet50", resnet50),
    resnet_spec("resnet101", resnet101),
    resnet_spec("resnet152", resnet152),
    // fastai 0.7 had no EfficientNet: its body keeps the checkpoint's own key names, and the
    // head is numbered as if the body were 7 children (stem conv, bn, act, blocks, head conv,
    // bn, act), so head keys start at 9.
    ArchSpec {
        name: "efficientnet_lite0",
        build: efficientnet::efficientnet_lite0,
        checkpoint_key: efficientnet::checkpoint_key,
        child_of: efficientnet::child_of,
        body_children: 7,
    },
];

/// The smallest body `xtra_cut` may leave. With a single child, fastai 0.7's layer-group
/// split special-cases a 3-item list (body + pool + flatten) and expands the first child,
/// which for a lone conv leaves that conv in no group at all; two children (conv + BN)
/// avoid that and still give a BatchNorm to size the head from.
const MIN_CUT: usize = 2;

impl ArchSpec {
    /// The whole (uncut) body, its parameters registered in `store`.
    pub fn build_body(&self, store: &mut ParamStore) -> Box<dyn Backbone> {
        (self.build)(store, self.body_children)
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

/// Body + concat pool + flatten + head: the model `ConvLearner.pretrained` builds (or body +
/// a custom head, which gets the raw feature map).
pub struct ConvNet {
    pub store: ParamStore,
    pub arch: &'static ArchSpec,
    body: Box<dyn Backbone>,
    head: HeadImpl,
    /// What the loss is computed on (fastai picks it from the data, also for a custom head).
    output: Output,
    /// Width of the pooled features (2 x the body's channels), as fastai 0.7's `nf`.
    pub nf: i64,
    /// Number of body children kept: `body_children - xtra_cut`.
    pub cut: usize,
    /// Index of the head's first layer in the flat Sequential numbering.
    pub head_start: usize,
}

impl ConvNet {
    pub fn new(
        arch_name: &str,
        c: i64,
        output: Output,
        xtra_cut: usize,
        head: HeadChoice,
    ) -> Result<Self> {
        let arch = arch(arch_name)?;
        if c < 1 {
            return Err(Error::InvalidArgument(format!(
                "the data has {c} classes; need at least 1"
            )));
        }
        let max_cut = arch.body_children - MIN_CUT;
        if xtra_cut > max_cut {
            return Err(Error::InvalidArgument(format!(
                "xtra_cut={xtra_cut} would leave {} of the {} body children of {}; use 0..={max_cut}",
                arch.body_children.saturating_sub(xtra_cut), arch.body_children, arch.name
            )));
        }
        let cut = arch.body_children - xtra_cut;
        let mut store = ParamStore::new();
        let body = (arch.build)(&mut store, cut);
        let nf = 2 * body.out_channels();
        let (head, head_start) = match head {
            HeadChoice::Fastai { ps, xtra_fc } => {
                let hidden = xtra_fc.unwrap_or_else(|| vec![512]);
                let ps = head::resolve_ps(ps, hidden.len())?;
                let head_start = cut + 2;
                (
                    HeadImpl::Fastai(Head::new(
                        &mut store, head_start, nf, &hidden, &ps, c, output,
                    )),
                    head_start,
                )
            }
            HeadChoice::External { head, entries } => {
                // fastai 0.7: nn.Sequential(*body_children, custom_head), so the head is child `cut`.
                for (key, tensor, kind) in entries {
                    let key = format!("{cut}.{key}");
                    if store.get(&key).is_some() {
                        return Err(Error::InvalidArgument(format!(
                            "custom_head: duplicate state key {key:?}"
                        )));
                    }
                    let _ = match kind {
                        EntryKind::Param => store.param(key, tensor, HEAD_GROUP),
                        EntryKind::Buffer => store.buffer(key, tensor, HEAD_GROUP),
                    };
                }
                (HeadImpl::External(head), cut)
            }
        };
        Ok(ConvNet {
            store,
            arch,
            body,
            head,
            output,
            nf,
            cut,
            head_start,
        })
    }

    pub fn has_custom_head(&self) -> bool {
        matches!(self.head, HeadImpl::External(_))
    }

    /// What the head receives: for fastai's head, the body's map through AdaptiveConcatPool2d
    /// (max first, then average) and Flatten, (N, nf); for a custom head the raw (N, C, h, w)
    /// map. These are also the activations `precompute` caches.
    pub fn features(&self, x: &Tensor, bn: BnMode) -> Tensor {
        let f = self.body.forward(x, bn);
        match self.head {
            HeadImpl::External(_) => f,
            HeadImpl::Fastai(_) => concat_pool(&f).flatten(1, -1),
        }
    }

    /// Shape of `features` for a batch of one (3, h, w) image (eval mode, no gradient).
    pub fn feature_shape(&self, h: i64, w: i64) -> Vec<i64> {
        tch::no_grad(|| {
            self.features(
                &Tensor::zeros([1, 3, h, w], (tch::Kind::Float, self.device())),
                BnMode::EVAL,
            )
            .size()
        })
    }

    /// fastai's head, when the model has it (not a custom head).
    pub fn fastai_head(&self) -> Option<&Head> {
        match &self.head {
            HeadImpl::Fastai(h) => Some(h),
            HeadImpl::External(_) => None,
        }
    }

    pub fn head_forward(&self, features: &Tensor, train: bool, bn: BnMode) -> Result<Tensor> {
        match &self.head {
            HeadImpl::Fastai(h) => Ok(h.forward(features, train, bn.train(HEAD_GROUP))),
            HeadImpl::External(h) => h.forward(features, train, bn.train(HEAD_GROUP)),
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool, bn: BnMode) -> Result<Tensor> {
        self.head_forward(&self.features(x, bn), train, bn)
    }

    /// (layer, output shape) of every layer of the flat model for one (3, sz, sz) input,
    /// in eval mode. A custom head is one row.
    pub fn summary(&self, sz: i64) -> Result<Vec<(String, Vec<i64>)>> {
        let mut rows = Vec::new();
        tch::no_grad(|| -> Result<()> {
            let x = Tensor::zeros([1, 3, sz, sz], (tch::Kind::Float, self.device()));
            let mut trace = |name: &str, t: &Tensor| rows.push((name.to_string(), t.size()));
            let f = self.body.forward_traced(&x, BnMode::EVAL, &mut trace);
            match &self.head {
                HeadImpl::Fastai(head) => {
                    let pooled = concat_pool(&f);
                    trace("AdaptiveConcatPool2d", &pooled);
                    let flat = pooled.flatten(1, -1);
                    trace("Flatten", &flat);
                    let _ = head.forward_traced(&flat, false, false, &mut trace);
                }
                HeadImpl::External(head) => {
                    let out = head.forward(&f, false, false)?;
                    trace(&head.name(), &out);
                }
            }
            Ok(())
        })?;
        Ok(rows)
    }

    pub fn output(&self) -> Output {
        self.output
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
                Some(key) if self.store.get(&key).is_some() && self.is_body_key(&key) => {
                    mapped.push((key, t))
                }
                // Weights of the children that xtra_cut removed: part of the checkpoint, not
                // of this model.
                Some(key)
                    if (self.arch.child_of)(&key)
                        .is_some_and(|c| c >= self.cut && c < self.arch.body_children) => {}
                Some(_) => unexpected.push(k.clone()),
                None => {}
            }
        }
        let body_keys: Vec<&str> = self
            .store
            .entries
            .iter()
            .filter(|e| self.is_body_key(&e.key))
            .map(|e| e.key.as_str())
            .collect();
        let missing: Vec<&str> = body_keys
            .iter()
            .copied()
            .filter(|k| !mapped.iter().any(|(m, _)| m == k))
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(Error::Weights {
                context: source.to_string(),
                reason: format!(
                    "does not fit {}: {} missing key(s) [{}], {} unexpected key(s) [{}]",
                    self.arch.name,
                    missing.len(),
                    preview(&missing),
                    unexpected.len(),
                    preview(&unexpected.iter().map(String::as_str).collect::<Vec<_>>())
                ),
            });
        }
        for (key, t) in mapped {
            self.store
                .assign(&key, t)
                .map_err(|e| with_context(e, source))?;
        }
        Ok(())
    }

    /// A key of the body (not of a head, whose keys start at the cut).
    fn is_body_key(&self, key: &str) -> bool {
        self.store.get(key).is_some_and(|e| e.group != HEAD_GROUP)
    }

    /// The full state dict in fastai 0.7's flat naming, tensors copied to the CPU.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.store
            .entries
            .iter()
            .map(|e| {
                (
                    e.key.clone(),
                    e.tensor.detach().to_device(Device::Cpu).copy(),
                )
            })
            .collect()
    }

    /// Loads a full state dict saved by `state` (or by fastai 0.7 for the same model):
    /// keys must match exactly.
    /// BatchNorm's `num_batches_tracked` counters (a custom head's, kept as its own state
    /// dict has them) may be absent: PyTorch 0.3, which fastai 0.7 ran on, had none.
    pub fn load_state(&self, entries: &[(String, Tensor)], source: &str) -> Result<()> {
        let missing: Vec<&str> = self
            .store
            .entries
            .iter()
            .map(|e| e.key.as_str())
            .filter(|k| !k.ends_with("num_batches_tracked") && !entries.iter().any(|(n, _)| n == k))
            .collect();
        let unexpected: Vec<&str> = entries
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| self.store.get(n).is_none() && !n.ends_with("num_batches_tracked"))
            .collect();
        // Shapes are checked before anything is copied, so a file that does not fit (e.g. the
        // same body with another number of classes) leaves the model as it was.
        let mismatched: Vec<String> = entries
            .iter()
            .filter_map(|(n, t)| {
                let e = self.store.get(n)?;
                (e.tensor.size() != t.size()).then(|| {
                    format!(
                        "{n}: {:?} in the file, {:?} in the model",
                        t.size(),
                        e.tensor.size()
                    )
                })
            })
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
            let mismatched_refs: Vec<&str> = mismatched.iter().map(String::as_str).collect();
            return Err(Error::Weights {
                context: source.to_string(),
                reason: format!(
                    "does not fit this {} model: {} missing key(s) [{}], {} unexpected key(s) [{}], {} of another shape [{}]",
                    self.arch.name, missing.len(), preview(&missing), unexpected.len(), preview(&unexpected),
                    mismatched.len(), preview(&mismatched_refs)
                ),
            });
        }
        for (k, t) in entries {
            if self.store.get(k).is_some() {
                self.store
                    .assign(k, t)
                    .map_err(|e| with_context(e, source))?;
            }
        }
        Ok(())
    }
}

/// AdaptiveConcatPool2d: adaptive max pool then adaptive average pool to 1x1, concatenated
/// along channels (max first): (N, C, h, w) -> (N, 2C, 1, 1).
fn concat_pool(f: &Tensor) -> Tensor {
    let (max, _) = f.adaptive_max_pool2d([1, 1]);
    Tensor::cat(&[max, f.adaptive_avg_pool2d([1, 1])], 1)
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
        Error::Weights { context, reason } => Error::Weights {
            context: format!("{source}: {context}"),
            reason,
        },
        other => other,
    }
}
