//! Networks written as plain functions over named tensors.
//!
//! Why not `tch::nn` modules: fastai needs per-layer-group control that `nn` does not give
//! (frozen groups keep BatchNorm in eval mode while the head trains; differential learning
//! rates; state-dict keys in fastai 0.7's flat `nn.Sequential` naming). So every parameter and
//! buffer lives in a [`ParamStore`] entry that knows its state-dict key and layer group, and
//! each architecture is a [`Backbone`] whose `forward` receives, per layer group, whether its
//! BatchNorm layers use batch statistics.
//!
//! What is known about each architecture (builder, checkpoint naming, cut, layer-group split,
//! normalisation statistics, weight files) is one entry of the table in [`arch`].

pub mod arch;
pub mod convnet;
pub mod efficientnet;
pub mod head;
pub mod layers;
pub mod module;
pub mod net;
pub mod resnet;
pub mod store;

pub use arch::{arch, arch_names, ArchSpec, Meta, Stats, Weights, ARCHS, STATS};
pub use convnet::{backbone_features, load_checkpoint, load_flat, ConvNet, Naming};
pub use head::{Head, Output, HEAD_GROUP};
pub use layers::{BatchNorm, Conv, ConvConfig};
pub use module::{BatchAt, ExternalModel, ModuleNet, Part};
pub use net::Net;
pub use store::{Entry, EntryKind, ParamStore, Scope};

use tch::Tensor;

use crate::Result;

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
