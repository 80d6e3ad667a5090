//! The batch loader (ffcv-style): a loader serves a shared [`Dataset`] through one pipeline in
//! one order. A background producer thread builds batches in order on a
//! dedicated thread pool and hands them over through a bounded channel, so at most
//! `prefetch + 2` batches exist at any time whatever the dataset size.
//!
//! Each item is decoded, transformed and written straight into its slot of the batch buffer
//! (which becomes the numpy/torch tensor memory without a copy). The order of an epoch comes
//! from (seed, epoch) (`epoch_order`) and each item's augmentation from (seed, epoch, index), so batches do not
//! depend on the number of threads. For files and arrays no Python is involved: workers never
//! touch the GIL.
//!
//! A dataset of items made by user code ([`Items::Made`]) is served the same way (order,
//! batching, prefetch, close), except that each worker asks the dataset's [`ItemMaker`] for its
//! item instead of decoding and transforming; the first item fixes the (C, sz, sz) every other
//! item must have, and the items' labels are collated per batch.
//! A dataset whose images user code gives ([`Items::Given`]: a Python `get_x`) is served by the
//! fused path: the worker asks for the pixels where it would decode a file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use rayon::prelude::*;

use super::dataset::{Dataset, ItemMaker, ItemTarget, Items, MadeItem, Targets, Values};
use super::shard::Shard;
use crate::transforms::{Pipeline, TargetIn, TargetKind, TargetOut};
use crate::util::rng::{epoch_order, Stream};
use crate::{Error, Result};

/// One batch: `x` is `n × c × sz × sz` floats, CHW, row-major (normalised RGB, `c` = 3, on the
/// fused path; whatever channels user code made on the other).
#[derive(Debug)]
pub struct Batch {
    pub x: Vec<f32>,
    pub y: Targets,
    pub n: usize,
    pub c: usize,
    pub sz: usize,
    /// The items of this batch left out as undecodable (`skip_bad`): (dataset index, path).
    pub skipped: Vec<(usize, PathBuf)>,
}

/// Batches produced ahead of the consumer when the caller does not say.
pub const DEFAULT_PREFETCH: usize = 4;

/// How a loader serves its dataset.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// A new order every epoch (`epoch_order`), else dataset order.
    pub shuffle: bool,
    /// Leave out the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Seeds the order and the augmentation draws.
    pub seed: u64,
    /// Batches produced ahead of the consumer.
    pub prefetch: usize,
    /// Skip undecodable files (reported with each batch and by `last_skipped`) instead of
    /// failing the batch.
    pub skip_bad: bool,
    /// The stream the augmentation draws from: `Aug` for training-style passes, `Tta` for the
    /// test-time loaders, so their draws never repeat a training epoch's.
    pub stream: Stream,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 64,
            shuffle: false,
            drop_last: false,
            seed: 0,
            prefetch: DEFAULT_PREFETCH,
            skip_bad: false,
            stream: Stream::Aug,
        }
    }
}

/// The items the latest pass of a loader skipped, tagged with that pass, so a pass that was
/// superseded (a second `iter` before the first ended) cannot write into the newer one's.
#[derive(Default)]
struct LatestPass {
    id: u64,
    skipped: Vec<(usize, PathBuf)>,
}

/// What turns a dataset item into the floats of a batch.
enum Work {
    /// Decode (or read in memory) and run the Rust pipeline.
    Fused(Arc<Pipeline>),
    /// Ask the dataset's [`ItemMaker`]. `sz`: the size the caller's transform promises, when it
    /// says; `shape`: the (C, sz, sz) of the first item made (and that item's index), which
    /// every later item must have.
    Made {
        sz: Option<usize>,
        shape: OnceLock<FirstMade>,
    },
}

/// The shape the first made item had, and which item that was: items are made on several
/// threads, so "first" is a race, and a mismatch names both items rather than blaming one.
#[derive(Clone, Copy)]
struct FirstMade {
    shape: [usize; 3],
    index: usize,
}

struct Inner {
    dataset: Arc<Dataset>,
    work: Work,
    cfg: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    /// Batch buffers handed back by consumers (`recycle`): a fresh 40 MB buffer per batch costs
    /// ~10k page faults, a recycled one none.
    free: Mutex<Vec<Vec<f32>>>,
    /// Batch buffers allocated fresh so far: with a consumer that lets batches go, this stays
    /// at the prefetch bound however many batches pass (tests read it to check the bound).
    fresh: AtomicUsize,
    /// Passes started so far; each `iter` takes the next number.
    passes: AtomicU64,
    /// For consumers that see only the batches (the learner's loops) and must line their
    /// outputs up with the dataset's files and labels.
    latest: Mutex<LatestPass>,
    /// Data-parallel training: the rank's slice of every epoch (see `data::shard`).
    shard: Option<Shard>,
}

/// A loader: one dataset (shared with the split's other loaders), one pipeline, one order.
/// Cheap to clone (shared internals).
#[derive(Clone)]
pub struct DataLoader {
    inner: Arc<Inner>,
}

/// A thread pool of `n` workers for loaders (one pool is usually shared by all six loaders).
pub fn thread_pool(n: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .thread_name(|i| format!("fastai-loader-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::internal(format!("cannot start {n} loader threads: {e}")))
}

impl DataLoader {
    pub fn new(
        dataset: Arc<Dataset>,
        pipeline: Arc<Pipeline>,
        cfg: LoaderConfig,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        if dataset.maker().is_some() {
            return Err(Error::InvalidArgument(
                "items made by Python code are not run through a Rust pipeline".into(),
            ));
        }
        Self::with_work(dataset, Work::Fused(pipeline), cfg, pool)
    }

    /// A loader of items made by user code (`dataset` must be [`Dataset::from_maker`]'s); `sz`:
    /// the size its transform promises (checked on every item), if known.
    pub fn new_made(
        dataset: Arc<Dataset>,
        sz: Option<usize>,
        cfg: LoaderConfig,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        if dataset.maker().is_none() {
            return Err(Error::InvalidArgument(
                "a loader of made items needs a dataset of made items".into(),
            ));
        }
        let work = Work::Made {
            sz,
            shape: OnceLock::new(),
        };
        Self::with_work(dataset, work, cfg, pool)
    }

    fn with_work(
        dataset: Arc<Dataset>,
        work: Work,
        cfg: LoaderConfig,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        Ok(DataLoader {
            inner: Arc::new(Inner {
                dataset,
                work,
                cfg,
                pool,
                free: Mutex::new(Vec::new()),
                fresh: AtomicUsize::new(0),
                passes: AtomicU64::new(0),
                latest: Mutex::new(LatestPass::default()),
                shard: None,
            }),
        })
    }

    /// This loader as rank `shard.rank` of a data-parallel group reads it (same dataset,
    /// pipeline, threads and seed; None: the whole epoch again).
    pub fn sharded(&self, shard: Option<Shard>) -> Self {
        let i = &self.inner;
        let work = match &i.work {
            Work::Fused(p) => Work::Fused(p.clone()),
            Work::Made { sz, shape } => Work::Made {
                sz: *sz,
                shape: shape.clone(),
            },
        };
        DataLoader {
            inner: Arc::new(Inner {
                dataset: i.dataset.clone(),
                work,
                cfg: i.cfg.clone(),
                pool: i.pool.clone(),
                free: Mutex::new(Vec::new()),
                fresh: AtomicUsize::new(0),
                passes: AtomicU64::new(0),
                latest: Mutex::new(LatestPass::default()),
                shard,
            }),
        }
    }

    pub fn shard(&self) -> Option<Shard> {
        self.inner.shard
    }

    /// The batches (dataset indices) of `epoch`, in order.
    fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = self.order(epoch);
        let (bs, drop_last) = (self.batch_size(), self.inner.cfg.drop_last);
        let shard = self.inner.shard.unwrap_or(Shard { rank: 0, world: 1 });
        shard.batches(&order, bs, drop_last)
    }

    /// Batches per epoch: ceil(items / bs), or floor with `drop_last`.
    pub fn len(&self) -> usize {
        let (n, bs) = (self.num_items(), self.inner.cfg.batch_size);
        if let Some(shard) = self.inner.shard {
            return shard.num_batches(n, bs, self.inner.cfg.drop_last);
        }
        if self.inner.cfg.drop_last {
            n / bs
        } else {
            n.div_ceil(bs)
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn num_items(&self) -> usize {
        self.inner.dataset.len()
    }
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.inner.dataset
    }
    pub fn config(&self) -> &LoaderConfig {
        &self.inner.cfg
    }
    pub fn batch_size(&self) -> usize {
        self.inner.cfg.batch_size
    }
    /// The side of the items' squares: the pipeline's, else what the first made item had (or
    /// the promised size; 0 while neither is known).
    pub fn sz(&self) -> usize {
        match &self.inner.work {
            Work::Fused(p) => p.sz(),
            Work::Made { sz, shape } => shape.get().map(|f| f.shape[1]).or(*sz).unwrap_or(0),
        }
    }
    /// The items' channels: 3 on the fused path, else what the first made item had (None
    /// until one was made).
    pub fn channels(&self) -> Option<usize> {
        match &self.inner.work {
            Work::Fused(_) => Some(3),
            Work::Made { shape, .. } => shape.get().map(|f| f.shape[0]),
        }
    }
    /// Whether items are made by user code (no pipeline, no content key).
    pub fn is_made(&self) -> bool {
        matches!(self.inner.work, Work::Made { .. })
    }
    pub fn seed(&self) -> u64 {
        self.inner.cfg.seed
    }
    pub fn shuffle(&self) -> bool {
        self.inner.cfg.shuffle
    }
    /// The Rust pipeline (None when user code makes the items).
    pub fn pipeline(&self) -> Option<&Pipeline> {
        match &self.inner.work {
            Work::Fused(p) => Some(p),
            Work::Made { .. } => None,
        }
    }
    pub fn targets(&self) -> &Targets {
        self.inner.dataset.targets()
    }
    /// Absolute (root-joined) paths in dataset order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.inner.dataset.files()
    }
    /// Stable text describing everything that changes pixel values.
    pub fn pipeline_key(&self) -> String {
        match &self.inner.work {
            Work::Fused(p) => p.key(),
            Work::Made { .. } => "made by Python code".into(),
        }
    }

    /// The dataset order of an epoch: `epoch_order` when shuffling, else identity.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.num_items();
        if self.inner.cfg.shuffle {
            epoch_order(n, self.inner.cfg.seed, epoch)
        } else {
            (0..n).collect()
        }
    }

    /// Decodes item `index` and transforms it with the draws of (`stream`, `epoch`) into
    /// `out` (3·sz·sz); with a pipeline that transforms y, also its y (with the same draws).
    fn fill_item(
        &self,
        index: usize,
        stream: Stream,
        epoch: u64,
        out: &mut [f32],
    ) -> Result<Option<ItemTarget>> {
        let inner = &self.inner;
        let Work::Fused(pipeline) = &inner.work else {
            return Err(Error::internal("fill_item on a loader of made items"));
        };
        // A set without y (a test set) gets its images alone whatever the pipeline does to y.
        let target = pipeline
            .target()
            .filter(|t| inner.dataset.has_target_input(t.kind));
        // Boxes and masks are in the source's own pixels: y needs the full-size decode.
        let min_side = match target {
            None => pipeline.min_source_side(),
            Some(_) => None,
        };
        let given_y = match target {
            Some(t) if t.kind != TargetKind::Coord => Some(inner.dataset.given_target(index)?),
            _ => None,
        };
        let name = |e| crate::transforms::naming_image(&inner.dataset.path(index))(e);
        inner.dataset.with_pixels(index, min_side, |src| {
            let mut rng = stream.rng(inner.cfg.seed, epoch, index as u64);
            let params = pipeline.draw(&mut rng);
            // A panic here is the pipeline's bug, not the file's fault: an error that `skip_bad`
            // does not skip (`build_batch`'s catch-all would call it undecodable).
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pipeline.apply(src, &params, out)?;
                let Some(t) = target else { return Ok(None) };
                let y = match (&given_y, t.kind) {
                    (_, TargetKind::Coord) => TargetIn::Boxes {
                        data: inner.dataset.box_row(index)?,
                        rows: src.rows,
                        cols: src.cols,
                    },
                    (Some(g), _) => {
                        let y = g.as_input()?;
                        check_target_covers_image(&y, src.rows, src.cols).map_err(|why| {
                            Error::InvalidArgument(format!(
                                "{}: {why}",
                                inner.dataset.describe_target_item(index)
                            ))
                        })?;
                        y
                    }
                    (None, _) => return Err(Error::internal("no y for a pipeline that has one")),
                };
                Ok(Some(match pipeline.apply_target(y, &params)? {
                    TargetOut::F32 { data, shape } => ItemTarget::Array {
                        data: Values::F32(data),
                        shape,
                    },
                    TargetOut::I64 { data, shape } => ItemTarget::Array {
                        data: Values::I64(data),
                        shape,
                    },
                }))
            }));
            applied
                .unwrap_or_else(|_| {
                    Err(Error::Pipeline {
                        reason: "the pipeline panicked".into(),
                    })
                })
                .map_err(name)
        })
    }

    /// Hands a batch's `x` back for reuse once the consumer is done with it (optional; the
    /// pool is bounded by the prefetch depth).
    pub fn recycle(&self, x: Vec<f32>) {
        if let Ok(mut free) = self.inner.free.lock() {
            if free.len() < self.inner.cfg.prefetch + 2 {
                free.push(x);
            }
        }
    }

    /// A buffer of `n` floats, recycled when one is available (contents unspecified).
    fn take_buffer(&self, n: usize) -> Vec<f32> {
        let reused = self.inner.free.lock().ok().and_then(|mut f| f.pop());
        match reused {
            Some(mut v) => {
                v.truncate(n);
                v.resize(n, 0.0);
                v
            }
            None => {
                self.inner.fresh.fetch_add(1, Ordering::Relaxed);
                vec![0f32; n]
            }
        }
    }

    /// How many batch buffers were allocated fresh (not recycled) since the loader was made.
    pub fn buffers_allocated(&self) -> usize {
        self.inner.fresh.load(Ordering::Relaxed)
    }

    /// Item `index` transformed (3·sz·sz floats) with the draws of its `access`-th reading
    /// outside the loaders (`ds[i]` in Python), on the dataset-item stream.
    pub fn item(&self, index: usize, access: u64) -> Result<(Vec<f32>, [usize; 3])> {
        if index >= self.num_items() {
            return Err(Error::InvalidArgument(format!(
                "index {index} out of range for a dataset of {} items",
                self.num_items()
            )));
        }
        if let Some(maker) = self.inner.dataset.maker() {
            let maker = maker.clone();
            let item = self
                .inner
                .pool
                .install(|| self.make_checked(&maker, index))?;
            return Ok((item.x, item.shape));
        }
        let sz = self.sz();
        let mut out = vec![0f32; 3 * sz * sz];
        self.inner
            .pool
            .install(|| self.fill_item(index, Stream::DatasetItem, access, &mut out))?;
        Ok((out, [3, sz, sz]))
    }

    /// Item `index` made by user code, its x checked against the first item's shape (and the
    /// promised size); the first item made fixes the shape.
    fn make_checked(&self, maker: &Arc<dyn ItemMaker>, index: usize) -> Result<MadeItem> {
        let Work::Made { sz, shape } = &self.inner.work else {
            return Err(Error::internal("make_checked on a fused loader"));
        };
        // A panic in user-facing glue must become an error, not a dead pool.
        let item = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| maker.make(index)))
            .unwrap_or_else(|_| {
                Err(Error::internal(format!(
                    "{}: making the item panicked",
                    maker.describe(index)
                )))
            })?;
        let s = item.shape;
        if item.x.len() != s.iter().product::<usize>() {
            return Err(Error::internal(format!(
                "{}: {} values for shape {s:?}",
                maker.describe(index),
                item.x.len()
            )));
        }
        if s[1] != s[2] || sz.is_some_and(|want| want != s[1]) || s[0] == 0 || s[1] == 0 {
            let want = match sz {
                Some(w) => format!("(C, {w}, {w})"),
                None => "(C, sz, sz), a square".to_string(),
            };
            return Err(Error::InvalidArgument(format!(
                "{}: the transformed x has shape ({}, {}, {}); expected {want}",
                maker.describe(index),
                s[0],
                s[1],
                s[2]
            )));
        }
        let first = *shape.get_or_init(|| FirstMade { shape: s, index });
        if first.shape != s {
            // In index order, so the message reads the same whichever thread came first.
            let (a, b) = if first.index < index {
                ((first.index, first.shape), (index, s))
            } else {
                ((index, s), (first.index, first.shape))
            };
            let show = |(i, s): (usize, [usize; 3])| {
                format!("{} gives ({}, {}, {})", maker.describe(i), s[0], s[1], s[2])
            };
            return Err(Error::InvalidArgument(format!(
                "the transformed x differs between items: {} but {} (every item must have the \
                 same channels and size)",
                show(a),
                show(b)
            )));
        }
        Ok(item)
    }

    /// The batch of dataset indices `idx`, each item made by user code on the pool, then
    /// copied into one buffer and the labels collated.
    fn build_made_batch(
        &self,
        maker: &Arc<dyn ItemMaker>,
        idx: &[usize],
        stop: &AtomicBool,
    ) -> Result<Batch> {
        let made: Vec<Result<Option<MadeItem>>> = self.inner.pool.install(|| {
            idx.par_iter()
                .map(|&i| {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(None); // the consumer is gone; the batch is thrown away
                    }
                    self.make_checked(maker, i).map(Some)
                })
                .collect()
        });
        let mut items = Vec::with_capacity(idx.len());
        for r in made {
            match r? {
                Some(item) => items.push(item),
                None => return Err(Error::internal("the loader was closed")),
            }
        }
        let [c, sz, _] = items.first().map(|i| i.shape).unwrap_or([0, 0, 0]);
        let per = c * sz * sz;
        let mut x = self.take_buffer(items.len() * per);
        let mut ys = Vec::with_capacity(items.len());
        for (slot, item) in x.chunks_mut(per).zip(items) {
            slot.copy_from_slice(&item.x);
            ys.push(item.y);
        }
        let y = Targets::collate(ys, |k| maker.describe(idx[k]))?;
        Ok(Batch {
            x,
            y,
            n: idx.len(),
            c,
            sz,
            skipped: Vec::new(),
        })
    }

    /// Builds the batch of dataset indices `idx` on the pool. With `skip_bad`, undecodable
    /// items are left out and listed in the batch's `skipped`.
    fn build_batch(&self, idx: &[usize], epoch: u64, stop: &AtomicBool) -> Result<Batch> {
        if let Items::Made(maker) = self.inner.dataset.items() {
            return self.build_made_batch(maker, idx, stop);
        }
        let sz = self.sz();
        let per = 3 * sz * sz;
        let stream = self.inner.cfg.stream;
        let mut x = self.take_buffer(idx.len() * per);
        let results: Vec<Result<Option<ItemTarget>>> = self.inner.pool.install(|| {
            x.par_chunks_mut(per)
                .zip(idx.par_iter())
                .map(|(slot, &i)| {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(None); // the consumer is gone; the batch is thrown away
                    }
                    // A panic in a codec or transform must become an error, not a dead pool.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.fill_item(i, stream, epoch, slot)
                    })) {
                        Ok(r) => r,
                        Err(_) => Err(Error::decode(
                            self.inner.dataset.path(i),
                            "internal error while loading",
                        )),
                    }
                })
                .collect()
        });
        let mut keep: Vec<usize> = Vec::with_capacity(idx.len());
        let mut ys = Vec::new();
        let mut skipped = Vec::new();
        for (k, r) in results.into_iter().enumerate() {
            match r {
                Ok(y) => {
                    keep.push(k);
                    ys.extend(y);
                }
                Err(e) if self.inner.cfg.skip_bad && e.bad_source().is_some() => {
                    if let Some(path) = e.bad_source() {
                        skipped.push((idx[k], path.to_path_buf()));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if keep.len() < idx.len() {
            // Compact the surviving slots to the front, in order.
            for (dst, &src) in keep.iter().enumerate() {
                if dst != src {
                    x.copy_within(src * per..(src + 1) * per, dst * per);
                }
            }
            x.truncate(keep.len() * per);
        }
        let kept: Vec<usize> = keep.iter().map(|&k| idx[k]).collect();
        // Transformed ys, one per kept item, when the pipeline made them.
        let y = if !ys.is_empty() && ys.len() == kept.len() {
            let ds = &self.inner.dataset;
            Targets::collate(ys, |k| ds.path(kept[k]).display().to_string())?
        } else {
            self.inner.dataset.targets().select(&kept)
        };
        Ok(Batch {
            x,
            y,
            n: kept.len(),
            c: 3,
            sz,
            skipped,
        })
    }

    /// The items that the latest pass ([`iter`](Self::iter)) skipped as undecodable so far
    /// (only with `skip_bad`): (dataset index, path), sorted by index.
    pub fn last_skipped(&self) -> Vec<(usize, PathBuf)> {
        let mut v = match self.inner.latest.lock() {
            Ok(latest) => latest.skipped.clone(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Records what pass `id` skipped, unless a newer pass has started since.
    fn note_skipped(&self, id: u64, skipped: &[(usize, PathBuf)]) {
        if let Ok(mut latest) = self.inner.latest.lock() {
            if latest.id == id {
                latest.skipped.extend_from_slice(skipped);
            }
        }
    }

    /// Starts producing the batches of `epoch` in the background.
    pub fn iter(&self, epoch: u64) -> BatchIter {
        let (tx, rx) = sync_channel::<Msg>(self.inner.cfg.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let pass = self.inner.passes.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut latest) = self.inner.latest.lock() {
            *latest = LatestPass {
                id: pass,
                skipped: Vec::new(),
            };
        }
        let me = self.clone();
        let stop2 = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("fastai-loader-producer".into())
            .spawn(move || {
                for chunk in me.epoch_batches(epoch) {
                    if stop2.load(Ordering::Relaxed) {
                        return;
                    }
                    let res = me.build_batch(&chunk, epoch, &stop2);
                    let failed = res.is_err();
                    // Blocks while `prefetch` batches wait; fails at once when the consumer is dropped.
                    if tx.send(Msg::Batch(res)).is_err() {
                        return;
                    }
                    if failed {
                        return; // an error ends the epoch
                    }
                }
                let _ = tx.send(Msg::Done);
            });
        let handle = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                let (tx, rx) = sync_channel::<Msg>(1);
                let _ = tx.send(Msg::Batch(Err(Error::internal(format!(
                    "cannot start the loader thread: {e}"
                )))));
                return BatchIter {
                    rx: Some(rx),
                    stop,
                    handle: None,
                    finished: false,
                    loader: self.clone(),
                    pass,
                    skipped: Vec::new(),
                };
            }
        };
        BatchIter {
            rx: Some(rx),
            stop,
            handle,
            finished: false,
            loader: self.clone(),
            pass,
            skipped: Vec::new(),
        }
    }
}

enum Msg {
    Batch(Result<Batch>),
    Done,
}

/// The batches of one epoch, in order. Yields `Err` once (and then ends) if a batch fails.
/// Dropping it stops the producer promptly.
pub struct BatchIter {
    rx: Option<Receiver<Msg>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    finished: bool,
    loader: DataLoader,
    /// This pass's number (see `LatestPass`).
    pass: u64,
    /// Items skipped as undecodable in the batches received so far.
    skipped: Vec<(usize, PathBuf)>,
}

impl BatchIter {
    /// Items skipped as undecodable so far (only with `skip_bad`): (dataset index, path), in
    /// the order their batches came.
    pub fn skipped(&self) -> &[(usize, PathBuf)] {
        &self.skipped
    }
}

impl Iterator for BatchIter {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.finished {
                return None;
            }
            let rx = self.rx.as_ref()?;
            match rx.recv() {
                Ok(Msg::Batch(Ok(b))) => {
                    if !b.skipped.is_empty() {
                        self.skipped.extend_from_slice(&b.skipped);
                        self.loader.note_skipped(self.pass, &b.skipped);
                    }
                    // A batch that lost every item (all bad) is not yielded empty, except by
                    // a rank's shard: there it keeps its step's place (the ranks step together).
                    if b.n == 0 && self.loader.shard().is_none() {
                        self.loader.recycle(b.x);
                        continue;
                    }
                    return Some(Ok(b));
                }
                Ok(Msg::Batch(Err(e))) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Ok(Msg::Done) => {
                    self.finished = true;
                    return None;
                }
                Err(_) => {
                    // The producer vanished without saying it was done.
                    self.finished = true;
                    return Some(Err(Error::internal(
                        "the loader thread stopped unexpectedly",
                    )));
                }
            }
        }
    }
}

impl BatchIter {
    /// Stops the producer and waits for it (at most the items in flight finish).
    pub fn close(&mut self) {
        self.finished = true;
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver makes a blocked producer's send fail at once.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        self.close();
    }
}

/// A mask or image-like target goes through the image's geometry, so it must cover the same
/// area: the image's size, or a proportional one (a target at another resolution), within a
/// pixel of rounding. Otherwise every crop and rotation would pair pixels that do not belong
/// together, silently (fastai 0.7 did not check).
fn check_target_covers_image(
    y: &TargetIn<'_>,
    rows: usize,
    cols: usize,
) -> std::result::Result<(), String> {
    let TargetIn::Mask {
        rows: ry, cols: cy, ..
    } = *y
    else {
        return Ok(());
    };
    let (hx, wx, hy, wy) = (rows as f64, cols as f64, ry as f64, cy as f64);
    if hx > 0.0 && wx > 0.0 && (hy - wy * hx / wx).abs() <= 1.0 && (wy - hy * wx / hx).abs() <= 1.0
    {
        return Ok(());
    }
    Err(format!(
        "the target is {ry}x{cy} but the image is {rows}x{cols}; a mask must have the image's \
         size (or its shape at another resolution)"
    ))
}
