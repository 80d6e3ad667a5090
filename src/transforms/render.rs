//! Running a pipeline on one image: [`Pipeline::apply`] builds the image's steps, samples the
//! geometry once (lighting and normalisation as each row is written) and then paints what acts
//! on the finished crop (cutout holes, blur).

use std::cell::RefCell;
use std::ops::Range;

use super::plan::{reflect, Plan, Steps};
use super::{effects, AugDraw, Params, Pipeline, Src, SrcRef};
use crate::image::resample::{resize_window, Work};
use crate::{Error, Result};

thread_local! {
    // Working images are reused: a fresh large allocation per image costs page faults.
    static SCRATCH: RefCell<Work> = const { RefCell::new(Work::U8(Vec::new())) };
}

fn failed(reason: impl Into<String>) -> Error {
    Error::Pipeline {
        reason: reason.into(),
    }
}

impl Pipeline {
    /// Runs the pipeline on `src` with drawn `params`, writing a normalised CHW image of
    /// `3 × sz × sz` floats into `out`. A source that is not an image (no pixels, fewer values
    /// than its size) is `Error::InvalidArgument`; a failure inside is `Error::Pipeline`.
    /// Errors do not name the image; the caller does.
    pub fn apply(&self, src: &Src, params: &Params, out: &mut [f32]) -> Result<()> {
        let sz = self.sz;
        if out.len() != 3 * sz * sz {
            return Err(failed(format!(
                "output buffer has {} floats, expected {}",
                out.len(),
                3 * sz * sz
            )));
        }
        check_source(src)?;
        let steps = self.build_plan((src.rows, src.cols), params);
        let needs_mean = params
            .augs
            .iter()
            .any(|a| matches!(a, AugDraw::Lighting { .. }));
        let mu = if needs_mean { pixel_mean(src) } else { 0.0 };
        let fin = Finish::new(&steps.lighting, mu, self.mean, self.std);
        self.sample(src, &steps, &fin, sz, out)?;
        effects::holes_and_blurs(&steps, &fin, sz, out);
        Ok(())
    }

    /// Samples the geometric steps and the crop into `out` (`3 × sz × sz`), lit and
    /// normalised.
    pub(super) fn sample(
        &self,
        src: &Src,
        steps: &Steps,
        fin: &Finish,
        sz: usize,
        out: &mut [f32],
    ) -> Result<()> {
        SCRATCH.with(|w| {
            let mut work = w.borrow_mut();
            match steps.plain_window(sz) {
                Some(window) => sample_window(src, steps.work, window, fin, sz, &mut work, out),
                None => sample_mapped(src, steps, fin, sz, &mut work, out),
            }
        })
    }
}

/// The fast path: only the crop window at (top, left) of the working image (of `wr × wc`),
/// resized straight from the source, then mirrored if `flipped`.
fn sample_window(
    src: &Src,
    (wr, wc): (usize, usize),
    ((top, left), flipped): ((f64, f64), bool),
    fin: &Finish,
    sz: usize,
    work: &mut Work,
    out: &mut [f32],
) -> Result<()> {
    let (fy, fx) = (src.rows as f64 / wr as f64, src.cols as f64 / wc as f64);
    let win = (top * fy, left * fx, sz as f64 * fy, sz as f64 * fx);
    resize_window(src, win, sz, sz, work)?;
    match work {
        Work::U8(v) => write_window(&texture(v.as_slice(), sz, sz)?, flipped, fin, out),
        Work::F32(v) => write_window(&texture(v.as_slice(), sz, sz)?, flipped, fin, out),
    }
    Ok(())
}

/// The general path: one sampling pass through the composed map. When the scale step
/// shrinks by at most 2× (or enlarges), bilinear straight from the decoded image is
/// alias-free enough and the scale is fused into the map; a stronger shrink first goes
/// through the antialiasing resizer.
fn sample_mapped(
    src: &Src,
    steps: &Steps,
    fin: &Finish,
    sz: usize,
    work: &mut Work,
    out: &mut [f32],
) -> Result<()> {
    let (plan, (wr, wc)) = (steps.plan(0), steps.work);
    let (fy, fx) = (src.rows as f64 / wr as f64, src.cols as f64 / wc as f64);
    if fy <= 2.0 && fx <= 2.0 {
        let (dims, f) = ((src.rows, src.cols), (fy as f32, fx as f32));
        match src.data {
            SrcRef::U8(d) => write_mapped(
                &texture(d, dims.0, dims.1)?,
                steps.work,
                f,
                &plan,
                sz,
                fin,
                out,
            ),
            SrcRef::F32(d) => write_mapped(
                &texture(d, dims.0, dims.1)?,
                steps.work,
                f,
                &plan,
                sz,
                fin,
                out,
            ),
        }
        return Ok(());
    }
    let whole = (0.0, 0.0, src.rows as f64, src.cols as f64);
    resize_window(src, whole, wr, wc, work)?;
    let f = (1.0, 1.0);
    match work {
        Work::U8(v) => write_mapped(
            &texture(v.as_slice(), wr, wc)?,
            steps.work,
            f,
            &plan,
            sz,
            fin,
            out,
        ),
        Work::F32(v) => write_mapped(
            &texture(v.as_slice(), wr, wc)?,
            steps.work,
            f,
            &plan,
            sz,
            fin,
            out,
        ),
    }
    Ok(())
}

/// `src` has pixels, and as many values as its size says.
pub(super) fn check_source(src: &Src) -> Result<()> {
    if src.rows == 0 || src.cols == 0 {
        return Err(Error::InvalidArgument("empty image".into()));
    }
    let have = match src.data {
        SrcRef::U8(d) => d.len(),
        SrcRef::F32(d) => d.len(),
    };
    match src
        .rows
        .checked_mul(src.cols)
        .and_then(|n| n.checked_mul(3))
    {
        Some(need) if have >= need => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "image of {}x{} pixels given {have} values",
            src.rows, src.cols
        ))),
    }
}

/// Mean of all values in [0, 1] (the lighting step's μ).
fn pixel_mean(src: &Src) -> f32 {
    match src.data {
        SrcRef::U8(d) => {
            // u64 per 4 KiB chunk keeps the inner loop a plain widening sum.
            let s: u64 = d
                .chunks(4096)
                .map(|c| c.iter().map(|&v| v as u64).sum::<u64>())
                .sum();
            (s as f64 / d.len().max(1) as f64 / 255.0) as f32
        }
        SrcRef::F32(d) => (d.iter().map(|&v| v as f64).sum::<f64>() / d.len().max(1) as f64) as f32,
    }
}

/// Pixel access in [0, 1] units for the sampling loop.
pub(super) trait Texels {
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
        // SAFETY: the caller keeps `i < self.len()` (the method's contract).
        unsafe { *self.get_unchecked(i) as f32 }
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
        // SAFETY: the caller keeps `i < self.len()` (the method's contract).
        unsafe { *self.get_unchecked(i) }
    }
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
}

/// An HWC RGB image of `rows × cols` pixels whose data holds at least `rows·cols·3` values,
/// with `rows, cols >= 1`: checked once when it is made ([`texture`]), which is what makes the
/// unchecked reads of [`Texture::sample`] sound.
pub(super) struct Texture<'a, T: ?Sized> {
    data: &'a T,
    rows: usize,
    cols: usize,
}

/// `data` as a `rows × cols` texture, or `Error::Pipeline` if it is too short for that.
fn texture<T: Texels + ?Sized>(data: &T, rows: usize, cols: usize) -> Result<Texture<'_, T>> {
    let need = rows.checked_mul(cols).and_then(|n| n.checked_mul(3));
    match need {
        Some(n) if rows >= 1 && cols >= 1 && data.len() >= n => Ok(Texture { data, rows, cols }),
        _ => Err(failed(format!(
            "a {rows}x{cols} image given {} values",
            data.len()
        ))),
    }
}

impl<T: Texels + ?Sized> Texture<'_, T> {
    /// Bilinear sample (stored units) at (y, x), already reflected into range. The clamps keep
    /// every index inside the image, NaN included (`NaN as usize` is 0).
    #[inline(always)]
    fn sample(&self, y: f32, x: f32) -> [f32; 3] {
        let (rows, cols) = (self.rows, self.cols);
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
            // SAFETY: y0, y1 < rows and x0, x1 < cols (the clamps above; rows, cols >= 1 so
            // their bounds are not negative), so a, b, c, d + ch < rows·cols·3, which is at
            // most data.len(): `texture` checked that when it made `self`.
            let (pa, pb, pc, pd) = unsafe {
                (
                    self.data.at_unchecked(a + ch),
                    self.data.at_unchecked(b + ch),
                    self.data.at_unchecked(c + ch),
                    self.data.at_unchecked(d + ch),
                )
            };
            let top = pa + (pb - pa) * fx;
            let bot = pc + (pd - pc) * fx;
            *o = top + (bot - top) * fy;
        }
        out
    }
}

/// Per-channel output stage: lighting then normalisation.
pub(super) struct Finish<'a> {
    pub(super) lighting: &'a [(f32, f32)],
    pub(super) mu: f32,
    pub(super) mean: [f32; 3],
    pub(super) inv_std: [f32; 3],
}

impl<'a> Finish<'a> {
    pub(super) fn new(lighting: &'a [(f32, f32)], mu: f32, mean: [f32; 3], std: [f32; 3]) -> Self {
        Finish {
            lighting,
            mu,
            mean,
            inv_std: [1.0 / std[0], 1.0 / std[1], 1.0 / std[2]],
        }
    }

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

/// Writes a square HWC window (stored units) as normalised CHW, mirrored if `flipped`.
fn write_window<T: Texels + ?Sized>(win: &Texture<T>, flipped: bool, f: &Finish, out: &mut [f32]) {
    let sz = win.rows;
    let mut buf = RowBuf::new(sz);
    for i in 0..sz {
        let row = i * sz * 3;
        let [r, g, b] = &mut buf.ch;
        for (j, ((r, g), b)) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()).enumerate() {
            let jj = if flipped { sz - 1 - j } else { j };
            let s = row + jj * 3;
            *r = win.data.at(s);
            *g = win.data.at(s + 1);
            *b = win.data.at(s + 2);
        }
        buf.finish_into(f, T::SCALE, sz, i, out);
    }
}

/// One pass over the output: map each pixel back, sample, finish, write CHW. The map lands in
/// the working image (`wr × wc`); `img` is that image resampled by `(sy, sx)` (1 when `img` is
/// the working image itself, source/working size when sampling the source directly).
fn write_mapped<T: Texels + ?Sized>(
    img: &Texture<T>,
    (wr, wc): (usize, usize),
    (sy, sx): (f32, f32),
    plan: &Plan,
    sz: usize,
    f: &Finish,
    out: &mut [f32],
) {
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
    let max = ((img.rows - 1) as f32, (img.cols - 1) as f32);
    #[cfg(target_arch = "x86_64")]
    let gather = img
        .data
        .as_u8()
        .and_then(|d| super::simd::Gather::new(d, img.rows, img.cols));
    let mut buf = RowBuf::new(sz);
    for i in 0..sz {
        let [r, g, b] = &mut buf.ch;
        let mut span = 0..0;
        if let Some((o, dj, di)) = affine {
            let (ry, rx) = (o.0 + i as f32 * di.0, o.1 + i as f32 * di.1);
            let at = |j: usize| (ry + j as f32 * dj.0, rx + j as f32 * dj.1);
            span = inside_span((ry, rx), dj, max, sz);
            let mut j = span.start;
            #[cfg(target_arch = "x86_64")]
            if let Some(gather) = &gather {
                let n = span.len() / 8 * 8;
                let cols = j..j + n;
                let out = [&mut r[cols.clone()], &mut g[cols.clone()], &mut b[cols]];
                gather.row((ry, rx), dj, j, out);
                j += n;
            }
            for j in j..span.end {
                let (y, x) = at(j);
                (r[j], g[j], b[j]) = img.sample(y, x).into();
            }
        }
        // The rest of the row (all of it when the map is not affine) meets a border: per pixel.
        for j in (0..span.start).chain(span.end..sz) {
            let px = match plan.map(i, j) {
                Some((y, x)) => {
                    let (y, x) = to_img((reflect(y, wr), reflect(x, wc)));
                    img.sample(y, x)
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

/// The output columns j in 0..n of a row whose samples (ry + j·dy, rx + j·dx) lie inside the
/// image [0, ymax] × [0, xmax]: one range, as the map is affine along the row. Always
/// `start <= end <= n`.
#[inline]
fn inside_span(
    (ry, rx): (f32, f32),
    (dy, dx): (f32, f32),
    (ymax, xmax): (f32, f32),
    n: usize,
) -> Range<usize> {
    let at = |j: usize| (ry + j as f32 * dy, rx + j as f32 * dx);
    let inside = |(y, x): (f32, f32)| y >= 0.0 && x >= 0.0 && y <= ymax && x <= xmax;
    let (lo_y, hi_y) = interval(ry, dy, ymax, n);
    let (lo_x, hi_x) = interval(rx, dx, xmax, n);
    // Where the two intervals do not overlap (a row that misses the image, as in the padding)
    // the intersection is empty: its end never comes before its start.
    let mut lo = lo_y.max(lo_x);
    let mut hi = hi_y.min(hi_x).max(lo);
    // Float rounding is monotone, so checking the ends suffices.
    while lo < hi && !inside(at(lo)) {
        lo += 1;
    }
    while hi > lo && !inside(at(hi - 1)) {
        hi -= 1;
    }
    lo..hi
}

/// The j in 0..n (as a half-open range) where `a + j·d` lies in [0, m], widened by one on each
/// side for float rounding (the caller trims the ends by evaluating them). `lo < hi <= n`, or
/// (0, 0).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_that_misses_the_image_has_an_empty_span() {
        // A row in the top padding (y = -4 all along) of a 32-pixel-wide image, its columns
        // starting in the left padding: the x interval starts at 3, the y interval is empty.
        let span = inside_span((-4.0, -4.0), (0.0, 1.0), (31.0, 31.0), 32);
        assert!(span.is_empty() && span.end <= 32, "{span:?}");
        // Mirrored (x decreasing from 35).
        let span = inside_span((-4.0, 35.0), (0.0, -1.0), (31.0, 31.0), 32);
        assert!(span.is_empty() && span.end <= 32, "{span:?}");
        // The same row inside the image: columns 4..32 sample it.
        assert_eq!(
            inside_span((5.0, -4.0), (0.0, 1.0), (31.0, 31.0), 32),
            4..32
        );
    }

    #[test]
    fn a_texture_too_short_for_its_size_is_refused() {
        let data = [0u8; 11];
        assert!(texture(&data[..], 2, 2).is_err());
        assert!(texture(&data[..], 0, 4).is_err());
        assert!(texture(&data[..], usize::MAX, 3).is_err());
        assert!(texture(&data[..9], 1, 3).is_ok());
    }
}
