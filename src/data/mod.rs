//! Data (fastai.dataset): folder and CSV scanning, datasets (items + labels), the threaded
//! batch loader, and the `data.resize` copy job.

pub mod dataset;
pub mod folder;
pub mod loader;
pub mod resize;
pub mod shard;
