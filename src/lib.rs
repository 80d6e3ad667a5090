//! fastai-rs: the Rust core of a drop-in re-implementation of fastai 0.7's vision API.
//!
//! The modules depend one way, each only on those listed before it:
//!
//! | module       | concern                                                            |
//! |--------------|--------------------------------------------------------------------|
//! | `util`       | seeded random streams, the hash of cache keys, the CPU-feature probe |
//! | `image`      | decoding files into RGB pixels, resampling them                    |
//! | `transforms` | the fused augmentation pipeline (fastai.transforms)                |
//! | `data`       | folder/CSV scanning, the batch loader, `data.resize` (fastai.dataset) |
//! | `models`     | architectures, the parameter store, fastai's head                  |
//! | `cache`      | the activation cache files of `precompute=True`                     |
//! | `train`      | schedules, optimisers, the fit and predict loops (fastai.learner/sgdr) |
//! | `py`         | the pyo3 bindings (`python` feature): convert, release the GIL, call |
//!
//! The core modules know nothing about Python; `py` is the only place that mentions
//! pyo3/numpy.

pub mod cache;
pub mod data;
pub mod error;
pub mod image;
pub mod models;
pub mod train;
pub mod transforms;
pub mod util;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
