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
            gather(src, &ys, &xs, &mut out);
        }
        Interp::Area if scale_x >= 1.0 && scale_y >= 1.0 => {
            let xt = area_table(sw, out_w, scale_x);
            let yt = area_table(sh, out_h, scale_y);
            separable(src, &yt, &xt, out_w, &mut out);
        }
        // Enlarging (on either axis) with INTER_AREA is OpenCV's linear resize with its
        // "area mode" coefficients on both axes.
        Interp::Area | Interp::Linear => {
            let area = interp == Interp::Area;
            let xt = linear_table(sw, out_w, scale_x, inv_x, area);
            let yt = linear_table(sh, out_h, scale_y, inv_y, area);
            separable(src, &yt, &xt, out_w, &mut out);
        }
    }
    Ok(out)
}

/// Taps of one output index: (source index, weight).
type Taps = Vec<(usize, f32)>;

fn gather(src: Image<'_>, ys: &[usize], xs: &[usize], out: &mut [f32]) {
    let ch = src.channels;
    let row_len = xs.len() * ch;
    out.par_chunks_mut(row_len)
        .zip(ys.par_iter())
        .for_each(|(row, &sy)| {
            let srow = &src.data[sy * src.cols * ch..(sy + 1) * src.cols * ch];
            for (o, &sx) in row.chunks_exact_mut(ch).zip(xs) {
                o.copy_from_slice(&srow[sx * ch..(sx + 1) * ch]);
            }
        });
}

/// Horizontal pass then vertical pass, as OpenCV orders them (so float rounding agrees).
fn separable(src: Image<'_>, yt: &[Taps], xt: &[Taps], out_w: usize, out: &mut [f32]) {
    let ch = src.channels;
    let row_len = out_w * ch;
    out.par_chunks_mut(row_len)
        .zip(yt.par_iter())
        .for_each(|(row, ytaps)| {
            let mut hrow = vec![0f32; row_len];
            for (k, &(sy, wy)) in ytaps.iter().enumerate() {
                let srow = &src.data[sy * src.cols * ch..(sy + 1) * src.cols * ch];
                for (h, taps) in hrow.chunks_exact_mut(ch).zip(xt) {
                    h.fill(0.0);
                    for &(sx, wx) in taps {
                        for (hv, &sv) in h.iter_mut().zip(&srow[sx * ch..(sx + 1) * ch]) {
                            *hv += sv * wx;
                        }
                    }
                }
                for (o, &h) in row.iter_mut().zip(&hrow) {
                    if k == 0 {
                        *o = h * wy;
                    } else {
                        *o += h * wy;
                    }
                }
            }
        });
}

/// OpenCV's linear coefficients for one axis (`area`: the INTER_AREA enlargement rule, which
/// replicates source pixels and blends only across their boundaries).
fn linear_table(slen: usize, dlen: usize, scale: f64, inv_scale: f64, area: bool) -> Vec<Taps> {
    (0..dlen)
        .map(|d| {
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
            let s = s as usize;
            if f == 0.0 {
                vec![(s, 1.0)]
            } else {
                vec![(s, 1.0 - f), (s + 1, f)]
            }
        })
        .collect()
}

/// OpenCV's area-shrink coefficients for one axis: each output pixel averages the source
/// interval it covers, partial pixels at its ends weighted by the covered fraction.
fn area_table(slen: usize, dlen: usize, scale: f64) -> Vec<Taps> {
    (0..dlen)
        .map(|d| {
            let f1 = d as f64 * scale;
            let f2 = f1 + scale;
            let cell = scale.min(slen as f64 - f1);
            let s2 = (f2.floor() as usize).min(slen - 1);
            let s1 = (f1.ceil() as usize).min(s2);
            let mut taps = Vec::new();
            // OpenCV ignores slivers under a thousandth of a pixel at both ends.
            if s1 as f64 - f1 > 1e-3 {
                taps.push((s1 - 1, ((s1 as f64 - f1) / cell) as f32));
            }
            for s in s1..s2 {
                taps.push((s, (1.0 / cell) as f32));
            }
            if f2 - s2 as f64 > 1e-3 {
                taps.push((s2, ((f2 - s2 as f64).min(1.0).min(cell) / cell) as f32));
            }
            taps
        })
        .collect()
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
    let ch = src.channels;
    let nearest = interp == Interp::Nearest;
    // OpenCV's fixed point: coordinates in 1/1024 pixel, bilinear weights in 1/32.
    const AB_BITS: i64 = 10;
    const INTER_BITS: i64 = 5;
    const AB_SCALE: f64 = (1 << AB_BITS) as f64;
    const TAB: i64 = 1 << INTER_BITS;
    let round_delta: i64 = if nearest {
        1 << (AB_BITS - 1)
    } else {
        (1 << AB_BITS) / TAB / 2
    };
    let fixed = |v: f64| -> i64 { v.round_ties_even() as i64 };
    let adelta: Vec<i64> = (0..out_w)
        .map(|x| fixed(inv[0][0] * x as f64 * AB_SCALE))
        .collect();
    let bdelta: Vec<i64> = (0..out_w)
        .map(|x| fixed(inv[1][0] * x as f64 * AB_SCALE))
        .collect();
    let (sw, sh) = (src.cols, src.rows);
    let pixel = |sy: i64, sx: i64| -> Option<&[f32]> {
        let y = border_index(sy, sh, border)?;
        let x = border_index(sx, sw, border)?;
        Some(&src.data[(y * sw + x) * ch..(y * sw + x + 1) * ch])
    };
    let mut out = vec![0f32; out_w * out_h * ch];
    out.par_chunks_mut(out_w * ch)
        .enumerate()
        .for_each(|(y, row)| {
            let x0 = fixed((inv[0][1] * y as f64 + inv[0][2]) * AB_SCALE) + round_delta;
            let y0 = fixed((inv[1][1] * y as f64 + inv[1][2]) * AB_SCALE) + round_delta;
            for (x, o) in row.chunks_exact_mut(ch).enumerate() {
                if nearest {
                    let sx = (x0 + adelta[x]) >> AB_BITS;
                    let sy = (y0 + bdelta[x]) >> AB_BITS;
                    match pixel(sy, sx) {
                        Some(p) => o.copy_from_slice(p),
                        None => o.fill(0.0),
                    }
                    continue;
                }
                let xf = (x0 + adelta[x]) >> (AB_BITS - INTER_BITS);
                let yf = (y0 + bdelta[x]) >> (AB_BITS - INTER_BITS);
                let (sx, sy) = (xf >> INTER_BITS, yf >> INTER_BITS);
                let ax = (xf & (TAB - 1)) as f32 / TAB as f32;
                let ay = (yf & (TAB - 1)) as f32 / TAB as f32;
                let w = [
                    (1.0 - ay) * (1.0 - ax),
                    (1.0 - ay) * ax,
                    ay * (1.0 - ax),
                    ay * ax,
                ];
                let taps = [
                    pixel(sy, sx),
                    pixel(sy, sx + 1),
                    pixel(sy + 1, sx),
                    pixel(sy + 1, sx + 1),
                ];
                o.fill(0.0);
                for (t, wt) in taps.iter().zip(w) {
                    if let Some(p) = t {
                        for (ov, &pv) in o.iter_mut().zip(p.iter()) {
                            *ov += pv * wt;
                        }
                    }
                }
            }
        });
    Ok(out)
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
