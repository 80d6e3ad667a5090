//! Image loaders as a training source: the Rust data loader's batches become tensors.

use tch::{Kind, Tensor};

use super::learner::BatchSource;
use crate::data::dataset::{Targets, Values};
use crate::data::loader::{Batch, DataLoader};
use crate::{Error, Result};

/// `(x, y)` tensors of one loader batch: x (n, c, sz, sz) float32; y as [`targets_tensor`].
pub fn batch_tensors(b: Batch) -> Result<(Tensor, Tensor)> {
    let (n, c, sz) = (b.n as i64, b.c as i64, b.sz as i64);
    let x = Tensor::from_slice(&b.x)
        .f_view([n, c, sz, sz])
        .map_err(Error::torch("assembling a batch"))?;
    Ok((x, targets_tensor(b.y, b.n)?))
}

/// The targets of `n` items as a tensor: int64 class indices, float multi-hot / continuous
/// rows, per-item arrays as (n, *shape) in their dtype, or int64 zeros for an unlabelled set.
pub fn targets_tensor(y: Targets, n: usize) -> Result<Tensor> {
    let n = n as i64;
    Ok(match y {
        Targets::Class(v) => Tensor::from_slice(&v),
        Targets::MultiHot { data, c } => Tensor::from_slice(&data)
            .f_view([n, c as i64])
            .map_err(Error::torch("batch targets"))?,
        Targets::Continuous { data, dim } => Tensor::from_slice(&data)
            .f_view([n, dim as i64])
            .map_err(Error::torch("batch targets"))?,
        Targets::PerItem { data, shape, .. } => {
            let mut size = vec![n];
            size.extend(shape.iter().map(|&d| d as i64));
            match data {
                Values::I64(v) => Tensor::from_slice(&v),
                Values::F32(v) => Tensor::from_slice(&v),
            }
            .f_view(size.as_slice())
            .map_err(Error::torch("batch targets"))?
        }
        Targets::Unlabelled => Tensor::zeros([n], (Kind::Int64, tch::Device::Cpu)),
    })
}

impl BatchSource for DataLoader {
    fn num_batches(&self) -> usize {
        self.len()
    }
    fn batches<'a>(
        &'a self,
        epoch: u64,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a> {
        Box::new(self.iter(epoch).map(|b| b.and_then(batch_tensors)))
    }
}
