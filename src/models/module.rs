//! A model written outside Rust: a user's `torch.nn.Module` (fastai 0.7's `from_model_data`,
//! `Learner(data, models)`, `ConvLearner.pretrained(f)` with a torchvision or user backbone),
//! trained by the same loops as the native networks.
//!
//! Its parameters and buffers are handed to a [`ParamStore`] as the very tensors the module
//! holds (shared, never copied), each tagged with the layer group fastai 0.7's
//! `get_layer_groups()` puts it in, so the optimiser, freezing, snapshots and save/load treat
//! them like a native model's. Only the forward pass crosses into Python, once per batch.

use tch::{Device, Tensor};

use super::{Output, ParamStore};
use crate::Result;

/// Which part of the module a forward runs: all of it, or (for a model built as fastai's
/// `ConvnetBuilder` does, a body then a head) one of the two halves `precompute` splits it
/// into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Whole,
    Body,
    Head,
}

/// Which batch a forward pass is for: an error raised by the user's forward names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchAt {
    /// "training batch", "validation batch", "batch" (prediction), "precompute batch".
    pub phase: &'static str,
    pub index: usize,
}

impl std::fmt::Display for BatchAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.phase, self.index)
    }
}

/// The module's forward, implemented by the bindings. Fallible: it is user code.
pub trait ExternalModel: Send {
    /// `train`: training mode (dropout on, BatchNorm on batch statistics where its layer is
    /// trainable); `bn_freeze`: every BatchNorm on its running statistics regardless.
    fn forward(
        &self,
        part: Part,
        x: &Tensor,
        train: bool,
        bn_freeze: bool,
        at: BatchAt,
    ) -> Result<Tensor>;
}

pub struct ModuleNet {
    pub store: ParamStore,
    model: Box<dyn ExternalModel>,
    output: Output,
    /// Number of layer groups; entries tagged `n_groups` are in none (never stepped, as a
    /// parameter fastai 0.7's optimiser was not given).
    pub n_groups: usize,
    /// Whether the module has a body and a head `precompute` can run apart; the head is then
    /// the last layer group.
    pub splits: bool,
    /// fastai's `models.name`: names the activation cache files.
    pub name: String,
}

impl ModuleNet {
    pub fn new(
        store: ParamStore,
        model: Box<dyn ExternalModel>,
        output: Output,
        n_groups: usize,
        splits: bool,
        name: String,
    ) -> Self {
        ModuleNet {
            store,
            model,
            output,
            n_groups,
            splits,
            name,
        }
    }

    pub fn forward(
        &self,
        part: Part,
        x: &Tensor,
        train: bool,
        bn_freeze: bool,
        at: BatchAt,
    ) -> Result<Tensor> {
        self.model.forward(part, x, train, bn_freeze, at)
    }

    pub fn output(&self) -> Output {
        self.output
    }

    pub fn device(&self) -> Device {
        self.store.device()
    }
}
