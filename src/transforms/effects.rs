//! What acts on the finished crop: the cutout's holes (traced back through the geometric steps
//! after the cutout) and Gaussian blur (OpenCV's kernel, reflect-101 edges), in the order of
//! their steps.

use super::plan::{Holes, Plan, Steps};
use super::render::Finish;

/// Paints the holes and blurs of `steps` over `out` (`3 × sz × sz`, CHW), in their order. A blur
/// acts on the finished crop (its edges reflected): the same as blurring the image at its step
/// wherever the kernel stays inside the crop and no rotation or zoom follows it.
pub(super) fn holes_and_blurs(steps: &Steps, fin: &Finish, sz: usize, out: &mut [f32]) {
    // Each output pixel is traced back through the geometric steps after its cutout.
    let plans: Vec<(Plan, &Holes)> = steps
        .holes
        .iter()
        .map(|h| (steps.plan(h.after), h))
        .collect();
    let mut painted = 0;
    for &(before, k) in &steps.blurs {
        for (plan, h) in &plans[painted..before] {
            paint_holes(fin, plan, h, sz, out);
        }
        painted = before;
        gaussian_blur(out, sz, k);
    }
    for (plan, h) in &plans[painted..] {
        paint_holes(fin, plan, h, sz, out);
    }
}

/// Sets the output pixels that trace back into one of `h`'s boxes to black, as the lighting
/// steps after the cutout leave it, normalised.
fn paint_holes(fin: &Finish, plan: &Plan, h: &Holes, sz: usize, out: &mut [f32]) {
    let mut v = 0.0f32;
    for &(k, b) in &fin.lighting[h.lit..] {
        v = ((v - fin.mu) * k + fin.mu + b).clamp(0.0, 1.0);
    }
    let black = [0, 1, 2].map(|c| (v - fin.mean[c]) * fin.inv_std[c]);
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
