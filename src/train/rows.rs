//! One row per listed item: which items of a split a pass kept, and the one place that
//! spreads the kept items' rows (activations, predictions) back over every item, NaN for
//! the items `skip_bad` left out, so rows stay in line with the split's files and labels.

use std::path::PathBuf;

use tch::{Device, Kind, Tensor};

use super::batches::targets_tensor;
use crate::data::loader::DataLoader;
use crate::{Error, Result};

/// The items of a split a pass kept: all of them, or all but those left out as undecodable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    n: usize,
    /// Increasing, each below `n`.
    left_out: Vec<usize>,
}

impl Kept {
    pub fn all(n: usize) -> Kept {
        Kept {
            n,
            left_out: Vec::new(),
        }
    }

    /// From the indices left out, in any order, repeats allowed.
    pub fn without(n: usize, left_out: impl IntoIterator<Item = usize>) -> Result<Kept> {
        let mut left_out: Vec<usize> = left_out.into_iter().collect();
        left_out.sort_unstable();
        left_out.dedup();
        if let Some(&i) = left_out.last().filter(|&&i| i >= n) {
            return Err(Error::InvalidArgument(format!(
                "item {i} left out of a split of {n} items"
            )));
        }
        Ok(Kept { n, left_out })
    }

    /// From one bool per item (true: kept).
    pub fn from_mask(mask: &[bool]) -> Kept {
        Kept {
            n: mask.len(),
            left_out: (0..mask.len()).filter(|&i| !mask[i]).collect(),
        }
    }

    /// From what a loader's pass reports as skipped: (dataset index, path).
    pub fn from_skipped(n: usize, skipped: &[(usize, PathBuf)]) -> Result<Kept> {
        Kept::without(n, skipped.iter().map(|(i, _)| *i))
    }

    /// Items in the split.
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn is_all(&self) -> bool {
        self.left_out.is_empty()
    }
    pub fn left_out(&self) -> &[usize] {
        &self.left_out
    }
    pub fn num_kept(&self) -> usize {
        self.n - self.left_out.len()
    }

    /// One bool per item (true: kept).
    pub fn mask(&self) -> Vec<bool> {
        let mut m = vec![true; self.n];
        for &i in &self.left_out {
            m[i] = false;
        }
        m
    }

    /// The kept items' indices, increasing.
    pub fn indices(&self) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.num_kept());
        let mut skip = self.left_out.iter().peekable();
        for i in 0..self.n {
            if skip.peek() == Some(&&i) {
                skip.next();
            } else {
                out.push(i as i64);
            }
        }
        out
    }

    /// The mask as a bool tensor of n values.
    pub fn mask_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.mask())
    }

    /// `rows` (one per kept item, in order) spread over one row per item, the left-out items'
    /// rows filled with NaN (any later use of them shows).
    pub fn spread(&self, rows: &Tensor) -> Result<Tensor> {
        if self.is_all() {
            return Ok(rows.shallow_clone());
        }
        let mut size = rows.size();
        if size.first().copied() != Some(self.num_kept() as i64) {
            return Err(Error::InvalidArgument(format!(
                "{} rows for the {} kept items",
                size.first().copied().unwrap_or(0),
                self.num_kept()
            )));
        }
        size[0] = self.n as i64;
        let e = || Error::torch("placing the kept items' rows");
        let full = Tensor::f_full(&size, f64::NAN, (rows.kind(), rows.device())).map_err(e())?;
        let idx = Tensor::from_slice(&self.indices()).to_device(rows.device());
        full.f_index_copy(0, &idx, rows).map_err(e())
    }

    /// The kept items' rows of `full` (one row per item).
    pub fn select(&self, full: &Tensor) -> Result<Tensor> {
        if self.is_all() {
            return Ok(full.shallow_clone());
        }
        let idx = Tensor::from_slice(&self.indices()).to_device(full.device());
        full.f_index_select(0, &idx)
            .map_err(Error::torch("selecting the kept items' rows"))
    }
}

/// A loader's predictions with one row per item: `outputs` and `targets` of the items its
/// latest pass kept become one row per item (NaN outputs for the left-out ones, whose
/// targets come from the loader's labels), with the kept items.
pub fn one_per_item(
    dl: &DataLoader,
    outputs: Tensor,
    targets: Tensor,
) -> Result<(Tensor, Tensor, Kept)> {
    let n = dl.num_items();
    let kept = Kept::from_skipped(n, &dl.last_skipped())?;
    if kept.is_all() {
        return Ok((outputs, targets, kept));
    }
    let outputs = kept.spread(&outputs)?;
    let targets = targets_tensor(dl.targets().clone(), n)?;
    Ok((outputs, targets, kept))
}

/// A float tensor of `shape`, on the CPU, all NaN (rows for items none of which was kept).
pub fn nan_rows(shape: &[i64]) -> Result<Tensor> {
    Tensor::f_full(shape, f64::NAN, (Kind::Float, Device::Cpu))
        .map_err(Error::torch("allocating activation rows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_puts_rows_back_at_their_items() {
        let kept = Kept::without(5, [3, 1, 3]).unwrap();
        assert_eq!(kept.left_out(), &[1, 3]);
        assert_eq!(kept.indices(), vec![0, 2, 4]);
        assert_eq!(kept.mask(), vec![true, false, true, false, true]);
        let rows = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).view([3, 2]);
        let full = kept.spread(&rows).unwrap();
        let v = Vec::<f32>::try_from(&full.view(-1)).unwrap();
        assert_eq!(&v[..2], &[1., 2.]);
        assert!(v[2].is_nan() && v[3].is_nan() && v[6].is_nan() && v[7].is_nan());
        assert_eq!(&v[4..6], &[3., 4.]);
        assert_eq!(&v[8..], &[5., 6.]);
        assert!(kept.select(&full).unwrap().equal(&rows));
        assert!(Kept::without(2, [2]).is_err());
        assert!(kept.spread(&rows.narrow(0, 0, 2)).is_err());
    }
}
