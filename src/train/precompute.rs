//! `precompute=True`: the body's activations of every item of a split, from the cache file
//! when it was written for the same body, precision, transform and items, else computed
//! (eval mode) and written there. One call does the key, the file's name, the lookup, the
//! computation and the write; the result says which happened and which items were kept.
//!
//! In a data-parallel group every rank takes the same path through here: each reads the
//! cache file, and it is used only when every rank found it valid (a rank on another node,
//! without the file, makes all compute rather than leave one computing alone); otherwise each
//! rank computes the rows of its shard of the split (the fixed loader cut as `data::shard`
//! cuts a training epoch), the rows are summed across the ranks into one tensor, rank 0
//! writes the file the single-process path would write, and every rank returns the same rows.

use std::path::{Path, PathBuf};

use tch::Tensor;

use super::distributed::GradSync;
use super::learner::{BatchSource, Learner};
use super::rows::{nan_rows, Kept};
use crate::cache::file::{self, Lookup, StaleReason};
use crate::cache::{self, CacheKey, CacheName, ImagesAt, KeyHasher, Precision, Split};
use crate::data::dataset::Items;
use crate::data::loader::DataLoader;
use crate::data::shard::Shard;
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
    /// Computed by the ranks of a data-parallel group together; rank 0 wrote the file (this
    /// is what the other ranks see).
    Gathered,
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
    /// The rows this process ran through the body (0 when the file was read; in a group,
    /// about 1/N of the split).
    pub computed_rows: usize,
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
            CacheStatus::Hit
            | CacheStatus::Computed
            | CacheStatus::InMemory
            | CacheStatus::Gathered => None,
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
    /// reading of a cache file). `group`: the data-parallel group every rank calls this in
    /// (see the module's doc).
    pub fn precompute_splits(
        &self,
        splits: &[(Split, &DataLoader)],
        dir: CacheDir<'_>,
        precision: Precision,
        known: Option<&str>,
        group: Option<&dyn GradSync>,
        on_batch: &mut dyn FnMut(Split, usize, usize) -> Result<()>,
    ) -> Result<Option<Vec<Activations>>> {
        let body = self.body_key(precision)?;
        let current = known == Some(body.id().as_str());
        // Ranks whose bodies differ (not loaded from one file) would otherwise part ways here.
        if all_ranks(group, current)? {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(splits.len());
        for &(split, dl) in splits {
            // The batches this process computes: the shard's in a group.
            let n = match group.map(|g| Shard::new(g.rank(), g.world())).transpose()? {
                Some(p) => p.num_batches(dl.num_items(), dl.batch_size(), dl.config().drop_last),
                None => dl.len(),
            };
            let mut hook = |b| on_batch(split, b, n);
            out.push(self.precompute_in(dl, split, dir, &body, group, &mut hook)?);
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
        self.precompute_in(dl, split, dir, body, None, on_batch)
    }

    /// [`precompute`](Self::precompute) as one rank of `group` (None: alone).
    pub fn precompute_in(
        &self,
        dl: &DataLoader,
        split: Split,
        dir: CacheDir<'_>,
        body: &BodyKey,
        group: Option<&dyn GradSync>,
        on_batch: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Activations> {
        let net = &self.net;
        let conv = net.conv();
        // Raw maps (a custom head's input) rather than pooled vectors.
        let maps = conv.is_some_and(|n| n.has_custom_head());
        if dl.dataset().from_user_code() {
            return self.precompute_in_memory(dl, split, body, group, on_batch);
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
        let finish = |rows: Tensor, kept: Kept, status: CacheStatus, computed_rows: usize| {
            Ok(Activations {
                split,
                left_out_names: left_out_names(dl, kept.left_out()),
                rows,
                kept,
                status,
                path: path.clone(),
                body: body.clone(),
                computed_rows,
            })
        };

        let (previous, stored) = match file::read(&path, &key) {
            Lookup::Hit(stored) => {
                let (rows, stored_cols) = (stored.rows.size()[0], stored.rows.size()[1]);
                if stored_cols != cols {
                    let why = StaleReason::Shape {
                        cols: stored_cols as u64,
                        expected: cols as u64,
                    };
                    (Some(why), None)
                } else if rows as usize != n {
                    // The key covers the items, so only a damaged file gets here.
                    (Some(StaleReason::KeyChanged), None)
                } else {
                    (None, Some(stored))
                }
            }
            Lookup::Missing => (None, None),
            Lookup::Stale(why) => (Some(why), None),
        };
        if all_ranks(group, stored.is_some())? {
            if let Some(stored) = stored {
                let kept = Kept::without(n, stored.left_out)?;
                return finish(shaped(stored.rows)?, kept, CacheStatus::Hit, 0);
            }
        }

        let (rows, kept, computed_rows) = self.compute_rows(dl, &item_shape, group, on_batch)?;
        if group.is_some_and(|g| g.rank() != 0) {
            return finish(rows, kept, CacheStatus::Gathered, computed_rows);
        }
        let flat = rows
            .f_reshape([n as i64, cols])
            .map_err(Error::torch("flattening the activations"))?;
        let status = match (file::write(&path, &key, &flat, kept.left_out()), previous) {
            (Err(e), _) => CacheStatus::Uncached(e),
            (Ok(()), Some(why)) => CacheStatus::Recomputed(why),
            (Ok(()), None) => CacheStatus::Computed,
        };
        finish(rows, kept, status, computed_rows)
    }

    /// One row per item of `dl` (NaN for the items `skip_bad` left out), the items kept, and
    /// how many rows this process computed: all of them alone; in a group, those of its shard,
    /// summed with the other ranks' (see [`gather_rows`]).
    fn compute_rows(
        &self,
        dl: &DataLoader,
        item_shape: &[i64],
        group: Option<&dyn GradSync>,
        on_batch: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<(Tensor, Kept, usize)> {
        let n = dl.num_items();
        let Some(g) = group else {
            let features = self.features(dl, on_batch)?;
            let kept = Kept::from_skipped(n, &dl.last_skipped())?;
            let rows = if kept.num_kept() == 0 {
                // No batch came out: the features have no shape to spread.
                let mut shape = vec![n as i64];
                shape.extend_from_slice(item_shape);
                nan_rows(&shape)?
            } else {
                kept.spread(&features)?
            };
            return Ok((rows, kept, features.size()[0] as usize));
        };
        let shard = Shard::new(g.rank(), g.world())?;
        let part = dl.sharded(Some(shard));
        let features = self.features(&NonEmpty(&part), on_batch)?;
        // The dataset indices of the rows, in the order the shard's batches yield them.
        let skipped: std::collections::HashSet<usize> =
            part.last_skipped().into_iter().map(|(i, _)| i).collect();
        let order = part.order(0);
        let indices: Vec<usize> = shard
            .batches(&order, part.batch_size(), part.config().drop_last)
            .into_iter()
            .flatten()
            .filter(|i| !skipped.contains(i))
            .collect();
        let computed = features.size()[0] as usize;
        if computed != indices.len() {
            return Err(Error::internal(format!(
                "precompute: {computed} rows for the shard's {} items",
                indices.len()
            )));
        }
        let (rows, kept) = gather_rows(g, n, item_shape, &features, &indices)?;
        Ok((rows, kept, computed))
    }

    /// The activations of a loader of items made by Python code: computed every time, kept
    /// in memory, never written (see [`CacheStatus::InMemory`]).
    fn precompute_in_memory(
        &self,
        dl: &DataLoader,
        split: Split,
        body: &BodyKey,
        group: Option<&dyn GradSync>,
        on_batch: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Activations> {
        let n = dl.num_items();
        let (rows, computed_rows) = match group {
            None => {
                let rows = self.features(dl, on_batch)?;
                let c = rows.size()[0] as usize;
                (rows, c)
            }
            Some(_) => {
                // The items' shape is known once one is made: the shard's first batch.
                let shape = match dl.sz() {
                    0 => None,
                    sz => Some(self.net.feature_shape(sz as i64, sz as i64)?),
                };
                let item_shape: Vec<i64> =
                    match (self.net.conv(), shape) {
                        (Some(c), _) if !c.has_custom_head() => vec![c.nf],
                        (_, Some(s)) => s[1..].to_vec(),
                        _ => return Err(Error::InvalidArgument(
                            "precompute in a data-parallel group: the items' size is not known \
                             before the first is made"
                                .into(),
                        )),
                    };
                let (rows, _, c) = self.compute_rows(dl, &item_shape, group, on_batch)?;
                (rows, c)
            }
        };
        Ok(Activations {
            split,
            rows,
            kept: Kept::all(n),
            left_out_names: Vec::new(),
            status: CacheStatus::InMemory,
            path: PathBuf::new(),
            body: body.clone(),
            computed_rows,
        })
    }
}

/// A shard's batches without the empty ones (every item undecodable), which a sharded loader
/// yields to keep the training steps in line and the body need not see.
struct NonEmpty<'a>(&'a DataLoader);

impl BatchSource for NonEmpty<'_> {
    fn num_batches(&self) -> usize {
        self.0.len()
    }
    fn batches<'a>(
        &'a self,
        epoch: u64,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a> {
        Box::new(
            self.0
                .batches(epoch)
                .filter(|b| b.as_ref().map_or(true, |(x, _)| x.size()[0] > 0)),
        )
    }
}

/// Whether `yes` holds on every rank of `group` (alone: `yes`).
fn all_ranks(group: Option<&dyn GradSync>, yes: bool) -> Result<bool> {
    let Some(g) = group else {
        return Ok(yes);
    };
    let mut no = Tensor::from_slice(&[f64::from(u8::from(!yes))]);
    g.all_reduce(&mut no)?;
    Ok(no.double_value(&[0]) == 0.0)
}

/// The rows of every rank's shard in one tensor of `n` rows on every rank: each rank places
/// its `rows` (of dataset items `indices`) in a zero tensor and counts them per item; both
/// are summed across the ranks (in slices of at most [`GATHER_BYTES`]). An item counted more
/// than once (the shards' padding repeats the first items) is divided by its count; one
/// counted by no rank was left out everywhere (`skip_bad`) and gets a NaN row.
fn gather_rows(
    g: &dyn GradSync,
    n: usize,
    item_shape: &[i64],
    rows: &Tensor,
    indices: &[usize],
) -> Result<(Tensor, Kept)> {
    let e = || Error::torch("gathering the activations across ranks");
    let cols: i64 = item_shape.iter().product();
    let mut sum =
        Tensor::f_zeros([n as i64, cols], (tch::Kind::Float, tch::Device::Cpu)).map_err(e())?;
    let mut count =
        Tensor::f_zeros([n as i64], (tch::Kind::Float, tch::Device::Cpu)).map_err(e())?;
    if !indices.is_empty() {
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let idx = Tensor::from_slice(&idx);
        let flat = rows.f_reshape([indices.len() as i64, cols]).map_err(e())?;
        sum = sum.f_index_add(0, &idx, &flat).map_err(e())?;
        let ones = Tensor::f_ones([indices.len() as i64], (tch::Kind::Float, tch::Device::Cpu))
            .map_err(e())?;
        count = count.f_index_add(0, &idx, &ones).map_err(e())?;
    }
    let step = (GATHER_BYTES / (4 * cols.max(1) as usize)).max(1) as i64;
    let mut at = 0i64;
    while at < n as i64 {
        let len = step.min(n as i64 - at);
        let mut part = sum.f_narrow(0, at, len).map_err(e())?;
        g.all_reduce(&mut part)?;
        at += len;
    }
    g.all_reduce(&mut count)?;
    let counts = Vec::<f32>::try_from(&count).map_err(e())?;
    let kept = Kept::from_mask(&counts.iter().map(|&c| c > 0.0).collect::<Vec<_>>());
    let nan = Tensor::from_slice(&[f32::NAN]);
    // 1 where no rank computed the item: 0/1 would be 0, the NaN comes from the `where`.
    let divisor = count
        .f_clamp_min(1.0)
        .map_err(e())?
        .f_unsqueeze(1)
        .map_err(e())?;
    let mean = sum.f_div(&divisor).map_err(e())?;
    let keep = count.f_gt(0.0).map_err(e())?.f_unsqueeze(1).map_err(e())?;
    let full = mean.f_where_self(&keep, &nan).map_err(e())?;
    let mut shape = vec![n as i64];
    shape.extend_from_slice(item_shape);
    Ok((full.f_reshape(&shape).map_err(e())?, kept))
}

/// The most bytes of activations one collective carries when they are gathered.
const GATHER_BYTES: usize = 64 << 20;

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
