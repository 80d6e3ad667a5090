//! Python bindings of the data side: folder/CSV scanning, decoding, datasets and the batch
//! loader (the pipeline a loader runs is built in transforms.rs). Arguments are turned into
//! owned Rust values first; the work then runs without the GIL (`run_detached`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use numpy::ndarray::{Array3, Array4};
use numpy::PyArray1;
use pyo3::exceptions::{PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

use super::convert::{
    array_shape, given_pixels, made_x, made_y, pixels_from_py, targets_to_py, IntoPyArrayAny,
    TargetKind,
};
use super::errors::from_pyerr;
use super::transforms::PyPipeline;
use super::{run_detached, to_pyerr};
use crate::data::dataset::{
    Dataset, GivenPixels, GivenTarget, ImageArray, ItemMaker, MadeItem, PixelSource, TargetSource,
};
use crate::data::folder;
use crate::data::loader::{thread_pool, BatchIter, DataLoader, LoaderConfig, DEFAULT_PREFETCH};
use crate::data::shard::Shard;
use crate::util::rng::Stream;

// ---------------------------------------------------------------------------------------------
// Loader

/// Worker threads shared by the loaders of one data object.
#[pyclass(name = "ThreadPool", module = "fastai._native", frozen)]
pub struct PyThreadPool {
    pub inner: Arc<rayon::ThreadPool>,
    pub n: usize,
}

#[pymethods]
impl PyThreadPool {
    #[new]
    fn new(n: usize) -> PyResult<Self> {
        Ok(PyThreadPool {
            inner: thread_pool(n).map_err(super::to_pyerr)?,
            n: n.max(1),
        })
    }
    #[getter]
    fn num_threads(&self) -> usize {
        self.n
    }
}

/// Items made by a Python callable: `func(i)` returns `(x, y)` as a dataset's `__getitem__`
/// does. The GIL is taken only inside `make`, on the loader's worker threads; every wait of
/// the main thread on a batch runs without it (`run_detached`), so the two never deadlock.
struct PyMaker {
    func: PyObject,
    n: usize,
    /// The dataset's class, for messages.
    name: String,
    /// Each item's file, for messages, when the dataset has files.
    files: Option<Vec<String>>,
}

impl ItemMaker for PyMaker {
    fn len(&self) -> usize {
        self.n
    }

    fn make(&self, index: usize) -> crate::Result<MadeItem> {
        Python::with_gil(|py| {
            let who = || self.describe(index);
            let out = self.func.bind(py).call1((index,)).map_err(from_pyerr)?;
            let (x, y): (Bound<'_, PyAny>, Bound<'_, PyAny>) = out.extract().map_err(|_| {
                crate::Error::InvalidArgument(format!("{}: the item is not an (x, y) pair", who()))
            })?;
            let (x, shape) = made_x(&x, &who()).map_err(from_pyerr)?;
            let y = made_y(&y, &who()).map_err(from_pyerr)?;
            Ok(MadeItem { x, shape, y })
        })
    }

    fn describe(&self, index: usize) -> String {
        describe_item(&self.name, self.files.as_deref(), index)
    }
}

/// How messages name item `index` of a Python dataset: its class, the index, its file.
fn describe_item(name: &str, files: Option<&[String]>, index: usize) -> String {
    match files.and_then(|f| f.get(index)) {
        Some(f) => format!("{name} item {index} ({f})"),
        None => format!("{name} item {index}"),
    }
}

/// Images given by a Python callable, a dataset's own `get_x`: `func(i)` returns item i's
/// (H, W, 3) array, which the fused pipeline then transforms. As for [`PyMaker`], the GIL is
/// taken only inside `pixels`, on the loader's worker threads, while every wait of the main
/// thread runs without it.
struct PySource {
    func: PyObject,
    n: usize,
    name: String,
    files: Option<Vec<String>>,
}

impl PixelSource for PySource {
    fn len(&self) -> usize {
        self.n
    }

    fn pixels(&self, index: usize) -> crate::Result<GivenPixels> {
        Python::with_gil(|py| {
            let x = self.func.bind(py).call1((index,)).map_err(from_pyerr)?;
            given_pixels(&x, &self.describe(index)).map_err(from_pyerr)
        })
    }

    fn describe(&self, index: usize) -> String {
        describe_item(&self.name, self.files.as_deref(), index)
    }
}

/// Targets given by a Python callable, a dataset's own `get_y` (masks, image-like targets):
/// `func(i)` returns item i's y array, which the pipeline transforms with the image's draws.
/// The GIL is taken only here, on the loader's worker threads.
struct PyTargets {
    func: PyObject,
    name: String,
    files: Option<Vec<String>>,
}

impl TargetSource for PyTargets {
    fn target(&self, index: usize) -> crate::Result<GivenTarget> {
        Python::with_gil(|py| {
            let y = self.func.bind(py).call1((index,)).map_err(from_pyerr)?;
            let (data, shape) = super::transforms::target_from_py(&y).map_err(|e| {
                let what = describe_item(&self.name, self.files.as_deref(), index);
                from_pyerr(PyValueError::new_err(format!("{what}: get_y: {e}")))
            })?;
            Ok(GivenTarget { data, shape })
        })
    }

    fn describe(&self, index: usize) -> String {
        describe_item(&self.name, self.files.as_deref(), index)
    }
}

/// The items of one split and their labels, made once and shared by the split's loaders.
#[pyclass(name = "Dataset", module = "fastai._native", frozen)]
pub struct PyDataset {
    pub inner: Arc<Dataset>,
    /// `y` as numpy, built on first use and then the same array for every reader.
    y: GILOnceCell<PyObject>,
}

impl PyDataset {
    fn wrap(inner: Dataset) -> Self {
        PyDataset {
            inner: Arc::new(inner),
            y: GILOnceCell::new(),
        }
    }
}

#[pymethods]
impl PyDataset {
    /// Files `names` under `root`, labelled by `y`: int64 class indices (`kind='class'`),
    /// float32 rows (`'multihot'`, `'continuous'`), or none (`'none'`). `get_y(i)`, when
    /// given, returns item i's y (a mask or an image) for a pipeline that transforms it; `name`
    /// names the dataset in its errors.
    #[staticmethod]
    #[pyo3(signature = (root, names, kind=TargetKind::Unlabelled, y=None, get_y=None, name=None))]
    fn from_files(
        root: PathBuf,
        names: Vec<String>,
        kind: TargetKind,
        y: Option<&Bound<'_, PyAny>>,
        get_y: Option<PyObject>,
        name: Option<String>,
    ) -> PyResult<Self> {
        let targets = kind.targets(y, names.len())?;
        let files: Vec<String> = names
            .iter()
            .map(|n| root.join(n).display().to_string())
            .collect();
        let mut ds = Dataset::from_files(root, names, targets).map_err(super::to_pyerr)?;
        if let Some(func) = get_y {
            ds = ds.with_target_source(Arc::new(PyTargets {
                func,
                name: name.unwrap_or_else(|| "dataset".into()),
                files: Some(files),
            }));
        }
        Ok(Self::wrap(ds))
    }

    /// Images held in memory (`from_arrays`): (N, H, W, 3), uint8 (0-255) or float32 (0-1),
    /// copied once into Rust memory; labels as in `from_files`.
    #[staticmethod]
    #[pyo3(signature = (images, kind=TargetKind::Unlabelled, y=None))]
    fn from_images(
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        kind: TargetKind,
        y: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let shape = array_shape(images)?;
        if shape.len() != 4 || shape[3] != 3 {
            return Err(PyValueError::new_err(format!(
                "from_arrays: images must be an (N, H, W, 3) array, got shape {shape:?}"
            )));
        }
        let targets = kind.targets(y, shape[0])?;
        let data = pixels_from_py(images, "from_arrays: images")?;
        let (rows, cols) = (shape[1], shape[2]);
        // The digest reads every value: without the GIL.
        let ds = run_detached(py, move || {
            Dataset::from_array(ImageArray::new(data, rows, cols), targets)
        })?;
        Ok(Self::wrap(ds))
    }

    /// Items made by Python: `func(i) -> (x, y)`, x float32 (C, sz, sz), y None, an int class
    /// index, or an int64 / float32 numpy array; `name` (the dataset's class) and `files` (one
    /// per item) name an item in messages.
    #[staticmethod]
    #[pyo3(signature = (func, n, name, files=None))]
    fn from_python(func: PyObject, n: usize, name: String, files: Option<Vec<String>>) -> Self {
        let maker = PyMaker {
            func,
            n,
            name,
            files,
        };
        Self::wrap(Dataset::from_maker(Arc::new(maker)))
    }

    /// Images given by Python, `get_x(i)` -> (H, W, 3) uint8 (0-255) or float32 (0-1), run
    /// through the loaders' fused pipeline; labels as in `from_files` (held here, never asked
    /// of Python); `name` and `files` name an item in messages.
    #[staticmethod]
    #[pyo3(signature = (get_x, n, name, files=None, kind=TargetKind::Unlabelled, y=None))]
    fn from_get_x(
        get_x: PyObject,
        n: usize,
        name: String,
        files: Option<Vec<String>>,
        kind: TargetKind,
        y: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let targets = kind.targets(y, n)?;
        let source = PySource {
            func: get_x,
            n,
            name,
            files,
        };
        let ds = Dataset::from_pixel_source(Arc::new(source), targets).map_err(super::to_pyerr)?;
        Ok(Self::wrap(ds))
    }

    /// Whether the images come from Python code (a dataset's `get_x`) into the fused pipeline.
    #[getter]
    fn python_pixels(&self) -> bool {
        matches!(self.inner.items(), crate::data::dataset::Items::Given(_))
    }

    /// Whether the items are made by Python code.
    #[getter]
    fn is_python(&self) -> bool {
        self.inner.maker().is_some()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// The labels: int64 (n,) class indices, float32 (n, k) rows, or float32 zeros (n,) when
    /// unlabelled.
    #[getter]
    fn y(&self, py: Python<'_>) -> PyResult<PyObject> {
        self.y
            .get_or_try_init(py, || {
                targets_to_py(py, self.inner.targets().clone(), self.inner.len())
                    .map(|a| a.unbind())
            })
            .map(|y| y.clone_ref(py))
    }
}

#[pyclass(name = "DataLoader", module = "fastai._native", frozen)]
pub struct PyDataLoader {
    pub inner: DataLoader,
    dataset: Py<PyDataset>,
    pipeline: Option<Py<PyPipeline>>,
}

#[pymethods]
impl PyDataLoader {
    /// A loader over `dataset` through `pipeline` (shared, not copied), on `pool`'s threads. With `tta`,
    /// the augmentation draws from the test-time stream (the `aug_dl` loaders). A dataset of
    /// items made by Python takes no pipeline; `sz` is then the size its transform promises.
    #[new]
    #[pyo3(signature = (dataset, pipeline, pool, *, bs, shuffle=false, seed=0, prefetch=DEFAULT_PREFETCH, skip_bad=false, drop_last=false, tta=false, sz=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        dataset: Py<PyDataset>,
        pipeline: Option<Py<PyPipeline>>,
        pool: &PyThreadPool,
        bs: usize,
        shuffle: bool,
        seed: u64,
        prefetch: usize,
        skip_bad: bool,
        drop_last: bool,
        tta: bool,
        sz: Option<usize>,
    ) -> PyResult<Self> {
        let cfg = LoaderConfig {
            batch_size: bs,
            shuffle,
            drop_last,
            seed,
            prefetch,
            skip_bad,
            stream: if tta { Stream::Tta } else { Stream::Aug },
        };
        let ds = dataset.get().inner.clone();
        let inner = match (&pipeline, ds.maker().is_some()) {
            (None, true) => DataLoader::new_made(ds, sz, cfg, pool.inner.clone()),
            (Some(p), false) => {
                DataLoader::new(ds, p.bind(py).get().inner.clone(), cfg, pool.inner.clone())
            }
            (Some(_), true) => Err(crate::Error::InvalidArgument(
                "a dataset of items made by Python takes no pipeline".into(),
            )),
            (None, false) => Err(crate::Error::InvalidArgument(
                "a dataset of files or arrays needs a pipeline".into(),
            )),
        }
        .map_err(super::to_pyerr)?;
        Ok(PyDataLoader {
            inner,
            dataset,
            pipeline,
        })
    }

    /// The dataset this loader serves (shared with the split's other loaders).
    #[getter]
    fn dataset(&self, py: Python<'_>) -> Py<PyDataset> {
        self.dataset.clone_ref(py)
    }

    /// The pipeline this loader runs (the same object as its `Transforms`' other loaders'),
    /// None when Python makes the items.
    #[getter]
    fn pipeline(&self, py: Python<'_>) -> Option<Py<PyPipeline>> {
        self.pipeline.as_ref().map(|p| p.clone_ref(py))
    }
    /// The items' channel count: 3 on the fused path, else the first made item's (None until
    /// one was made).
    #[getter]
    fn channels(&self) -> Option<usize> {
        self.inner.channels()
    }

    /// (dataset index, path) of the items that the loader's latest pass skipped as
    /// undecodable (with skip_bad), sorted by index: the learner lines its outputs up with them.
    fn last_skipped(&self) -> Vec<(usize, PathBuf)> {
        self.inner.last_skipped()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
    #[getter]
    fn num_items(&self) -> usize {
        self.inner.num_items()
    }
    #[getter]
    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }
    #[getter]
    fn sz(&self) -> usize {
        self.inner.sz()
    }
    #[getter]
    fn seed(&self) -> u64 {
        self.inner.seed()
    }
    #[getter]
    fn shuffle(&self) -> bool {
        self.inner.shuffle()
    }
    /// Batch buffers allocated fresh (not recycled) so far.
    #[getter]
    fn buffers_allocated(&self) -> usize {
        self.inner.buffers_allocated()
    }
    /// Dataset indices in the order epoch `epoch` visits them.
    fn order<'py>(&self, py: Python<'py>, epoch: u64) -> Bound<'py, PyArray1<i64>> {
        let o: Vec<i64> = self
            .inner
            .order(epoch)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        PyArray1::from_vec(py, o)
    }
    /// Item `index` transformed with the draws of its `access`-th reading (`ds[i]`): float32
    /// (C, sz, sz).
    fn item<'py>(&self, py: Python<'py>, index: usize, access: u64) -> PyResult<Bound<'py, PyAny>> {
        let dl = self.inner.clone();
        let (v, [c, h, w]) = run_detached(py, move || dl.item(index, access))?;
        let a = Array3::from_shape_vec((c, h, w), v)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(a.into_pyarray_any(py))
    }
    /// This loader as rank `rank` of `world` reads it in a data-parallel fit: its slice of
    /// every global batch of bs × world rows (same dataset, pipeline, threads and seed).
    fn sharded(&self, py: Python<'_>, rank: usize, world: usize) -> PyResult<Self> {
        let shard = Shard::new(rank, world).map_err(super::to_pyerr)?;
        Ok(PyDataLoader {
            inner: self.inner.sharded(Some(shard)),
            dataset: self.dataset.clone_ref(py),
            pipeline: self.pipeline.as_ref().map(|p| p.clone_ref(py)),
        })
    }
    /// (rank, world) of a loader made by `sharded`, else None.
    #[getter]
    fn shard(&self) -> Option<(usize, usize)> {
        self.inner.shard().map(|s| (s.rank, s.world))
    }
    /// The batches of `epoch`, produced in the background.
    fn iter_epoch(&self, epoch: u64) -> PyBatchIter {
        PyBatchIter {
            inner: Mutex::new(self.inner.iter(epoch)),
            loader: self.inner.clone(),
        }
    }
}

#[pyclass(name = "BatchIter", module = "fastai._native")]
pub struct PyBatchIter {
    inner: Mutex<BatchIter>,
    loader: DataLoader,
}

/// Owns a batch's pixels while numpy/torch use them; gives the buffer back to the loader when
/// the last array viewing it is freed, so steady-state batches reuse memory.
#[pyclass(name = "BatchMemory", module = "fastai._native", frozen)]
pub struct PyBatchMemory {
    x: Option<Array4<f32>>,
    loader: DataLoader,
}

impl Drop for PyBatchMemory {
    fn drop(&mut self) {
        if let Some(x) = self.x.take() {
            let (v, _) = x.into_raw_vec_and_offset();
            self.loader.recycle(v);
        }
    }
}

fn batch_x_to_py<'py>(
    py: Python<'py>,
    x: Array4<f32>,
    loader: &DataLoader,
) -> PyResult<Bound<'py, PyAny>> {
    let owner = Bound::new(
        py,
        PyBatchMemory {
            x: Some(x),
            loader: loader.clone(),
        },
    )?;
    let arr = match &owner.get().x {
        // SAFETY: `owner` becomes the array's base object, so the buffer lives as long as the
        // array; it is never modified or reallocated while owned (the class is frozen and
        // `x` is only taken in Drop, after the last reference is gone).
        Some(a) => unsafe { numpy::PyArray4::borrow_from_array(a, owner.clone().into_any()) },
        None => return Err(PyValueError::new_err("batch memory already released")),
    };
    Ok(arr.into_any())
}

/// An iterator freed without `close` (garbage-collected with the GIL held) stops its producer
/// without the GIL: the producer's workers may be waiting for it to make Python items, and
/// joining them while holding it would never end.
impl Drop for PyBatchIter {
    fn drop(&mut self) {
        if let Ok(it) = self.inner.get_mut() {
            Python::with_gil(|py| {
                let _ = run_detached(py, || {
                    it.close();
                    Ok(())
                });
            });
        }
    }
}

impl PyBatchIter {
    fn lock(&self) -> PyResult<MutexGuard<'_, BatchIter>> {
        self.inner.lock().map_err(|_| {
            to_pyerr(crate::Error::internal(
                "the batch iterator was left inconsistent by a panic in an earlier call",
            ))
        })
    }
}

#[pymethods]
impl PyBatchIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// (x float32 (n, c, sz, sz), y) as numpy arrays sharing the batch memory.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let mut guard = self.lock()?;
        let it: &mut BatchIter = &mut guard;
        match run_detached(py, || it.next().transpose())? {
            None => Err(PyStopIteration::new_err(())),
            Some(b) => {
                let x = Array4::from_shape_vec((b.n, b.c, b.sz, b.sz), b.x)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                Ok((
                    batch_x_to_py(py, x, &self.loader)?,
                    targets_to_py(py, b.y, b.n)?,
                ))
            }
        }
    }

    /// Paths skipped as undecodable so far (with skip_bad).
    fn skipped(&self) -> PyResult<Vec<PathBuf>> {
        Ok(self
            .lock()?
            .skipped()
            .iter()
            .map(|(_, p)| p.clone())
            .collect())
    }

    /// Stops the producer now (also happens when the iterator is garbage-collected).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut guard = self.lock()?;
        let it: &mut BatchIter = &mut guard;
        run_detached(py, || {
            it.close();
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Scanning, decoding, single images

fn skipped_dict<'py>(py: Python<'py>, s: &folder::ScanReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("hidden", s.hidden)?;
    d.set_item("non_image", s.non_image)?;
    d.set_item("examples", s.examples.clone())?;
    Ok(d)
}

/// (fnames, labels int64, classes, skipped) of `root/split/<class>/*`.
#[pyfunction]
#[pyo3(signature = (root, split, classes=None))]
fn scan_labelled<'py>(
    py: Python<'py>,
    root: PathBuf,
    split: String,
    classes: Option<Vec<String>>,
) -> PyResult<(
    Vec<String>,
    Bound<'py, PyArray1<i64>>,
    Vec<String>,
    Bound<'py, PyDict>,
)> {
    let r = run_detached(py, move || {
        folder::scan_labelled(&root, &split, classes.as_deref())
    })?;
    let sk = skipped_dict(py, &r.skipped)?;
    Ok((r.fnames, PyArray1::from_vec(py, r.labels), r.classes, sk))
}

/// (fnames, skipped) of the flat folder `root/name`.
#[pyfunction]
fn scan_flat<'py>(
    py: Python<'py>,
    root: PathBuf,
    name: String,
) -> PyResult<(Vec<String>, Bound<'py, PyDict>)> {
    let (f, s) = run_detached(py, move || folder::scan_flat(&root, &name))?;
    Ok((f, skipped_dict(py, &s)?))
}

/// [(id, labels)] of a label CSV, sorted by id.
#[pyfunction]
fn read_label_csv(
    py: Python<'_>,
    path: PathBuf,
    skip_header: bool,
) -> PyResult<Vec<(String, String)>> {
    let rows = run_detached(py, move || folder::read_label_csv(&path, skip_header))?;
    Ok(rows.into_iter().map(|r| (r.id, r.labels)).collect())
}

#[pyfunction]
fn check_files_exist(
    py: Python<'_>,
    root: PathBuf,
    fnames: Vec<String>,
    source: PathBuf,
) -> PyResult<()> {
    run_detached(py, move || {
        folder::check_files_exist(&root, &fnames, &source)
    })
}

/// `data.resize`'s work on one chunk of files (the Python side draws the progress bar
/// between chunks): copies of `files` (relative to `src_root`) under `dst_root`, smaller side
/// `targ`, on `pool`'s threads. Returns (written, already current, [(file, reason)] of files
/// that could not be decoded, only with `skip_bad`).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn resize_images(
    py: Python<'_>,
    src_root: PathBuf,
    dst_root: PathBuf,
    files: Vec<String>,
    targ: usize,
    pool: PyRef<'_, PyThreadPool>,
    skip_bad: bool,
) -> PyResult<(usize, usize, Vec<(String, String)>)> {
    let pool = pool.inner.clone();
    let report = run_detached(py, move || {
        pool.install(|| {
            crate::data::resize::resize_files(&src_root, &dst_root, &files, targ, skip_bad)
        })
    })?;
    let failed = report
        .failed
        .into_iter()
        .map(|(p, why)| (p.to_string_lossy().into_owned(), why))
        .collect();
    Ok((report.written, report.current, failed))
}

/// Decodes a file to uint8 (H, W, 3) RGB.
#[pyfunction]
fn decode_image<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let img = run_detached(py, move || {
        crate::image::decode::require_regular_file(&path)?;
        crate::image::decode::decode_file(&path)
    })?;
    let a = Array3::from_shape_vec((img.height, img.width, 3), img.data)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray_any(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyThreadPool>()?;
    m.add_class::<PyDataLoader>()?;
    m.add_class::<PyDataset>()?;
    m.add_class::<PyBatchIter>()?;
    m.add_class::<PyBatchMemory>()?;
    m.add(
        "IMAGE_EXTENSIONS",
        crate::image::decode::IMAGE_EXTENSIONS.to_vec(),
    )?;
    m.add_function(wrap_pyfunction!(scan_labelled, m)?)?;
    m.add_function(wrap_pyfunction!(scan_flat, m)?)?;
    m.add_function(wrap_pyfunction!(read_label_csv, m)?)?;
    m.add_function(wrap_pyfunction!(check_files_exist, m)?)?;
    m.add_function(wrap_pyfunction!(decode_image, m)?)?;
    m.add_function(wrap_pyfunction!(resize_images, m)?)?;
    Ok(())
}
