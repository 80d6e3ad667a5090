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
use std::sync::OnceLock;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::{Error, Result};

/// Changes whenever decoded pixels could differ for the same file (another decoder, or another
/// way of using one). It is part of the activation-cache key (via `Pipeline::key`), so such a
/// change recomputes existing caches instead of reusing activations of other pixels.
pub const DECODER_VERSION: &str = "4 (JPEG: libjpeg-turbo via turbojpeg 1, the loader's at the \
     smallest M/8 scale covering the pipeline's need; others: image 0.25; 16-bit: high byte)";

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

/// Reads and decodes `path` at full size. Errors name the file; a panic inside a codec (they do
/// happen on hostile input) is caught and reported as a decode error rather than killing the
/// process.
pub fn decode_file(path: &Path) -> Result<RgbImage> {
    decode_file_covering(path, None)
}

/// Reads and decodes `path`, smaller when that is cheaper and enough: with `min_side`, a JPEG
/// whose short side is large enough is decoded by libjpeg-turbo at a reduced scale (M/8) whose
/// short side is still at least `min_side` (see [`jpeg_scale_eighths`]). Anything else (other
/// formats, small or lossless or CMYK JPEGs, `None`) is decoded at full size.
pub fn decode_file_covering(path: &Path, min_side: Option<usize>) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let owned: PathBuf = path.to_path_buf();
    match std::panic::catch_unwind(|| decode_bytes_covering(&bytes, &owned, min_side)) {
        Ok(r) => r,
        Err(_) => Err(Error::decode(path, "the decoder failed on malformed data")),
    }
}

/// Decodes an in-memory file at full size; `path` is only used for messages and as a format
/// hint.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    decode_bytes_covering(bytes, path, None)
}

/// [`decode_bytes`], at a reduced scale when `min_side` allows it (see
/// [`decode_file_covering`]).
pub fn decode_bytes_covering(
    bytes: &[u8],
    path: &Path,
    min_side: Option<usize>,
) -> Result<RgbImage> {
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
    // decoder, whose verdict then stands (at full size: the pipeline downscales it anyway).
    // The scale is chosen from the stored sides; the EXIF orientation applied afterwards may
    // swap them, which leaves the short side's length as it is.
    let turbo = match reader_format {
        Some(ImageFormat::Jpeg) => decode_jpeg_turbo(bytes, w as usize, h as usize, min_side),
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

/// The scaling factors M/8 the loader decodes with: 1/8, 1/4 and 1/2 where this libjpeg-turbo
/// offers them, and 8 (full size) always.
///
/// The other eighths (3/8, 5/8, 6/8, 7/8) are offered too, but their reduced inverse DCTs are
/// plain C, where the full-size one is SIMD: with them the augmented loader over the
/// Dogs-vs-Cats photos (500 × 375, sz 224, most decoded at 6/8) ran at 0.81 of the
/// libjpeg-turbo full-decode rate against 0.88 without scaling, slower than decoding in full.
/// Halving and quartering pay (PIL's draft mode on the same photos: 1.5x and 1.7x the full
/// decode's rate).
fn supported_eighths() -> &'static [usize] {
    static EIGHTHS: OnceLock<Vec<usize>> = OnceLock::new();
    EIGHTHS.get_or_init(|| {
        let listed = turbojpeg::Decompressor::supported_scaling_factors();
        [1, 2, 4, 8]
            .into_iter()
            .filter(|&m| m == 8 || listed.iter().any(|f| f.num() * 8 == m * f.denom()))
            .collect()
    })
}

/// The smallest M among `eighths` (ascending, holding 8) for which a `w × h` JPEG decoded at
/// M/8 still has a short side of at least `min_side`; 8 (full size) when none smaller does.
///
/// libjpeg-turbo rounds a scaled side up (ceil(side · M / 8)), so that is the side compared.
/// No margin is added above `min_side`: the pipeline's first step resizes the short side to
/// at most `min_side` with an antialiasing filter whose support widens with the reduction, so
/// a decode of exactly `min_side` is copied as is and a larger one is reduced; neither is
/// enlarged. The DCT-domain reduction keeps the block's lowest M × M frequencies, a sharper
/// low-pass than the pipeline's triangle filter, so the two-step result is a little sharper
/// than reducing the full decode in one step. On 200 Dogs-vs-Cats photos a margin did not
/// bring it reliably closer: the mean absolute difference per reduced photo (normalised
/// units) was 0.051 without one and 0.055 asking 1.25 × the side at sz 224, 0.066 and 0.042
/// at sz 128, and 0.043 asking twice the side, which leaves most photos at full size.
pub fn jpeg_scale_eighths(w: usize, h: usize, min_side: usize, eighths: &[usize]) -> usize {
    let short = w.min(h);
    eighths
        .iter()
        .copied()
        .filter(|&m| (1..8).contains(&m))
        .find(|&m| (short * m).div_ceil(8) >= min_side)
        .unwrap_or(8)
}

/// Decodes a JPEG of (already validated) size `w × h` with libjpeg-turbo into RGB, at a
/// reduced scale when `min_side` allows it, or `None` when it cannot do so cleanly (see the
/// caller).
fn decode_jpeg_turbo(
    bytes: &[u8],
    w: usize,
    h: usize,
    min_side: Option<usize>,
) -> Option<image::RgbImage> {
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
        // Lossless JPEGs cannot be scaled by the DCT.
        let m = match min_side {
            Some(need) if !header.is_lossless => {
                jpeg_scale_eighths(w, h, need, supported_eighths())
            }
            _ => 8,
        };
        let factor = turbojpeg::ScalingFactor::new(m, 8);
        // The handle keeps its factor between files: set it every time.
        if d.set_scaling_factor(factor).is_err() {
            *cell = None;
            return None;
        }
        let (w, h) = (factor.scale(w), factor.scale(h));
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
    fn the_smallest_eighth_covering_the_need_is_chosen() {
        let all = [1, 2, 3, 4, 5, 6, 7, 8];
        // A 500 × 375 photo: short sides at M/8 are ceil(375·M/8) = 47, 94, 141, 188, 235,
        // 282, 329 for M = 1..7.
        assert_eq!(jpeg_scale_eighths(500, 375, 224, &all), 5); // 313 × 235
        assert_eq!(jpeg_scale_eighths(500, 375, 64, &all), 2); // 125 × 94
        assert_eq!(jpeg_scale_eighths(500, 375, 188, &all), 4);
        assert_eq!(jpeg_scale_eighths(500, 375, 189, &all), 5);
        assert_eq!(jpeg_scale_eighths(500, 375, 47, &all), 1);
        assert_eq!(jpeg_scale_eighths(500, 375, 330, &all), 8); // 7/8 gives 329: too small
        assert_eq!(jpeg_scale_eighths(500, 375, 1000, &all), 8); // never enlarged
                                                                 // Stored sideways (EXIF orientation 6 or 8 shows it as 375 × 500): the same short side.
        assert_eq!(jpeg_scale_eighths(375, 500, 224, &all), 5);
        assert_eq!(jpeg_scale_eighths(375, 500, 64, &all), 2);
        // Only the factors the library offers: without 5/8, 3/4 is the next that covers 224.
        assert_eq!(jpeg_scale_eighths(500, 375, 224, &[1, 2, 4, 6, 8]), 6);
        assert_eq!(jpeg_scale_eighths(500, 375, 224, &[1, 2, 4, 8]), 8);
        // The loader uses the halving ones only (the others are slower than a full decode).
        assert_eq!(supported_eighths(), &[1, 2, 4, 8][..]);
    }

    /// A `w × h` JPEG of smooth colour waves with some finer stripes (quality 95), with an
    /// EXIF block giving `orientation` when there is one.
    fn test_jpeg(w: u32, h: u32, orientation: Option<u16>) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as f64, y as f64);
            let wave = |a: f64, b: f64, c: f64| (127.0 + 90.0 * (x / a + y / b + c).sin()) as u8;
            let stripe = if ((x + 2.0 * y) / 9.0) as u32 % 2 == 0 {
                30
            } else {
                0
            };
            let p = image::Rgb([
                wave(23.0, 41.0, 0.0).saturating_add(stripe),
                wave(-37.0, 19.0, 1.0),
                wave(53.0, -29.0, 2.0).saturating_sub(stripe),
            ]);
            p
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&img)
            .expect("encode JPEG");
        let Some(o) = orientation else { return jpeg };
        // APP1 "Exif": a little-endian TIFF header and one IFD entry, Orientation (0x0112,
        // SHORT, count 1).
        let mut app1 = vec![0xFF, 0xE1, 0, 34];
        app1.extend_from_slice(b"Exif\0\0II\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0");
        app1.extend_from_slice(&[o as u8, (o >> 8) as u8, 0, 0, 0, 0, 0, 0]);
        [&jpeg[..2], &app1[..], &jpeg[2..]].concat()
    }

    /// Area-average reduction of `len` samples (stride `step` apart, from `at`) by `8 / m`:
    /// output sample o averages the input over [o·8/m, (o+1)·8/m), pixels weighted by how
    /// much of them falls inside, the part past the last pixel left out.
    fn area_average(src: &[f64], at: usize, step: usize, len: usize, m: usize) -> Vec<f64> {
        let r = 8.0 / m as f64;
        (0..(len * m).div_ceil(8))
            .map(|o| {
                let (lo, hi) = (o as f64 * r, ((o + 1) as f64 * r).min(len as f64));
                let (mut sum, mut weight) = (0.0, 0.0);
                for i in lo.floor() as usize..(hi.ceil() as usize).min(len) {
                    let w = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                    sum += w * src[at + i * step];
                    weight += w;
                }
                sum / weight
            })
            .collect()
    }

    /// Mean absolute difference, in 8-bit levels, of `got` and the full-size decode of `jpeg`
    /// area-averaged by 8/`m` (what the DCT-domain reduction approximates).
    fn difference_from_reduced_full_decode(jpeg: &[u8], got: &RgbImage, m: usize) -> f64 {
        let full = decode_bytes(jpeg, Path::new("full.jpg")).expect("full decode");
        let (w, h) = (full.width, full.height);
        let px: Vec<f64> = full.data.iter().map(|&v| v as f64).collect();
        let (sw, sh) = ((w * m).div_ceil(8), (h * m).div_ceil(8));
        assert_eq!((got.width, got.height), (sw, sh));
        let mut total = 0.0;
        for c in 0..3 {
            // Rows first (h × sw), then columns.
            let mut rows = vec![0.0; h * sw];
            for y in 0..h {
                let r = area_average(&px, y * w * 3 + c, 3, w, m);
                rows[y * sw..(y + 1) * sw].copy_from_slice(&r);
            }
            for x in 0..sw {
                let col = area_average(&rows, x, sw, h, m);
                for (y, v) in col.iter().enumerate() {
                    total += (v - got.data[(y * sw + x) * 3 + c] as f64).abs();
                }
            }
        }
        total / got.data.len() as f64
    }

    #[test]
    fn a_scaled_decode_is_the_full_decode_reduced() {
        let jpeg = test_jpeg(501, 373, None);
        let path = Path::new("x/big.jpg");
        // Short side 373: 1/2 gives ceil(186.5) = 187 ≥ 160.
        let got = decode_bytes_covering(&jpeg, path, Some(160)).expect("scaled decode");
        assert_eq!((got.width, got.height), (251, 187));
        let mad = difference_from_reduced_full_decode(&jpeg, &got, 4);
        // Measured: 0.51 levels (0.47 at 1/4 below).
        assert!(mad < 1.0, "mean absolute difference {mad} levels");
        // A need no halving covers is the full decode, pixel for pixel: 224 (5/8 would do, but
        // the loader does not use it) and 400 (larger than 7/8).
        let full = decode_bytes(&jpeg, path).expect("full decode");
        for need in [224, 400] {
            let big = decode_bytes_covering(&jpeg, path, Some(need)).expect("decode");
            assert_eq!((big.width, big.height, &big.data), (501, 373, &full.data));
        }
        // Non-JPEGs are never reduced.
        let mut png = Vec::new();
        DynamicImage::ImageRgb8(image::RgbImage::new(64, 48))
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .expect("encode PNG");
        let p = decode_bytes_covering(&png, Path::new("x/a.png"), Some(8)).expect("PNG");
        assert_eq!((p.width, p.height), (64, 48));
    }

    #[test]
    fn a_scaled_decode_is_still_turned_upright() {
        // Stored 504 × 376, orientation 6 (rotate 90° clockwise to view): shown 376 × 504.
        // Sides divisible by 8, so no partial block lands on the edge the rotation moves.
        let jpeg = test_jpeg(504, 376, Some(6));
        let full = decode_bytes(&jpeg, Path::new("r.jpg")).expect("full decode");
        assert_eq!((full.width, full.height), (376, 504));
        let got = decode_bytes_covering(&jpeg, Path::new("r.jpg"), Some(64)).expect("decode");
        // 1/4: 376 / 4 = 94 ≥ 64, sides swapped like the full decode's.
        assert_eq!((got.width, got.height), (94, 126));
        let mad = difference_from_reduced_full_decode(&jpeg, &got, 2);
        // Measured: 0.47 levels, as for the same file without the EXIF block.
        assert!(mad < 1.0, "mean absolute difference {mad} levels");
    }

    #[test]
    fn garbage_is_a_decode_error_with_path() {
        let e = decode_bytes(b"definitely not an image", Path::new("x/bad.jpg")).unwrap_err();
        assert!(e.to_string().starts_with("x/bad.jpg"), "{e}");
    }
}
