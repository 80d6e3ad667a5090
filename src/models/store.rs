//! Named tensors with their layer group, plus the two layer kinds every backbone uses.

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Trainable parameter (weights, biases, BatchNorm gamma/beta).
    Param,
    /// Non-trainable state saved with the model (BatchNorm running mean/var).
    Buffer,
}

pub struct Entry {
    /// State-dict key in fastai 0.7's flat naming, e.g. `4.0.conv1.weight`, `10.running_mean`.
    pub key: String,
    pub tensor: Tensor,
    pub kind: EntryKind,
    /// Layer group: 0 and 1 are the backbone's two groups, 2 the head.
    pub group: usize,
}

/// All parameters and buffers of a model, in state-dict order. Layers keep shallow clones
/// of these tensors, so an in-place update here (loading weights, an optimiser step) is seen
/// by the forward pass.
#[derive(Default)]
pub struct ParamStore {
    pub entries: Vec<Entry>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&mut self, key: String, tensor: Tensor, kind: EntryKind, group: usize) -> Tensor {
        let tensor = if kind == EntryKind::Param {
            tensor.set_requires_grad(true)
        } else {
            tensor
        };
        let handle = tensor.shallow_clone();
        self.entries.push(Entry {
            key,
            tensor,
            kind,
            group,
        });
        handle
    }

    pub fn param(&mut self, key: impl Into<String>, tensor: Tensor, group: usize) -> Tensor {
        self.add(key.into(), tensor, EntryKind::Param, group)
    }

    pub fn buffer(&mut self, key: impl Into<String>, tensor: Tensor, group: usize) -> Tensor {
        self.add(key.into(), tensor, EntryKind::Buffer, group)
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Copies `src` into the entry `key` (no autograd), checking the shape.
    pub fn assign(&self, key: &str, src: &Tensor) -> Result<()> {
        let entry = self.get(key).ok_or_else(|| Error::Weights {
            context: key.to_string(),
            reason: "no such parameter in the model".into(),
        })?;
        if entry.tensor.size() != src.size() {
            return Err(Error::Weights {
                context: key.to_string(),
                reason: format!(
                    "shape {:?} in the file, {:?} in the model",
                    src.size(),
                    entry.tensor.size()
                ),
            });
        }
        tch::no_grad(|| {
            let src = src
                .to_device(entry.tensor.device())
                .to_kind(entry.tensor.kind());
            entry
                .tensor
                .shallow_clone()
                .f_copy_(&src)
                .map(|_| ())
                .map_err(Error::torch(format!("loading {key}")))
        })
    }

    pub fn device(&self) -> Device {
        self.entries
            .first()
            .map(|e| e.tensor.device())
            .unwrap_or(Device::Cpu)
    }
}

/// A 2-D convolution without or with bias (ResNets use none).
pub struct Conv {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: i64,
    pub padding: i64,
    pub groups: i64,
}

impl Conv {
    /// Creates the weight `(out, in/groups, k, k)` with Kaiming-normal (fan_out) init as
    /// torchvision does; pretrained weights overwrite it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        key: &str,
        group: usize,
        c_in: i64,
        c_out: i64,
        k: i64,
        stride: i64,
        padding: i64,
        groups: i64,
        bias: bool,
    ) -> Self {
        let fan_out = (c_out * k * k / groups) as f64;
        let w = Tensor::randn([c_out, c_in / groups, k, k], (Kind::Float, Device::Cpu))
            * (2.0 / fan_out).sqrt();
        let weight = store.param(format!("{key}.weight"), w, group);
        let bias = bias.then(|| {
            store.param(
                format!("{key}.bias"),
                Tensor::zeros([c_out], (Kind::Float, Device::Cpu)),
                group,
            )
        });
        Conv {
            weight,
            bias,
            stride,
            padding,
            groups,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride],
            [self.padding],
            [1],
            self.groups,
        )
    }
}

/// BatchNorm (1-d or 2-d: libtorch's batch_norm handles both) with PyTorch's defaults.
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm {
    pub fn new(store: &mut ParamStore, key: &str, group: usize, c: i64) -> Self {
        Self::with_eps(store, key, group, c, 1e-5, 0.1)
    }

    pub fn with_eps(
        store: &mut ParamStore,
        key: &str,
        group: usize,
        c: i64,
        eps: f64,
        momentum: f64,
    ) -> Self {
        let opts = (Kind::Float, Device::Cpu);
        BatchNorm {
            weight: store.param(format!("{key}.weight"), Tensor::ones([c], opts), group),
            bias: store.param(format!("{key}.bias"), Tensor::zeros([c], opts), group),
            running_mean: store.buffer(
                format!("{key}.running_mean"),
                Tensor::zeros([c], opts),
                group,
            ),
            running_var: store.buffer(format!("{key}.running_var"), Tensor::ones([c], opts), group),
            eps,
            momentum,
        }
    }

    /// The same layer: its tensors share storage with this one's.
    pub fn share(&self) -> Self {
        BatchNorm {
            weight: self.weight.shallow_clone(),
            bias: self.bias.shallow_clone(),
            running_mean: self.running_mean.shallow_clone(),
            running_var: self.running_var.shallow_clone(),
            eps: self.eps,
            momentum: self.momentum,
        }
    }

    /// `train`: use batch statistics and update the running ones (PyTorch's training mode).
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            self.momentum,
            self.eps,
            true,
        )
    }
}
