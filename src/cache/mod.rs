//! The precomputed-activation cache (spec 5), keyed by content so it is never stale.
//!
//! One file per split under `PATH/tmp/`, named as fastai 0.7 named its bcolz folders
//! (`x_act_<arch>_<xtra_cut>_<sz>.bin`, `x_act_val_...`, `x_act_test_...`) so "delete
//! PATH/tmp to reset" still holds. Layout (little endian):
//!
//! ```text
//! b"FASTAIRS-ACT2\n"  magic
//! 32 hex digits + b"\n" key: hash of everything that changes the numbers
//! u64 rows, u64 cols
//! u64 checksum of the rows*cols f32 that follow
//! rows*cols f32
//! ```
//!
//! The key hashes the architecture, a hash of the body's weights, the transform description
//! (sz, statistics, crop) and every file's relative path, size and modification time. A file
//! whose key differs is recomputed; files are written to a temporary name and renamed, so a
//! half-written cache is never read; the checksum catches a file damaged afterwards (the
//! numbers are otherwise unchecked, and garbage activations would train silently).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

const MAGIC: &[u8] = b"FASTAIRS-ACT2\n";
/// Magic + key line + rows + cols + checksum.
const HEADER: usize = 14 + 33 + 8 + 8 + 8;

/// A fast 64-bit checksum of the payload (word at a time; tens of MB per lesson-sized split),
/// meant to catch corruption, not tampering.
fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ data.len() as u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b))
            .wrapping_mul(0xff51_afd7_ed55_8ccd)
            .rotate_left(29);
    }
    for &x in words.remainder() {
        h = (h ^ x as u64)
            .wrapping_mul(0xc4ce_b9fe_1a85_ec53)
            .rotate_left(29);
    }
    h ^ (h >> 33)
}

/// 128-bit FNV-1a style hash in two independent 64-bit lanes (enough to tell cache keys apart;
/// not a security boundary).
#[derive(Clone)]
pub struct KeyHasher {
    a: u64,
    b: u64,
}

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher {
            a: 0xcbf2_9ce4_8422_2325,
            b: 0x8422_2325_cbf2_9ce4,
        }
    }
}

impl KeyHasher {
    pub fn bytes(&mut self, data: &[u8]) -> &mut Self {
        for &x in data {
            self.a = (self.a ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
            self.b = (self.b ^ x as u64)
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(5);
        }
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes()).bytes(&[0xff])
    }
    pub fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.a, self.b)
    }
}

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

/// Adds each file's path, size and modification time to the key.
pub fn hash_files(h: &mut KeyHasher, root: &Path, files: &[PathBuf]) -> Result<()> {
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

/// Why a cache file could not be used (reported to the user as a warning when it existed).
pub enum Lookup {
    Hit(Tensor),
    Missing,
    Stale(String),
}

pub fn read(path: &Path, key: &str) -> Lookup {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(_) => return Lookup::Missing,
    };
    // SAFETY: the file is only ever replaced by rename, never modified in place, so the
    // mapping's contents do not change under us.
    let map = match unsafe { memmap2::Mmap::map(&file) } {
        Ok(m) => m,
        Err(e) => return Lookup::Stale(format!("cannot map it ({e})")),
    };
    if map.len() < HEADER || &map[..MAGIC.len()] != MAGIC {
        return Lookup::Stale("not a fastai-rs activation cache (bad header)".into());
    }
    let stored_key = &map[MAGIC.len()..MAGIC.len() + 32];
    if stored_key != key.as_bytes() {
        return Lookup::Stale("images, transforms or weights changed since it was written".into());
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&map[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let at = MAGIC.len() + 33;
    let (rows, cols, stored_sum) = (u64_at(at), u64_at(at + 8), u64_at(at + 16));
    // Checked: a damaged header must not wrap around to a plausible size.
    let payload = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .and_then(|n| usize::try_from(n).ok());
    if payload.and_then(|n| n.checked_add(HEADER)) != Some(map.len())
        || i64::try_from(rows).is_err()
        || i64::try_from(cols).is_err()
    {
        return Lookup::Stale(format!(
            "truncated or damaged ({} bytes for {rows}x{cols} values)",
            map.len()
        ));
    }
    if checksum(&map[HEADER..]) != stored_sum {
        return Lookup::Stale("damaged (checksum mismatch)".into());
    }
    let data: Vec<f32> = map[HEADER..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    match Tensor::from_slice(&data).f_view([rows as i64, cols as i64]) {
        Ok(t) => Lookup::Hit(t),
        Err(e) => Lookup::Stale(format!("unreadable ({e})")),
    }
}

/// Writes atomically: a temporary file in the same folder, then a rename.
pub fn write(path: &Path, key: &str, x: &Tensor) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let size = x.size();
    let (rows, cols) = (
        size.first().copied().unwrap_or(0) as u64,
        size.get(1).copied().unwrap_or(0) as u64,
    );
    let flat = x.to_kind(Kind::Float).contiguous().view(-1);
    let data: Vec<f32> =
        Vec::<f32>::try_from(&flat).map_err(Error::torch("reading activations"))?;
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(fs::File::create(&tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(key.as_bytes())?;
        f.write_all(b"\n")?;
        f.write_all(&rows.to_le_bytes())?;
        f.write_all(&cols.to_le_bytes())?;
        f.write_all(&checksum(&bytes).to_le_bytes())?;
        f.write_all(&bytes)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_stale_detection() {
        let dir = std::env::temp_dir().join(format!("fastai-rs-cache-{}", std::process::id()));
        let path = dir.join("x_act_test.bin");
        let x = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]);
        let key = KeyHasher::default().str("a").hex();
        write(&path, &key, &x).expect("write");
        match read(&path, &key) {
            Lookup::Hit(t) => assert_eq!(
                Vec::<f32>::try_from(&t.view(-1)).unwrap(),
                (0..12).map(|v| v as f32).collect::<Vec<_>>()
            ),
            _ => panic!("expected a hit"),
        }
        let other = KeyHasher::default().str("b").hex();
        assert!(matches!(read(&path, &other), Lookup::Stale(_)));
        // A truncated file is never read.
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(read(&path, &key), Lookup::Stale(_)));
        // One flipped bit in the numbers, header intact: the checksum sees it.
        write(&path, &key, &x).expect("write");
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path, &key), Lookup::Stale(why) if why.contains("checksum")));
        // A header whose shape wraps around to the file's size is refused, not read.
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(HEADER);
        let at = MAGIC.len() + 33;
        bytes[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&4u64.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path, &key), Lookup::Stale(_)));
        let _ = fs::remove_dir_all(&dir);
    }
}
