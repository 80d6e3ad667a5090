//! The model a learner trains: one of the native networks, or a user's torch module. The
//! loops, the optimiser, freezing, precompute and checkpoints see only this.

use tch::{Device, Tensor};

use super::convnet::{load_flat, ConvNet, Naming};
use super::module::{BatchAt, ModuleNet, Part};
use super::{BnMode, Head, Output, ParamStore};
use crate::Result;

pub enum Net {
    /// Built here: body of the architecture table + fastai's (or a custom) head.
    Conv(ConvNet),
    /// A user's module, its forward run by the bindings.
    Module(ModuleNet),
}

impl From<ConvNet> for Net {
    fn from(n: ConvNet) -> Self {
        Net::Conv(n)
    }
}

impl From<ModuleNet> for Net {
    fn from(n: ModuleNet) -> Self {
        Net::Module(n)
    }
}

impl Net {
    pub fn store(&self) -> &ParamStore {
        match self {
            Net::Conv(n) => &n.store,
            Net::Module(m) => &m.store,
        }
    }

    /// Number of layer groups (3 for the native networks: two body groups and the head).
    pub fn n_groups(&self) -> usize {
        match self {
            Net::Conv(_) => 3,
            Net::Module(m) => m.n_groups,
        }
    }

    /// The layer group `precompute` trains: the last.
    pub fn head_group(&self) -> usize {
        self.n_groups().saturating_sub(1)
    }

    pub fn conv(&self) -> Option<&ConvNet> {
        match self {
            Net::Conv(n) => Some(n),
            Net::Module(_) => None,
        }
    }

    /// fastai's default head, when the model has one (the hand-written head step needs it).
    pub fn fastai_head(&self) -> Option<&Head> {
        self.conv().and_then(ConvNet::fastai_head)
    }

    /// Whether the model has a body whose activations `precompute` can cache.
    pub fn has_body(&self) -> bool {
        match self {
            Net::Conv(_) => true,
            Net::Module(m) => m.splits,
        }
    }

    pub fn output(&self) -> Output {
        match self {
            Net::Conv(n) => n.output(),
            Net::Module(m) => m.output(),
        }
    }

    pub fn device(&self) -> Device {
        self.store().device()
    }

    /// Moves every parameter and buffer in place (the layers, or the module, hold the same
    /// tensors and follow).
    pub fn to_device(&self, device: Device) {
        tch::no_grad(|| {
            for e in &self.store().entries {
                if e.tensor.device() != device {
                    let moved = e.tensor.to_device(device);
                    e.tensor.shallow_clone().set_data(&moved);
                }
            }
        });
    }

    /// The whole model. `batch_stats`: BatchNorm layers of trainable layers use batch
    /// statistics (training without `bn_freeze`); false keeps every one on its running
    /// statistics.
    pub fn forward(
        &self,
        x: &Tensor,
        train: bool,
        batch_stats: bool,
        at: BatchAt,
    ) -> Result<Tensor> {
        match self {
            Net::Conv(n) => n.forward(x, train, BnMode([batch_stats; 3])),
            Net::Module(m) => m.forward(Part::Whole, x, train, !batch_stats, at),
        }
    }

    /// The body's activations in eval mode (what `precompute` caches).
    pub fn features(&self, x: &Tensor, at: BatchAt) -> Result<Tensor> {
        match self {
            Net::Conv(n) => Ok(n.features(x, BnMode::EVAL)),
            Net::Module(m) => m.forward(Part::Body, x, false, true, at),
        }
    }

    /// The head on cached activations.
    pub fn head_forward(
        &self,
        f: &Tensor,
        train: bool,
        batch_stats: bool,
        at: BatchAt,
    ) -> Result<Tensor> {
        match self {
            Net::Conv(n) => n.head_forward(f, train, BnMode([batch_stats; 3])),
            Net::Module(m) => m.forward(Part::Head, f, train, !batch_stats, at),
        }
    }

    /// The shape of one (3, h, w) image's activations (eval mode, no gradient).
    pub fn feature_shape(&self, h: i64, w: i64) -> Result<Vec<i64>> {
        match self {
            Net::Conv(n) => Ok(n.feature_shape(h, w)),
            Net::Module(_) => tch::no_grad(|| {
                let x = Tensor::zeros([1, 3, h, w], (tch::Kind::Float, self.device()));
                let at = BatchAt {
                    phase: "shape probe",
                    index: 0,
                };
                Ok(self.features(&x, at)?.size())
            }),
        }
    }

    /// The full state dict in its flat keys, tensors copied to the CPU.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.store()
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

    /// Loads the model's own flat state dict (what `state` gives and `learn.save` writes),
    /// strictly: nothing is copied unless every key and shape fits.
    pub fn load_state(&self, entries: &[(String, Tensor)], source: &str) -> Result<()> {
        match self {
            Net::Conv(n) => n.load_checkpoint(entries, Naming::Flat, source),
            Net::Module(m) => load_flat(&m.store, &m.name, entries, source),
        }
    }

    /// What names the model in a cache key and file name: the architecture (or the module's
    /// name) and how its body was cut.
    pub fn describe_body(&self) -> (String, String) {
        match self {
            Net::Conv(n) => (
                n.arch.name.to_string(),
                format!(
                    "cut {} {}",
                    n.cut,
                    if n.has_custom_head() {
                        "raw maps"
                    } else {
                        "concat pool"
                    }
                ),
            ),
            // The name goes into a file name: letters, digits and '_' only.
            Net::Module(m) => (
                m.name
                    .chars()
                    .map(|c| {
                        if c.is_alphanumeric() || c == '_' {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect(),
                "module body".to_string(),
            ),
        }
    }
}
