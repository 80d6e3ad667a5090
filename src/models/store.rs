//! Named tensors with their layer group, and the scope layers are built in.

use tch::{Device, Tensor};

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

    /// Adds a tensor owned elsewhere (a user's module) as it is: its `requires_grad` is the
    /// module's to set (freezing changes it later).
    pub fn insert(&mut self, key: String, tensor: Tensor, kind: EntryKind, group: usize) {
        self.entries.push(Entry {
            key,
            tensor,
            kind,
            group,
        });
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

/// Where the layer being built registers its tensors: the store, a key prefix and the layer
/// group (tch's `nn::Path`, plus the group fastai needs). `scope.sub("conv1")` is the scope of
/// a sub-layer, so a builder names each layer once and its tensors get `<prefix>.conv1.weight`.
pub struct Scope<'a> {
    store: &'a mut ParamStore,
    prefix: String,
    group: usize,
}

impl<'a> Scope<'a> {
    /// The root scope of `store` (empty prefix) in layer group `group`.
    pub fn new(store: &'a mut ParamStore, group: usize) -> Self {
        Scope {
            store,
            prefix: String::new(),
            group,
        }
    }

    /// The scope of the sub-layer `name`, in the same group.
    pub fn sub(&mut self, name: impl std::fmt::Display) -> Scope<'_> {
        let group = self.group;
        self.sub_in(group, name)
    }

    /// The scope of the sub-layer `name` in layer group `group` (where a builder's layer
    /// group changes: at the split).
    pub fn sub_in(&mut self, group: usize, name: impl std::fmt::Display) -> Scope<'_> {
        let prefix = self.key(&name.to_string());
        Scope {
            store: self.store,
            prefix,
            group,
        }
    }

    pub fn group(&self) -> usize {
        self.group
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Registers the trainable tensor `<prefix>.<name>`; the returned handle shares its storage.
    pub fn param(&mut self, name: &str, tensor: Tensor) -> Tensor {
        let key = self.key(name);
        self.store.param(key, tensor, self.group)
    }

    /// Registers the non-trainable state `<prefix>.<name>` (saved with the model).
    pub fn buffer(&mut self, name: &str, tensor: Tensor) -> Tensor {
        let key = self.key(name);
        self.store.buffer(key, tensor, self.group)
    }
}
