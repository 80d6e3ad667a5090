//! `precompute=True`: the body's activations of every item of a split, from the cache file
//! when it was written for the same body, precision, transform and items, else computed
//! (eval mode) and written there. One call does the key, the file's name, the lookup, the
//! computation and the write; the result says which happened and which items were kept.

use std::path::{Path, PathBuf};

use tch::Tensor;

use super::learner::Learner;
use super::rows::{nan_rows, Kept};
use crate::cache::file::{self, Lookup, StaleReason};
use crate::cache::{self, CacheKey, CacheName, ImagesAt, KeyHasher, Precision, Split};
use crate::data::dataset::Items;
use crate::data::loader::DataLoader;
use crate::{Error, Result};

/// Where the cache files go, and the folder the image folders' names are taken relative to
/// (the data's `PATH`).
#[derive(Clone, Copy, Debug)]
pub struct CacheDir<'a> {
    pub dir: &'a Path,
    pub data_path: &'a Path,
}

/// What happened to a split's cache file.
#[derive(Debug)]
pub enum CacheStatus {
    /// Read: it was written for the same body, precision, transform and items.
    Hit,
    /// There was none: computed and written.
    Computed,
    /// It existed but could not be used: computed and written again.
    Recomputed(StaleReason),
    /// Computed, but the file could not be written (the activations are still usable).
    Uncached(Error),
    /// Computed and kept in memory only: the items are made by Python code, whose output no
    /// key can vouch for (the same code may read other files, or draw), so no file is read
    /// or written.
    InMemory,
}

/// A digest of the body that computes the activations and of the precision it runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyKey {
    digest: String,
    precision: Precision,
}

impl BodyKey {
    /// A stable text for the Python layer to tell whether the activations it holds are
    /// still those of the current body.
    pub fn id(&self) -> String {
        match self.precision {
            Precision::Float32 => self.digest.clone(),
            Precision::Bfloat16 => format!("{}|bfloat16", self.digest),
        }
    }
}

/// The activations of one split.
#[derive(Debug)]
pub struct Activations {
    pub split: Split,
    /// One row per item of the split: (n, nf) pooled vectors for fastai's head, (n, C, h, w)
    /// raw maps for a custom head. The rows of left-out items are NaN.
    pub rows: Tensor,
    /// The items a pass could decode (`skip_bad` leaves the others out).
    pub kept: Kept,
    /// The left-out items' paths (`item <i>` for images held in memory), in index order.
    pub left_out_names: Vec<String>,
    pub status: CacheStatus,
    /// The cache file.
    pub path: PathBuf,
    /// The body they were computed with.
    pub body: BodyKey,
}

impl Activations {
    /// What to tell the user about the cache file, when anything.
    pub fn warning(&self) -> Option<String> {
        let path = self.path.display();
        match &self.status {
            CacheStatus::Recomputed(why) => {
                Some(format!("{path}: recomputed the activation cache ({why})"))
            }
            CacheStatus::Uncached(e) => {
                Some(format!("{path}: activations computed but not cached ({e})"))
            }
            CacheStatus::Hit | CacheStatus::Computed | CacheStatus::InMemory => None,
        }
    }
}

impl Learner {
    /// The body's digest: architecture, cut, what it hands the head, every weight.
    pub fn body_key(&self, precision: Precision) -> Result<BodyKey> {
        let net = &self.net;
        let mut h = KeyHasher::default();
        // A cut body, and raw maps (custom head) instead of pooled vectors, are other
        // activations from the same weights.
        let (name, cut) = net.describe_body();
        h.str(&name);
        h.str(&cut);
        let head = net.head_group();
        cache::hash_tensors(
            &mut h,
            net.store()
                .entries
                .iter()
                .filter(|e| e.group != head)
                .map(|e| (e.key.as_str(), &e.tensor)),
        )?;
        Ok(BodyKey {
            digest: h.hex(),
            precision,
        })
    }

    /// The activations of every split, with one digest of the body for all. `known`: the
    /// [`BodyKey::id`] of activations the caller holds; when the body still has it, nothing
    /// is done (`None`). `on_batch(split, batch, batches)` follows the computation (not the
    /// reading of a cache file).
    pub fn precompute_splits(
        &self,
        splits: &[(Split, &DataLoader)],
        dir: CacheDir<'_>,
        precision: Precision,
        known: Option<&str>,
        on_batch: &mut dyn FnMut(Split, usize, usize) -> Result<()>,
    ) -> Result<Option<Vec<Activations>>> {
        let body = self.body_key(precision)?;
        if known == Some(body.id().as_str()) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(splits.len());
        for &(split, dl) in splits {
            let n = dl.len();
            out.push(self.precompute(dl, split, dir, &body, &mut |b| on_batch(split, b, n))?);
        }
        Ok(Some(out))
    }

    /// The activations of `dl`'s items (in dataset order) for `split`: from the cache file
    /// when it fits, else computed and written there.
    pub fn precompute(
        &self,
        dl: &DataLoader,
        split: Split,
        dir: CacheDir<'_>,
        body: &BodyKey,
        on_batch: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Activations> {
        let net = &self.net;
        let conv = net.conv();
        // Raw maps (a custom head's input) rather than pooled vectors.
        let maps = conv.is_some_and(|n| n.has_custom_head());
        if dl.dataset().from_user_code() {
            return self.precompute_in_memory(dl, split, body, on_batch);
        }
        let mut content = KeyHasher::default();
        dl.dataset().hash_content(&mut content)?;
        let key = CacheKey::new(
            &body.digest,
            &dl.pipeline_key(),
            &content.hex(),
            body.precision,
        );
        let (model_name, _) = net.describe_body();
        let name = CacheName {
            split,
            arch: &model_name,
            xtra_cut: conv.map_or(0, |n| n.arch.meta.cut.saturating_sub(n.cut)),
            sz: dl.sz(),
            maps,
            images: match dl.dataset().items() {
                Items::Array(_) | Items::Made(_) | Items::Given(_) => ImagesAt::Memory,
                Items::Files { root, .. } => {
                    ImagesAt::Folder(cache::relative_folder(root, dir.data_path))
                }
            },
            top_folder: match dl.dataset().items() {
                Items::Array(_) | Items::Made(_) | Items::Given(_) => None,
                Items::Files { names, .. } => names.first().and_then(|f| f.split('/').next()),
            },
        };
        let path = dir.dir.join(name.file_name());
        // The shape of one item's activations: the cache stores them flattened.
        let item_shape = match conv {
            Some(n) if !maps => vec![n.nf],
            _ => {
                let sz = dl.sz() as i64;
                net.feature_shape(sz, sz)?[1..].to_vec()
            }
        };
        let cols: i64 = item_shape.iter().product();
        let n = dl.num_items();
        let shaped = |rows: Tensor| -> Result<Tensor> {
            let mut shape = vec![rows.size()[0]];
            shape.extend_from_slice(&item_shape);
            rows.f_reshape(&shape)
                .map_err(Error::torch("shaping the activations"))
        };
        let finish = |rows: Tensor, kept: Kept, status: CacheStatus| -> Result<Activations> {
            Ok(Activations {
                split,
                left_out_names: left_out_names(dl, kept.left_out()),
                rows,
                kept,
                status,
                path: path.clone(),
                body: body.clone(),
            })
        };

        let previous = match file::read(&path, &key) {
            Lookup::Hit(stored) => {
                let (rows, stored_cols) = (stored.rows.size()[0], stored.rows.size()[1]);
                if stored_cols != cols {
                    Some(StaleReason::Shape {
                        cols: stored_cols as u64,
                        expected: cols as u64,
                    })
                } else if rows as usize != n {
                    // The key covers the items, so only a damaged file gets here.
                    Some(StaleReason::KeyChanged)
                } else {
                    let kept = Kept::without(n, stored.left_out)?;
                    return finish(shaped(stored.rows)?, kept, CacheStatus::Hit);
                }
            }
            Lookup::Missing => None,
            Lookup::Stale(why) => Some(why),
        };

        let features = self.features(dl, on_batch)?;
        let kept = Kept::from_skipped(n, &dl.last_skipped())?;
        let rows = if kept.num_kept() == 0 {
            // No batch came out: the features have no shape to spread.
            let mut shape = vec![n as i64];
            shape.extend_from_slice(&item_shape);
            nan_rows(&shape)?
        } else {
            kept.spread(&features)?
        };
        let flat = rows
            .f_reshape([n as i64, cols])
            .map_err(Error::torch("flattening the activations"))?;
        let status = match (file::write(&path, &key, &flat, kept.left_out()), previous) {
            (Err(e), _) => CacheStatus::Uncached(e),
            (Ok(()), Some(why)) => CacheStatus::Recomputed(why),
            (Ok(()), None) => CacheStatus::Computed,
        };
        finish(rows, kept, status)
    }

    /// The activations of a loader of items made by Python code: computed every time, kept
    /// in memory, never written (see [`CacheStatus::InMemory`]).
    fn precompute_in_memory(
        &self,
        dl: &DataLoader,
        split: Split,
        body: &BodyKey,
        on_batch: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Activations> {
        let rows = self.features(dl, on_batch)?;
        let n = dl.num_items();
        Ok(Activations {
            split,
            rows,
            kept: Kept::all(n),
            left_out_names: Vec::new(),
            status: CacheStatus::InMemory,
            path: PathBuf::new(),
            body: body.clone(),
        })
    }
}

/// The names of items `idx` of `dl` for messages: their paths, or `item <i>` in memory.
fn left_out_names(dl: &DataLoader, idx: &[usize]) -> Vec<String> {
    if idx.is_empty() {
        return Vec::new();
    }
    match dl.dataset().items() {
        Items::Array(_) | Items::Made(_) | Items::Given(_) => {
            idx.iter().map(|i| format!("item {i}")).collect()
        }
        Items::Files { root, names } => idx
            .iter()
            .filter_map(|&i| names.get(i))
            .map(|f| root.join(f).display().to_string())
            .collect(),
    }
}
