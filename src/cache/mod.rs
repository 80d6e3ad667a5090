//! The precomputed-activation cache of `precompute=True`, keyed by content so it is never
//! stale.
//!
//! One file per split under `PATH/tmp/`, named as fastai 0.7 named its bcolz folders
//! (`x_act_<arch>_<xtra_cut>_<sz>.bin`, `x_act_val_...`, `x_act_test_...`, see [`CacheName`])
//! so "delete PATH/tmp to reset" still holds. The file format is in [`file`].
//!
//! The key ([`CacheKey`]) hashes the architecture, the body's weights, the precision the
//! activations are computed in, the transform description (sz, statistics, crop) and every
//! file's relative path, size and modification time (or the values of images held in
//! memory). A file whose key differs is recomputed.

pub mod file;

use std::path::{Component, Path};

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

pub use crate::util::hash::KeyHasher;
pub use file::{Lookup, StaleReason};

/// Hashes the float values of tensors (the body's weights: a fine-tuned backbone must not
/// reuse activations of the pretrained one).
pub fn hash_tensors<'a>(
    h: &mut KeyHasher,
    tensors: impl Iterator<Item = (&'a str, &'a Tensor)>,
) -> Result<()> {
    for (name, t) in tensors {
        h.str(name);
        let flat = t
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view(-1);
        let v: Vec<f32> =
            Vec::<f32>::try_from(&flat).map_err(Error::torch(format!("hashing {name}")))?;
        // Hash the raw bits 8 bytes at a time for speed (tens of millions of weights).
        for chunk in v.chunks(2) {
            let lo = chunk[0].to_bits() as u64;
            let hi = chunk.get(1).map(|x| x.to_bits() as u64).unwrap_or(0);
            h.bytes(&((hi << 32) | lo).to_le_bytes());
        }
    }
    Ok(())
}

/// The precision the activations are computed in: bfloat16 autocast gives other numbers
/// than float32, so it is part of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Float32,
    /// Convolutions and matrix products in bfloat16 under `torch.autocast`.
    Bfloat16,
}

/// The key a cache file is written under: 32 hex digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    /// `body`: a digest of the body (architecture, cut, what it outputs, its weights);
    /// `pipeline`: the transform's stable description; `content`: a digest of the items (files'
    /// paths, sizes and times, or the values of in-memory images).
    pub fn new(body: &str, pipeline: &str, content: &str, precision: Precision) -> CacheKey {
        let mut h = KeyHasher::default();
        h.str(body);
        if precision == Precision::Bfloat16 {
            h.str("autocast bfloat16");
        }
        h.str(pipeline).str(content);
        CacheKey(h.hex())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which split of the data a cache file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    /// fastai 0.7's file prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Split::Train => "x_act",
            Split::Valid => "x_act_val",
            Split::Test => "x_act_test",
        }
    }
    /// The folder the split's files usually sit in: files from another one get their own
    /// cache file (see [`CacheName::top_folder`]).
    pub fn usual_folder(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
    /// The short name the Python layer uses ("trn", "val", "test").
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "trn",
            Split::Valid => "val",
            Split::Test => "test",
        }
    }
    pub fn from_name(name: &str) -> Result<Split> {
        match name {
            "trn" => Ok(Split::Train),
            "val" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            _ => Err(Error::InvalidArgument(format!(
                "unknown split {name:?} (use 'trn', 'val' or 'test')"
            ))),
        }
    }
}

/// Where a split's images come from, as far as the cache file's name is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImagesAt {
    /// Images held in memory (`from_arrays`).
    Memory,
    /// Files under a folder, given relative to the data's `PATH` ("." for PATH itself; the
    /// copies `data.resize` makes are in another folder).
    Folder(String),
}

/// Everything a cache file's name says. The names are a documented contract (the README
/// lists them, users delete them by hand), so they stay what fastai-rs has always written:
/// `<prefix>_<arch>_<xtra_cut>_<sz>[_maps][_arrays|_<image folder>][_<top folder>].bin`.
#[derive(Clone, Debug)]
pub struct CacheName<'a> {
    pub split: Split,
    pub arch: &'a str,
    pub xtra_cut: usize,
    pub sz: usize,
    /// A custom head caches raw feature maps, not pooled vectors: another file, so the two
    /// kinds of learner on the same data do not keep invalidating each other's cache.
    pub maps: bool,
    /// Resized copies (`data.resize`) and arrays (`from_arrays`) get their own files beside
    /// the originals' (the keys would tell them apart, but one file for both would be
    /// rebuilt at each switch).
    pub images: ImagesAt,
    /// The first path component of the split's first item. A split read from another folder
    /// than the usual one (`trn_name='sample_train'`) gets its own file, so switching between
    /// two data objects on one PATH does not rebuild the cache each time.
    pub top_folder: Option<&'a str>,
}

impl CacheName<'_> {
    pub fn file_name(&self) -> String {
        let mut kind = String::new();
        if self.maps {
            kind.push_str("_maps");
        }
        match &self.images {
            ImagesAt::Memory => kind.push_str("_arrays"),
            ImagesAt::Folder(rel) if rel != "." => {
                kind.push('_');
                kind.push_str(&name_tag(rel));
            }
            ImagesAt::Folder(_) => {}
        }
        let top = self.top_folder.unwrap_or(self.split.usual_folder());
        if top != self.split.usual_folder() {
            kind.push('_');
            kind.push_str(&name_tag(top));
        }
        format!(
            "{}_{}_{}_{}{kind}.bin",
            self.split.prefix(),
            self.arch,
            self.xtra_cut,
            self.sz
        )
    }
}

/// A folder name made safe for a file name: every character but letters and digits becomes
/// '-'.
fn name_tag(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_alphanumeric() { c } else { '-' })
        .collect()
}

/// `path` relative to `start`, computed on the names only as Python's `os.path.relpath` does
/// (both made absolute against the working folder, `.` and `..` folded, links not followed):
/// the image folder's part of the cache file name must not depend on how PATH was spelled.
pub fn relative_folder(path: &Path, start: &Path) -> String {
    fn absolute(p: &Path) -> Vec<String> {
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        let mut parts: Vec<String> = Vec::new();
        for c in joined.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    parts.pop();
                }
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        parts
    }
    let (p, s) = (absolute(path), absolute(start));
    let common = p.iter().zip(&s).take_while(|(a, b)| a == b).count();
    let mut rel: Vec<&str> = vec![".."; s.len() - common];
    rel.extend(p[common..].iter().map(String::as_str));
    if rel.is_empty() {
        ".".into()
    } else {
        rel.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_the_documented_ones() {
        let name = |split, maps, images, top| {
            CacheName {
                split,
                arch: "resnet34",
                xtra_cut: 0,
                sz: 224,
                maps,
                images,
                top_folder: top,
            }
            .file_name()
        };
        let here = || ImagesAt::Folder(".".into());
        assert_eq!(
            name(Split::Train, false, here(), Some("train")),
            "x_act_resnet34_0_224.bin"
        );
        assert_eq!(
            name(Split::Valid, false, here(), Some("valid")),
            "x_act_val_resnet34_0_224.bin"
        );
        assert_eq!(
            name(Split::Test, false, here(), None),
            "x_act_test_resnet34_0_224.bin"
        );
        assert_eq!(
            name(Split::Train, true, here(), Some("sample_train")),
            "x_act_resnet34_0_224_maps_sample-train.bin"
        );
        assert_eq!(
            name(
                Split::Valid,
                false,
                ImagesAt::Folder("tmp/340".into()),
                Some("valid")
            ),
            "x_act_val_resnet34_0_224_tmp-340.bin"
        );
        assert_eq!(
            name(Split::Train, false, ImagesAt::Memory, None),
            "x_act_resnet34_0_224_arrays.bin"
        );
    }

    #[test]
    fn relative_folder_folds_names_like_os_path_relpath() {
        let r = |a: &str, b: &str| relative_folder(Path::new(a), Path::new(b));
        assert_eq!(r("/data/dogs", "/data/dogs/"), ".");
        assert_eq!(r("/data/dogs/./tmp/340", "/data/dogs"), "tmp/340");
        assert_eq!(r("/data/other", "/data/dogs"), "../other");
        assert_eq!(r("/data/dogs/a/../b", "/data//dogs"), "b");
    }
}
