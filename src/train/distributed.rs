//! Data-parallel training: how the batch loop reaches a process group it does not own.
//!
//! The group (NCCL or gloo) is created and destroyed by the Python side (`torch.distributed`),
//! which knows the launcher's environment; the loop only needs "sum this tensor over every
//! rank", so it sees the group through [`GradSync`]. After backward and before clipping and
//! the step, [`average_grads`] packs the trainable gradients into flat buckets, has each
//! bucket summed across ranks and writes the mean back, so every rank steps with the same
//! gradient: the one of the global batch (every rank holds the same number of rows, see
//! `data::shard`).

use tch::Tensor;

use super::learner::{BatchSource, TensorSet};
use crate::data::shard::Shard;
use crate::models::store::ParamStore;
use crate::{Error, Result};

/// A process group as the batch loop sees it.
pub trait GradSync: Send {
    /// Sums `flat` over every rank, in place (every rank calls it with the same shape).
    fn all_reduce(&self, flat: &mut Tensor) -> Result<()>;
    fn world(&self) -> usize;
    fn rank(&self) -> usize;
}

/// Bucket size: large enough that a ResNet-50 takes 4 collectives, not 161 (each costs a
/// round trip), small enough that the packing copy stays a small share of the step.
pub const BUCKET_BYTES: usize = 25 << 20;

/// The defined gradients of the parameters that require one, in store order (the same on
/// every rank: same model, same freezing).
fn trainable_grads(store: &ParamStore) -> Vec<Tensor> {
    store
        .entries
        .iter()
        .filter(|e| e.tensor.requires_grad())
        .map(|e| e.tensor.grad())
        .filter(|g| g.defined())
        .collect()
}

/// Groups consecutive gradients into buckets of at most `max_bytes` (a gradient larger than
/// that is a bucket of its own); gradients of another dtype or device than the bucket's
/// first start a new one. Returns index ranges into `grads`.
fn buckets(grads: &[Tensor], max_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, g) in grads.iter().enumerate() {
        let size = g.numel() * g.kind().elt_size_in_bytes();
        let same =
            i == start || (g.kind() == grads[start].kind() && g.device() == grads[start].device());
        if i > start && (bytes + size > max_bytes || !same) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < grads.len() {
        out.push(start..grads.len());
    }
    out
}

/// Replaces every trainable gradient by its mean over the ranks of `sync`.
pub fn average_grads(store: &ParamStore, sync: &dyn GradSync) -> Result<()> {
    let world = sync.world();
    if world <= 1 {
        return Ok(());
    }
    let grads = trainable_grads(store);
    let e = || Error::torch("averaging the gradients across ranks");
    tch::no_grad(|| -> Result<()> {
        for range in buckets(&grads, BUCKET_BYTES) {
            let part = &grads[range];
            let flats: Vec<Tensor> = part.iter().map(|g| g.reshape([-1])).collect();
            let mut flat = Tensor::f_cat(&flats, 0).map_err(e())?;
            sync.all_reduce(&mut flat)?;
            let _ = flat.f_div_scalar_(world as f64).map_err(e())?;
            let mut at = 0i64;
            for g in part {
                let n = g.numel() as i64;
                let mean = flat.f_narrow(0, at, n).and_then(|t| t.f_view_as(g));
                g.shallow_clone()
                    .f_copy_(&mean.map_err(e())?)
                    .map_err(e())?;
                at += n;
            }
        }
        Ok(())
    })
}

/// In-memory rows (precomputed activations) read as one rank of a data-parallel fit: the
/// rows' shared epoch order cut as `data::shard` cuts a loader's. It offers no rows view, so
/// the hand-written head step (which does not sync) never takes it.
pub struct ShardedRows {
    pub rows: TensorSet,
    pub shard: Shard,
}

impl BatchSource for ShardedRows {
    fn num_batches(&self) -> usize {
        let n = self.rows.x.size().first().copied().unwrap_or(0) as usize;
        self.shard.num_batches(n, self.rows.bs, false)
    }
    fn batches<'a>(
        &'a self,
        epoch: u64,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a> {
        let order = self.rows.order(epoch);
        let batches = self.shard.batches(&order, self.rows.bs, false);
        Box::new(batches.into_iter().map(move |idx| {
            let idx: Vec<i64> = idx.into_iter().map(|i| i as i64).collect();
            let idx = Tensor::from_slice(&idx);
            let e = || Error::torch("selecting a shard's rows");
            Ok((
                self.rows.x.f_index_select(0, &idx).map_err(e())?,
                self.rows.y.f_index_select(0, &idx).map_err(e())?,
            ))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_respect_the_size_and_keep_order() {
        use tch::{Device, Kind};
        let g = |n: i64| Tensor::zeros([n], (Kind::Float, Device::Cpu));
        let grads = vec![g(10), g(10), g(30), g(5), g(1)];
        // 40 + 40 fit in 100 bytes, 120 is a bucket of its own, then 20 + 4.
        assert_eq!(buckets(&grads, 100), vec![0..2, 2..3, 3..5]);
        assert_eq!(buckets(&[], 100), Vec::<std::ops::Range<usize>>::new());
        let mixed = vec![g(1), Tensor::zeros([1], (Kind::Double, Device::Cpu)), g(1)];
        assert_eq!(buckets(&mixed, 1000), vec![0..1, 1..2, 2..3]);
    }
}
