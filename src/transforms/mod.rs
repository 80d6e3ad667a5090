//! The image pipeline of fastai 0.7's `image_gen` (spec §3.2–3.5), run per image in Rust.
//!
//! Order of operations is the original's: scale (or random scale) → padding → augmentations in
//! the user's order → crop → normalise → CHW. The geometric steps are fused: the decoded image
//! is resized once to the scaled size with an antialiasing (PIL-style bilinear) filter, and
//! padding, rotation, zoom, flips, dihedral and the crop are composed into one map from output
//! pixels back to that scaled image, sampled once (bilinear, reflect border). When no step
//! needs the whole image (only crop and flips), the crop window alone is resized directly from
//! the decoded image, which gives the same pixels as "resize all, then crop" with less work.
//!
//! Randomness: every image draws its parameters from its own generator seeded by
//! (seed, epoch, item index), so a batch is the same whatever the number of threads
//! (rough edge 24). A fixed number of values is drawn per step, so one step's outcome never
//! shifts the draws of the next.

use std::cell::RefCell;

use fast_image_resize::{
    images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};

/// How the final `sz × sz` window is taken (fastai's `CropType`).
#[derive(Clone, Debug, PartialEq)]
pub enum CropKind {
    Random,
    Center,
    /// Resize the (scaled, augmented) image to exactly `sz × sz`, distorting the aspect ratio.
    No,
    /// Inception-style random-resized crop taken from the full-resolution (augmented) image.
    GoogleNet {
        min_area_frac: f64,
        min_aspect_ratio: f64,
        max_aspect_ratio: f64,
        flip_hw_p: f64,
    },
}

/// Border handling of a geometric augmentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Border {
    /// Mirror including the edge pixel (OpenCV BORDER_REFLECT, scipy 'reflect').
    Reflect,
    /// Black outside the image.
    Constant,
}

/// One augmentation step with the original's parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Aug {
    /// With probability `p`, rotate by U(−deg, deg) degrees counter-clockwise about the centre.
    Rotate { deg: f64, p: f64, border: Border },
    /// Brightness U(−b, b) and contrast U(−c, c) (always applied).
    Lighting { b: f64, c: f64 },
    /// With probability `p`, mirror left↔right.
    Flip { p: f64 },
    /// k·90° rotation (k uniform in 0..4), then a mirror with probability 0.5.
    Dihedral,
    /// Zoom about the centre by 1 + U(zoom_min, zoom_max); `border` for zoom-out (the original
    /// ignored its mode and always used black, rough edge 20: here the mode is honoured).
    Zoom {
        zoom_max: f64,
        zoom_min: f64,
        border: Border,
    },
    /// Widen (or, with probability 1/2, heighten) by 1 + U(0, max), then crop the centre back
    /// to the original size (fastai's `RandomStretch`).
    Stretch { max: f64 },
    /// Exactly one of: rotate by U(−deg, deg) (always applied once picked), zoom by
    /// 1 + U(0, zoom), stretch by 1 + U(0, stretch), or nothing, with probabilities `ps`
    /// (fastai's `RandomRotateZoom`).
    RotateZoom {
        deg: f64,
        zoom: f64,
        stretch: f64,
        ps: [f64; 4],
        border: Border,
    },
    /// Black squares of side `length` at `n_holes` uniformly drawn centres, clipped to the
    /// image, in the image as it is at this step (fastai's `Cutout` as intended: the original
    /// read the size from the wrong axes, rough edge 19).
    Cutout { n_holes: usize, length: usize },
    /// With probability `p`, a Gaussian blur of a kernel size drawn from `sizes` (odd;
    /// OpenCV's `GaussianBlur` with sigma from the size), fastai's `RandomBlur` as intended
    /// (the original never blurred, rough edge 19).
    Blur { sizes: Vec<usize>, p: f64 },
}

/// `RandomScale(sz, max_zoom, p)`: with probability `p`, the short side becomes
/// `int(sz · m)` with m ~ U(lo, hi); otherwise `sz`.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomScale {
    pub lo: f64,
    pub hi: f64,
    pub p: f64,
}

/// A complete transform (one of the two that `tfms_from_model` returns).
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub sz: usize,
    pub scale: Option<RandomScale>,
    pub pad: usize,
    pub pad_border: Border,
    pub augs: Vec<Aug>,
    pub crop: CropKind,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Pipeline {
    /// Text that changes whenever the pixels this pipeline produces could change (including
    /// the decoder's version).
    pub fn key(&self) -> String {
        format!(
            "pipeline-v2 decoder {} {self:?}",
            crate::image::decode::DECODER_VERSION
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers

pub use crate::util::rng::Rng;

/// Stream ids so shuffling and augmentation never share random numbers.
pub const STREAM_AUG: u64 = 1;
pub const STREAM_SHUFFLE: u64 = 2;

// ---------------------------------------------------------------------------------------------
// Drawn parameters

/// What one augmentation step drew for one image.
#[derive(Clone, Debug, PartialEq)]
pub enum AugDraw {
    /// Angle in degrees, `None` when the step was skipped (probability).
    Rotate(Option<f64>),
    Lighting {
        b: f64,
        c: f64,
    },
    Flip(bool),
    Dihedral {
        k: u32,
        flip: bool,
    },
    Zoom(f64),
    /// Factor − 1, and whether the height (not the width) grows.
    Stretch {
        s: f64,
        tall: bool,
    },
    /// `RandomRotateZoom` picked nothing.
    Pass,
    /// Each hole's centre as fractions of the height and width (whole pixels once the size of
    /// the image at that step is known).
    Cutout(Vec<(f64, f64)>),
    /// The kernel size, `None` when the step was skipped (probability).
    Blur(Option<usize>),
}

/// Every random value of one image; enough to reproduce it exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Zoom multiplier of the scale step (1 when not applied).
    pub scale_m: f64,
    pub augs: Vec<AugDraw>,
    /// Uniform draws positioning a random crop (row, column).
    pub crop_u: (f64, f64),
    /// GoogleNet crop tries: (area fraction, aspect ratio, u_row, u_col) × 10, and the h/w flip.
    pub gnet: Vec<(f64, f64, f64, f64)>,
    pub gnet_flip_hw: bool,
}

impl Pipeline {
    /// Draws this image's parameters; a fixed number of values per step.
    pub fn draw(&self, rng: &mut Rng) -> Params {
        let scale_m = match &self.scale {
            Some(s) => {
                let hit = rng.uniform() < s.p;
                let m = rng.range(s.lo, s.hi);
                if hit {
                    m
                } else {
                    1.0
                }
            }
            None => 1.0,
        };
        let augs = self
            .augs
            .iter()
            .map(|a| match a {
                Aug::Rotate { deg, p, .. } => {
                    let hit = rng.uniform() < *p;
                    let angle = rng.range(-deg, *deg);
                    AugDraw::Rotate(if hit { Some(angle) } else { None })
                }
                Aug::Lighting { b, c } => AugDraw::Lighting {
                    b: rng.range(-b, *b),
                    c: rng.range(-c, *c),
                },
                Aug::Flip { p } => AugDraw::Flip(rng.uniform() < *p),
                Aug::Dihedral => {
                    let k = rng.below(4) as u32;
                    AugDraw::Dihedral {
                        k,
                        flip: rng.uniform() < 0.5,
                    }
                }
                Aug::Zoom {
                    zoom_max, zoom_min, ..
                } => AugDraw::Zoom(rng.range(*zoom_min, *zoom_max)),
                Aug::Stretch { max } => draw_stretch(rng, *max),
                Aug::Blur { sizes, p } => {
                    let hit = rng.uniform() < *p;
                    let pick = rng.below(sizes.len().max(1) as u64) as usize;
                    let k = sizes.get(pick).copied().unwrap_or(1);
                    AugDraw::Blur(hit.then_some(k))
                }
                Aug::Cutout { n_holes, .. } => AugDraw::Cutout(
                    (0..*n_holes)
                        .map(|_| (rng.uniform(), rng.uniform()))
                        .collect(),
                ),
                Aug::RotateZoom {
                    deg,
                    zoom,
                    stretch,
                    ps,
                    ..
                } => {
                    // Every candidate's values are drawn whatever the pick, so the number of
                    // draws per image stays fixed.
                    let u = rng.uniform() * ps.iter().sum::<f64>();
                    let angle = rng.range(-deg, *deg);
                    let z = rng.range(0.0, *zoom);
                    let st = draw_stretch(rng, *stretch);
                    let pick = ps
                        .iter()
                        .scan(0.0, |acc, p| {
                            *acc += p;
                            Some(*acc)
                        })
                        .position(|cum| u < cum);
                    match pick {
                        Some(0) => AugDraw::Rotate(Some(angle)),
                        Some(1) => AugDraw::Zoom(z),
                        Some(2) => st,
                        _ => AugDraw::Pass,
                    }
                }
            })
            .collect();
        let crop_u = (rng.uniform(), rng.uniform());
        let (gnet, gnet_flip_hw) = match &self.crop {
            CropKind::GoogleNet {
                min_area_frac,
                min_aspect_ratio,
                max_aspect_ratio,
                flip_hw_p,
            } => {
                let tries = (0..10)
                    .map(|_| {
                        (
                            rng.range(*min_area_frac, 1.0),
                            rng.range(*min_aspect_ratio, *max_aspect_ratio),
                            rng.uniform(),
                            rng.uniform(),
                        )
                    })
                    .collect();
                (tries, rng.uniform() < *flip_hw_p)
            }
            _ => (Vec::new(), false),
        };
        Params {
            scale_m,
            augs,
            crop_u,
            gnet,
            gnet_flip_hw,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry

/// Short side → `targ` (spec §3.4 `scale_min`): returns (rows, cols).
pub fn scale_min_dims(rows: usize, cols: usize, targ: usize) -> (usize, usize) {
    let ratio = targ as f64 / rows.min(cols) as f64;
    let r = ((rows as f64 * ratio).floor() as usize).max(targ);
    let c = ((cols as f64 * ratio).floor() as usize).max(targ);
    (r, c)
}

/// Centre-crop offset: ceil((n − s) / 2).
pub fn center_offset(n: usize, s: usize) -> usize {
    (n.saturating_sub(s) + 1) / 2
}

/// Random-crop offset: floor(u · (n − s)).
pub fn random_offset(n: usize, s: usize, u: f64) -> usize {
    ((u * n.saturating_sub(s) as f64).floor() as usize).min(n.saturating_sub(s))
}

/// Where source coordinate (y, x) reads from under `border`: mirrored back inside for
/// Reflect, `None` (a zero pixel) outside the image for Constant.
#[inline]
fn apply_border(y: f32, x: f32, rows: usize, cols: usize, border: Border) -> Option<(f32, f32)> {
    match border {
        Border::Reflect => Some((reflect(y, rows), reflect(x, cols))),
        Border::Constant => (inside(y, rows) && inside(x, cols)).then_some((y, x)),
    }
}

/// Continuous half-sample-symmetric reflection of `x` into [−0.5, n − 0.5]. Bilinear sampling of
/// the reflected coordinate equals bilinear sampling of the mirror-extended image.
#[inline]
fn reflect(x: f32, n: usize) -> f32 {
    let n = n as f32;
    let lo = -0.5;
    if x >= lo && x <= n - 0.5 {
        return x;
    }
    let period = 2.0 * n;
    let mut t = (x - lo).rem_euclid(period);
    if t > n {
        t = period - t;
    }
    t + lo
}

/// One geometric step, stored with what its inverse map needs. Dimensions are those of the
/// step's *input* image (rows, cols).
#[derive(Clone, Debug)]
enum Geo {
    /// Output = input padded by `p` on all sides.
    Pad {
        p: f32,
        rows: usize,
        cols: usize,
        border: Border,
    },
    /// Affine about (cx, cy): input = A·(out − c) + c (A is the inverse of the forward map).
    Affine {
        a: [f32; 4],
        cx: f32,
        cy: f32,
        rows: usize,
        cols: usize,
        border: Border,
    },
    /// Exact pixel permutation: out (x, y) → input (x', y') from a 90° rotation / mirror.
    Dihedral {
        k: u32,
        flip: bool,
        rows: usize,
        cols: usize,
    },
    Flip {
        cols: usize,
    },
}

/// The inverse map of a whole pipeline for one image.
struct Plan {
    /// Geometric steps in forward order; evaluated in reverse.
    geo: Vec<Geo>,
    /// Output pixel → coordinates in the last geometric output: y = oy + (i + 0.5)·sy − 0.5.
    crop_off: (f32, f32),
    crop_scale: (f32, f32),
}

impl Plan {
    /// Maps output pixel (row i, col j) to coordinates in the working image, or None when it
    /// falls on a constant (black) border.
    #[inline]
    fn map(&self, i: usize, j: usize) -> Option<(f32, f32)> {
        self.map_with(i as f32, j as f32, true)
    }

    /// Steps that handle a border (padding, rotation, zoom). With at most one of them, a pixel
    /// whose final coordinates are inside the working image never touched a border, so the
    /// whole map is one affine function there.
    fn bordered_steps(&self) -> usize {
        self.geo
            .iter()
            .filter(|g| matches!(g, Geo::Pad { .. } | Geo::Affine { .. }))
            .count()
    }

    /// The map, optionally without border handling (then it is affine in (i, j)).
    #[inline]
    fn map_with(&self, i: f32, j: f32, borders: bool) -> Option<(f32, f32)> {
        let mut y = self.crop_off.0 + (i + 0.5) * self.crop_scale.0 - 0.5;
        let mut x = self.crop_off.1 + (j + 0.5) * self.crop_scale.1 - 0.5;
        for g in self.geo.iter().rev() {
            match *g {
                Geo::Pad {
                    p,
                    rows,
                    cols,
                    border,
                } => {
                    y -= p;
                    x -= p;
                    if borders {
                        (y, x) = apply_border(y, x, rows, cols, border)?;
                    }
                }
                Geo::Affine {
                    a,
                    cx,
                    cy,
                    rows,
                    cols,
                    border,
                } => {
                    let (dx, dy) = (x - cx, y - cy);
                    x = a[0] * dx + a[1] * dy + cx;
                    y = a[2] * dx + a[3] * dy + cy;
                    if borders {
                        (y, x) = apply_border(y, x, rows, cols, border)?;
                    }
                }
                Geo::Dihedral {
                    k,
                    flip,
                    rows,
                    cols,
                } => {
                    // Output dims: (cols, rows) when k is odd. Undo the mirror first.
                    let out_cols = if k % 2 == 1 { rows } else { cols };
                    if flip {
                        x = (out_cols as f32 - 1.0) - x;
                    }
                    // np.rot90 (counter-clockwise) k times: out[i, j] = in[j, W−1−i] for k=1.
                    let (r1, c1) = (rows as f32 - 1.0, cols as f32 - 1.0);
                    let (nx, ny) = match k % 4 {
                        0 => (x, y),
                        1 => (c1 - y, x),
                        2 => (c1 - x, r1 - y),
                        _ => (y, r1 - x),
                    };
                    x = nx;
                    y = ny;
                }
                Geo::Flip { cols } => x = (cols as f32 - 1.0) - x,
            }
        }
        Some((y, x))
    }
}

#[inline]
fn inside(v: f32, n: usize) -> bool {
    v >= -0.5 && v <= n as f32 - 0.5
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

impl Src<'_> {
    /// Mean of all values in [0, 1] (the lighting step's μ).
    fn mean(&self) -> f32 {
        match self.data {
            SrcRef::U8(d) => {
                // u64 per 4 KiB chunk keeps the inner loop a plain widening sum.
                let s: u64 = d
                    .chunks(4096)
                    .map(|c| c.iter().map(|&v| v as u64).sum::<u64>())
                    .sum();
                (s as f64 / d.len().max(1) as f64 / 255.0) as f32
            }
            SrcRef::F32(d) => {
                (d.iter().map(|&v| v as f64).sum::<f64>() / d.len().max(1) as f64) as f32
            }
        }
    }
}

thread_local! {
    // The resizer keeps scratch buffers between calls; one per worker thread.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
    // Working images are reused: a fresh large allocation per image costs page faults.
    static SCRATCH: RefCell<Work> = const { RefCell::new(Work::U8(Vec::new())) };
}

/// The bytes of a float slice (native byte order), without copying.
pub(crate) fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no invalid bit patterns and u8 has alignment 1; same memory, same length
    // in bytes, lifetime tied to `v`.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn f32_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above; the resizer only writes valid f32 bit patterns into an F32x3 image.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

/// A resampled working image, HWC: 8-bit for decoded files (4× less memory traffic when
/// sampling), float in [0, 1] for float sources.
enum Work {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// Pixel access in [0, 1] units for the sampling loop.
trait Texels {
    /// Scale from stored values to [0, 1].
    const SCALE: f32;
    fn at(&self, i: usize) -> f32;
    /// # Safety
    /// `i` must be below `self.len()`.
    unsafe fn at_unchecked(&self, i: usize) -> f32;
    fn len(&self) -> usize;
    /// The 8-bit data, for the vectorised sampler (float images use the scalar one).
    fn as_u8(&self) -> Option<&[u8]> {
        None
    }
}

impl Texels for [u8] {
    const SCALE: f32 = 1.0 / 255.0;
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        self[i] as f32
    }
    #[inline(always)]
    unsafe fn at_unchecked(&self, i: usize) -> f32 {
        *self.get_unchecked(i) as f32
    }
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn as_u8(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl Texels for [f32] {
    const SCALE: f32 = 1.0;
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        self[i]
    }
    #[inline(always)]
    unsafe fn at_unchecked(&self, i: usize) -> f32 {
        *self.get_unchecked(i)
    }
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
}

/// An 8-bit RGB image (HWC) of `rows × cols` resized to `to_rows × to_cols` with the
/// pipeline's PIL-style antialiased bilinear filter (and the thread's resizer).
pub(crate) fn resize_rgb8(
    data: &[u8],
    rows: usize,
    cols: usize,
    to_rows: usize,
    to_cols: usize,
) -> std::result::Result<Vec<u8>, String> {
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
        Work::F32(_) => Err("8-bit input resized to floats".into()),
    }
}

/// Resizes the window (top, left, height, width) of `src` (source pixel units) to
/// `rows × cols` into `work`, with PIL-style antialiased bilinear filtering. A window that is the
/// identity (same size, integer offset) is copied exactly.
fn resize_window(
    src: &Src,
    win: (f64, f64, f64, f64),
    rows: usize,
    cols: usize,
    work: &mut Work,
) -> std::result::Result<(), String> {
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
    let exact = h == rows as f64 && w == cols as f64 && top.fract() == 0.0 && left.fract() == 0.0;
    if exact {
        let (t, l) = (top as usize, left as usize);
        if t + rows > src.rows || l + cols > src.cols {
            return Err("crop window outside the image".into());
        }
        for r in 0..rows {
            let a = ((t + r) * src.cols + l) * 3;
            let o = r * cols * 3;
            match (src.data, &mut *work) {
                (SrcRef::U8(d), Work::U8(v)) => {
                    v[o..o + cols * 3].copy_from_slice(&d[a..a + cols * 3])
                }
                (SrcRef::F32(d), Work::F32(v)) => {
                    v[o..o + cols * 3].copy_from_slice(&d[a..a + cols * 3])
                }
                _ => return Err("working buffer type mismatch".into()),
            }
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
                let s = ImageRef::new(sw, sh, d, PixelType::U8x3).map_err(|e| e.to_string())?;
                let mut dst = Image::from_slice_u8(cols as u32, rows as u32, v, PixelType::U8x3)
                    .map_err(|e| e.to_string())?;
                r.resize(&s, &mut dst, &opts).map_err(|e| e.to_string())
            }
            (SrcRef::F32(d), Work::F32(v)) => {
                let s = ImageRef::new(sw, sh, f32_bytes(d), PixelType::F32x3)
                    .map_err(|e| e.to_string())?;
                let mut dst = Image::from_slice_u8(
                    cols as u32,
                    rows as u32,
                    f32_bytes_mut(v),
                    PixelType::F32x3,
                )
                .map_err(|e| e.to_string())?;
                r.resize(&s, &mut dst, &opts).map_err(|e| e.to_string())
            }
            _ => Err("working buffer type mismatch".into()),
        }
    })
}

/// Bilinear sample (stored units) of a HWC image at (y, x), already reflected into range.
/// The caller guarantees `img.len() >= rows * cols * 3` (checked once per image in
/// `write_mapped`); the clamps below then keep every index in bounds, NaN included
/// (`NaN as usize` is 0), which is what makes the unchecked reads sound.
#[inline(always)]
fn sample<T: Texels + ?Sized>(img: &T, rows: usize, cols: usize, y: f32, x: f32) -> [f32; 3] {
    // Both are >= 0 after the clamp, so truncation is floor (and avoids a libm call).
    let y = y.clamp(0.0, (rows - 1) as f32);
    let x = x.clamp(0.0, (cols - 1) as f32);
    let (y0, x0) = (y as usize, x as usize);
    let (y1, x1) = ((y0 + 1).min(rows - 1), (x0 + 1).min(cols - 1));
    let (fy, fx) = (y - y0 as f32, x - x0 as f32);
    let (a, b) = ((y0 * cols + x0) * 3, (y0 * cols + x1) * 3);
    let (c, d) = ((y1 * cols + x0) * 3, (y1 * cols + x1) * 3);
    let mut out = [0f32; 3];
    for (ch, o) in out.iter_mut().enumerate() {
        // SAFETY: see the function comment; a, b, c, d + ch < rows * cols * 3 <= img.len().
        let (pa, pb, pc, pd) = unsafe {
            (
                img.at_unchecked(a + ch),
                img.at_unchecked(b + ch),
                img.at_unchecked(c + ch),
                img.at_unchecked(d + ch),
            )
        };
        let top = pa + (pb - pa) * fx;
        let bot = pc + (pd - pc) * fx;
        *o = top + (bot - top) * fy;
    }
    out
}

/// Per-channel output stage: lighting then normalisation.
struct Finish<'a> {
    lighting: &'a [(f32, f32)],
    mu: f32,
    mean: [f32; 3],
    inv_std: [f32; 3],
}

impl Finish<'_> {
    /// Finishes one output row of channel `ch`: `vals` are stored units (× `scale` → [0, 1]),
    /// written normalised into `out`. Whole rows in plain loops so the compiler vectorises them
    /// (per-pixel finishing with three strided stores was a third of the loader's time).
    #[inline]
    fn row(&self, ch: usize, scale: f32, vals: &[f32], out: &mut [f32]) {
        let (m, s, mu) = (self.mean[ch], self.inv_std[ch], self.mu);
        match self.lighting {
            [] => {
                for (o, &v) in out.iter_mut().zip(vals) {
                    *o = (v * scale - m) * s;
                }
            }
            &[(k, b)] => {
                for (o, &v) in out.iter_mut().zip(vals) {
                    let l = ((v * scale - mu) * k + mu + b).clamp(0.0, 1.0);
                    *o = (l - m) * s;
                }
            }
            steps => {
                for (o, &v) in out.iter_mut().zip(vals) {
                    let mut l = v * scale;
                    for &(k, b) in steps {
                        l = ((l - mu) * k + mu + b).clamp(0.0, 1.0);
                    }
                    *o = (l - m) * s;
                }
            }
        }
    }
}

/// Three planar rows of samples (stored units), reused across the rows of one image.
struct RowBuf {
    ch: [Vec<f32>; 3],
}

impl RowBuf {
    fn new(sz: usize) -> Self {
        RowBuf {
            ch: [vec![0.0; sz], vec![0.0; sz], vec![0.0; sz]],
        }
    }

    /// Finishes the buffered row into row `i` of the three CHW planes of `out`.
    fn finish_into(&self, f: &Finish, scale: f32, sz: usize, i: usize, out: &mut [f32]) {
        let plane = sz * sz;
        for (c, vals) in self.ch.iter().enumerate() {
            let o = c * plane + i * sz;
            f.row(c, scale, vals, &mut out[o..o + sz]);
        }
    }
}

/// Writes an `sz × sz` HWC window (stored units) as normalised CHW, mirrored if `flipped`.
fn write_window<T: Texels + ?Sized>(
    win: &T,
    sz: usize,
    flipped: bool,
    f: &Finish,
    out: &mut [f32],
) {
    if win.len() < sz * sz * 3 || out.len() < 3 * sz * sz {
        return; // cannot happen: the caller sizes both buffers
    }
    let mut buf = RowBuf::new(sz);
    for i in 0..sz {
        let row = i * sz * 3;
        let [r, g, b] = &mut buf.ch;
        for (j, ((r, g), b)) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()).enumerate() {
            let jj = if flipped { sz - 1 - j } else { j };
            let s = row + jj * 3;
            *r = win.at(s);
            *g = win.at(s + 1);
            *b = win.at(s + 2);
        }
        buf.finish_into(f, T::SCALE, sz, i, out);
    }
}

/// One pass over the output: map each pixel back, sample, finish, write CHW. The map lands in
/// the working image (`wr × wc`); `img` is that image resampled by `(sy, sx)` (1 when `img` is
/// the working image itself, source/working size when sampling the source directly).
#[allow(clippy::too_many_arguments)]
fn write_mapped<T: Texels + ?Sized>(
    img: &T,
    (ir, ic): (usize, usize),
    (wr, wc): (usize, usize),
    (sy, sx): (f32, f32),
    plan: &Plan,
    sz: usize,
    f: &Finish,
    out: &mut [f32],
) {
    let plane = sz * sz;
    if img.len() < ir * ic * 3 || ir == 0 || ic == 0 || out.len() < 3 * plane {
        return; // cannot happen: the caller sizes both buffers (keeps `sample` sound regardless)
    }
    let to_img = |(y, x): (f32, f32)| ((y + 0.5) * sy - 0.5, (x + 0.5) * sx - 0.5);
    // The affine form of the map (valid away from borders), stepped incrementally along rows.
    let affine = if plan.bordered_steps() <= 1 {
        let o = plan.map_with(0.0, 0.0, false).map(to_img);
        let dj = plan.map_with(0.0, 1.0, false).map(to_img);
        let di = plan.map_with(1.0, 0.0, false).map(to_img);
        match (o, dj, di) {
            (Some(o), Some(dj), Some(di)) => {
                Some((o, (dj.0 - o.0, dj.1 - o.1), (di.0 - o.0, di.1 - o.1)))
            }
            _ => None,
        }
    } else {
        None
    };
    let (ymax, xmax) = ((ir - 1) as f32, (ic - 1) as f32);
    let inside = |y: f32, x: f32| y >= 0.0 && x >= 0.0 && y <= ymax && x <= xmax;
    let mut buf = RowBuf::new(sz);
    for i in 0..sz {
        let [r, g, b] = &mut buf.ch;
        // Output columns jlo..jhi of this row sample inside the image: one interval, as the map
        // is affine along the row (float rounding is monotone, so checking its ends suffices).
        let mut jlo = 0;
        let mut jhi = 0;
        if let Some((o, dj, di)) = affine {
            let (ry, rx) = (o.0 + i as f32 * di.0, o.1 + i as f32 * di.1);
            let at = |j: usize| (ry + j as f32 * dj.0, rx + j as f32 * dj.1);
            let (lo_y, hi_y) = interval(ry, dj.0, ymax, sz);
            let (lo_x, hi_x) = interval(rx, dj.1, xmax, sz);
            (jlo, jhi) = (lo_y.max(lo_x), hi_y.min(hi_x));
            while jlo < jhi && !inside(at(jlo).0, at(jlo).1) {
                jlo += 1;
            }
            while jhi > jlo && !inside(at(jhi - 1).0, at(jhi - 1).1) {
                jhi -= 1;
            }
            let mut j = jlo;
            #[cfg(target_arch = "x86_64")]
            if let (Some(bytes), true) = (
                img.as_u8(),
                simd::available() && ir >= 2 && ic >= 2 && ir * ic * 3 < i32::MAX as usize,
            ) {
                let n = (jhi - jlo) / 8 * 8;
                // SAFETY: AVX2 and FMA are present, the image is at least 2×2 and its byte
                // offsets fit an i32 (checked above); the function clamps every index into it.
                unsafe {
                    simd::bilinear_row_u8(
                        bytes,
                        ir,
                        ic,
                        (ry, rx),
                        dj,
                        jlo,
                        n,
                        [&mut r[..], &mut g[..], &mut b[..]],
                    )
                };
                j += n;
            }
            for j in j..jhi {
                let (y, x) = at(j);
                (r[j], g[j], b[j]) = sample(img, ir, ic, y, x).into();
            }
        }
        // The rest of the row (all of it when the map is not affine) meets a border: per pixel.
        for j in (0..jlo).chain(jhi..sz) {
            let px = match plan.map(i, j) {
                Some((y, x)) => {
                    let (y, x) = to_img((reflect(y, wr), reflect(x, wc)));
                    sample(img, ir, ic, y, x)
                }
                // A constant border is black *before* lighting and normalisation, as when the
                // original warped the image and then transformed it.
                None => [0.0; 3],
            };
            (r[j], g[j], b[j]) = px.into();
        }
        buf.finish_into(f, T::SCALE, sz, i, out);
    }
}

/// The j in 0..n (as a half-open range) where `a + j·d` lies in [0, m], widened by one on each
/// side for float rounding (the caller trims the ends by evaluating them).
fn interval(a: f32, d: f32, m: f32, n: usize) -> (usize, usize) {
    if !(a.is_finite() && d.is_finite()) {
        return (0, 0);
    }
    if d == 0.0 {
        return if a >= 0.0 && a <= m { (0, n) } else { (0, 0) };
    }
    let (t0, t1) = ((0.0 - a) / d, (m - a) / d);
    let (lo, hi) = if d > 0.0 { (t0, t1) } else { (t1, t0) };
    let lo = (lo.floor() - 1.0).max(0.0);
    let hi = (hi.floor() + 2.0).min(n as f32);
    if hi <= lo {
        return (0, 0);
    }
    (lo as usize, hi as usize)
}

/// AVX2 bilinear sampling of 8-bit RGB, eight output pixels at a time (the loader's hottest
/// loop after JPEG decoding: rotation and zoom sample every output pixel).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        // Cached by std after the first call.
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// Samples output columns j0..j0+n (n a multiple of 8) of one row, at
    /// (y, x) = (ry + j·dy, rx + j·dx), into the three planar rows `out` (stored units).
    /// Coordinates are meant to lie inside the image; any that do not are clamped into it, so
    /// no read leaves `img`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `img.len() >= rows·cols·3`, rows, cols >= 2 and
    /// rows·cols·3 < 2³¹; each `out[c].len() >= j0 + n`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn bilinear_row_u8(
        img: &[u8],
        rows: usize,
        cols: usize,
        (ry, rx): (f32, f32),
        (dy, dx): (f32, f32),
        j0: usize,
        n: usize,
        out: [&mut [f32]; 3],
    ) {
        debug_assert!(img.len() >= rows * cols * 3 && rows >= 2 && cols >= 2 && n % 8 == 0);
        let base = img.as_ptr() as *const i32;
        let stride = _mm256_set1_epi32((cols * 3) as i32);
        let three = _mm256_set1_epi32(3);
        let zero = _mm256_setzero_si256();
        let (ymaxi, xmaxi) = (
            _mm256_set1_epi32(rows as i32 - 2),
            _mm256_set1_epi32(cols as i32 - 2),
        );
        let byte = _mm256_set1_epi32(0xFF);
        let iota = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
        let (ryv, rxv, dyv, dxv) = (
            _mm256_set1_ps(ry),
            _mm256_set1_ps(rx),
            _mm256_set1_ps(dy),
            _mm256_set1_ps(dx),
        );
        let [or, og, ob] = out;
        let mut j = j0;
        while j < j0 + n {
            let jv = _mm256_add_ps(_mm256_set1_ps(j as f32), iota);
            // Same rounding as the scalar path: a multiply, then an add (not fused).
            let y = _mm256_add_ps(ryv, _mm256_mul_ps(jv, dyv));
            let x = _mm256_add_ps(rxv, _mm256_mul_ps(jv, dxv));
            let yi = _mm256_min_epi32(
                _mm256_max_epi32(_mm256_cvttps_epi32(_mm256_floor_ps(y)), zero),
                ymaxi,
            );
            let xi = _mm256_min_epi32(
                _mm256_max_epi32(_mm256_cvttps_epi32(_mm256_floor_ps(x)), zero),
                xmaxi,
            );
            // Clamped to [0, 1] so a coordinate outside the image reads its nearest edge.
            let one = _mm256_set1_ps(1.0);
            let fy = _mm256_min_ps(
                _mm256_max_ps(
                    _mm256_sub_ps(y, _mm256_cvtepi32_ps(yi)),
                    _mm256_setzero_ps(),
                ),
                one,
            );
            let fx = _mm256_min_ps(
                _mm256_max_ps(
                    _mm256_sub_ps(x, _mm256_cvtepi32_ps(xi)),
                    _mm256_setzero_ps(),
                ),
                one,
            );
            // Byte offsets of the top-left tap (p) and the one below (q). Four bytes are read
            // per gather: at p they are R G B of the left tap (and R of the right one); the
            // right tap is read at p + 2 (B of the left, then R G B) so that the last pixel of
            // the image never reads past its end.
            let p = _mm256_add_epi32(
                _mm256_mullo_epi32(yi, stride),
                _mm256_mullo_epi32(xi, three),
            );
            let q = _mm256_add_epi32(p, stride);
            let two = _mm256_set1_epi32(2);
            let a = _mm256_i32gather_epi32::<1>(base, p);
            let b = _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(p, two));
            let c = _mm256_i32gather_epi32::<1>(base, q);
            let d = _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(q, two));
            let ch = |v: __m256i, shift: i32| -> __m256i {
                match shift {
                    0 => _mm256_and_si256(v, byte),
                    8 => _mm256_and_si256(_mm256_srli_epi32::<8>(v), byte),
                    16 => _mm256_and_si256(_mm256_srli_epi32::<16>(v), byte),
                    _ => _mm256_srli_epi32::<24>(v),
                }
            };
            let lerp = |sa: i32, sb: i32| -> __m256 {
                let (va, vb) = (_mm256_cvtepi32_ps(ch(a, sa)), _mm256_cvtepi32_ps(ch(b, sb)));
                let (vc, vd) = (_mm256_cvtepi32_ps(ch(c, sa)), _mm256_cvtepi32_ps(ch(d, sb)));
                let top = _mm256_fmadd_ps(_mm256_sub_ps(vb, va), fx, va);
                let bot = _mm256_fmadd_ps(_mm256_sub_ps(vd, vc), fx, vc);
                _mm256_fmadd_ps(_mm256_sub_ps(bot, top), fy, top)
            };
            _mm256_storeu_ps(or.as_mut_ptr().add(j), lerp(0, 8));
            _mm256_storeu_ps(og.as_mut_ptr().add(j), lerp(8, 16));
            _mm256_storeu_ps(ob.as_mut_ptr().add(j), lerp(16, 24));
            j += 8;
        }
    }
}

/// The holes of one `Cutout` step: half-open pixel boxes (top, bottom, left, right) in the
/// image as it is at that step, which the geometric steps from `after` on then move.
struct Holes {
    after: usize,
    /// Lighting steps before the cutout (the ones after it also act on the black).
    lit: usize,
    boxes: Vec<(f32, f32, f32, f32)>,
}

/// fastai's box for a hole centred at pixel (y, x) of an `rows × cols` image: rows
/// `int(clip(y − L/2, 0, rows))` to `int(clip(y + L/2, 0, rows))` (exclusive), columns alike.
fn hole_box(u: f64, v: f64, rows: usize, cols: usize, length: usize) -> (f32, f32, f32, f32) {
    let half = length as f64 / 2.0;
    let span = |c: f64, n: usize| {
        let lo = (c - half).clamp(0.0, n as f64).floor();
        let hi = (c + half).clamp(0.0, n as f64).floor();
        (lo as f32, hi as f32)
    };
    let (y, x) = ((u * rows as f64).floor(), (v * cols as f64).floor());
    let ((t, b), (l, r)) = (span(y, rows), span(x, cols));
    (t, b, l, r)
}

/// `RandomStretch`'s draws: the factor − 1, then the direction.
fn draw_stretch(rng: &mut Rng, max: f64) -> AugDraw {
    let s = max * rng.uniform();
    AugDraw::Stretch {
        s,
        tall: rng.below(2) == 1,
    }
}

/// The stretch as an inverse map along one axis of length n, about the centre `c` that
/// reproduces the original's pixels: it resized the axis to `round(n·(1 + s))` and cropped
/// from `(that − n) / 2` (floor), so output x reads source `(x + off + 0.5)/(1 + s) − 0.5`,
/// which is `(x − c)/(1 + s) + c` for `c = off/s − 0.5`.
fn stretch_centre(n: usize, s: f64) -> f32 {
    let grown = (n as f64 * (1.0 + s)).round() as usize;
    let off = (grown.saturating_sub(n) / 2) as f64;
    (off / s - 0.5) as f32
}

impl Pipeline {
    /// Runs the pipeline on `src` with drawn `params`, writing a normalised CHW image of
    /// `3 × sz × sz` floats into `out`. Errors are reasons without a path; the caller adds it.
    pub fn apply(
        &self,
        src: &Src,
        params: &Params,
        out: &mut [f32],
    ) -> std::result::Result<(), String> {
        let sz = self.sz;
        if out.len() != 3 * sz * sz {
            return Err(format!(
                "output buffer has {} floats, expected {}",
                out.len(),
                3 * sz * sz
            ));
        }
        if src.rows == 0 || src.cols == 0 {
            return Err("empty image".into());
        }
        let googlenet = matches!(self.crop, CropKind::GoogleNet { .. });
        // Working image size: the scaled image (or the source for GoogleNet).
        let (wr, wc) = if googlenet {
            (src.rows, src.cols)
        } else {
            let targ = ((params.scale_m * sz as f64) as usize).max(1);
            scale_min_dims(src.rows, src.cols, targ)
        };
        let needs_mean = params
            .augs
            .iter()
            .any(|a| matches!(a, AugDraw::Lighting { .. }));
        let mu = if needs_mean { src.mean() } else { 0.0 };

        let mut geo = Vec::new();
        // (k, b) of each lighting step, in order: v ← clip((v − μ)·k + μ + b, 0, 1).
        let mut lighting = Vec::new();
        let mut holes = Vec::new();
        // Blurs of the finished output: (holes painted before it, kernel size).
        let mut blurs: Vec<(usize, usize)> = Vec::new();
        let (mut rows, mut cols) = (wr, wc);
        if self.pad > 0 && !googlenet {
            geo.push(Geo::Pad {
                p: self.pad as f32,
                rows,
                cols,
                border: self.pad_border,
            });
            rows += 2 * self.pad;
            cols += 2 * self.pad;
        }
        for (aug, d) in self.augs.iter().zip(&params.augs) {
            match (aug, d) {
                (
                    Aug::Rotate { border, .. } | Aug::RotateZoom { border, .. },
                    AugDraw::Rotate(Some(deg)),
                ) => {
                    // Forward (OpenCV getRotationMatrix2D, y down): [[c, s], [−s, c]]; inverse is
                    // its transpose.
                    let t = deg.to_radians();
                    let (s, c) = (t.sin() as f32, t.cos() as f32);
                    geo.push(Geo::Affine {
                        a: [c, -s, s, c],
                        cx: cols as f32 / 2.0,
                        cy: rows as f32 / 2.0,
                        rows,
                        cols,
                        border: *border,
                    });
                }
                (Aug::Stretch { .. } | Aug::RotateZoom { .. }, AugDraw::Stretch { s, tall })
                    if *s > 0.0 =>
                {
                    // Inside the image by construction (it only enlarges): no border reached.
                    let f = (1.0 / (1.0 + s)) as f32;
                    let (a, cx, cy) = if *tall {
                        ([1.0, 0.0, 0.0, f], 0.0, stretch_centre(rows, *s))
                    } else {
                        ([f, 0.0, 0.0, 1.0], stretch_centre(cols, *s), 0.0)
                    };
                    geo.push(Geo::Affine {
                        a,
                        cx,
                        cy,
                        rows,
                        cols,
                        border: Border::Reflect,
                    });
                }
                (Aug::Zoom { border, .. } | Aug::RotateZoom { border, .. }, AugDraw::Zoom(z)) => {
                    let f = (1.0 / (1.0 + z)) as f32;
                    geo.push(Geo::Affine {
                        a: [f, 0.0, 0.0, f],
                        cx: cols as f32 / 2.0,
                        cy: rows as f32 / 2.0,
                        rows,
                        cols,
                        border: *border,
                    });
                }
                (Aug::Blur { .. }, AugDraw::Blur(Some(k))) if *k > 1 => {
                    blurs.push((holes.len(), *k))
                }
                (Aug::Cutout { length, .. }, AugDraw::Cutout(centres)) => holes.push(Holes {
                    after: geo.len(),
                    lit: lighting.len(),
                    boxes: centres
                        .iter()
                        .map(|&(u, v)| hole_box(u, v, rows, cols, *length))
                        .collect(),
                }),
                (Aug::Flip { .. }, AugDraw::Flip(true)) => geo.push(Geo::Flip { cols }),
                (Aug::Dihedral, AugDraw::Dihedral { k, flip }) => {
                    if *k != 0 || *flip {
                        geo.push(Geo::Dihedral {
                            k: *k,
                            flip: *flip,
                            rows,
                            cols,
                        });
                        if k % 2 == 1 {
                            std::mem::swap(&mut rows, &mut cols);
                        }
                    }
                }
                (Aug::Lighting { .. }, AugDraw::Lighting { b, c }) => {
                    let k = if *c >= 0.0 { 1.0 + c } else { 1.0 / (1.0 - c) };
                    lighting.push((k as f32, *b as f32));
                }
                _ => {} // a skipped step (probability) or a draw that does not change the image
            }
        }
        // The crop: output pixel → (offset, scale) in the last geometric output.
        let (crop_off, crop_scale) = match &self.crop {
            CropKind::Random => (
                (
                    random_offset(rows, sz, params.crop_u.0) as f64,
                    random_offset(cols, sz, params.crop_u.1) as f64,
                ),
                (1.0, 1.0),
            ),
            CropKind::Center => (
                (
                    center_offset(rows, sz) as f64,
                    center_offset(cols, sz) as f64,
                ),
                (1.0, 1.0),
            ),
            CropKind::No => (
                (0.0, 0.0),
                (rows as f64 / sz as f64, cols as f64 / sz as f64),
            ),
            CropKind::GoogleNet { .. } => googlenet_window(rows, cols, sz, params),
        };
        let only_flips = geo.iter().all(|g| matches!(g, Geo::Flip { .. }));
        let unit_crop = crop_scale == (1.0, 1.0);

        let fin = Finish {
            lighting: &lighting,
            mu,
            mean: self.mean,
            inv_std: [1.0 / self.std[0], 1.0 / self.std[1], 1.0 / self.std[2]],
        };
        // The cutout's holes are painted over the finished output (below): each output pixel
        // is traced back through the geometric steps after the cutout, nearest pixel.
        let hole_plans: Vec<(Plan, &Holes)> = holes
            .iter()
            .map(|h| {
                let plan = Plan {
                    geo: geo[h.after..].to_vec(),
                    crop_off: (crop_off.0 as f32, crop_off.1 as f32),
                    crop_scale: (crop_scale.0 as f32, crop_scale.1 as f32),
                };
                (plan, h)
            })
            .collect();
        SCRATCH.with(|w| -> std::result::Result<(), String> {
            let mut work = w.borrow_mut();
            if only_flips && unit_crop && !googlenet {
                // Fast path: resize only the crop window, straight from the source.
                let flipped = geo.len() % 2 == 1;
                let (top, mut left) = crop_off;
                if flipped {
                    left = cols as f64 - left - sz as f64;
                }
                let (fy, fx) = (src.rows as f64 / wr as f64, src.cols as f64 / wc as f64);
                resize_window(
                    src,
                    (top * fy, left * fx, sz as f64 * fy, sz as f64 * fx),
                    sz,
                    sz,
                    &mut work,
                )?;
                match &*work {
                    Work::U8(v) => write_window(v.as_slice(), sz, flipped, &fin, out),
                    Work::F32(v) => write_window(v.as_slice(), sz, flipped, &fin, out),
                }
                return Ok(());
            }
            // General path: one sampling pass through the composed map. When the scale step
            // shrinks by at most 2× (or enlarges), bilinear straight from the decoded image is
            // alias-free enough and the scale is fused into the map; a stronger shrink first
            // goes through the antialiasing resizer.
            let plan = Plan {
                geo,
                crop_off: (crop_off.0 as f32, crop_off.1 as f32),
                crop_scale: (crop_scale.0 as f32, crop_scale.1 as f32),
            };
            let (fy, fx) = (src.rows as f64 / wr as f64, src.cols as f64 / wc as f64);
            if fy <= 2.0 && fx <= 2.0 {
                let dims = (src.rows, src.cols);
                let f = (fy as f32, fx as f32);
                match src.data {
                    SrcRef::U8(d) => write_mapped(d, dims, (wr, wc), f, &plan, sz, &fin, out),
                    SrcRef::F32(d) => write_mapped(d, dims, (wr, wc), f, &plan, sz, &fin, out),
                }
                return Ok(());
            }
            resize_window(
                src,
                (0.0, 0.0, src.rows as f64, src.cols as f64),
                wr,
                wc,
                &mut work,
            )?;
            match &*work {
                Work::U8(v) => write_mapped(
                    v.as_slice(),
                    (wr, wc),
                    (wr, wc),
                    (1.0, 1.0),
                    &plan,
                    sz,
                    &fin,
                    out,
                ),
                Work::F32(v) => write_mapped(
                    v.as_slice(),
                    (wr, wc),
                    (wr, wc),
                    (1.0, 1.0),
                    &plan,
                    sz,
                    &fin,
                    out,
                ),
            }
            Ok(())
        })?;
        // Holes and blurs in the order of their steps. A blur acts on the finished crop (its
        // edges reflected): the same as blurring the image at its step wherever the kernel
        // stays inside the crop and no rotation or zoom follows it.
        let mut painted = 0;
        for &(before, k) in &blurs {
            for (plan, h) in &hole_plans[painted..before] {
                fin.paint_holes(plan, h, sz, out);
            }
            painted = before;
            gaussian_blur(out, sz, k);
        }
        for (plan, h) in &hole_plans[painted..] {
            fin.paint_holes(plan, h, sz, out);
        }
        Ok(())
    }
}

impl Finish<'_> {
    /// Sets the output pixels that trace back into one of `h`'s boxes to black, as the
    /// lighting steps after the cutout leave it, normalised.
    fn paint_holes(&self, plan: &Plan, h: &Holes, sz: usize, out: &mut [f32]) {
        let mut v = 0.0f32;
        for &(k, b) in &self.lighting[h.lit..] {
            v = ((v - self.mu) * k + self.mu + b).clamp(0.0, 1.0);
        }
        let black = [0, 1, 2].map(|c| (v - self.mean[c]) * self.inv_std[c]);
        for i in 0..sz {
            for j in 0..sz {
                // None: on a constant border, black already.
                let Some((y, x)) = plan.map(i, j) else {
                    continue;
                };
                let (y, x) = (y.round(), x.round());
                if h.boxes
                    .iter()
                    .any(|&(t, b, l, r)| y >= t && y < b && x >= l && x < r)
                {
                    for (c, value) in black.iter().enumerate() {
                        out[(c * sz + i) * sz + j] = *value;
                    }
                }
            }
        }
    }
}

/// OpenCV's `getGaussianKernel(k, 0)`: its fixed tables up to 7 taps, else sampled with
/// sigma = 0.3·((k − 1)/2 − 1) + 0.8; normalised.
fn gaussian_kernel(k: usize) -> Vec<f32> {
    match k {
        1 => vec![1.0],
        3 => vec![0.25, 0.5, 0.25],
        5 => vec![0.0625, 0.25, 0.375, 0.25, 0.0625],
        7 => vec![
            0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125,
        ],
        _ => {
            let sigma = 0.3 * ((k as f64 - 1.0) * 0.5 - 1.0) + 0.8;
            let c = (k as f64 - 1.0) / 2.0;
            let g: Vec<f64> = (0..k)
                .map(|i| (-(i as f64 - c).powi(2) / (2.0 * sigma * sigma)).exp())
                .collect();
            let total: f64 = g.iter().sum();
            g.iter().map(|v| (v / total) as f32).collect()
        }
    }
}

/// Index `i` (which may fall outside 0..n) reflected without repeating the edge pixel
/// (OpenCV's default border, BORDER_REFLECT_101).
fn reflect101(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// A separable Gaussian blur of `k` taps over each `sz × sz` channel of `out` (CHW). Blur
/// is linear and its weights sum to one, so blurring normalised values equals normalising
/// blurred ones. Rows through a copy padded with the reflected edges, then columns as a
/// weighted sum of whole rows: plain loops over contiguous floats, no index arithmetic per tap.
fn gaussian_blur(out: &mut [f32], sz: usize, k: usize) {
    let w = gaussian_kernel(k);
    let r = (k / 2) as isize;
    let mut padded = vec![0.0f32; sz + 2 * r as usize];
    let mut rows = vec![0.0f32; sz * sz];
    for plane in out.chunks_mut(sz * sz) {
        for (row, blurred) in plane.chunks(sz).zip(rows.chunks_mut(sz)) {
            for (p, v) in padded.iter_mut().enumerate() {
                *v = row[reflect101(p as isize - r, sz)];
            }
            blurred.fill(0.0);
            for (t, &wt) in w.iter().enumerate() {
                for (b, &v) in blurred.iter_mut().zip(&padded[t..t + sz]) {
                    *b += wt * v;
                }
            }
        }
        for (i, dst) in plane.chunks_mut(sz).enumerate() {
            dst.fill(0.0);
            for (t, &wt) in w.iter().enumerate() {
                let src = reflect101(i as isize + t as isize - r, sz);
                for (d, &v) in dst.iter_mut().zip(&rows[src * sz..(src + 1) * sz]) {
                    *d += wt * v;
                }
            }
        }
    }
}

/// The GoogleNet crop window (offset, scale) in an image of `rows × cols` (spec §3.5): the first
/// of ten tries that fits, else short side → sz and a centre crop.
fn googlenet_window(rows: usize, cols: usize, sz: usize, p: &Params) -> ((f64, f64), (f64, f64)) {
    let area = (rows * cols) as f64;
    for &(frac, aspect, ur, uc) in &p.gnet {
        let target = frac * area;
        let mut ww = ((target * aspect).sqrt() + 0.5) as usize;
        let mut hh = ((target / aspect).sqrt() + 0.5) as usize;
        if p.gnet_flip_hw {
            std::mem::swap(&mut ww, &mut hh);
        }
        if hh >= 1 && ww >= 1 && hh <= rows && ww <= cols {
            // randint(0, n) is inclusive of n: n + 1 outcomes.
            let y = ((ur * (rows - hh + 1) as f64) as usize).min(rows - hh);
            let x = ((uc * (cols - ww + 1) as f64) as usize).min(cols - ww);
            return (
                (y as f64, x as f64),
                (hh as f64 / sz as f64, ww as f64 / sz as f64),
            );
        }
    }
    let short = rows.min(cols);
    let s = short as f64 / sz as f64;
    (
        (
            center_offset(rows, short) as f64,
            center_offset(cols, short) as f64,
        ),
        (s, s),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_matches_spec() {
        assert_eq!(scale_min_dims(375, 500, 224), (224, 298));
        assert_eq!(scale_min_dims(500, 375, 224), (298, 224));
        assert_eq!(scale_min_dims(224, 224, 224), (224, 224));
        assert_eq!(scale_min_dims(100, 301, 50), (50, 150));
    }

    #[test]
    fn crop_offsets() {
        assert_eq!(center_offset(298, 224), 37);
        assert_eq!(center_offset(299, 224), 38); // ceil(75 / 2)
        assert_eq!(random_offset(298, 224, 0.0), 0);
        assert_eq!(random_offset(298, 224, 0.999_999), 73);
    }

    #[test]
    fn reflect_is_half_sample_symmetric() {
        assert_eq!(reflect(-1.0, 5), 0.0);
        assert_eq!(reflect(5.0, 5), 4.0);
        assert_eq!(reflect(2.5, 5), 2.5);
        assert!((reflect(-0.7, 5) - (-0.3)).abs() < 1e-6);
        assert_eq!(reflect(10.0, 5), 0.0 - 0.0 + 0.0); // 10 → period 10 → 0
    }

    #[test]
    fn rng_streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::for_item(1, 1, 0, 7).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_item(1, 1, 0, 7).next_u64(),
            Rng::for_item(1, 1, 1, 7).next_u64()
        );
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(4) < 4);
        }
    }
}
