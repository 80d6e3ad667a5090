//! Resampling RGB images with PIL's antialiased bilinear filter (the filter widens with the
//! reduction, so no source pixel is skipped), and the short-side scale formula. The pipeline
//! (`transforms`) resizes the scale step and crop windows with it; `data.resize` its copies.

use std::cell::RefCell;

use fast_image_resize::{
    images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};

use crate::{Error, Result};

/// Short side → `targ`, the other side `max(floor(side · targ / short), targ)` (fastai's
/// `scale_min` and `scale_to`): the (rows, cols) of a `rows × cols` image scaled that way.
pub fn scale_min(rows: usize, cols: usize, targ: usize) -> (usize, usize) {
    let ratio = targ as f64 / rows.min(cols) as f64;
    let scale = |side: usize| ((side as f64 * ratio).floor() as usize).max(targ);
    (scale(rows), scale(cols))
}

/// Borrowed source image, HWC RGB: 8-bit (decoded files) or float in [0, 1] (Python callers).
#[derive(Clone, Copy)]
pub enum SrcRef<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

/// Source image with its dimensions.
#[derive(Clone, Copy)]
pub struct Src<'a> {
    pub data: SrcRef<'a>,
    pub rows: usize,
    pub cols: usize,
}

/// A resampled working image, HWC: 8-bit for decoded files (4× less memory traffic when
/// sampling), float in [0, 1] for float sources.
pub(crate) enum Work {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

thread_local! {
    // The resizer keeps scratch buffers between calls; one per worker thread.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// The bytes of a float slice (native byte order), without copying.
pub(crate) fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: every byte of an f32 is initialised and u8 has alignment 1, so the same memory
    // read as `size_of_val(v)` bytes is valid; the result borrows `v`, so it cannot outlive it.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn f32_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as in `f32_bytes`, and every bit pattern is a valid f32, so whatever bytes are
    // written leave valid floats; the exclusive borrow of `v` is held as long as the result.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

fn resize_failed(e: impl std::fmt::Display) -> Error {
    Error::Pipeline {
        reason: format!("resampling failed: {e}"),
    }
}

/// An 8-bit RGB image (HWC) of `rows × cols` resized to `to_rows × to_cols` (the thread's
/// resizer).
pub(crate) fn resize_rgb8(
    data: &[u8],
    rows: usize,
    cols: usize,
    to_rows: usize,
    to_cols: usize,
) -> Result<Vec<u8>> {
    let src = Src {
        data: SrcRef::U8(data),
        rows,
        cols,
    };
    let mut work = Work::U8(Vec::new());
    let win = (0.0, 0.0, rows as f64, cols as f64);
    resize_window(&src, win, to_rows, to_cols, &mut work)?;
    match work {
        Work::U8(v) => Ok(v),
        Work::F32(_) => Err(resize_failed("8-bit input resized to floats")),
    }
}

/// Resizes the window (top, left, height, width) of `src` (source pixel units) to
/// `rows × cols` into `work`. A window that is the identity (same size, integer offset, inside
/// the image) is copied exactly.
pub(crate) fn resize_window(
    src: &Src,
    win: (f64, f64, f64, f64),
    rows: usize,
    cols: usize,
    work: &mut Work,
) -> Result<()> {
    let (top, left, h, w) = win;
    let n = rows * cols * 3;
    match (src.data, &mut *work) {
        (SrcRef::U8(_), Work::U8(_)) | (SrcRef::F32(_), Work::F32(_)) => {}
        (SrcRef::U8(_), w) => *w = Work::U8(Vec::new()),
        (SrcRef::F32(_), w) => *w = Work::F32(Vec::new()),
    }
    match work {
        Work::U8(v) => v.resize(n, 0),
        Work::F32(v) => v.resize(n, 0.0),
    }
    let exact = h == rows as f64
        && w == cols as f64
        && top.fract() == 0.0
        && left.fract() == 0.0
        && top + h <= src.rows as f64
        && left + w <= src.cols as f64;
    // A window that pokes out of the image (a crop larger than an image scaled below `sz`)
    // goes through the resizer below, which stretches what there is, as for every other such
    // window.
    if exact {
        let at = (top as usize, left as usize);
        match (src.data, work) {
            (SrcRef::U8(d), Work::U8(v)) => copy_window(d, src.cols, at, cols, v),
            (SrcRef::F32(d), Work::F32(v)) => copy_window(d, src.cols, at, cols, v),
            _ => return Err(resize_failed("working buffer type mismatch")),
        }
        return Ok(());
    }
    // Float round-off can push the window a hair past the edge; the resizer rejects that.
    let (top, left) = (top.max(0.0), left.max(0.0));
    let (h, w) = (h.min(src.rows as f64 - top), w.min(src.cols as f64 - left));
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(left, top, w, h);
    let (sw, sh) = (src.cols as u32, src.rows as u32);
    RESIZER.with(|r| {
        let mut r = r.borrow_mut();
        match (src.data, work) {
            (SrcRef::U8(d), Work::U8(v)) => {
                let s = ImageRef::new(sw, sh, d, PixelType::U8x3).map_err(resize_failed)?;
                let mut dst = Image::from_slice_u8(cols as u32, rows as u32, v, PixelType::U8x3)
                    .map_err(resize_failed)?;
                r.resize(&s, &mut dst, &opts).map_err(resize_failed)
            }
            (SrcRef::F32(d), Work::F32(v)) => {
                let s =
                    ImageRef::new(sw, sh, f32_bytes(d), PixelType::F32x3).map_err(resize_failed)?;
                let mut dst = Image::from_slice_u8(
                    cols as u32,
                    rows as u32,
                    f32_bytes_mut(v),
                    PixelType::F32x3,
                )
                .map_err(resize_failed)?;
                r.resize(&s, &mut dst, &opts).map_err(resize_failed)
            }
            _ => Err(resize_failed("working buffer type mismatch")),
        }
    })
}

/// Copies the window at (top, left) of an HWC image `src_cols` pixels wide into `out`, which
/// holds the window's rows of `cols` pixels (the window lies inside the image).
fn copy_window<T: Copy>(
    src: &[T],
    src_cols: usize,
    (top, left): (usize, usize),
    cols: usize,
    out: &mut [T],
) {
    let line = cols * 3;
    if line == 0 {
        return;
    }
    for (r, row) in out.chunks_exact_mut(line).enumerate() {
        let a = ((top + r) * src_cols + left) * 3;
        row.copy_from_slice(&src[a..a + line]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_matches_fastai() {
        assert_eq!(scale_min(375, 500, 224), (224, 298));
        assert_eq!(scale_min(500, 375, 224), (298, 224));
        assert_eq!(scale_min(224, 224, 224), (224, 224));
        assert_eq!(scale_min(100, 301, 50), (50, 150));
    }

    #[test]
    fn the_smaller_side_becomes_the_target() {
        // fastai's scale_to: max(floor(side * targ / smaller), targ); (rows, cols) order.
        assert_eq!(scale_min(375, 500, 340), (340, 453));
        assert_eq!(scale_min(500, 375, 340), (453, 340));
        assert_eq!(scale_min(50, 100, 340), (340, 680));
        assert_eq!(scale_min(64, 64, 32), (32, 32));
    }

    #[test]
    fn a_window_inside_the_image_is_copied_exactly() {
        let data: Vec<u8> = (0..5 * 4 * 3).map(|v| v as u8).collect();
        let src = Src {
            data: SrcRef::U8(&data),
            rows: 5,
            cols: 4,
        };
        let mut work = Work::U8(Vec::new());
        resize_window(&src, (1.0, 2.0, 3.0, 2.0), 3, 2, &mut work).unwrap();
        let Work::U8(v) = work else {
            panic!("8-bit source, 8-bit window")
        };
        let expect: Vec<u8> = (1..4)
            .flat_map(|r| {
                (2..4).flat_map(move |c| (0..3).map(move |ch| ((r * 4 + c) * 3 + ch) as u8))
            })
            .collect();
        assert_eq!(v, expect);
    }
}
