//! Data (fastai.dataset): folder and CSV scanning, the threaded batch loader, and the
//! `data.resize` copy job.

pub mod folder;
pub mod loader;
pub mod resize;
