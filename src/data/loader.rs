//! The batch loader (ffcv-style): a background producer thread builds batches in order on a
//! dedicated thread pool and hands them over through a bounded channel, so at most
//! `prefetch + 2` batches exist at any time whatever the dataset size.
//!
//! Each item is decoded, transformed and written straight into its slot of the batch buffer
//! (which becomes the numpy/torch tensor memory without a copy). The order of an epoch comes
//! from (seed, epoch) and each item's augmentation from (seed, epoch, index), so batches do not
//! depend on the number of threads. No Python is involved: workers never touch the GIL.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::image::decode::decode_file;
use crate::image::resample::f32_bytes;
use crate::transforms::{Pipeline, Src, SrcRef};
use crate::util::rng::{Rng, Stream};
use crate::{Error, Result};

/// One batch: `x` is `n × 3 × sz × sz` normalised floats, CHW, row-major.
#[derive(Debug)]
pub struct Batch {
    pub x: Vec<f32>,
    pub y: Targets,
    pub n: usize,
    pub sz: usize,
}

/// The targets of a batch (or of a whole dataset).
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    Class(Vec<i64>),
    MultiHot { data: Vec<f32>, c: usize },
    Continuous { data: Vec<f32>, dim: usize },
    Unlabelled,
}

impl Targets {
    /// Number of items these targets describe (`None` for unlabelled).
    pub fn len(&self) -> Option<usize> {
        match self {
            Targets::Class(v) => Some(v.len()),
            Targets::MultiHot { data, c } => Some(if *c == 0 { 0 } else { data.len() / c }),
            Targets::Continuous { data, dim } => Some(if *dim == 0 { 0 } else { data.len() / dim }),
            Targets::Unlabelled => None,
        }
    }

    /// Targets of the items at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Targets {
        match self {
            Targets::Class(v) => Targets::Class(idx.iter().map(|&i| v[i]).collect()),
            Targets::MultiHot { data, c } => Targets::MultiHot {
                data: idx
                    .iter()
                    .flat_map(|&i| data[i * c..(i + 1) * c].iter().copied())
                    .collect(),
                c: *c,
            },
            Targets::Continuous { data, dim } => Targets::Continuous {
                data: idx
                    .iter()
                    .flat_map(|&i| data[i * dim..(i + 1) * dim].iter().copied())
                    .collect(),
                dim: *dim,
            },
            Targets::Unlabelled => Targets::Unlabelled,
        }
    }
}

/// How a loader is built; see `DataLoader::new`.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Batches produced ahead of the consumer.
    pub prefetch: usize,
    /// Skip undecodable files (reported by `BatchIter::skipped`) instead of failing the batch.
    pub skip_bad: bool,
}

/// Images held in memory (`ImageClassifierData.from_arrays`): `n` images of `rows × cols × 3`,
/// HWC, either bytes (0-255) or floats in [0, 1], one after the other.
pub struct ImageArray {
    data: ArrayData,
    rows: usize,
    cols: usize,
    /// A digest of the shape and every value: what the activation cache is keyed by, in
    /// place of files' sizes and times.
    digest: String,
}

pub enum ArrayData {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl ImageArray {
    pub fn new(data: ArrayData, rows: usize, cols: usize) -> Self {
        let mut array = ImageArray {
            data,
            rows,
            cols,
            digest: String::new(),
        };
        array.digest = array.compute_digest();
        array
    }
    pub fn len(&self) -> usize {
        let per = (self.rows * self.cols * 3).max(1);
        match &self.data {
            ArrayData::U8(v) => v.len() / per,
            ArrayData::F32(v) => v.len() / per,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn item(&self, i: usize) -> Src<'_> {
        let per = self.rows * self.cols * 3;
        let data = match &self.data {
            ArrayData::U8(v) => SrcRef::U8(&v[i * per..(i + 1) * per]),
            ArrayData::F32(v) => SrcRef::F32(&v[i * per..(i + 1) * per]),
        };
        Src {
            data,
            rows: self.rows,
            cols: self.cols,
        }
    }
    fn compute_digest(&self) -> String {
        let mut h = crate::cache::KeyHasher::default();
        h.str(&format!("array {}x{}x{}", self.len(), self.rows, self.cols));
        match &self.data {
            ArrayData::U8(v) => h.str("u8").bytes(v),
            ArrayData::F32(v) => h.str("f32").bytes(f32_bytes(v)),
        };
        h.hex()
    }
}

struct Inner {
    root: PathBuf,
    files: Vec<String>,
    /// The images themselves when they are in memory (then `files` only names them).
    images: Option<Arc<ImageArray>>,
    targets: Targets,
    pipeline: Arc<Pipeline>,
    cfg: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    /// Batch buffers handed back by consumers (`recycle`): a fresh 40 MB buffer per batch costs
    /// ~10k page faults, a recycled one none.
    free: Mutex<Vec<Vec<f32>>>,
    /// Batch buffers allocated fresh so far: with a consumer that lets batches go, this stays
    /// at the prefetch bound however many batches pass (tests read it to check the bound).
    fresh: AtomicUsize,
    /// The items skipped as undecodable by the latest pass ([`DataLoader::iter`]), for
    /// consumers that see only the batches (the learner's loops) and must line their outputs
    /// up with the dataset's files and labels.
    last_bad: Mutex<Skipped>,
}

/// Items skipped by one pass: (dataset index, path), in the order found.
type Skipped = Arc<Mutex<Vec<(usize, PathBuf)>>>;

/// A loader over one dataset with one pipeline. Cheap to clone (shared internals).
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
        .map_err(|e| Error::InvalidArgument(format!("cannot start {n} loader threads: {e}")))
}

impl DataLoader {
    /// `files` are relative to `root`; `targets` has one entry per file (or is `Unlabelled`).
    pub fn new(
        root: PathBuf,
        files: Vec<String>,
        targets: Targets,
        pipeline: Arc<Pipeline>,
        cfg: LoaderConfig,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        Self::build(root, files, None, targets, pipeline, cfg, pool)
    }

    fn build(
        root: PathBuf,
        files: Vec<String>,
        images: Option<Arc<ImageArray>>,
        targets: Targets,
        pipeline: Arc<Pipeline>,
        cfg: LoaderConfig,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        if let Some(n) = targets.len() {
            if n != files.len() {
                return Err(Error::InvalidArgument(format!(
                    "{} files but {} targets",
                    files.len(),
                    n
                )));
            }
        }
        Ok(DataLoader {
            inner: Arc::new(Inner {
                root,
                files,
                images,
                targets,
                pipeline,
                cfg,
                pool,
                free: Mutex::new(Vec::new()),
                fresh: AtomicUsize::new(0),
                last_bad: Mutex::new(Arc::default()),
            }),
        })
    }

    /// A loader over images held in memory (`from_arrays`); items are named `item <i>` in
    /// errors.
    pub fn from_array(
        images: Arc<ImageArray>,
        targets: Targets,
        pipeline: Arc<Pipeline>,
        cfg: LoaderConfig,
        pool: Arc<rayon::ThreadPool>,
    ) -> Result<Self> {
        if images.rows == 0 || images.cols == 0 {
            return Err(Error::InvalidArgument(
                "from_arrays: images must have a height and a width".into(),
            ));
        }
        let names = (0..images.len()).map(|i| format!("item {i}")).collect();
        Self::build(
            PathBuf::from("<array>"),
            names,
            Some(images),
            targets,
            pipeline,
            cfg,
            pool,
        )
    }

    /// Adds what identifies the items' content to a cache key: each file's path, size and
    /// time, or the digest of images held in memory.
    pub fn hash_content(&self, h: &mut crate::cache::KeyHasher) -> Result<()> {
        match &self.inner.images {
            Some(images) => {
                h.str(&images.digest);
                Ok(())
            }
            None => crate::cache::hash_files(h, self.root(), &self.files()),
        }
    }

    /// Batches per epoch: ceil(items / bs).
    pub fn len(&self) -> usize {
        self.inner.files.len().div_ceil(self.inner.cfg.batch_size)
    }
    pub fn is_empty(&self) -> bool {
        self.inner.files.is_empty()
    }
    pub fn num_items(&self) -> usize {
        self.inner.files.len()
    }
    pub fn batch_size(&self) -> usize {
        self.inner.cfg.batch_size
    }
    pub fn sz(&self) -> usize {
        self.inner.pipeline.sz()
    }
    pub fn seed(&self) -> u64 {
        self.inner.cfg.seed
    }
    pub fn shuffle(&self) -> bool {
        self.inner.cfg.shuffle
    }
    pub fn root(&self) -> &std::path::Path {
        &self.inner.root
    }
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }
    pub fn targets(&self) -> &Targets {
        &self.inner.targets
    }
    pub fn relative_files(&self) -> &[String] {
        &self.inner.files
    }
    /// Absolute (root-joined) paths in dataset order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.inner
            .files
            .iter()
            .map(|f| self.inner.root.join(f))
            .collect()
    }
    /// Stable text describing everything that changes pixel values.
    pub fn pipeline_key(&self) -> String {
        self.inner.pipeline.key()
    }

    /// The dataset order of an epoch: identity, or a permutation from (seed, epoch).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.inner.files.len();
        let mut idx: Vec<usize> = (0..n).collect();
        if self.inner.cfg.shuffle {
            let mut rng = Rng::for_item(self.inner.cfg.seed, Stream::Shuffle, epoch, 0);
            for i in (1..n).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                idx.swap(i, j);
            }
        }
        idx
    }

    /// Decodes and transforms item `index` with the draws of `epoch` into `out` (3·sz·sz).
    pub fn fill_item(&self, index: usize, epoch: u64, out: &mut [f32]) -> Result<()> {
        let inner = &self.inner;
        let path = inner.root.join(&inner.files[index]);
        let decoded;
        let src = match &inner.images {
            Some(images) => images.item(index),
            None => {
                decoded = decode_file(&path)?;
                Src {
                    data: SrcRef::U8(&decoded.data),
                    rows: decoded.height,
                    cols: decoded.width,
                }
            }
        };
        let mut rng = Rng::for_item(inner.cfg.seed, Stream::Aug, epoch, index as u64);
        let params = inner.pipeline.draw(&mut rng);
        // A panic here is the pipeline's bug, not the file's fault: an error that `skip_bad`
        // does not skip (`build_batch`'s catch-all would call it undecodable).
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inner.pipeline.apply(&src, &params, out)
        }));
        applied
            .unwrap_or_else(|_| {
                Err(Error::Pipeline {
                    reason: "the pipeline panicked".into(),
                })
            })
            .map_err(crate::transforms::naming_image(&path))
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

    /// One item, transformed: (3·sz·sz floats, its index).
    pub fn item(&self, index: usize, epoch: u64) -> Result<Vec<f32>> {
        if index >= self.inner.files.len() {
            return Err(Error::InvalidArgument(format!(
                "index {index} out of range for a dataset of {} items",
                self.inner.files.len()
            )));
        }
        let sz = self.sz();
        let mut out = vec![0f32; 3 * sz * sz];
        self.inner
            .pool
            .install(|| self.fill_item(index, epoch, &mut out))?;
        Ok(out)
    }

    /// Builds the batch of dataset indices `idx` on the pool. With `skip_bad`, undecodable
    /// items are left out and their paths pushed to `bad`.
    fn build_batch(
        &self,
        idx: &[usize],
        epoch: u64,
        stop: &AtomicBool,
        bad: &Mutex<Vec<(usize, PathBuf)>>,
    ) -> Result<Batch> {
        let sz = self.sz();
        let per = 3 * sz * sz;
        let mut x = self.take_buffer(idx.len() * per);
        let results: Vec<Result<()>> = self.inner.pool.install(|| {
            x.par_chunks_mut(per)
                .zip(idx.par_iter())
                .map(|(slot, &i)| {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(()); // the consumer is gone; the batch is thrown away
                    }
                    // A panic in a codec or transform must become an error, not a dead pool.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.fill_item(i, epoch, slot)
                    })) {
                        Ok(r) => r,
                        Err(_) => Err(Error::decode(
                            self.inner.root.join(&self.inner.files[i]),
                            "internal error while loading",
                        )),
                    }
                })
                .collect()
        });
        let mut keep: Vec<usize> = Vec::with_capacity(idx.len());
        for (k, r) in results.into_iter().enumerate() {
            match r {
                Ok(()) => keep.push(k),
                Err(e) if self.inner.cfg.skip_bad && e.bad_source().is_some() => {
                    if let (Some(path), Ok(mut b)) = (e.bad_source(), bad.lock()) {
                        b.push((idx[k], path.to_path_buf()));
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
        Ok(Batch {
            x,
            y: self.inner.targets.select(&kept),
            n: kept.len(),
            sz,
        })
    }

    /// The items that the latest pass ([`iter`](Self::iter)) skipped as undecodable so far
    /// (only with `skip_bad`): (dataset index, path), in the order found.
    pub fn last_skipped(&self) -> Vec<(usize, PathBuf)> {
        let Ok(last) = self.inner.last_bad.lock().map(|l| l.clone()) else {
            return Vec::new();
        };
        let skipped = last.lock().map(|b| b.clone()).unwrap_or_default();
        skipped
    }

    /// Starts producing the batches of `epoch` in the background.
    pub fn iter(&self, epoch: u64) -> BatchIter {
        let (tx, rx) = sync_channel::<Msg>(self.inner.cfg.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let bad: Skipped = Arc::new(Mutex::new(Vec::new()));
        if let Ok(mut last) = self.inner.last_bad.lock() {
            *last = bad.clone();
        }
        let me = self.clone();
        let (stop2, bad2) = (stop.clone(), bad.clone());
        let spawned = std::thread::Builder::new()
            .name("fastai-loader-producer".into())
            .spawn(move || {
                let order = me.order(epoch);
                let bs = me.batch_size();
                for chunk in order.chunks(bs) {
                    if stop2.load(Ordering::Relaxed) {
                        return;
                    }
                    let res = me.build_batch(chunk, epoch, &stop2, &bad2);
                    let failed = res.is_err();
                    // Skip batches that lost every item (all bad) rather than yield empty ones.
                    if matches!(&res, Ok(b) if b.n == 0) {
                        continue;
                    }
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
        match spawned {
            Ok(handle) => BatchIter {
                rx: Some(rx),
                stop,
                bad,
                handle: Some(handle),
                finished: false,
            },
            Err(e) => {
                let (tx, rx) = sync_channel::<Msg>(1);
                let _ = tx.send(Msg::Batch(Err(Error::InvalidArgument(format!(
                    "cannot start the loader thread: {e}"
                )))));
                BatchIter {
                    rx: Some(rx),
                    stop,
                    bad,
                    handle: None,
                    finished: false,
                }
            }
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
    bad: Skipped,
    handle: Option<JoinHandle<()>>,
    finished: bool,
}

impl BatchIter {
    /// Files skipped as undecodable so far (only with `skip_bad`).
    pub fn skipped(&self) -> Vec<PathBuf> {
        self.bad
            .lock()
            .map(|b| b.iter().map(|(_, p)| p.clone()).collect())
            .unwrap_or_default()
    }
    /// Whether the epoch has ended (all batches delivered, or an error).
    pub fn finished(&self) -> bool {
        self.finished
    }
}

impl Iterator for BatchIter {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(Msg::Batch(Ok(b))) => Some(Ok(b)),
            Ok(Msg::Batch(Err(e))) => {
                self.finished = true;
                Some(Err(e))
            }
            Ok(Msg::Done) => {
                self.finished = true;
                None
            }
            Err(_) => {
                // The producer vanished without saying it was done.
                self.finished = true;
                Some(Err(Error::InvalidArgument(
                    "the loader thread stopped unexpectedly".into(),
                )))
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
