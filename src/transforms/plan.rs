//! The geometry of one image: its drawn steps turned into one inverse map from output pixels
//! back to the working image (the scaled source), plus the value steps (lighting, cutout, blur)
//! in the order they act.

use super::{Aug, AugDraw, Border, CropKind, Params, Pipeline, TargetKind, TargetSpec};
use crate::image::resample::scale_min;

/// One image's steps, built from its draws by [`Pipeline::build_plan`].
pub(super) struct Steps {
    /// Size of the working image (rows, cols): the scaled image, or the source for GoogleNet.
    pub work: (usize, usize),
    /// Geometric steps in forward order.
    geo: Vec<Geo>,
    /// Size of the last geometric step's output, which the crop reads.
    dims: (usize, usize),
    /// (k, b) of each lighting step, in order: v ← clip((v − μ)·k + μ + b, 0, 1).
    pub lighting: Vec<(f32, f32)>,
    pub holes: Vec<Holes>,
    /// Blurs of the finished output: (holes painted before it, kernel size).
    pub blurs: Vec<(usize, usize)>,
    /// The crop: output pixel → (offset, scale) in the last geometric output.
    crop_off: (f64, f64),
    crop_scale: (f64, f64),
    googlenet: bool,
    /// For a target: the coordinate-aware steps that moved nothing (skipped by their draw),
    /// by the number of geometric steps before them. 0.7 still redrew a box through each.
    idle: Vec<usize>,
}

impl Pipeline {
    /// The steps of an image of `rows × cols` pixels with draws `params`.
    pub(super) fn build_plan(&self, dims: (usize, usize), params: &Params) -> Steps {
        self.build_steps(dims, params, None)
    }

    /// The steps of a target of `rows × cols` (a mask, or the image a box lives on) with the
    /// image's draws: each step as 0.7 ran it on y, at `sz_y`, leaving out the padding and the
    /// augmentations that do not transform y, and every value step (`with_target` refused
    /// those that would change y).
    pub(super) fn build_target_plan(
        &self,
        dims: (usize, usize),
        params: &Params,
        t: &TargetSpec,
    ) -> Steps {
        self.build_steps(dims, params, Some(t))
    }

    fn build_steps(
        &self,
        (rows, cols): (usize, usize),
        params: &Params,
        y: Option<&TargetSpec>,
    ) -> Steps {
        let googlenet = matches!(self.crop, CropKind::GoogleNet { .. });
        let sz = y.map_or(self.sz, |t| t.sz_y);
        // Masks and boxes: rotations and zooms fill with 0 (a label, never a mirrored one).
        let mask = y.is_some_and(|t| t.kind != TargetKind::Pixel);
        let work = if googlenet {
            (rows, cols)
        } else {
            let targ = ((params.scale_m * sz as f64) as usize).max(1);
            scale_min(rows, cols, targ)
        };
        let mut s = Steps {
            work,
            geo: Vec::new(),
            dims: work,
            lighting: Vec::new(),
            holes: Vec::new(),
            blurs: Vec::new(),
            crop_off: (0.0, 0.0),
            crop_scale: (1.0, 1.0),
            googlenet,
            idle: Vec::new(),
        };
        if self.pad > 0 && !googlenet && y.is_none_or(|t| t.pad) {
            let (rows, cols) = s.dims;
            s.geo.push(Geo::Pad {
                p: self.pad as f32,
                rows,
                cols,
                border: self.pad_border,
            });
            s.dims = (rows + 2 * self.pad, cols + 2 * self.pad);
        }
        for (k, (aug, d)) in self.augs.iter().zip(&params.augs).enumerate() {
            if let Some(t) = y {
                let value_step = matches!(
                    aug,
                    Aug::Lighting { .. } | Aug::Blur { .. } | Aug::Cutout { .. }
                );
                if value_step || !t.augs.get(k).copied().unwrap_or(false) {
                    continue;
                }
            }
            let before = s.geo.len();
            s.push(aug, d, mask);
            let value_step = matches!(
                aug,
                Aug::Lighting { .. } | Aug::Blur { .. } | Aug::Cutout { .. }
            );
            if y.is_some() && !value_step && s.geo.len() == before {
                s.idle.push(before);
            }
        }
        (s.crop_off, s.crop_scale) = self.crop_window(s.dims, params, sz);
        s
    }

    /// The crop as (offset, scale) of output pixels in an image of `rows × cols`.
    fn crop_window(
        &self,
        (rows, cols): (usize, usize),
        params: &Params,
        sz: usize,
    ) -> ((f64, f64), (f64, f64)) {
        match &self.crop {
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
        }
    }
}

impl Steps {
    /// Adds one augmentation step with its draws; `mask`: a label or box mask, black outside
    /// whatever the step's border.
    fn push(&mut self, aug: &Aug, d: &AugDraw, mask: bool) {
        let (rows, cols) = self.dims;
        let edge = |b: &Border| if mask { Border::Constant } else { *b };
        match (aug, d) {
            (
                Aug::Rotate { border, .. } | Aug::RotateZoom { border, .. },
                AugDraw::Rotate(Some(deg)),
            ) => self.geo.push(rotation(*deg, rows, cols, edge(border))),
            (Aug::Stretch { .. } | Aug::RotateZoom { .. }, AugDraw::Stretch { s, tall })
                if *s > 0.0 =>
            {
                self.geo.push(stretch(*s, *tall, rows, cols))
            }
            (Aug::Zoom { border, .. } | Aug::RotateZoom { border, .. }, AugDraw::Zoom(z)) => {
                let f = (1.0 / (1.0 + z)) as f32;
                self.geo.push(Geo::Affine {
                    a: [f, 0.0, 0.0, f],
                    cx: cols as f32 / 2.0,
                    cy: rows as f32 / 2.0,
                    rows,
                    cols,
                    border: edge(border),
                });
            }
            (Aug::Blur { .. }, AugDraw::Blur(Some(k))) if *k > 1 => {
                self.blurs.push((self.holes.len(), *k))
            }
            (Aug::Cutout { length, .. }, AugDraw::Cutout(centres)) => self.holes.push(Holes {
                after: self.geo.len(),
                lit: self.lighting.len(),
                boxes: centres
                    .iter()
                    .map(|&(u, v)| hole_box(u, v, rows, cols, *length))
                    .collect(),
            }),
            (Aug::Flip { .. }, AugDraw::Flip(true)) => self.geo.push(Geo::Flip { cols }),
            (Aug::Dihedral, AugDraw::Dihedral { k, flip }) if *k != 0 || *flip => {
                self.geo.push(Geo::Dihedral {
                    k: *k,
                    flip: *flip,
                    rows,
                    cols,
                });
                if k % 2 == 1 {
                    self.dims = (cols, rows);
                }
            }
            (Aug::Lighting { .. }, AugDraw::Lighting { b, c }) => {
                let k = if *c >= 0.0 { 1.0 + c } else { 1.0 / (1.0 - c) };
                self.lighting.push((k as f32, *b as f32));
            }
            _ => {} // a skipped step (probability) or a draw that does not change the image
        }
    }

    /// A box's half-open pixel ranges `(r0, r1, c0, c1)` in the `rows × cols` source moved
    /// as 0.7 moved it: at each step (scale, each geometric step, crop) drawn as a mask on the
    /// image as it is then, that step applied with nearest-neighbour (OpenCV's: the source
    /// pixel `floor(i · scale)` for a resize, the rounded coordinate for a warp), and read back
    /// as its extent, inclusive (`to_bb`), which the next step fills end-exclusive again. So
    /// a box loses about a pixel at its bottom and right per step, as in 0.7. Returns the
    /// final extent `[r1, c1, r2, c2]`, all zero once the box has vanished.
    pub(super) fn box_stepwise(
        &self,
        (r0, r1, c0, c1): (usize, usize, usize, usize),
        (rows, cols): (usize, usize),
        sz: usize,
    ) -> [f32; 4] {
        if r0 >= r1 || c0 >= c1 {
            return [0.0; 4];
        }
        // The box as an inclusive extent on an image of `dims`, through one step.
        let mut ext = resized_extent((r0, r1, c0, c1), (rows, cols), self.work);
        let mut dims = self.work;
        // A step that moves nothing still fills end-exclusive and reads inclusive.
        let idle = |e: Option<(usize, usize, usize, usize)>, k: usize| {
            let n = self.idle.iter().filter(|&&at| at == k).count();
            e.and_then(|(a, b, c, d)| (b >= a + n && d >= c + n).then(|| (a, b - n, c, d - n)))
        };
        for (k, g) in self.geo.iter().enumerate() {
            ext = idle(ext, k);
            let Some((a, b, c, d)) = ext else { break };
            let one = Plan {
                geo: std::slice::from_ref(g),
                crop_off: (0.0, 0.0),
                crop_scale: (1.0, 1.0),
            };
            let out = g.out_dims(dims);
            ext = mapped_extent(&one, (a, b, c, d), dims, out);
            dims = out;
        }
        ext = idle(ext, self.geo.len());
        // The crop fills the box end-exclusive too.
        let Some((a, b, c, d)) = ext.filter(|&(a, b, c, d)| a < b && c < d) else {
            return [0.0; 4];
        };
        let last = if self.crop_scale == (1.0, 1.0) {
            // A window of `sz` at the crop offset: a shift, clipped.
            let (top, left) = (self.crop_off.0 as usize, self.crop_off.1 as usize);
            let clip = |lo: usize, end: usize, off: usize| {
                let (lo, hi) = (lo.max(off), (end - 1).min(off + sz - 1));
                (lo <= hi).then(|| (lo - off, hi - off))
            };
            clip(a, b, top)
                .zip(clip(c, d, left))
                .map(|((a, b), (c, d))| (a, b, c, d))
        } else {
            resized_extent((a, b, c, d), dims, (sz, sz))
        };
        last.map_or([0.0; 4], |(a, b, c, d)| {
            [a as f32, c as f32, b as f32, d as f32]
        })
    }

    /// Output pixel (i, j) of a `sz`-sided target → the pixel of the last geometric output
    /// it reads with OpenCV's nearest neighbour (a resizing crop reads `floor(i · scale)`),
    /// then that pixel's coordinates in the working image, or None on a black border.
    pub(super) fn map_nearest(&self, i: usize, j: usize) -> Option<(f32, f32)> {
        let geo = Plan {
            geo: &self.geo,
            crop_off: (0.0, 0.0),
            crop_scale: (1.0, 1.0),
        };
        let at = |k: usize, off: f64, s: f64| off + (k as f64 * s).floor();
        let y = at(i, self.crop_off.0, self.crop_scale.0);
        let x = at(j, self.crop_off.1, self.crop_scale.1);
        geo.map_with(y as f32, x as f32, true)
    }

    /// The inverse map of the geometric steps from step `from` on (0: all of them), then the
    /// crop.
    pub(super) fn plan(&self, from: usize) -> Plan<'_> {
        Plan {
            geo: &self.geo[from.min(self.geo.len())..],
            crop_off: (self.crop_off.0 as f32, self.crop_off.1 as f32),
            crop_scale: (self.crop_scale.0 as f32, self.crop_scale.1 as f32),
        }
    }

    /// The crop window `(top, left)` in the working image when only flips move pixels and the
    /// crop takes `sz × sz` pixels as they are, with whether the window is mirrored; `None`
    /// when the geometry needs the general map. Then the window alone can be resized from the
    /// source.
    pub(super) fn plain_window(&self, sz: usize) -> Option<((f64, f64), bool)> {
        let only_flips = self.geo.iter().all(|g| matches!(g, Geo::Flip { .. }));
        if !only_flips || self.crop_scale != (1.0, 1.0) || self.googlenet {
            return None;
        }
        let flipped = self.geo.len() % 2 == 1;
        let (top, mut left) = self.crop_off;
        if flipped {
            left = self.dims.1 as f64 - left - sz as f64;
        }
        Some(((top, left), flipped))
    }
}

/// Rotation by `deg` counter-clockwise about the centre of a `rows × cols` image.
fn rotation(deg: f64, rows: usize, cols: usize, border: Border) -> Geo {
    // Forward (OpenCV getRotationMatrix2D, y down): [[c, s], [−s, c]]; the inverse is its
    // transpose.
    let t = deg.to_radians();
    let (s, c) = (t.sin() as f32, t.cos() as f32);
    Geo::Affine {
        a: [c, -s, s, c],
        cx: cols as f32 / 2.0,
        cy: rows as f32 / 2.0,
        rows,
        cols,
        border,
    }
}

/// `RandomStretch` by 1 + s (s > 0) of the height (`tall`) or the width.
fn stretch(s: f64, tall: bool, rows: usize, cols: usize) -> Geo {
    // Inside the image by construction (it only enlarges): no border reached.
    let f = (1.0 / (1.0 + s)) as f32;
    let (a, cx, cy) = if tall {
        ([1.0, 0.0, 0.0, f], 0.0, stretch_centre(rows, s))
    } else {
        ([f, 0.0, 0.0, 1.0], stretch_centre(cols, s), 0.0)
    };
    Geo::Affine {
        a,
        cx,
        cy,
        rows,
        cols,
        border: Border::Reflect,
    }
}

/// Centre-crop offset: ceil((n − s) / 2).
fn center_offset(n: usize, s: usize) -> usize {
    n.saturating_sub(s).div_ceil(2)
}

/// Random-crop offset: floor(u · (n − s)).
fn random_offset(n: usize, s: usize, u: f64) -> usize {
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
pub(super) fn reflect(x: f32, n: usize) -> f32 {
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
pub(super) enum Geo {
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

/// The inverse map of a pipeline's geometric steps (all, or those after a cutout) for one
/// image.
pub(super) struct Plan<'a> {
    /// Geometric steps in forward order; evaluated in reverse.
    geo: &'a [Geo],
    /// Output pixel → coordinates in the last geometric output: y = oy + (i + 0.5)·sy − 0.5.
    crop_off: (f32, f32),
    crop_scale: (f32, f32),
}

impl Plan<'_> {
    /// Maps output pixel (row i, col j) to coordinates in the working image, or None when it
    /// falls on a constant (black) border.
    #[inline]
    pub(super) fn map(&self, i: usize, j: usize) -> Option<(f32, f32)> {
        self.map_with(i as f32, j as f32, true)
    }

    /// Steps that handle a border (padding, rotation, zoom). With at most one of them, a pixel
    /// whose final coordinates are inside the working image never touched a border, so the
    /// whole map is one affine function there.
    pub(super) fn bordered_steps(&self) -> usize {
        self.geo
            .iter()
            .filter(|g| matches!(g, Geo::Pad { .. } | Geo::Affine { .. }))
            .count()
    }

    /// The map, optionally without border handling (then it is affine in (i, j)).
    #[inline]
    pub(super) fn map_with(&self, i: f32, j: f32, borders: bool) -> Option<(f32, f32)> {
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

impl Geo {
    /// Size of the step's output for an input of `(rows, cols)`.
    fn out_dims(&self, (rows, cols): (usize, usize)) -> (usize, usize) {
        match *self {
            Geo::Pad { p, .. } => (rows + 2 * p as usize, cols + 2 * p as usize),
            Geo::Dihedral { k, .. } if k % 2 == 1 => (cols, rows),
            Geo::Affine { .. } | Geo::Dihedral { .. } | Geo::Flip { .. } => (rows, cols),
        }
    }
}

/// The inclusive extent `(r_min, r_max, c_min, c_max)` of the mask rows `r0..r1`, cols
/// `c0..c1` of an image of `from` resized to `to` with OpenCV's nearest neighbour (output
/// pixel i reads `floor(i · from / to)`), or None when no output pixel reads the box.
fn resized_extent(
    (r0, r1, c0, c1): (usize, usize, usize, usize),
    from: (usize, usize),
    to: (usize, usize),
) -> Option<(usize, usize, usize, usize)> {
    let axis = |lo: usize, hi: usize, n: usize, m: usize| {
        let f = n as f64 / m as f64;
        let hit = |i: usize| {
            let s = ((i as f64 * f).floor() as usize).min(n.saturating_sub(1));
            s >= lo && s < hi
        };
        let first = (0..m).find(|&i| hit(i))?;
        let last = (0..m).rev().find(|&i| hit(i))?;
        Some((first, last))
    };
    let (a, b) = axis(r0, r1, from.0, to.0)?;
    let (c, d) = axis(c0, c1, from.1, to.1)?;
    Some((a, b, c, d))
}

/// The inclusive extent of the pixels of an `out`-sized image whose nearest source pixel
/// (rounded coordinate) under `plan` lies in the half-open box, in an image of `dims`.
fn mapped_extent(
    plan: &Plan,
    (r0, r1, c0, c1): (usize, usize, usize, usize),
    (rows, cols): (usize, usize),
    (out_r, out_c): (usize, usize),
) -> Option<(usize, usize, usize, usize)> {
    let mut ext: Option<(usize, usize, usize, usize)> = None;
    for i in 0..out_r {
        for j in 0..out_c {
            let Some((y, x)) = plan.map(i, j) else {
                continue;
            };
            let (y, x) = ((y + 0.5).floor(), (x + 0.5).floor());
            if y < 0.0 || x < 0.0 || y >= rows as f32 || x >= cols as f32 {
                continue;
            }
            let (y, x) = (y as usize, x as usize);
            if y < r0 || y >= r1 || x < c0 || x >= c1 {
                continue;
            }
            ext = Some(match ext {
                None => (i, i, j, j),
                Some((a, b, c, d)) => (a.min(i), b.max(i), c.min(j), d.max(j)),
            });
        }
    }
    ext
}

#[inline]
fn inside(v: f32, n: usize) -> bool {
    v >= -0.5 && v <= n as f32 - 0.5
}

/// The holes of one `Cutout` step: half-open pixel boxes (top, bottom, left, right) in the
/// image as it is at that step, which the geometric steps from `after` on then move.
pub(super) struct Holes {
    pub(super) after: usize,
    /// Lighting steps before the cutout (the ones after it also act on the black).
    pub(super) lit: usize,
    pub(super) boxes: Vec<(f32, f32, f32, f32)>,
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

/// The stretch as an inverse map along one axis of length n, about the centre `c` that
/// reproduces the original's pixels: it resized the axis to `round(n·(1 + s))` and cropped
/// from `(that − n) / 2` (floor), so output x reads source `(x + off + 0.5)/(1 + s) − 0.5`,
/// which is `(x − c)/(1 + s) + c` for `c = off/s − 0.5`.
fn stretch_centre(n: usize, s: f64) -> f32 {
    let grown = (n as f64 * (1.0 + s)).round() as usize;
    let off = (grown.saturating_sub(n) / 2) as f64;
    (off / s - 0.5) as f32
}

/// The GoogleNet crop window (offset, scale) in an image of `rows × cols`: the first of ten
/// tries that fits, else short side → sz and a centre crop.
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
        assert_eq!(reflect(10.0, 5), 0.0); // 10 → period 10 → 0
    }
}
