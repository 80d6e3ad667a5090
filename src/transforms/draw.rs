//! The random values of one image. Each step draws a fixed number of values whatever it
//! decides, so one step's outcome never shifts the draws of the next, and [`Params`] is enough
//! to reproduce the image exactly (the Python tests recompute images from it).

use super::{Aug, CropKind, Pipeline};
use crate::util::rng::Rng;

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
        let augs = self.augs.iter().map(|a| draw_aug(a, rng)).collect();
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

/// One augmentation step's draws.
fn draw_aug(aug: &Aug, rng: &mut Rng) -> AugDraw {
    match aug {
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
            // Every candidate's values are drawn whatever the pick, so the number of draws per
            // image stays fixed.
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
    }
}

/// `RandomStretch`'s draws: the factor − 1, then the direction.
fn draw_stretch(rng: &mut Rng, max: f64) -> AugDraw {
    let s = max * rng.uniform();
    AugDraw::Stretch {
        s,
        tall: rng.below(2) == 1,
    }
}
