//! Image decoding: any supported file becomes 8-bit RGB, laid out HWC, row-major.
//!
//! Mirrors what fastai 0.7's `open_image` got from OpenCV: grey is replicated to three channels,
//! alpha is dropped, 16-bit is reduced to 8-bit and the JPEG/TIFF/WebP EXIF orientation is
//! applied. The header is read before any pixel buffer is allocated, so a file claiming absurd
//! dimensions is refused cheaply (`Error::ImageTooLarge`).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::{Error, Result};

/// Largest accepted side, in pixels. Photos of 16k per side exist; beyond that a header is far
/// more likely to be corrupt or hostile than a real training image.
pub const MAX_SIDE: u32 = 16_384;
/// Largest accepted pixel count (about 200 MB of RGB), checked with `MAX_SIDE`.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// File extensions (lower case) the folder scanner treats as images.
pub const IMAGE_EXTENSIONS: &[&str] =
    &["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"];

/// Whether `path` has one of `IMAGE_EXTENSIONS` (case-insensitive).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
        .unwrap_or(false)
}

/// A decoded 8-bit RGB image, HWC row-major (`data.len() == width * height * 3`).
#[derive(Clone, Debug)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Reads and decodes `path`. Errors name the file; a panic inside a codec (they do happen on
/// hostile input) is caught and reported as a decode error rather than killing the process.
pub fn decode_file(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let owned: PathBuf = path.to_path_buf();
    match std::panic::catch_unwind(|| decode_bytes(&bytes, &owned)) {
        Ok(r) => r,
        Err(_) => Err(Error::decode(path, "the decoder failed on malformed data")),
    }
}

/// Decodes an in-memory file; `path` is only used for messages and as a format hint.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let dec_err = |e: image::ImageError| Error::decode(path, e.to_string());
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        match path.extension().and_then(ImageFormat::from_extension) {
            Some(f) => reader.set_format(f),
            None => return Err(Error::decode(path, "unrecognised image format")),
        }
    }
    let mut decoder = reader.into_decoder().map_err(dec_err)?;
    // Header only so far: refuse before the pixel buffer is allocated.
    let (w, h) = decoder.dimensions();
    if w > MAX_SIDE || h > MAX_SIDE || (w as u64) * (h as u64) > MAX_PIXELS {
        return Err(Error::ImageTooLarge { path: path.to_path_buf(), width: w, height: h, limit: MAX_SIDE });
    }
    if w == 0 || h == 0 {
        return Err(Error::decode(path, "image has zero width or height"));
    }
    // A broken EXIF block should not make an otherwise fine image unusable.
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(dec_err)?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let rgb = match img {
        DynamicImage::ImageRgb8(b) => b,
        other => other.into_rgb8(),
    };
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    Ok(RgbImage { width, height, data: rgb.into_raw() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_case_insensitive() {
        assert!(has_image_extension(Path::new("a/b.JPG")));
        assert!(has_image_extension(Path::new("b.tiff")));
        assert!(!has_image_extension(Path::new("Thumbs.db")));
        assert!(!has_image_extension(Path::new("noext")));
    }

    #[test]
    fn garbage_is_a_decode_error_with_path() {
        let e = decode_bytes(b"definitely not an image", Path::new("x/bad.jpg")).unwrap_err();
        assert!(e.to_string().starts_with("x/bad.jpg"), "{e}");
    }
}
