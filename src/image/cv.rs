//! OpenCV-compatible resize and affine warp on float32 HWC images of any channel count.
//!
//! fastai 0.7's functional transforms (`scale_min`, `rotate_cv`, `zoom_cv`, ...) called OpenCV,
//! and users compare their numbers with the original's, so these kernels reproduce OpenCV 4's
//! arithmetic rather than a "better" resampling: the legacy nearest neighbour
//! (`floor(d * src / dst)`), the area rule (exact box averages when shrinking, OpenCV's
//! pixel-replication-with-blended-edges when enlarging), and the warp's fixed-point
//! coordinates with bilinear weights quantised to 1/32 of a pixel. The fused pipeline
//! (the transforms layer) keeps its own faster resampling; these serve the per-call Python API.

use rayon::prelude::*;

use crate::{Error, Result};

/// Interpolation, with OpenCV's meaning of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    Nearest,
    Linear,
    Area,
}

/// How pixels outside the source are read (OpenCV's `borderInterpolate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    /// Zero.
    Constant,
    /// `aaa|abcd|ddd`
    Replicate,
    /// `cba|abcd|dcb` (the edge pixel repeated)
    Reflect,
    /// `bcd|abcd|abc`
    Wrap,
    /// `dcb|abcd|cba` (the edge pixel not repeated)
    Reflect101,
}

/// A borrowed HWC float32 image.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub channels: usize,
}

impl Image<'_> {
    fn check(&self) -> Result<()> {
        if self.rows == 0 || self.cols == 0 || self.channels == 0 {
            return Err(Error::InvalidArgument(format!(
                "image: empty image of shape ({}, {}, {})",
                self.rows, self.cols, self.channels
            )));
        }
        let need = self
            .rows
            .checked_mul(self.cols)
            .and_then(|n| n.checked_mul(self.channels));
        if need != Some(self.data.len()) {
            return Err(Error::InvalidArgument(format!(
                "image: {} values do not make a ({}, {}, {}) image",
                self.data.len(),
                self.rows,
                self.cols,
                self.channels
            )));
        }
        Ok(())
    }
}

fn check_out(out_w: usize, out_h: usize) -> Result<()> {
    if out_w == 0 || out_h == 0 {
        return Err(Error::InvalidArgument(format!(
            "size: the output must be at least 1x1 pixels, not {out_w}x{out_h} (width x height)"
        )));
    }
    Ok(())
}

/// Calls `$body` with the const `$n` set to the channel count when it is 1, 2, 3 or 4 (so the
/// per-pixel channel loops unroll and vectorise), and to 0 for any other count, which the
/// kernels read as "use the runtime count".
macro_rules! with_channels {
    ($ch:expr, $n:ident => $body:expr) => {
        match $ch {
            1 => {
                const $n: usize = 1;
                $body
            }
            2 => {
                const $n: usize = 2;
                $body
            }
            3 => {
                const $n: usize = 3;
                $body
            }
            4 => {
                const $n: usize = 4;
                $body
            }
            _ => {
                const $n: usize = 0;
                $body
            }
        }
    };
}

/// OpenCV's `borderInterpolate`: the source index read for index `p` of an axis of `len`
/// pixels, or `None` for a constant border outside the axis.
pub fn border_index(p: i64, len: usize, border: Border) -> Option<usize> {
    let n = len as i64;
    if (0..n).contains(&p) {
        return Some(p as usize);
    }
    let q = match border {
        Border::Constant => return None,
        Border::Replicate => p.clamp(0, n - 1),
        Border::Reflect | Border::Reflect101 => {
            if n == 1 {
                return Some(0);
            }
            let delta = i64::from(border == Border::Reflect101);
            let mut p = p;
            // Mirrors repeatedly, so indices more than one length away still land inside.
            while !(0..n).contains(&p) {
                p = if p < 0 {
                    -p - 1 + delta
                } else {
                    n - 1 - (p - n) - delta
                };
            }
            p
        }
        Border::Wrap => p.rem_euclid(n),
    };
    Some(q as usize)
}

/// Resizes `src` to `out_w` x `out_h` with OpenCV 4's `cv2.resize` arithmetic.
pub fn resize(src: Image<'_>, out_w: usize, out_h: usize, interp: Interp) -> Result<Vec<f32>> {
    resize_by(src, out_w, out_h, None, interp)
}

/// `resize`, with OpenCV's `fx`, `fy` when given: OpenCV then maps pixels with those factors,
/// not with the ratio of the (rounded) sizes.
pub fn resize_by(
    src: Image<'_>,
    out_w: usize,
    out_h: usize,
    factors: Option<(f64, f64)>,
    interp: Interp,
) -> Result<Vec<f32>> {
    src.check()?;
    check_out(out_w, out_h)?;
    let (sw, sh) = (src.cols, src.rows);
    let mut out = vec![0f32; out_w * out_h * src.channels];
    if (sw, sh) == (out_w, out_h) {
        out.copy_from_slice(src.data);
        return Ok(out);
    }
    let (inv_x, inv_y) = match factors {
        Some((fx, fy)) if fx > 0.0 && fy > 0.0 && fx.is_finite() && fy.is_finite() => (fx, fy),
        Some(f) => {
            return Err(Error::InvalidArgument(format!(
                "fx, fy: scale factors must be finite and > 0, not {f:?}"
            )))
        }
        None => (out_w as f64 / sw as f64, out_h as f64 / sh as f64),
    };
    let (scale_x, scale_y) = (1.0 / inv_x, 1.0 / inv_y);
    match interp {
        Interp::Nearest => {
            let xs: Vec<usize> = (0..out_w)
                .map(|d| ((d as f64 * scale_x).floor() as usize).min(sw - 1))
                .collect();
            let ys: Vec<usize> = (0..out_h)
                .map(|d| ((d as f64 * scale_y).floor() as usize).min(sh - 1))
                .collect();
            with_channels!(src.channels, N => gather::<N>(src, &ys, &xs, &mut out));
        }
        Interp::Area if scale_x >= 1.0 && scale_y >= 1.0 => {
            let xt = area_table(sw, out_w, scale_x);
            let yt = area_table(sh, out_h, scale_y);
            with_channels!(src.channels, N => separable::<N>(src, &yt, &xt, &mut out));
        }
        // Enlarging (on either axis) with INTER_AREA is OpenCV's linear resize with its
        // "area mode" coefficients on both axes.
        Interp::Area | Interp::Linear => {
            let area = interp == Interp::Area;
            let xt = linear_table(sw, out_w, scale_x, inv_x, area);
            let yt = linear_table(sh, out_h, scale_y, inv_y, area);
            with_channels!(src.channels, N => separable::<N>(src, &yt, &xt, &mut out));
        }
    }
    Ok(out)
}

/// The channel count a kernel monomorphised for `N` channels works with (`N == 0`: any).
#[inline(always)]
fn channels<const N: usize>(src: &Image<'_>) -> usize {
    if N == 0 {
        src.channels
    } else {
        N
    }
}

/// Output size (pixels) from which one call splits its rows over rayon's pool. The kernels are
/// mostly called from loader worker threads that already run items in parallel, where forking
/// costs more than it saves. From a megapixel on, one call is long enough (a rotated bilinear
/// warp of 1024x1024x3 took about 15 ms on one thread, 11 ms split over two busy cores) that
/// the tens of microseconds a fork and join cost are noise.
const PARALLEL_MIN_PIXELS: usize = 1 << 20;

/// Runs `band(first_row, rows)` over the rows of `out` (rows of `row_len` values): on the
/// calling thread, or in bands of rows on rayon's pool for outputs of at least
/// `PARALLEL_MIN_PIXELS` pixels.
fn for_row_bands<F>(out: &mut [f32], row_len: usize, pixels: usize, band: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if row_len == 0 {
        return;
    }
    let rows = out.len() / row_len;
    if pixels < PARALLEL_MIN_PIXELS || rows < 2 {
        band(0, out);
        return;
    }
    // A few bands per thread, so uneven progress still balances.
    let per_band = rows.div_ceil(4 * rayon::current_num_threads()).max(8);
    out.par_chunks_mut(per_band * row_len)
        .enumerate()
        .for_each(|(i, rows)| band(i * per_band, rows));
}

/// One axis of a separable resampling: output index `d` reads the consecutive source indices
/// `start[d]..` with the weights `weights[off[d]..off[d + 1]]`, summed in that order.
#[derive(Debug, PartialEq)]
struct AxisTable {
    start: Vec<usize>,
    off: Vec<usize>,
    weights: Vec<f32>,
}

impl AxisTable {
    fn with_len(dlen: usize) -> Self {
        let mut off = Vec::with_capacity(dlen + 1);
        off.push(0);
        AxisTable {
            start: Vec::with_capacity(dlen),
            off,
            weights: Vec::with_capacity(2 * dlen),
        }
    }

    /// Appends the next output index: it reads from source index `start` on.
    fn push(&mut self, start: usize, weights: &[f32]) {
        self.start.push(start);
        self.weights.extend_from_slice(weights);
        self.off.push(self.weights.len());
    }

    /// (first source index, weights) of output index `d`.
    #[inline(always)]
    fn taps(&self, d: usize) -> (usize, &[f32]) {
        (self.start[d], &self.weights[self.off[d]..self.off[d + 1]])
    }

    fn max_taps(&self) -> usize {
        self.off.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
    }
}

/// Copies one source pixel per output pixel: row `ys[r]`, column `xs[c]`.
fn gather<const N: usize>(src: Image<'_>, ys: &[usize], xs: &[usize], out: &mut [f32]) {
    let ch = channels::<N>(&src);
    let src_row = src.cols * ch;
    let row_len = xs.len() * ch;
    for_row_bands(out, row_len, xs.len() * ys.len(), |first, rows| {
        // Re-read inside the closure: a captured runtime count would keep the channel loops
        // generic, as the closure is not inlined into its caller.
        let ch = channels::<N>(&src);
        for (row, &sy) in rows.chunks_exact_mut(row_len).zip(&ys[first..]) {
            let srow = &src.data[sy * src_row..(sy + 1) * src_row];
            for (o, &sx) in row.chunks_exact_mut(ch).zip(xs) {
                o.copy_from_slice(&srow[sx * ch..sx * ch + ch]);
            }
        }
    });
}

/// The linear case of an `AxisTable` (at most two taps per output) laid out for a tight loop:
/// the first `pairs` outputs read two adjacent source pixels from element offset `at[d]` with
/// `weights[d]` (a single tap gets weight 0 on its right neighbour, as in OpenCV); the outputs
/// after them sit on the last source pixel and read only it.
#[derive(Debug, PartialEq)]
struct PairTable {
    pairs: usize,
    at: Vec<usize>,
    weights: Vec<[f32; 2]>,
}

impl PairTable {
    /// `None` where some output reads more than two source pixels (area shrinking).
    fn new(xt: &AxisTable, slen: usize, ch: usize) -> Option<Self> {
        if xt.max_taps() > 2 {
            return None;
        }
        let mut t = PairTable {
            pairs: 0,
            at: Vec::with_capacity(xt.start.len()),
            weights: Vec::with_capacity(xt.start.len()),
        };
        for d in 0..xt.start.len() {
            let (s, w) = xt.taps(d);
            if s + 1 >= slen {
                break;
            }
            t.at.push(s * ch);
            t.weights.push(match *w {
                [a, b] => [a, b],
                [a] => [a, 0.0],
                _ => [0.0, 0.0],
            });
            t.pairs += 1;
        }
        Some(t)
    }
}

/// The horizontal pass over one source row: each output pixel is the weighted sum of its
/// source pixels in tap order (OpenCV's order, so rounding agrees).
#[inline(always)]
fn horizontal<const N: usize>(
    srow: &[f32],
    ch: usize,
    xt: &AxisTable,
    pairs: Option<&PairTable>,
    out: &mut [f32],
) {
    let mut first = 0;
    if let Some(pt) = pairs {
        let (head, _) = out.split_at_mut(pt.pairs * ch);
        for ((o, &at), w) in head.chunks_exact_mut(ch).zip(&pt.at).zip(&pt.weights) {
            let p = &srow[at..at + 2 * ch];
            for c in 0..ch {
                o[c] = p[c] * w[0] + p[ch + c] * w[1];
            }
        }
        first = pt.pairs;
    }
    for (d, o) in out.chunks_exact_mut(ch).enumerate().skip(first) {
        let (s, w) = xt.taps(d);
        let px = &srow[s * ch..(s + w.len()) * ch];
        if N == 0 {
            o.fill(0.0);
            for (p, &wt) in px.chunks_exact(ch).zip(w) {
                for (ov, &pv) in o.iter_mut().zip(p) {
                    *ov += pv * wt;
                }
            }
        } else {
            let mut acc = [0f32; 4];
            for (p, &wt) in px.chunks_exact(ch).zip(w) {
                for c in 0..ch {
                    acc[c] += p[c] * wt;
                }
            }
            o.copy_from_slice(&acc[..ch]);
        }
    }
}

/// Horizontal pass then vertical pass, as OpenCV orders them (so float rounding agrees). Each
/// source row's horizontal pass is computed once and kept in a ring of rows while the output
/// rows that read it are made.
fn separable<const N: usize>(src: Image<'_>, yt: &AxisTable, xt: &AxisTable, out: &mut [f32]) {
    let ch = channels::<N>(&src);
    let out_w = xt.start.len();
    let row_len = out_w * ch;
    let src_row = src.cols * ch;
    // The source rows of one output row are consecutive, so `sy % slots` never maps two rows
    // of one output row to one slot.
    let slots = yt.max_taps().max(1);
    let pairs = PairTable::new(xt, src.cols, ch);
    for_row_bands(out, row_len, out_w * yt.start.len(), |first, rows| {
        // Re-read inside the closure: a captured runtime count would keep the channel loops
        // generic, as the closure is not inlined into its caller.
        let ch = channels::<N>(&src);
        let mut ring = vec![0f32; slots * row_len];
        let mut held = vec![usize::MAX; slots];
        for (i, orow) in rows.chunks_exact_mut(row_len).enumerate() {
            let (sy0, wy) = yt.taps(first + i);
            for sy in sy0..sy0 + wy.len() {
                let slot = sy % slots;
                if held[slot] != sy {
                    let srow = &src.data[sy * src_row..(sy + 1) * src_row];
                    let dst = &mut ring[slot * row_len..(slot + 1) * row_len];
                    horizontal::<N>(srow, ch, xt, pairs.as_ref(), dst);
                    held[slot] = sy;
                }
            }
            let hrow = |k: usize| {
                let slot = (sy0 + k) % slots;
                &ring[slot * row_len..(slot + 1) * row_len]
            };
            match *wy {
                [w0] => {
                    for (o, &a) in orow.iter_mut().zip(hrow(0)) {
                        *o = a * w0;
                    }
                }
                [w0, w1] => {
                    for ((o, &a), &b) in orow.iter_mut().zip(hrow(0)).zip(hrow(1)) {
                        *o = a * w0 + b * w1;
                    }
                }
                _ => {
                    orow.fill(0.0);
                    for (k, &w) in wy.iter().enumerate() {
                        for (o, &a) in orow.iter_mut().zip(hrow(k)) {
                            *o += a * w;
                        }
                    }
                }
            }
        }
    });
}

/// OpenCV's linear coefficients for one axis (`area`: the INTER_AREA enlargement rule, which
/// replicates source pixels and blends only across their boundaries).
fn linear_table(slen: usize, dlen: usize, scale: f64, inv_scale: f64, area: bool) -> AxisTable {
    let mut t = AxisTable::with_len(dlen);
    for d in 0..dlen {
        let (mut s, mut f) = if area {
            let s = (d as f64 * scale).floor() as i64;
            let f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
            (s, if f <= 0.0 { 0.0 } else { f - f.floor() })
        } else {
            let fx = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = fx.floor() as i64;
            (s, fx - s as f32)
        };
        if s < 0 {
            s = 0;
            f = 0.0;
        }
        if s >= slen as i64 - 1 {
            s = slen as i64 - 1;
            f = 0.0;
        }
        if f == 0.0 {
            t.push(s as usize, &[1.0]);
        } else {
            t.push(s as usize, &[1.0 - f, f]);
        }
    }
    t
}

/// OpenCV's area-shrink coefficients for one axis: each output pixel averages the source
/// interval it covers, partial pixels at its ends weighted by the covered fraction.
fn area_table(slen: usize, dlen: usize, scale: f64) -> AxisTable {
    let mut t = AxisTable::with_len(dlen);
    let mut w = Vec::new();
    for d in 0..dlen {
        let f1 = d as f64 * scale;
        let f2 = f1 + scale;
        let cell = scale.min(slen as f64 - f1);
        let s2 = (f2.floor() as usize).min(slen - 1);
        let s1 = (f1.ceil() as usize).min(s2);
        w.clear();
        let mut start = s1;
        // OpenCV ignores slivers under a thousandth of a pixel at both ends.
        if s1 as f64 - f1 > 1e-3 {
            start = s1 - 1;
            w.push(((s1 as f64 - f1) / cell) as f32);
        }
        w.extend((s1..s2).map(|_| (1.0 / cell) as f32));
        if f2 - s2 as f64 > 1e-3 {
            w.push(((f2 - s2 as f64).min(1.0).min(cell) / cell) as f32);
        }
        t.push(start, &w);
    }
    t
}

/// OpenCV's inverse of a 2x3 affine matrix (`warpAffine` without `WARP_INVERSE_MAP`); a
/// singular matrix inverts to zeros, as there.
pub fn invert_affine(m: [[f64; 3]; 2]) -> [[f64; 3]; 2] {
    let [[a, b, c], [d, e, f]] = m;
    let det = a * e - b * d;
    let det = if det != 0.0 { 1.0 / det } else { 0.0 };
    let (a2, b2, d2, e2) = (e * det, -b * det, -d * det, a * det);
    [[a2, b2, -a2 * c - b2 * f], [d2, e2, -d2 * c - e2 * f]]
}

// OpenCV's warp fixed point: coordinates in 1/1024 pixel, bilinear weights in 1/32.
const AB_BITS: i64 = 10;
const INTER_BITS: i64 = 5;
const TAB: i64 = 1 << INTER_BITS;

/// OpenCV's bilinear weights for each fractional position (`ay * TAB + ax`, in 1/32 pixel):
/// the products of the 1-D weights `1 - a`, `a`, in f32.
fn bilinear_weights() -> Vec<[f32; 4]> {
    let mut tab = Vec::with_capacity((TAB * TAB) as usize);
    for iy in 0..TAB {
        for ix in 0..TAB {
            let ax = ix as f32 / TAB as f32;
            let ay = iy as f32 / TAB as f32;
            tab.push([
                (1.0 - ay) * (1.0 - ax),
                (1.0 - ay) * ax,
                ay * (1.0 - ax),
                ay * ax,
            ]);
        }
    }
    tab
}

/// `cv2.warpAffine(src, m, (out_w, out_h), flags=interp, borderMode=border)`: `m` maps source
/// to destination coordinates. INTER_AREA means bilinear here, as in OpenCV.
pub fn warp_affine(
    src: Image<'_>,
    m: [[f64; 3]; 2],
    out_w: usize,
    out_h: usize,
    interp: Interp,
    border: Border,
) -> Result<Vec<f32>> {
    src.check()?;
    check_out(out_w, out_h)?;
    if m.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "m: the affine matrix must be finite, got {m:?}"
        )));
    }
    let inv = invert_affine(m);
    let mut out = vec![0f32; out_w * out_h * src.channels];
    let w = Warp {
        src,
        inv,
        out_w,
        border,
    };
    if interp == Interp::Nearest {
        with_channels!(src.channels, N => w.nearest::<N>(&mut out));
    } else {
        with_channels!(src.channels, N => w.bilinear::<N>(&mut out));
    }
    Ok(out)
}

/// `border_index` of one axis, tabulated over the indices a warp mostly reads outside the
/// source (one axis length either side), so edge pixels look their taps up.
struct BorderLut {
    lo: i64,
    idx: Vec<Option<usize>>,
    len: usize,
    border: Border,
}

impl BorderLut {
    fn new(len: usize, border: Border) -> Self {
        let lo = -(len as i64) - 2;
        let hi = 2 * len as i64 + 2;
        BorderLut {
            lo,
            idx: (lo..hi).map(|p| border_index(p, len, border)).collect(),
            len,
            border,
        }
    }

    #[inline(always)]
    fn get(&self, p: i64) -> Option<usize> {
        // Below `lo` the offset wraps to a huge index, which `get` refuses like one past the end.
        match self.idx.get(p.wrapping_sub(self.lo) as usize) {
            Some(&i) => i,
            None => border_index(p, self.len, self.border),
        }
    }
}

struct Warp<'a> {
    src: Image<'a>,
    inv: [[f64; 3]; 2],
    out_w: usize,
    border: Border,
}

impl Warp<'_> {
    /// OpenCV's per-column offsets of the source coordinates, in 1/1024 pixel: rounded once
    /// per column (not accumulated), so they match OpenCV's to the last bit.
    fn column_deltas(&self) -> (Vec<i64>, Vec<i64>) {
        let scale = (1i64 << AB_BITS) as f64;
        let col = |k: f64| -> Vec<i64> {
            (0..self.out_w)
                .map(|x| fixed(k * x as f64 * scale))
                .collect()
        };
        (col(self.inv[0][0]), col(self.inv[1][0]))
    }

    /// The source coordinates of column 0 of output row `y`, in 1/1024 pixel, plus `round`.
    fn row_origin(&self, y: usize, round: i64) -> (i64, i64) {
        let scale = (1i64 << AB_BITS) as f64;
        let inv = &self.inv;
        (
            fixed((inv[0][1] * y as f64 + inv[0][2]) * scale) + round,
            fixed((inv[1][1] * y as f64 + inv[1][2]) * scale) + round,
        )
    }

    /// Walks the output rows `rows` (the first is output row `first`) in tiles of
    /// `TILE_ROWS` x `TILE_COLS` pixels, calling `pixels(row, x0, y0, columns)` for each row's
    /// share of a tile, with that row's source origin (`row_origin` with `round`). A tile's source
    /// footprint stays in the L1 cache while its rows are made; whole rows would sweep a rotated
    /// source band too tall for it. Within a row, tiles come left to right, so a pixel write
    /// that spills one lane onto the next pixel is overwritten in order.
    fn tiles<F>(&self, first: usize, rows: &mut [f32], row_len: usize, round: i64, mut pixels: F)
    where
        F: FnMut(&mut [f32], i64, i64, std::ops::Range<usize>),
    {
        const TILE_ROWS: usize = 32;
        const TILE_COLS: usize = 128;
        let n = rows.len() / row_len;
        let mut origins = [(0i64, 0i64); TILE_ROWS];
        for g in (0..n).step_by(TILE_ROWS) {
            let g_end = (g + TILE_ROWS).min(n);
            for (r, o) in (g..g_end).zip(origins.iter_mut()) {
                *o = self.row_origin(first + r, round);
            }
            for xb in (0..self.out_w).step_by(TILE_COLS) {
                let xe = (xb + TILE_COLS).min(self.out_w);
                for (r, &(x0, y0)) in (g..g_end).zip(origins.iter()) {
                    pixels(&mut rows[r * row_len..(r + 1) * row_len], x0, y0, xb..xe);
                }
            }
        }
    }

    fn nearest<const N: usize>(&self, out: &mut [f32]) {
        let src = &self.src;
        let ch = channels::<N>(src);
        let (sw, sh) = (src.cols, src.rows);
        let (adelta, bdelta) = self.column_deltas();
        let (lx, ly) = (
            BorderLut::new(sw, self.border),
            BorderLut::new(sh, self.border),
        );
        let row_len = self.out_w * ch;
        let pixels = self.out_w * (out.len() / row_len.max(1));
        for_row_bands(out, row_len, pixels, |first, rows| {
            // Re-read inside the closure: a captured runtime count would keep the channel loops
            // generic, as the closure is not inlined into its caller.
            let ch = channels::<N>(src);
            self.tiles(
                first,
                rows,
                row_len,
                1 << (AB_BITS - 1),
                |row, x0, y0, xs| {
                    let cols = adelta[xs.clone()].iter().zip(&bdelta[xs.clone()]);
                    for (x, (&a, &b)) in xs.zip(cols) {
                        let sx = (x0 + a) >> AB_BITS;
                        let sy = (y0 + b) >> AB_BITS;
                        // Inside the source (negative values wrap to huge ones): a plain copy.
                        let at = if (sx as u64) < sw as u64 && (sy as u64) < sh as u64 {
                            Some((sy as usize * sw + sx as usize) * ch)
                        } else {
                            ly.get(sy).zip(lx.get(sx)).map(|(y, x)| (y * sw + x) * ch)
                        };
                        let i = x * ch;
                        match at {
                            Some(at) => row[i..i + ch].copy_from_slice(&src.data[at..at + ch]),
                            None => row[i..i + ch].fill(0.0),
                        }
                    }
                },
            );
        });
    }

    fn bilinear<const N: usize>(&self, out: &mut [f32]) {
        let src = &self.src;
        let ch = channels::<N>(src);
        let (sw, sh) = (src.cols, src.rows);
        let stride = sw * ch;
        let (adelta, bdelta) = self.column_deltas();
        let wtab = bilinear_weights();
        let (lx, ly) = (
            BorderLut::new(sw, self.border),
            BorderLut::new(sh, self.border),
        );
        let row_len = self.out_w * ch;
        let pixels = self.out_w * (out.len() / row_len.max(1));
        let shift = AB_BITS - INTER_BITS;
        let round = (1 << AB_BITS) / TAB / 2;
        for_row_bands(out, row_len, pixels, |first, rows| {
            // Re-read inside the closure: a captured runtime count would keep the channel loops
            // generic, as the closure is not inlined into its caller.
            let ch = channels::<N>(src);
            self.tiles(first, rows, row_len, round, |row, x0, y0, xs| {
                let cols = adelta[xs.clone()].iter().zip(&bdelta[xs.clone()]);
                for (x, (&a, &b)) in xs.zip(cols) {
                    let xf = (x0 + a) >> shift;
                    let yf = (y0 + b) >> shift;
                    let (sx, sy) = (xf >> INTER_BITS, yf >> INTER_BITS);
                    let w = &wtab[((yf & (TAB - 1)) * TAB + (xf & (TAB - 1))) as usize];
                    let i = x * ch;
                    // All four taps inside the source: read them directly; only pixels on or
                    // past the edges go through the border rule.
                    if (sx as u64) < (sw - 1) as u64 && (sy as u64) < (sh - 1) as u64 {
                        let at = sy as usize * stride + sx as usize * ch;
                        let d = src.data;
                        let r0 = &d[at..at + 2 * ch];
                        let r1 = &d[at + stride..at + stride + 2 * ch];
                        for c in 0..ch {
                            row[i + c] =
                                r0[c] * w[0] + r0[ch + c] * w[1] + r1[c] * w[2] + r1[ch + c] * w[3];
                        }
                    } else {
                        bilinear_edge::<N>(
                            src,
                            [lx.get(sx), lx.get(sx + 1)],
                            [ly.get(sy), ly.get(sy + 1)],
                            w,
                            &mut row[i..i + ch],
                        );
                    }
                }
            });
        });
    }
}

/// A bilinear output pixel whose taps are not all inside the source, given the source columns
/// and rows its taps read under the border rule (`None`: a constant border's zero).
fn bilinear_edge<const N: usize>(
    src: &Image<'_>,
    xs: [Option<usize>; 2],
    ys: [Option<usize>; 2],
    w: &[f32; 4],
    o: &mut [f32],
) {
    let ch = channels::<N>(src);
    let sw = src.cols;
    o.fill(0.0);
    for (k, &wt) in w.iter().enumerate() {
        if let (Some(y), Some(x)) = (ys[k / 2], xs[k % 2]) {
            let p = &src.data[(y * sw + x) * ch..(y * sw + x + 1) * ch];
            for c in 0..ch {
                o[c] += p[c] * wt;
            }
        }
    }
}

/// OpenCV's `saturate_cast<int>` of a coordinate: round half to even.
fn fixed(v: f64) -> i64 {
    v.round_ties_even() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(data: &[f32], rows: usize, cols: usize, channels: usize) -> Image<'_> {
        Image {
            data,
            rows,
            cols,
            channels,
        }
    }

    #[test]
    fn area_enlarge_blends_only_across_pixel_edges() {
        let src = [0.0, 1.0];
        let r = |w| resize(img(&src, 1, 2, 1), w, 1, Interp::Area).unwrap();
        assert_eq!(r(5), vec![0.0, 0.0, 0.5, 1.0, 1.0]);
        assert_eq!(r(4), vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(r(3), vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn nearest_is_opencv_legacy_floor() {
        let src: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let r = resize(img(&src, 1, 10, 1), 4, 1, Interp::Nearest).unwrap();
        assert_eq!(r, vec![0.0, 2.0, 5.0, 7.0]);
        let src4 = [0.0, 1.0, 2.0, 3.0];
        let r = resize(img(&src4, 1, 4, 1), 10, 1, Interp::Nearest).unwrap();
        assert_eq!(r, vec![0., 0., 0., 1., 1., 2., 2., 2., 3., 3.]);
    }

    #[test]
    fn area_shrink_is_a_box_average_with_fractional_weights() {
        // 5 -> 2: each output covers 2.5 source pixels.
        let src = [1.0, 2.0, 3.0, 4.0, 5.0];
        let r = resize(img(&src, 1, 5, 1), 2, 1, Interp::Area).unwrap();
        let want = [(1.0 + 2.0 + 0.5 * 3.0) / 2.5, (0.5 * 3.0 + 4.0 + 5.0) / 2.5];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
    }

    #[test]
    fn linear_uses_half_pixel_centres_and_keeps_channels_apart() {
        // 2 -> 4 on two channels: centres at -0.25, 0.25, 0.75, 1.25 (clamped at the ends).
        let src = [0.0, 10.0, 1.0, 20.0];
        let r = resize(img(&src, 1, 2, 2), 4, 1, Interp::Linear).unwrap();
        assert_eq!(r, vec![0.0, 10.0, 0.25, 12.5, 0.75, 17.5, 1.0, 20.0]);
    }

    #[test]
    fn borders_follow_opencv() {
        let idx = |p, b| border_index(p, 5, b);
        assert_eq!(idx(-2, Border::Reflect), Some(1));
        assert_eq!(idx(6, Border::Reflect), Some(3));
        assert_eq!(idx(-2, Border::Reflect101), Some(2));
        assert_eq!(idx(6, Border::Reflect101), Some(2));
        assert_eq!(idx(-1, Border::Wrap), Some(4));
        assert_eq!(idx(7, Border::Replicate), Some(4));
        assert_eq!(idx(-1, Border::Constant), None);
    }

    #[test]
    fn rotation_by_90_degrees_turns_a_vertical_bar() {
        // OpenCV's rotation matrix about (1, 1) by 90 degrees (counter-clockwise on screen).
        let src = [0.0, 0.1, 0.0, 0.0, 0.2, 0.0, 0.0, 0.3, 0.0];
        let m = [[0.0, 1.0, 0.0], [-1.0, 0.0, 2.0]];
        let r = warp_affine(
            img(&src, 3, 3, 1),
            m,
            3,
            3,
            Interp::Linear,
            Border::Constant,
        )
        .unwrap();
        let want = [0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.0, 0.0, 0.0];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
    }

    #[test]
    fn translation_reads_the_border() {
        let src = [1.0, 2.0, 3.0];
        let m = [[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]];
        let r = |b| warp_affine(img(&src, 1, 3, 1), m, 3, 1, Interp::Nearest, b).unwrap();
        assert_eq!(r(Border::Constant), vec![0.0, 0.0, 1.0]);
        assert_eq!(r(Border::Replicate), vec![1.0, 1.0, 1.0]);
        assert_eq!(r(Border::Reflect), vec![2.0, 1.0, 1.0]);
        assert_eq!(r(Border::Reflect101), vec![3.0, 2.0, 1.0]);
        assert_eq!(r(Border::Wrap), vec![2.0, 3.0, 1.0]);
    }

    #[test]
    fn area_table_splits_cells_at_fractional_edges() {
        // 5 -> 2: cells [0, 2.5) and [2.5, 5), each weight over 2.5 pixels.
        let t = area_table(5, 2, 2.5);
        assert_eq!(t.taps(0), (0, &[0.4, 0.4, 0.2][..]));
        assert_eq!(t.taps(1), (2, &[0.2, 0.4, 0.4][..]));
        assert_eq!(t.max_taps(), 3);
        // 4 -> 2: whole pixels only, no sliver taps.
        let t = area_table(4, 2, 2.0);
        assert_eq!(t.taps(0), (0, &[0.5, 0.5][..]));
        assert_eq!(t.taps(1), (2, &[0.5, 0.5][..]));
    }

    #[test]
    fn linear_tables_clamp_at_both_ends() {
        // 2 -> 4: centres at -0.25, 0.25, 0.75, 1.25.
        let t = linear_table(2, 4, 0.5, 2.0, false);
        assert_eq!(t.taps(0), (0, &[1.0][..]));
        assert_eq!(t.taps(1), (0, &[0.75, 0.25][..]));
        assert_eq!(t.taps(2), (0, &[0.25, 0.75][..]));
        assert_eq!(t.taps(3), (1, &[1.0][..]));
        // INTER_AREA enlarging 2 -> 5: replicate, blend once across the pixel edge at 2.5.
        let t = linear_table(2, 5, 0.4, 2.5, true);
        let got: Vec<_> = (0..5).map(|d| t.taps(d)).collect();
        let want: Vec<(usize, &[f32])> = vec![
            (0, &[1.0]),
            (0, &[1.0]),
            (0, &[0.5, 0.5]),
            (1, &[1.0]),
            (1, &[1.0]),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn pair_table_pads_single_taps_and_stops_at_the_last_pixel() {
        let t = linear_table(2, 4, 0.5, 2.0, false);
        let p = PairTable::new(&t, 2, 3).unwrap();
        assert_eq!(p.pairs, 3);
        assert_eq!(p.at, vec![0, 0, 0]);
        assert_eq!(p.weights, vec![[1.0, 0.0], [0.75, 0.25], [0.25, 0.75]]);
        assert!(PairTable::new(&area_table(5, 2, 2.5), 5, 1).is_none());
    }

    #[test]
    fn bilinear_weights_are_products_of_the_fractions() {
        let w = bilinear_weights();
        assert_eq!(w.len(), 1024);
        assert_eq!(w[0], [1.0, 0.0, 0.0, 0.0]);
        // ay = 16/32, ax = 8/32.
        assert_eq!(w[16 * 32 + 8], [0.375, 0.125, 0.375, 0.125]);
    }

    #[test]
    fn border_lut_agrees_with_the_rule_inside_and_beyond_its_window() {
        let lut = BorderLut::new(5, Border::Reflect101);
        assert_eq!(lut.get(-7), Some(1));
        assert_eq!(lut.get(4), Some(4));
        assert_eq!(lut.get(13), Some(3));
        // Beyond the table, `border_index` answers: period 8 for a reflected 5-pixel axis.
        assert_eq!(lut.get(-41), Some(1));
        let wrap = BorderLut::new(5, Border::Wrap);
        assert_eq!(wrap.get(100), Some(0));
        assert_eq!(wrap.get(-101), Some(4));
        assert_eq!(BorderLut::new(5, Border::Constant).get(-1), None);
    }

    #[test]
    fn row_bands_cover_every_row_once_in_parallel() {
        // 3000 rows of 400 pixels (over the threshold, so split over the pool).
        let (rows, row_len) = (3000, 4);
        let mut out = vec![-1f32; rows * row_len];
        for_row_bands(&mut out, row_len, rows * 400, |first, band| {
            for (i, r) in band.chunks_exact_mut(row_len).enumerate() {
                r.fill((first + i) as f32);
            }
        });
        for (r, row) in out.chunks_exact(row_len).enumerate() {
            assert!(row.iter().all(|&v| v == r as f32), "row {r}: {row:?}");
        }
    }

    #[test]
    fn warp_over_several_tiles_interpolates_a_ramp_exactly() {
        // A ramp v = x + 100 y + 10000 c is reproduced exactly by bilinear interpolation at
        // dyadic offsets; 40 x 150 pixels spans two tile rows and two tile columns, 3 and 5
        // channels take the unrolled and the generic loops, and 1000 x 1100 pixels are split
        // over rayon's pool.
        for (h, w, ch) in [(40usize, 150usize, 3usize), (40, 150, 5), (1000, 1100, 1)] {
            let v = |x: f32, y: f32, c: usize| x + 100.0 * y + 10000.0 * c as f32;
            let mut src = Vec::with_capacity(h * w * ch);
            for y in 0..h {
                for x in 0..w {
                    for c in 0..ch {
                        src.push(v(x as f32, y as f32, c));
                    }
                }
            }
            // Source (x + 0.5, y + 0.25) lands on destination (x, y).
            let m = [[1.0, 0.0, -0.5], [0.0, 1.0, -0.25]];
            let r = warp_affine(
                img(&src, h, w, ch),
                m,
                w,
                h,
                Interp::Linear,
                Border::Replicate,
            )
            .unwrap();
            for y in 0..h {
                for x in 0..w {
                    // The last column and row read themselves past the edge (replicate).
                    let sx = if x + 1 < w { x as f32 + 0.5 } else { x as f32 };
                    let sy = if y + 1 < h { y as f32 + 0.25 } else { y as f32 };
                    for c in 0..ch {
                        assert_eq!(r[(y * w + x) * ch + c], v(sx, sy, c), "({x}, {y}, {c})");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(resize(img(&[1.0; 5], 2, 2, 1), 2, 2, Interp::Linear).is_err());
        assert!(resize(img(&[1.0; 4], 2, 2, 1), 0, 2, Interp::Linear).is_err());
        let m = [[f64::NAN, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert!(warp_affine(
            img(&[1.0; 4], 2, 2, 1),
            m,
            2,
            2,
            Interp::Linear,
            Border::Wrap
        )
        .is_err());
    }
}
