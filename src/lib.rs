//! fastai-rs: the Rust core of a drop-in re-implementation of fastai 0.7's vision API.
//!
//! The core modules know nothing about Python; `python` (behind the `python` feature) is the
//! only place that mentions pyo3/numpy, and it only converts arguments and errors.

pub mod decode;
pub mod error;
pub mod folder;
pub mod loader;
pub mod models;
pub mod resize;
pub mod rng;
pub mod train;
pub mod transforms;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
