//! A dataset: the items of one split (files under a folder, or images held in memory) and their
//! labels. It knows nothing of transforms or batches: the loaders of a split share one dataset
//! (`Arc<Dataset>`), each with its own pipeline and order, so the file list and the labels
//! exist once whatever reads them (the loaders, precompute, the Python `ds.y`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::image::decode::decode_file_covering;
use crate::transforms::{Src, SrcRef};
use crate::util::hash::KeyHasher;
use crate::{Error, Result};

/// The labels of a dataset (or of one batch), in one dtype per kind: int64 class indices for
/// single-label data, float32 rows for multi-label n-hot and for regression.
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
}

/// The items of one split and their labels.
pub struct Dataset {
    items: Items,
    targets: Targets,
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

    fn checked(items: Items, targets: Targets) -> Result<Self> {
        let ds = Dataset { items, targets };
        if let Some(n) = ds.targets.len() {
            if n != ds.len() {
                return Err(Error::InvalidArgument(format!(
                    "{} files but {} targets",
                    ds.len(),
                    n
                )));
            }
        }
        Ok(ds)
    }

    pub fn len(&self) -> usize {
        match &self.items {
            Items::Files { names, .. } => names.len(),
            Items::Array(images) => images.len(),
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
            Items::Array(_) => Path::new(ARRAY_ROOT),
        }
    }

    /// What messages call item `i`: its path, or `<array>/item <i>`.
    pub fn path(&self, i: usize) -> PathBuf {
        match &self.items {
            Items::Files { root, names } => root.join(&names[i]),
            Items::Array(_) => Path::new(ARRAY_ROOT).join(format!("item {i}")),
        }
    }

    /// Absolute (root-joined) paths of the files in dataset order (none for images in memory).
    pub fn files(&self) -> Vec<PathBuf> {
        match &self.items {
            Items::Files { root, names } => names.iter().map(|f| root.join(f)).collect(),
            Items::Array(_) => Vec::new(),
        }
    }

    /// Calls `f` with the pixels of item `i`: decoded from its file (smaller when its short
    /// side may be as small as `min_side`, see `decode_file_covering`), or read in place.
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

    #[test]
    fn array_items_are_named_by_index() {
        let images = ImageArray::new(ArrayData::U8(vec![0; 2 * 3 * 4 * 3]), 3, 4);
        let ds = Dataset::from_array(images, Targets::Class(vec![1, 0])).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.path(1), PathBuf::from("<array>/item 1"));
        assert!(ds.files().is_empty());
    }
}
