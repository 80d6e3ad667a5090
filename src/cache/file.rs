//! The activation cache file: its format, reading, atomic writing, and the sweep of
//! temporaries left by writers that died.
//!
//! Layout (little endian):
//!
//! ```text
//! b"FASTAIRS-ACT3\n"   magic
//! 32 hex digits b"\n"  the key: hash of everything that changes the numbers
//! u64 rows             one per item of the split, left-out ones included
//! u64 cols
//! u64 left_out         how many items a `skip_bad` pass left out
//! u64 checksum         of everything that follows
//! left_out x u64       their indices, increasing
//! rows*cols f32        the activations (rows of left-out items are NaN and never read)
//! ```
//!
//! Which items were left out is stored, not inferred from NaN: a body that really outputs
//! NaN for an image must not make it look undecodable. Files are written under a temporary
//! name and renamed, so a half-written cache is never read; the checksum catches a file
//! damaged afterwards (garbage activations would otherwise train silently).

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tch::{Device, Kind, Tensor};

use super::CacheKey;
use crate::{Error, Result};

const MAGIC: &[u8] = b"FASTAIRS-ACT3\n";
/// What every version's magic starts with: a file that has it is ours, of another version.
const FAMILY: &[u8] = b"FASTAIRS-ACT";
const KEY_LEN: usize = 32;
/// Magic + key line + rows + cols + left_out + checksum.
pub const HEADER: usize = MAGIC.len() + KEY_LEN + 1 + 4 * 8;

/// Why an existing cache file was not used (the user is warned, and it is recomputed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StaleReason {
    /// It exists but cannot be opened or read.
    Unreadable(String),
    /// Not a fastai-rs activation cache at all.
    NotACache,
    /// Written by a version of fastai-rs with another file format.
    OtherVersion,
    /// Written for other images, transforms, weights or precision.
    KeyChanged,
    /// Its size does not fit its header.
    Truncated { len: u64, rows: u64, cols: u64 },
    /// The header fits, the contents do not (damaged on disk).
    Checksum,
    /// It holds rows of another width than the model's activations.
    Shape { cols: u64, expected: u64 },
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::Unreadable(e) => write!(f, "cannot read it ({e})"),
            StaleReason::NotACache => write!(f, "not a fastai-rs activation cache (bad header)"),
            StaleReason::OtherVersion => {
                write!(f, "written by another version of fastai-rs")
            }
            StaleReason::KeyChanged => {
                write!(
                    f,
                    "images, transforms, weights or precision changed since it was written"
                )
            }
            StaleReason::Truncated { len, rows, cols } => write!(
                f,
                "truncated or damaged ({len} bytes for {rows}x{cols} values)"
            ),
            StaleReason::Checksum => write!(f, "damaged (checksum mismatch)"),
            StaleReason::Shape { cols, expected } => {
                write!(f, "rows of {cols} values where the model gives {expected}")
            }
        }
    }
}

/// The contents of a cache file.
pub struct Stored {
    /// (rows, cols) float32 on the CPU.
    pub rows: Tensor,
    /// Items left out (undecodable under `skip_bad`), increasing.
    pub left_out: Vec<usize>,
}

/// What reading a cache file found.
pub enum Lookup {
    Hit(Stored),
    Missing,
    Stale(StaleReason),
}

/// A fast 64-bit checksum (word at a time; tens of MB per lesson-sized split), meant to catch
/// corruption, not tampering. Every part but the last must be a multiple of 8 bytes long.
fn checksum(parts: &[&[u8]]) -> u64 {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ total as u64;
    for part in parts {
        let mut words = part.chunks_exact(8);
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
    }
    h ^ (h >> 33)
}

/// The bytes of a contiguous float32 CPU tensor.
///
/// SAFETY (of the callers' use): `t` must be a contiguous float32 tensor on the CPU; the
/// slice borrows it, so it stays alive and unmoved while the slice is used.
fn f32_bytes(t: &Tensor) -> &[u8] {
    debug_assert!(t.kind() == Kind::Float && t.device() == Device::Cpu && t.is_contiguous());
    let n = t.numel() * 4;
    if n == 0 {
        return &[];
    }
    // SAFETY: see above; the memory holds numel() f32 = n bytes.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, n) }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Reads the cache file at `path` if it was written under `key`. The numbers go from the
/// file straight into the tensor's memory (one copy).
pub fn read(path: &Path, key: &CacheKey) -> Lookup {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Missing,
        Err(e) => return Lookup::Stale(StaleReason::Unreadable(e.to_string())),
    };
    match read_open(&mut file, key) {
        Ok(lookup) => lookup,
        Err(e) => Lookup::Stale(StaleReason::Unreadable(e.to_string())),
    }
}

fn read_open(file: &mut fs::File, key: &CacheKey) -> std::io::Result<Lookup> {
    let len = file.metadata()?.len();
    let mut head = [0u8; HEADER];
    let got = read_up_to(file, &mut head)?;
    if got < MAGIC.len() || head[..FAMILY.len()] != *FAMILY {
        return Ok(Lookup::Stale(StaleReason::NotACache));
    }
    if head[..MAGIC.len()] != *MAGIC {
        return Ok(Lookup::Stale(StaleReason::OtherVersion));
    }
    if got < HEADER {
        return Ok(Lookup::Stale(StaleReason::Truncated {
            len,
            rows: 0,
            cols: 0,
        }));
    }
    let stored_key = &head[MAGIC.len()..MAGIC.len() + KEY_LEN];
    if stored_key != key.as_str().as_bytes() {
        return Ok(Lookup::Stale(StaleReason::KeyChanged));
    }
    let at = MAGIC.len() + KEY_LEN + 1;
    let (rows, cols, n_left) = (
        u64_at(&head, at),
        u64_at(&head, at + 8),
        u64_at(&head, at + 16),
    );
    let stored_sum = u64_at(&head, at + 24);
    // Checked: a damaged header must not wrap around to a plausible size.
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .and_then(|n| n.checked_add(n_left.checked_mul(8)?))
        .and_then(|n| n.checked_add(HEADER as u64));
    if expected != Some(len)
        || n_left > rows
        || i64::try_from(rows).is_err()
        || i64::try_from(cols).is_err()
    {
        return Ok(Lookup::Stale(StaleReason::Truncated { len, rows, cols }));
    }
    let mut left_bytes = vec![0u8; n_left as usize * 8];
    file.read_exact(&mut left_bytes)?;
    let left_out: Vec<usize> = left_bytes
        .chunks_exact(8)
        .map(|w| u64_at(w, 0) as usize)
        .collect();
    let increasing = left_out.windows(2).all(|w| w[0] < w[1]);
    if !increasing || left_out.last().is_some_and(|&i| i as u64 >= rows) {
        return Ok(Lookup::Stale(StaleReason::Checksum));
    }
    let t = Tensor::empty([rows as i64, cols as i64], (Kind::Float, Device::Cpu));
    let n = t.numel() * 4;
    if n > 0 {
        // SAFETY: `t` was just allocated here, contiguous float32 on the CPU, numel() * 4 = n
        // bytes, and nothing else refers to it yet.
        let dst = unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut u8, n) };
        file.read_exact(dst)?;
    }
    if checksum(&[&left_bytes, f32_bytes(&t)]) != stored_sum {
        return Ok(Lookup::Stale(StaleReason::Checksum));
    }
    #[cfg(target_endian = "big")]
    {
        // The file is little endian: swap each value in place.
        let v = unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut u32, t.numel()) };
        for x in v {
            *x = u32::from_le(*x);
        }
    }
    Ok(Lookup::Hit(Stored { rows: t, left_out }))
}

/// `read_exact`, but a short file is not an error: returns how many bytes were read.
fn read_up_to(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Distinguishes the temporaries of writers in one process (threads writing the same file).
static WRITER_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `rows` ((n, cols), one per item; those of `left_out` items are not data) under
/// `key`, atomically: a temporary file `<name>.tmp<pid>-<k>` in the same folder, then a
/// rename. Concurrent writers of one file each write their own temporary, so the file left
/// is one of theirs, whole. Temporaries of writers that died are swept first.
pub fn write(path: &Path, key: &CacheKey, rows: &Tensor, left_out: &[usize]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    sweep_dead_temporaries(dir);
    let size = rows.size();
    let (n, cols) = match size.as_slice() {
        [n, cols] => (*n as u64, *cols as u64),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "activation cache rows must be 2-D, got shape {size:?}"
            )))
        }
    };
    let data = rows
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .map(|t| t.contiguous())
        .map_err(Error::torch("reading activations"))?;
    #[cfg(target_endian = "big")]
    let data = {
        let le = data.copy();
        let v = unsafe { std::slice::from_raw_parts_mut(le.data_ptr() as *mut u32, le.numel()) };
        for x in v {
            *x = x.to_le();
        }
        le
    };
    let payload = f32_bytes(&data);
    let left_bytes: Vec<u8> = left_out
        .iter()
        .flat_map(|&i| (i as u64).to_le_bytes())
        .collect();
    let mut head = Vec::with_capacity(HEADER);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(key.as_str().as_bytes());
    head.push(b'\n');
    for v in [n, cols, left_out.len() as u64] {
        head.extend_from_slice(&v.to_le_bytes());
    }
    head.extend_from_slice(&checksum(&[&left_bytes, payload]).to_le_bytes());

    let tmp = temporary_name(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&head)?;
        f.write_all(&left_bytes)?;
        f.write_all(payload)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// `<file name>.tmp<pid>-<k>`, beside the file.
fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp{}-{}",
        std::process::id(),
        WRITER_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

/// The writer's pid of a cache temporary's name: `x_act….tmp<pid>` (older versions) or
/// `x_act….tmp<pid>-<k>`. Only cache files are considered (`x_act` prefix), so other files
/// that share the folder (checkpoints when `tmp_name == models_name`) are never touched.
pub fn temporary_writer(name: &str) -> Option<u32> {
    if !name.starts_with("x_act") {
        return None;
    }
    let rest = &name[name.rfind(".tmp")? + 4..];
    let (pid, seq) = match rest.split_once('-') {
        Some((p, s)) => (p, Some(s)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !seq.is_none_or(digits) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` exists (on this machine). Where that cannot be told, it is taken
/// as alive, so nothing is swept.
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        let Ok(pid) = i32::try_from(pid) else {
            return true;
        };
        if pid <= 0 {
            return true;
        }
        // SAFETY: signal 0 sends nothing; it only checks that the process exists.
        if unsafe { kill(pid, 0) } == 0 {
            return true;
        }
        const ESRCH: i32 = 3;
        // EPERM: it exists but belongs to another user.
        std::io::Error::last_os_error().raw_os_error() != Some(ESRCH)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Removes the cache temporaries in `dir` whose writer process no longer exists (killed
/// mid-write, they would stay for ever); a live writer's temporary is never touched.
/// Returns how many were removed. Best effort: a folder that cannot be listed is left as is.
pub fn sweep_dead_temporaries(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temporary_writer) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && !process_alive(pid) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_name_their_writer() {
        assert_eq!(
            temporary_writer("x_act_resnet34_0_224.bin.tmp4242-3"),
            Some(4242)
        );
        assert_eq!(temporary_writer("x_act_val_resnet34_0_224.tmp17"), Some(17));
        assert_eq!(temporary_writer("x_act_resnet34_0_224.bin"), None);
        assert_eq!(temporary_writer("x_act_resnet34_0_224.bin.tmp12x"), None);
        assert_eq!(temporary_writer("model.h5.tmp4242"), None);
        let name = temporary_name(Path::new("/a/x_act_r_0_8.bin"));
        let name = name.file_name().unwrap().to_str().unwrap();
        assert_eq!(temporary_writer(name), Some(std::process::id()));
    }
}
