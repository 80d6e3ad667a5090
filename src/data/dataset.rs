//! A dataset: the items of one split (files under a folder, or images held in memory) and their
//! labels. It knows nothing of transforms or batches: the loaders of a split share one dataset
//! (`Arc<Dataset>`), each with its own pipeline and order, so the file list and the labels
//! exist once whatever reads them (the loaders, precompute, the Python `ds.y`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::image::decode::decode_file_covering;
use crate::transforms::{Src, SrcRef, TargetIn, TargetKind, TargetValues};
use crate::util::hash::KeyHasher;
use crate::{Error, Result};

/// The labels of a dataset (or of one batch), in one dtype per kind: int64 class indices for
/// single-label data, float32 rows for multi-label n-hot and for regression; `PerItem` holds
/// what a user's `get_y` gave for each item when it is not a class index (masks, boxes,
/// float scalars, n-hot rows), `n` arrays of `shape` one after the other.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    Class(Vec<i64>),
    MultiHot {
        data: Vec<f32>,
        c: usize,
    },
    Continuous {
        data: Vec<f32>,
        dim: usize,
    },
    PerItem {
        data: Values,
        shape: Vec<usize>,
        n: usize,
    },
    Unlabelled,
}

/// The values of per-item target arrays: int64 (class-index masks) or float32.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    I64(Vec<i64>),
    F32(Vec<f32>),
}

impl Values {
    fn dtype(&self) -> &'static str {
        match self {
            Values::I64(_) => "int64",
            Values::F32(_) => "float32",
        }
    }
}

/// The y of one item made by user code, before it is collated into a batch's [`Targets`].
#[derive(Clone, Debug, PartialEq)]
pub enum ItemTarget {
    /// An integer scalar: a class index.
    Class(i64),
    /// Anything else: a float scalar (shape `[]`) or an array.
    Array { data: Values, shape: Vec<usize> },
    /// No label.
    None,
}

/// One item made by user code: `x` is (C, sz, sz) float32, CHW, row-major.
#[derive(Debug)]
pub struct MadeItem {
    pub x: Vec<f32>,
    pub shape: [usize; 3],
    pub y: ItemTarget,
}

/// Items made by user code (a Python dataset's `get_x`/`get_y` and transform): the loader calls
/// `make` on its worker threads in place of decoding and running a pipeline.
pub trait ItemMaker: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Item `index`, x transformed.
    fn make(&self, index: usize) -> Result<MadeItem>;
    /// How messages name item `index`: its dataset, the index, its file when there is one.
    fn describe(&self, index: usize) -> String;
}

/// The pixels of one item as user code gave them (a Python dataset's `get_x`): `rows × cols ×
/// 3`, HWC, bytes (0-255) or floats in [0, 1] -- what a decoded file or an in-memory array
/// hands the pipeline.
pub struct GivenPixels {
    pub data: ArrayData,
    pub rows: usize,
    pub cols: usize,
}

/// Images given by user code one item at a time (a dataset's own `get_x`) while everything
/// after them -- the pipeline, the labels, the batches -- stays the library's: the loader asks
/// for item `i`'s pixels on its worker threads where it would decode a file.
pub trait PixelSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The pixels of item `index` (checked: 3 channels, a height and a width).
    fn pixels(&self, index: usize) -> Result<GivenPixels>;
    /// How messages name item `index`: its dataset, the index, its file when there is one.
    fn describe(&self, index: usize) -> String;
}

/// The y of one item as user code gave it (a dataset's own `get_y`: a label mask or an
/// image-like target), for the pipeline to transform: `shape` is (rows, cols) or
/// (rows, cols, channels), row-major.
pub struct GivenTarget {
    pub data: Values,
    pub shape: Vec<usize>,
}

impl GivenTarget {
    /// As the pipeline takes it, or `Error::InvalidArgument` when it is not 2-D or 3-D or
    /// holds fewer values than its shape says.
    pub fn as_input(&self) -> Result<TargetIn<'_>> {
        let (rows, cols, channels) = match self.shape[..] {
            [r, c] => (r, c, 0),
            [r, c, ch] => (r, c, ch),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "y of shape {:?}: a mask or image target is 2-D or 3-D",
                    self.shape
                )))
            }
        };
        let data = match &self.data {
            Values::F32(v) => TargetValues::F32(v),
            Values::I64(v) => TargetValues::I64(v),
        };
        Ok(TargetIn::Mask {
            data,
            rows,
            cols,
            channels,
        })
    }
}

/// The y of each item given by user code on the loader's threads (a dataset's own `get_y`),
/// where the pipeline transforms y with the image's draws.
pub trait TargetSource: Send + Sync {
    /// The y of item `index`.
    fn target(&self, index: usize) -> Result<GivenTarget>;
    /// Item `index` as an error message names it (the user's dataset class, the index, the
    /// file).
    fn describe(&self, index: usize) -> String {
        format!("item {index}")
    }
}

impl Targets {
    /// The targets of `items` (one batch, in order) in the variant that fits them: class
    /// indices, per-item arrays of one dtype and shape, or none. `describe` names an item for
    /// the error when one differs from the first.
    pub fn collate(items: Vec<ItemTarget>, describe: impl Fn(usize) -> String) -> Result<Targets> {
        let n = items.len();
        let mut iter = items.into_iter().enumerate();
        let Some((_, first)) = iter.next() else {
            return Ok(Targets::Unlabelled);
        };
        let differs = |k: usize, got: &ItemTarget, want: &ItemTarget| {
            let what = |t: &ItemTarget| match t {
                ItemTarget::Class(_) => "an integer class index".to_string(),
                ItemTarget::Array { data, shape } => {
                    format!("a {} array of shape {shape:?}", data.dtype())
                }
                ItemTarget::None => "no label".to_string(),
            };
            Error::InvalidArgument(format!(
                "{}: y is {}, but the batch's first item gave {}; every item's y must have \
                 the same type, dtype and shape",
                describe(k),
                what(got),
                what(want)
            ))
        };
        match first {
            ItemTarget::None => {
                for (k, t) in iter {
                    if t != ItemTarget::None {
                        return Err(differs(k, &t, &ItemTarget::None));
                    }
                }
                Ok(Targets::Unlabelled)
            }
            ItemTarget::Class(c) => {
                let mut v = Vec::with_capacity(n);
                v.push(c);
                for (k, t) in iter {
                    match t {
                        ItemTarget::Class(c) => v.push(c),
                        other => return Err(differs(k, &other, &ItemTarget::Class(c))),
                    }
                }
                Ok(Targets::Class(v))
            }
            ItemTarget::Array { mut data, shape } => {
                for (k, t) in iter {
                    match (&mut data, t) {
                        (
                            Values::I64(all),
                            ItemTarget::Array {
                                data: Values::I64(v),
                                shape: s,
                            },
                        ) if s == shape => all.extend_from_slice(&v),
                        (
                            Values::F32(all),
                            ItemTarget::Array {
                                data: Values::F32(v),
                                shape: s,
                            },
                        ) if s == shape => all.extend_from_slice(&v),
                        (_, other) => {
                            let want = ItemTarget::Array {
                                data: match &data {
                                    Values::I64(_) => Values::I64(Vec::new()),
                                    Values::F32(_) => Values::F32(Vec::new()),
                                },
                                shape: shape.clone(),
                            };
                            return Err(differs(k, &other, &want));
                        }
                    }
                }
                Ok(Targets::PerItem { data, shape, n })
            }
        }
    }
}

impl Targets {
    /// Number of items these targets describe (`None` for unlabelled).
    pub fn len(&self) -> Option<usize> {
        match self {
            Targets::Class(v) => Some(v.len()),
            Targets::MultiHot { data, c } => Some(if *c == 0 { 0 } else { data.len() / c }),
            Targets::Continuous { data, dim } => Some(if *dim == 0 { 0 } else { data.len() / dim }),
            Targets::PerItem { n, .. } => Some(*n),
            Targets::Unlabelled => None,
        }
    }

    /// Targets of the items at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Targets {
        let rows = |data: &[f32], w: usize| -> Vec<f32> {
            idx.iter()
                .flat_map(|&i| data[i * w..(i + 1) * w].iter().copied())
                .collect()
        };
        match self {
            Targets::Class(v) => Targets::Class(idx.iter().map(|&i| v[i]).collect()),
            Targets::MultiHot { data, c } => Targets::MultiHot {
                data: rows(data, *c),
                c: *c,
            },
            Targets::Continuous { data, dim } => Targets::Continuous {
                data: rows(data, *dim),
                dim: *dim,
            },
            Targets::PerItem { data, shape, .. } => {
                let w: usize = shape.iter().product();
                let data = match data {
                    Values::I64(v) => Values::I64(
                        idx.iter()
                            .flat_map(|&i| v[i * w..(i + 1) * w].iter().copied())
                            .collect(),
                    ),
                    Values::F32(v) => Values::F32(rows(v, w)),
                };
                Targets::PerItem {
                    data,
                    shape: shape.clone(),
                    n: idx.len(),
                }
            }
            Targets::Unlabelled => Targets::Unlabelled,
        }
    }
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
        let mut h = KeyHasher::default();
        h.str(&format!("array {}x{}x{}", self.len(), self.rows, self.cols));
        match &self.data {
            ArrayData::U8(v) => h.str("u8").bytes(v),
            ArrayData::F32(v) => h.str("f32").bytes(crate::image::resample::f32_bytes(v)),
        };
        h.hex()
    }
}

/// Where a dataset's items come from.
pub enum Items {
    /// Image files, named relative to `root`.
    Files { root: PathBuf, names: Vec<String> },
    /// Images held in memory.
    Array(ImageArray),
    /// Items made by user code on the loader's threads.
    Made(Arc<dyn ItemMaker>),
    /// Images given by user code on the loader's threads, run through the pipeline.
    Given(Arc<dyn PixelSource>),
}

/// The items of one split and their labels.
pub struct Dataset {
    items: Items,
    targets: Targets,
    /// Where each item's y comes from when user code gives it for the pipeline to transform.
    target_source: Option<Arc<dyn TargetSource>>,
}

/// What errors call the items of an in-memory dataset: `<array>/item <i>`.
const ARRAY_ROOT: &str = "<array>";

impl Dataset {
    /// Files `names` under `root`; `targets` has one entry per file (or is `Unlabelled`).
    pub fn from_files(root: PathBuf, names: Vec<String>, targets: Targets) -> Result<Self> {
        Self::checked(Items::Files { root, names }, targets)
    }

    /// Images held in memory (`from_arrays`).
    pub fn from_array(images: ImageArray, targets: Targets) -> Result<Self> {
        if images.rows == 0 || images.cols == 0 {
            return Err(Error::InvalidArgument(
                "from_arrays: images must have a height and a width".into(),
            ));
        }
        Self::checked(Items::Array(images), targets)
    }

    /// Items made by user code: their labels come with each item, so the dataset holds none.
    pub fn from_maker(maker: Arc<dyn ItemMaker>) -> Self {
        Dataset {
            items: Items::Made(maker),
            targets: Targets::Unlabelled,
            target_source: None,
        }
    }

    /// Images given by user code (`source`), labelled by `targets` (one per item, or
    /// `Unlabelled`).
    pub fn from_pixel_source(source: Arc<dyn PixelSource>, targets: Targets) -> Result<Self> {
        Self::checked(Items::Given(source), targets)
    }

    /// Whether user code gives the items or their pixels: nothing identifies their content
    /// but running that code, so they have no cache key.
    pub fn from_user_code(&self) -> bool {
        matches!(self.items, Items::Made(_) | Items::Given(_))
    }

    /// The maker of items made by user code (None for files and arrays).
    pub fn maker(&self) -> Option<&Arc<dyn ItemMaker>> {
        match &self.items {
            Items::Made(m) => Some(m),
            _ => None,
        }
    }

    fn checked(items: Items, targets: Targets) -> Result<Self> {
        let ds = Dataset {
            items,
            targets,
            target_source: None,
        };
        if let Some(n) = ds.targets.len() {
            if n != ds.len() {
                let what = match ds.items {
                    Items::Files { .. } => "files",
                    _ => "items",
                };
                return Err(Error::InvalidArgument(format!(
                    "{} {what} but {} targets",
                    ds.len(),
                    n
                )));
            }
        }
        Ok(ds)
    }

    /// This dataset with each item's y given by `source` (for a pipeline that transforms y).
    pub fn with_target_source(mut self, source: Arc<dyn TargetSource>) -> Self {
        self.target_source = Some(source);
        self
    }

    /// The y of item `i` that user code gives, or `Error::InvalidArgument` when this dataset
    /// has no such source (its labels are not masks or images).
    pub fn given_target(&self, i: usize) -> Result<GivenTarget> {
        match &self.target_source {
            Some(s) => s.target(i),
            None => Err(Error::InvalidArgument(
                "a pipeline that transforms mask or image targets needs a dataset whose y are \
                 masks or images"
                    .into(),
            )),
        }
    }

    /// Item `i` as an error about its given y names it.
    pub fn describe_target_item(&self, i: usize) -> String {
        match &self.target_source {
            Some(s) => s.describe(i),
            None => format!("item {i}"),
        }
    }

    /// Whether this dataset gives the y a pipeline transforms as `kind`: boxes in its
    /// continuous targets, masks and images from user code.
    pub fn has_target_input(&self, kind: TargetKind) -> bool {
        match kind {
            TargetKind::Coord => matches!(self.targets, Targets::Continuous { .. }),
            TargetKind::Class | TargetKind::Pixel => self.target_source.is_some(),
        }
    }

    /// The boxes of item `i`: its row of continuous targets, 4 numbers a box.
    pub fn box_row(&self, i: usize) -> Result<&[f32]> {
        match &self.targets {
            Targets::Continuous { data, dim } if *dim % 4 == 0 && (i + 1) * dim <= data.len() => {
                Ok(&data[i * dim..(i + 1) * dim])
            }
            Targets::Continuous { dim, .. } => Err(Error::InvalidArgument(format!(
                "boxes come in fours [r1, c1, r2, c2]; item {i} has {dim} numbers"
            ))),
            _ => Err(Error::InvalidArgument(
                "a pipeline that transforms boxes needs continuous targets (from_csv(..., \
                 continuous=True))"
                    .into(),
            )),
        }
    }

    pub fn len(&self) -> usize {
        match &self.items {
            Items::Files { names, .. } => names.len(),
            Items::Array(images) => images.len(),
            Items::Made(m) => m.len(),
            Items::Given(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn items(&self) -> &Items {
        &self.items
    }
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// The folder the file names are relative to (`<array>` for images in memory).
    pub fn root(&self) -> &Path {
        match &self.items {
            Items::Files { root, .. } => root,
            Items::Array(_) | Items::Made(_) | Items::Given(_) => Path::new(ARRAY_ROOT),
        }
    }

    /// What messages call item `i`: its path, or `<array>/item <i>`.
    pub fn path(&self, i: usize) -> PathBuf {
        match &self.items {
            Items::Files { root, names } => root.join(&names[i]),
            Items::Array(_) => Path::new(ARRAY_ROOT).join(format!("item {i}")),
            Items::Made(m) => PathBuf::from(m.describe(i)),
            Items::Given(s) => PathBuf::from(s.describe(i)),
        }
    }

    /// Absolute (root-joined) paths of the files in dataset order (none for images in memory).
    pub fn files(&self) -> Vec<PathBuf> {
        match &self.items {
            Items::Files { root, names } => names.iter().map(|f| root.join(f)).collect(),
            Items::Array(_) | Items::Made(_) | Items::Given(_) => Vec::new(),
        }
    }

    /// Calls `f` with the pixels of item `i`: decoded from its file (smaller when its short
    /// side may be as small as `min_side`, see `decode_file_covering`), read in place, or asked
    /// of the user code that gives them.
    pub fn with_pixels<R>(
        &self,
        i: usize,
        min_side: Option<usize>,
        f: impl FnOnce(&Src<'_>) -> Result<R>,
    ) -> Result<R> {
        match &self.items {
            Items::Array(images) => f(&images.item(i)),
            Items::Files { root, names } => {
                let decoded = decode_file_covering(&root.join(&names[i]), min_side)?;
                f(&Src {
                    data: SrcRef::U8(&decoded.data),
                    rows: decoded.height,
                    cols: decoded.width,
                })
            }
            Items::Given(source) => {
                let p = source.pixels(i)?;
                let (data, len) = match &p.data {
                    ArrayData::U8(v) => (SrcRef::U8(v), v.len()),
                    ArrayData::F32(v) => (SrcRef::F32(v), v.len()),
                };
                // The source checks what user code returned; a wrong count here is its bug,
                // and would otherwise read past the image in the pipeline.
                if p.rows == 0 || p.cols == 0 || len != p.rows * p.cols * 3 {
                    return Err(Error::internal(format!(
                        "{}: {len} values for an image of {} x {} x 3",
                        source.describe(i),
                        p.rows,
                        p.cols
                    )));
                }
                f(&Src {
                    data,
                    rows: p.rows,
                    cols: p.cols,
                })
            }
            Items::Made(m) => Err(Error::internal(format!(
                "{}: items made by Python code have no pixels to decode",
                m.describe(i)
            ))),
        }
    }

    /// Adds what identifies the items' content to a cache key: each file's path, size and
    /// time, or the digest of images held in memory.
    pub fn hash_content(&self, h: &mut KeyHasher) -> Result<()> {
        match &self.items {
            Items::Array(images) => {
                h.str(&images.digest);
                Ok(())
            }
            Items::Files { root, .. } => hash_files(h, root, &self.files()),
            // What Python code makes cannot be told from a key: such data is never cached.
            Items::Made(_) | Items::Given(_) => Err(Error::InvalidArgument(
                "items made by Python code (a dataset's get_x/get_y or a Python transform) have \
                 no content key"
                    .into(),
            )),
        }
    }
}

/// Adds each file's path, size and modification time to the key.
fn hash_files(h: &mut KeyHasher, root: &Path, files: &[PathBuf]) -> Result<()> {
    for f in files {
        let meta = fs::metadata(f).map_err(|e| Error::io(f, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let rel = f.strip_prefix(root).unwrap_or(f);
        h.str(&rel.to_string_lossy())
            .bytes(&meta.len().to_le_bytes())
            .bytes(&mtime.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_takes_rows_in_the_given_order() {
        let t = Targets::MultiHot {
            data: vec![1., 0., 0., 1., 1., 1.],
            c: 2,
        };
        assert_eq!(
            t.select(&[2, 0]),
            Targets::MultiHot {
                data: vec![1., 1., 1., 0.],
                c: 2
            }
        );
        assert_eq!(
            Targets::Class(vec![5, 6, 7]).select(&[1, 1]),
            Targets::Class(vec![6, 6])
        );
    }

    #[test]
    fn collate_keeps_scalars_as_classes_and_stacks_arrays() {
        let name = |k: usize| format!("item {k}");
        let classes = vec![ItemTarget::Class(3), ItemTarget::Class(1)];
        assert_eq!(
            Targets::collate(classes, name).unwrap(),
            Targets::Class(vec![3, 1])
        );
        let masks = vec![
            ItemTarget::Array {
                data: Values::I64(vec![1, 2, 3, 4]),
                shape: vec![2, 2],
            },
            ItemTarget::Array {
                data: Values::I64(vec![5, 6, 7, 8]),
                shape: vec![2, 2],
            },
        ];
        let t = Targets::collate(masks, name).unwrap();
        assert_eq!(
            t,
            Targets::PerItem {
                data: Values::I64((1..=8).collect()),
                shape: vec![2, 2],
                n: 2
            }
        );
        assert_eq!(t.len(), Some(2));
        assert_eq!(
            t.select(&[1]),
            Targets::PerItem {
                data: Values::I64(vec![5, 6, 7, 8]),
                shape: vec![2, 2],
                n: 1
            }
        );
        let mixed = vec![
            ItemTarget::Array {
                data: Values::F32(vec![0.5]),
                shape: vec![],
            },
            ItemTarget::Array {
                data: Values::F32(vec![0.5, 1.0]),
                shape: vec![2],
            },
        ];
        let err = Targets::collate(mixed, name).unwrap_err().to_string();
        assert!(
            err.contains("item 1: y is a float32 array of shape [2]"),
            "{err}"
        );
        let err = Targets::collate(vec![ItemTarget::Class(0), ItemTarget::None], name)
            .unwrap_err()
            .to_string();
        assert!(err.contains("item 1: y is no label"), "{err}");
    }

    #[test]
    fn labels_must_match_the_items() {
        let names = vec!["a.png".to_string(), "b.png".to_string()];
        let err = Dataset::from_files("/x".into(), names.clone(), Targets::Class(vec![0]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("2 files but 1 targets"));
        let ds = Dataset::from_files("/x".into(), names, Targets::Unlabelled).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.path(1), PathBuf::from("/x/b.png"));
    }

    /// A source of flat grey images whose size and value follow the index.
    struct Greys;
    impl PixelSource for Greys {
        fn len(&self) -> usize {
            3
        }
        fn pixels(&self, index: usize) -> Result<GivenPixels> {
            if index == 2 {
                return Err(Error::InvalidArgument(self.describe(index) + ": no pixels"));
            }
            Ok(GivenPixels {
                data: ArrayData::F32(vec![index as f32 / 4.0; (index + 1) * 2 * 3]),
                rows: index + 1,
                cols: 2,
            })
        }
        fn describe(&self, index: usize) -> String {
            format!("Greys item {index}")
        }
    }

    #[test]
    fn given_pixels_reach_the_pipeline_as_given_with_the_labels_kept() {
        let err = Dataset::from_pixel_source(Arc::new(Greys), Targets::Class(vec![0]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("3 items but 1 targets"));
        let ds =
            Dataset::from_pixel_source(Arc::new(Greys), Targets::Class(vec![4, 5, 6])).unwrap();
        assert!(ds.from_user_code() && ds.maker().is_none());
        assert_eq!(ds.targets().select(&[2, 0]), Targets::Class(vec![6, 4]));
        let seen = ds
            .with_pixels(1, None, |src| {
                let SrcRef::F32(v) = src.data else {
                    panic!("float pixels expected")
                };
                Ok((src.rows, src.cols, v.len(), v[0]))
            })
            .unwrap();
        assert_eq!(seen, (2, 2, 12, 0.25));
        let err = ds.with_pixels(2, None, |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("Greys item 2: no pixels"), "{err}");
        assert_eq!(ds.path(1), PathBuf::from("Greys item 1"));
        assert!(ds.hash_content(&mut KeyHasher::default()).is_err());
    }

    #[test]
    fn array_items_are_named_by_index() {
        let images = ImageArray::new(ArrayData::U8(vec![0; 2 * 3 * 4 * 3]), 3, 4);
        let ds = Dataset::from_array(images, Targets::Class(vec![1, 0])).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.path(1), PathBuf::from("<array>/item 1"));
        assert!(ds.files().is_empty());
    }
}
