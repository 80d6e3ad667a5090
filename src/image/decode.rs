//! Image decoding: any supported file becomes 8-bit RGB, laid out HWC, row-major.
//!
//! Mirrors what fastai 0.7's `open_image` got from OpenCV: grey is replicated to three channels,
//! alpha is dropped, 16-bit is reduced to 8-bit and the JPEG/TIFF/WebP EXIF orientation is
//! applied. The header is read before any pixel buffer is allocated, so a file claiming absurd
//! dimensions is refused cheaply (`Error::ImageTooLarge`). The format is taken from the
//! content, never the extension, and a JPEG cut short is an error (as in PIL), not an image
//! padded with grey.

use std::cell::RefCell;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::{Error, Result};

/// Changes whenever decoded pixels could differ for the same file (another decoder, or another
/// way of using one). It is part of the activation-cache key (via `Pipeline::key`), so such a
/// change recomputes existing caches instead of reusing activations of other pixels.
pub const DECODER_VERSION: &str =
    "3 (JPEG: libjpeg-turbo via turbojpeg 1, others: image 0.25; 16-bit: high byte)";

/// Largest accepted side, in pixels. Photos of 16k per side exist; beyond that a header is far
/// more likely to be corrupt or hostile than a real training image.
pub const MAX_SIDE: u32 = 16_384;
/// Largest accepted pixel count (about 200 MB of RGB), checked with `MAX_SIDE`.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// File extensions (lower case) the folder scanner treats as images.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "bmp", "gif", "webp", "tif", "tiff",
];

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

/// Refuses a path that is neither a regular file nor a folder (a folder goes on to fail in
/// `read` as IsADirectoryError): reading a named pipe would block with no way to interrupt
/// it, and a device (`/dev/zero`) would never end. The loaders' file lists are checked when
/// they are made (the folder scan, the CSV check), so only a path given by hand needs this.
pub fn require_regular_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() && !m.is_dir() => Err(Error::decode(path, "not a regular file")),
        Ok(_) => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
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
    if bytes.is_empty() {
        return Err(Error::decode(path, "empty file (0 bytes)"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let reader_format = reader.format();
    // The format comes from the content only, as with PIL: every format we decode has a
    // signature, and trusting the extension only turned "this is a text file" into a
    // cryptic codec error.
    match reader_format {
        None => {
            return Err(Error::decode(
                path,
                format!(
                    "not a recognised image format (the content is not JPEG, PNG, BMP, GIF, WebP or TIFF; it starts with {})",
                    preview(bytes)
                ),
            ))
        }
        // The JPEG decoder fills missing data with grey instead of failing; PIL refuses such
        // files, and silently training on half-grey images is worse than an error.
        Some(ImageFormat::Jpeg) if jpeg_is_truncated(bytes) => {
            return Err(Error::decode(
                path,
                format!("truncated JPEG: the data ends before the end-of-image marker ({} bytes)", bytes.len()),
            ))
        }
        Some(_) => {}
    }
    let mut decoder = reader.into_decoder().map_err(dec_err)?;
    // Header only so far: refuse before the pixel buffer is allocated.
    let (w, h) = decoder.dimensions();
    if w > MAX_SIDE || h > MAX_SIDE || (w as u64) * (h as u64) > MAX_PIXELS {
        return Err(Error::ImageTooLarge {
            path: path.to_path_buf(),
            width: w,
            height: h,
            limit: MAX_SIDE,
        });
    }
    if w == 0 || h == 0 {
        return Err(Error::decode(path, "image has zero width or height"));
    }
    // A broken EXIF block should not make an otherwise fine image unusable.
    let orientation = decoder.orientation().ok();
    // JPEGs go through libjpeg-turbo when it can give RGB directly; CMYK/YCCK files, and any
    // file it rejects or only decodes with warnings (corrupt data), take the image crate's
    // decoder, whose verdict then stands.
    let turbo = match reader_format {
        Some(ImageFormat::Jpeg) => decode_jpeg_turbo(bytes, w as usize, h as usize),
        _ => None,
    };
    let mut img = match turbo {
        Some(buf) => DynamicImage::ImageRgb8(buf),
        None => DynamicImage::from_decoder(decoder).map_err(dec_err)?,
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        // 16-bit samples keep their high byte, as OpenCV's reader (fastai 0.7's) does; the
        // image crate's own reduction rounds (v·255/65535), one level higher on about a fifth
        // of the values.
        wide @ (DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_)) => wide
            .into_rgb16()
            .into_raw()
            .into_iter()
            .map(|v| (v >> 8) as u8)
            .collect(),
        other => other.into_rgb8().into_raw(),
    };
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

thread_local! {
    // A libjpeg-turbo decompressor per worker thread: creating one allocates its state.
    static TURBO: RefCell<Option<turbojpeg::Decompressor>> = const { RefCell::new(None) };
}

/// Decodes a JPEG of (already validated) size `w × h` with libjpeg-turbo into RGB, or `None`
/// when it cannot do so cleanly (see the caller).
fn decode_jpeg_turbo(bytes: &[u8], w: usize, h: usize) -> Option<image::RgbImage> {
    TURBO.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = turbojpeg::Decompressor::new().ok();
        }
        let d = cell.as_mut()?;
        let Ok(header) = d.read_header(bytes) else {
            *cell = None;
            return None;
        };
        let rgb_capable = matches!(
            header.colorspace,
            turbojpeg::Colorspace::YCbCr | turbojpeg::Colorspace::Gray | turbojpeg::Colorspace::RGB
        );
        if !rgb_capable || header.width != w || header.height != h {
            return None;
        }
        let mut pixels = vec![0u8; w * h * 3];
        let image = turbojpeg::Image {
            pixels: &mut pixels[..],
            width: w,
            pitch: w * 3,
            height: h,
            format: turbojpeg::PixelFormat::RGB,
        };
        if d.decompress(bytes, image).is_err() {
            // Start the next file from a fresh handle rather than trust one a failed (possibly
            // hostile) stream left behind.
            *cell = None;
            return None;
        }
        image::RgbImage::from_raw(w as u32, h as u32, pixels)
    })
}

/// The first bytes of a file for an error message: as text when they look like text.
fn preview(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(12)];
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// Whether a JPEG (starting with SOI) ends before its end-of-image marker: either the marker
/// segments run past the end of the file before the first start-of-scan, or no EOI (FF D9)
/// follows the first scan. Inside entropy-coded data a 0xFF byte is always followed by 0x00 or
/// a restart marker, so an FF D9 after the scan header can only be the EOI. Malformed segment
/// structure returns false: the decoder reports that better.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while i < bytes.len() && bytes[i] == 0xFF && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if i + 2 > bytes.len() {
            return true;
        }
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        // Standalone markers (TEM, RSTn) carry no length.
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            i += 2;
            continue;
        }
        if marker == 0xD9 {
            return false; // EOI before any scan: broken, not truncated
        }
        if i + 4 > bytes.len() {
            return true;
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        if len < 2 {
            return false;
        }
        let next = i + 2 + len;
        if next > bytes.len() {
            return true;
        }
        if marker == 0xDA {
            return !bytes[next..].windows(2).any(|w| w == [0xFF, 0xD9]);
        }
        i = next;
    }
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
    fn jpeg_truncation_is_detected() {
        // SOI, a 4-byte APP0, SOS header (len 8), two bytes of scan data, EOI.
        let full: &[u8] = &[
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 63,
            0, 0x12, 0xFF, 0x00, 0xFF, 0xD9,
        ];
        assert!(!jpeg_is_truncated(full));
        for cut in 2..full.len() {
            assert!(jpeg_is_truncated(&full[..cut]), "cut at {cut}");
        }
        // Trailing bytes after the EOI are fine.
        assert!(!jpeg_is_truncated(&[full, b"junk"].concat()));
    }

    #[test]
    fn sixteen_bit_samples_keep_their_high_byte() {
        // 0x80FF: high byte 128; rounding v·255/65535 would give 129.
        let samples: Vec<u16> = vec![0x80FF, 0x00FF, 0xFFFF, 0x0100, 0x7F80, 0x1234];
        let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(2, 1, samples.clone())
            .expect("2x1 RGB16 buffer");
        let mut png = Vec::new();
        DynamicImage::ImageRgb16(img)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .expect("encode PNG");
        let got = decode_bytes(&png, Path::new("x/wide.png")).expect("decode");
        let want: Vec<u8> = samples.iter().map(|v| (v / 256) as u8).collect();
        assert_eq!(got.data, want);
        // Grey 16-bit: the one sample spread over three channels.
        let grey = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(1, 1, vec![0x80FFu16])
            .expect("1x1 L16 buffer");
        let mut png = Vec::new();
        DynamicImage::ImageLuma16(grey)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .expect("encode PNG");
        assert_eq!(
            decode_bytes(&png, Path::new("g.png")).expect("decode").data,
            vec![128; 3]
        );
    }

    #[test]
    fn garbage_is_a_decode_error_with_path() {
        let e = decode_bytes(b"definitely not an image", Path::new("x/bad.jpg")).unwrap_err();
        assert!(e.to_string().starts_with("x/bad.jpg"), "{e}");
    }
}
