//! Resized copies of a data set's images: fastai's `data.resize(targ_sz, new_path)` (spec
//! §2.10), which lesson 2 uses so that each epoch decodes small files instead of photos.
//!
//! Each image is decoded, scaled so that its smaller side is `targ` (the other side
//! `max(floor(side · ratio), targ)`, as the original; smaller images are enlarged) with
//! PIL-style antialiased bilinear filtering, and written under the new root at the same
//! relative path, in the format of its extension (JPEG at Pillow's default quality 75 and
//! 4:2:0 chroma subsampling).
//!
//! Unlike the original, which skipped the whole job when the first file existed, every copy
//! is checked on its own: it is up to date when it carries its source's modification time,
//! which each copy is given once it is whole. A changed source (new content, any new time) is
//! copied again, and so is a copy cut short by an interrupt, so the next run finishes the job.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use image::ImageFormat;
use rayon::prelude::*;

use crate::image::decode::{decode_file, RgbImage};
use crate::image::resample::{resize_rgb8, scale_min};
use crate::transforms::naming_image;
use crate::{Error, Result};

/// Pillow's default JPEG quality (what the original's `im.save(dest)` used).
const JPEG_QUALITY: i32 = 75;

/// What [`resize_files`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Copies written by this call.
    pub written: usize,
    /// Copies already up to date.
    pub current: usize,
    /// Files that could not be read or decoded, with the reason (only when `skip_bad`).
    pub failed: Vec<(PathBuf, String)>,
}

/// Copies each of `files` (relative to `src_root`) to the same relative path under
/// `dst_root`, resized for a smaller side of `targ`, on rayon's threads. A file that cannot
/// be read or decoded is an error naming it, or with `skip_bad` is reported in
/// [`Report::failed`] and has no copy. Errors writing the copies are always raised.
pub fn resize_files(
    src_root: &Path,
    dst_root: &Path,
    files: &[String],
    targ: usize,
    skip_bad: bool,
) -> Result<Report> {
    if targ == 0 {
        return Err(Error::InvalidArgument(
            "resize: the target size must be at least 1 pixel".into(),
        ));
    }
    let outcomes: Vec<Result<Outcome>> = files
        .par_iter()
        .map(|f| resize_one(&src_root.join(f), &dst_root.join(f), targ))
        .collect();
    let mut report = Report::default();
    for outcome in outcomes {
        match outcome {
            Ok(Outcome::Written) => report.written += 1,
            Ok(Outcome::Current) => report.current += 1,
            // The source's own fault (not the destination's): skipped when asked.
            Err(e) if skip_bad && e.bad_source().is_some() => {
                let path = e.bad_source().map(Path::to_path_buf).unwrap_or_default();
                report.failed.push((path, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

enum Outcome {
    Written,
    Current,
}

fn modified(path: &Path) -> Result<SystemTime> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(path, e))
}

fn resize_one(src: &Path, dst: &Path, targ: usize) -> Result<Outcome> {
    let src_time = modified(src)?;
    // Up to date: the copy carries the source's time (set below when it was written).
    if fs::metadata(dst).and_then(|m| m.modified()).ok() == Some(src_time) {
        return Ok(Outcome::Current);
    }
    let img = decode_file(src)?;
    let (h, w) = scale_min(img.height, img.width, targ);
    let small = resize_rgb(img, w, h).map_err(naming_image(src))?;
    let bytes = encode(small, dst)?;
    write_whole(dst, &bytes, src_time)?;
    Ok(Outcome::Written)
}

/// `img` resized to `w × h` with the pipeline's antialiased bilinear filter (what PIL's
/// `resize(..., BILINEAR)` does: the filter widens with the reduction, so no source pixel is
/// skipped).
fn resize_rgb(img: RgbImage, w: usize, h: usize) -> Result<RgbImage> {
    if (w, h) == (img.width, img.height) {
        return Ok(img);
    }
    let data = resize_rgb8(&img.data, img.height, img.width, h, w)?;
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

/// The copy's bytes, in the format its extension names.
fn encode(img: RgbImage, dst: &Path) -> Result<Vec<u8>> {
    let format = ImageFormat::from_path(dst).map_err(|_| {
        Error::InvalidArgument(format!(
            "{}: resize cannot tell which image format to write from the extension",
            dst.display()
        ))
    })?;
    if format == ImageFormat::Jpeg {
        let image = turbojpeg::Image {
            pixels: img.data.as_slice(),
            width: img.width,
            pitch: img.width * 3,
            height: img.height,
            format: turbojpeg::PixelFormat::RGB,
        };
        let buf =
            turbojpeg::compress(image, JPEG_QUALITY, turbojpeg::Subsamp::Sub2x2).map_err(|e| {
                Error::InvalidArgument(format!("{}: JPEG encoding: {e}", dst.display()))
            })?;
        return Ok(buf.to_vec());
    }
    let rgb = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
        .ok_or_else(|| Error::internal(format!("{}: bad image buffer", dst.display())))?;
    let mut out = std::io::Cursor::new(Vec::new());
    rgb.write_to(&mut out, format).map_err(|e| {
        Error::InvalidArgument(format!("{}: cannot write this format: {e}", dst.display()))
    })?;
    Ok(out.into_inner())
}

/// Writes `bytes` to `dst`, then gives it the source's modification time: that time is the
/// mark of a finished copy, so a copy cut short (interrupt, full disk) keeps the time of its
/// writing and is redone by the next run. That mark makes a temporary file and a rename
/// unnecessary.
fn write_whole(dst: &Path, bytes: &[u8], time: SystemTime) -> Result<()> {
    let folder = dst.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    let written = (|| {
        let mut file = fs::File::create(dst)?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.set_modified(time)
    })();
    written.map_err(|e| {
        // Nothing half-written stays behind (a full disk, a folder made read-only meanwhile).
        let _ = fs::remove_file(dst);
        Error::io(dst, e)
    })
}
