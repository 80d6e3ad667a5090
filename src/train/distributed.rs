//! Data-parallel training: how the batch loop reaches a process group it does not own.
//!
//! The group (NCCL or gloo) is created and destroyed by the Python side (`torch.distributed`),
//! which knows the launcher's environment; the loop only needs "sum this tensor over every
//! rank", so it sees the group through [`GradSync`]. After backward and before clipping and
//! the step, [`average_grads`] packs the trainable gradients into flat buckets, has each
//! bucket summed across ranks and writes the mean back, so every rank steps with the same
//! gradient: the one of the global batch (every rank holds the same number of rows, see
//! `data::shard`).
//!
//! `skip_bad` can leave a rank with fewer rows than the others in a batch, with a batch of
//! one row (left out where BatchNorm takes batch statistics) or with no batch at all (every
//! item undecodable), where the others still have one. So the ranks agree before every step
//! ([`agree_step`]: one small all-reduce of the rows each brings and whether it still has
//! batches): the epoch ends when no rank has a batch left; a step no rank brings rows to is
//! skipped by all (the schedule moves on, as for a one-row batch alone); otherwise every rank
//! steps, one without rows contributing a zero gradient. Each gradient is weighted by the
//! rank's share of the step's rows, so the sum is the gradient of the mean loss over the rows
//! that were there, as one process would compute it; the recorded loss is that mean too, the
//! same on every rank.

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

/// What the ranks agreed on before a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPlan {
    /// Rows brought by all the ranks together.
    pub rows: usize,
    /// Whether any rank still had a batch (else the epoch is over for all).
    pub any_batch: bool,
}

/// Every rank's `rows` (usable rows of its next batch, 0 without one) and `has_batch`
/// summed across `sync`'s ranks.
pub fn agree_step(sync: &dyn GradSync, rows: usize, has_batch: bool) -> Result<StepPlan> {
    let mut t = Tensor::from_slice(&[rows as f64, f64::from(u8::from(has_batch))]);
    sync.all_reduce(&mut t)?;
    let v = Vec::<f64>::try_from(&t).map_err(Error::torch("agreeing on a step"))?;
    Ok(StepPlan {
        rows: v.first().copied().unwrap_or(0.0).round() as usize,
        any_batch: v.get(1).copied().unwrap_or(0.0) > 0.0,
    })
}

/// Gives every trainable parameter without a gradient (a rank that ran no backward, or one
/// whose forward did not reach it) a zero one, so that every rank packs the same buckets.
fn define_missing_grads(store: &ParamStore) -> Result<()> {
    for e in store.entries.iter().filter(|e| e.tensor.requires_grad()) {
        if !e.tensor.grad().defined() {
            // d(0 * sum p)/dp is 0 whatever p holds (NaN included).
            let zero = e.tensor.f_sum(None).and_then(|s| s.f_mul_scalar(0.0));
            zero.and_then(|z| z.f_backward())
                .map_err(Error::torch("a zero gradient for a rank without rows"))?;
        }
    }
    Ok(())
}

/// Replaces every trainable gradient by the sum over the ranks of `weight` (this rank's
/// share of the step's rows) times it, and returns the same weighted sum of `loss`: the
/// global batch's mean loss.
pub fn average_grads_weighted(
    store: &ParamStore,
    sync: &dyn GradSync,
    weight: f64,
    loss: f64,
) -> Result<f64> {
    define_missing_grads(store)?;
    let mut total = Tensor::from_slice(&[if weight == 0.0 { 0.0 } else { loss * weight }]);
    sync.all_reduce(&mut total)?;
    let grads = trainable_grads(store);
    let e = || Error::torch("averaging the gradients across ranks");
    tch::no_grad(|| -> Result<()> {
        for range in buckets(&grads, BUCKET_BYTES) {
            let part = &grads[range];
            let flats: Vec<Tensor> = part.iter().map(|g| g.reshape([-1])).collect();
            let mut flat = Tensor::f_cat(&flats, 0).map_err(e())?;
            // A rank without rows sends zeros even if its stale gradient is not finite.
            if weight == 0.0 {
                let _ = flat.f_zero_().map_err(e())?;
            } else {
                let _ = flat.f_mul_scalar_(weight).map_err(e())?;
            }
            sync.all_reduce(&mut flat)?;
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
    })?;
    total
        .f_double_value(&[0])
        .map_err(Error::torch("the step's loss across ranks"))
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
