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
pub trait Backbone: Send + Sync {
    /// `x`: (N, 3, H, W) normalised images -> (N, C, h, w) feature map.
    fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor;
    /// C of the feature map (512 for resnet34); the head's input is 2*C (concat pooling).
    fn out_channels(&self) -> i64;
}
