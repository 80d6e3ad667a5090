//! The image pipeline of fastai 0.7's `image_gen`, run per image in Rust.
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
//! (seed, epoch, item index), so a batch is the same whatever the number of threads. A fixed
//! number of values is drawn per step, so one step's outcome never shifts the draws of the next.
//!
//! | file         | concern                                                               |
//! |--------------|-----------------------------------------------------------------------|
//! | `mod.rs`     | what a pipeline is: its steps, checked once by [`Pipeline::new`]      |
//! | `draw.rs`    | the random values of one image ([`Params`])                           |
//! | `plan.rs`    | the geometry: one inverse map from output pixels to the working image |
//! | `render.rs`  | running it: sampling, lighting, normalisation ([`Pipeline::apply`])   |
//! | `simd.rs`    | the AVX2 bilinear sampler of 8-bit images                             |
//! | `effects.rs` | what acts on the finished crop: cutout holes, Gaussian blur           |

mod draw;
mod effects;
mod plan;
mod render;
#[cfg(target_arch = "x86_64")]
mod simd;
mod target;

pub use crate::image::resample::{Src, SrcRef};
pub use draw::{AugDraw, Params};
pub use target::{TargetIn, TargetOut, TargetValues};

use std::path::Path;

use crate::{Error, Result};

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
    /// ignored its mode and always used black; here the mode is honoured).
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
    /// read the size from the wrong axes).
    Cutout { n_holes: usize, length: usize },
    /// With probability `p`, a Gaussian blur of a kernel size drawn from `sizes` (odd;
    /// OpenCV's `GaussianBlur` with sigma from the size), fastai's `RandomBlur` as intended
    /// (the original never blurred).
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

/// What the target (y) of an item is, for the steps that transform it (fastai's `TfmType`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TargetKind {
    /// A label mask: the image's geometry, nearest-neighbour, black outside (never blended).
    Class,
    /// An image-like target: the image's geometry and sampling.
    Pixel,
    /// Boxes `[r1, c1, r2, c2]`, 4 numbers each, moved as 0.7 moved them: drawn as a mask,
    /// warped, read back as the mask's extent.
    Coord,
}

/// Which steps transform y, and how: the scale and crop steps always do (as `image_gen`
/// builds them), the padding and each augmentation when its own `tfm_y` says so.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSpec {
    pub kind: TargetKind,
    /// Side of the square y (`sz_y`).
    pub sz_y: usize,
    /// The padding step pads y too.
    pub pad: bool,
    /// Per augmentation (in `augs` order): it transforms y.
    pub augs: Vec<bool>,
    /// A `Pixel` target is normalised with the image's mean and std.
    pub normalize: bool,
}

/// What a pipeline is made of, as the user gave it: [`Pipeline::new`] checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSpec {
    /// Side of the square output.
    pub sz: usize,
    pub scale: Option<RandomScale>,
    /// Pixels of padding on every side, after the scale step.
    pub pad: usize,
    pub pad_border: Border,
    pub augs: Vec<Aug>,
    pub crop: CropKind,
    /// Normalisation: (v − mean) / std per channel, v in [0, 1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A complete transform (one of the two that `tfms_from_model` returns), checked: every
/// parameter is in the range its step is defined for, so running it on any image of finite
/// values gives finite values. Built only by [`Pipeline::new`].
//
// The field names and the type's name are part of `key()` (through Debug): renaming one
// changes every cache key.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    sz: usize,
    scale: Option<RandomScale>,
    pad: usize,
    pad_border: Border,
    augs: Vec<Aug>,
    crop: CropKind,
    mean: [f32; 3],
    std: [f32; 3],
    target: Option<TargetSpec>,
}

impl Pipeline {
    /// The pipeline of `spec`, or `Error::InvalidArgument` naming the step and the value out of
    /// range.
    pub fn new(spec: PipelineSpec) -> Result<Self> {
        check(&spec)?;
        let PipelineSpec {
            sz,
            scale,
            pad,
            pad_border,
            augs,
            crop,
            mean,
            std,
        } = spec;
        Ok(Pipeline {
            sz,
            scale,
            pad,
            pad_border,
            augs,
            crop,
            mean,
            std,
            target: None,
        })
    }

    /// This pipeline transforming y as `t` says, or `Error::InvalidArgument` when y cannot
    /// follow it here: a GoogleNet crop (0.7 drew a second, independent crop for y), a count
    /// of flags other than the augmentations', or a value step that would change a pixel or
    /// mask target (lighting, blur or cutout on y).
    pub fn with_target(mut self, t: TargetSpec) -> Result<Self> {
        if t.sz_y == 0 {
            return Err(invalid("sz_y must be at least 1".into()));
        }
        if matches!(self.crop, CropKind::GoogleNet { .. }) {
            return Err(invalid(
                "a GoogleNet crop cannot transform y in the fused pipeline".into(),
            ));
        }
        if t.augs.len() != self.augs.len() {
            return Err(invalid(format!(
                "{} target flags for {} augmentations",
                t.augs.len(),
                self.augs.len()
            )));
        }
        for (aug, &on) in self.augs.iter().zip(&t.augs) {
            let value_step = match aug {
                Aug::Lighting { .. } | Aug::Blur { .. } => t.kind == TargetKind::Pixel,
                Aug::Cutout { .. } => t.kind != TargetKind::Coord,
                _ => false,
            };
            if on && value_step {
                return Err(invalid(format!(
                    "{aug:?} on a {:?} target runs only per item",
                    t.kind
                )));
            }
        }
        self.target = Some(t);
        Ok(self)
    }

    /// How y is transformed, when it is.
    pub fn target(&self) -> Option<&TargetSpec> {
        self.target.as_ref()
    }

    /// Side of the square output.
    pub fn sz(&self) -> usize {
        self.sz
    }

    /// Text that changes whenever the pixels this pipeline produces could change (including
    /// the decoder's version).
    pub fn key(&self) -> String {
        let key = format!(
            "pipeline-v2 decoder {} {self:?}",
            crate::image::decode::DECODER_VERSION
        );
        // Caches of pipelines without a target were keyed before the field existed: their
        // keys stay what they were.
        key.replace(", target: None }", " }")
    }

    /// The smallest short side a source image may be decoded at without any output pixel
    /// being made from an enlarged decode, or `None` when the output depends on the source's
    /// own pixel size and only the full-size decode will do.
    ///
    /// Every crop but GoogleNet's first resizes the source so its short side is the scale
    /// step's target, `int(sz · m)`: the largest m is the need. Padding, rotation, zoom,
    /// stretch, flips and the crop all act on that working image, whose size does not depend
    /// on the source's, so a zoom-in enlarges the working image alike whatever the decode (it
    /// needs no more source pixels).
    ///
    /// GoogleNet's crop works on the source itself: its window, as small as
    /// √(min_area_frac / ρ) of the short side (ρ: the most elongated aspect ratio, either
    /// way), is resized to `sz`, after augmentations that may enlarge it further (zoom and
    /// stretch, by at most their largest factor each). Its Cutout holes are a number of source
    /// pixels, so with Cutout the full size is kept.
    pub fn min_source_side(&self) -> Option<usize> {
        let CropKind::GoogleNet {
            min_area_frac,
            min_aspect_ratio,
            max_aspect_ratio,
            ..
        } = self.crop
        else {
            let sz = self.sz as f64;
            let scaled = match &self.scale {
                // `int(sz · m)` with m drawn from [lo, hi) when the step fires; sz otherwise.
                Some(s) if s.p > 0.0 => {
                    let top = ((s.lo.max(s.hi) * sz) as usize).max(1);
                    if s.p < 1.0 {
                        top.max(self.sz)
                    } else {
                        top
                    }
                }
                _ => self.sz,
            };
            return Some(scaled);
        };
        let mut enlarge = 1.0f64;
        for aug in &self.augs {
            enlarge *= match aug {
                Aug::Cutout { .. } => return None,
                Aug::Zoom {
                    zoom_max, zoom_min, ..
                } => 1.0 + zoom_max.max(*zoom_min).max(0.0),
                Aug::Stretch { max } => 1.0 + max,
                Aug::RotateZoom { zoom, stretch, .. } => 1.0 + zoom.max(*stretch).max(0.0),
                _ => 1.0,
            };
        }
        let rho = max_aspect_ratio.max(1.0 / min_aspect_ratio).max(1.0);
        // The window's short side over the image's short side, at the smallest.
        let window = (min_area_frac / rho).sqrt().min(1.0);
        Some((self.sz as f64 * enlarge / window).ceil() as usize)
    }
}

/// Names the image at `path` in an error of [`Pipeline::apply`] (which does not know it):
/// `.map_err(naming_image(path))`.
pub fn naming_image(path: &Path) -> impl FnOnce(Error) -> Error + '_ {
    move |e| match e {
        Error::Pipeline { reason } => Error::Pipeline {
            reason: format!("{}: {reason}", path.display()),
        },
        Error::InvalidArgument(msg) => Error::InvalidArgument(format!("{}: {msg}", path.display())),
        e => e,
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

/// `p` is a probability.
fn check_p(step: &str, name: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{step}: {name} must be a probability in [0, 1], got {p}"
        )))
    }
}

/// Each of `values` is a finite number.
fn check_finite(step: &str, values: &[(&str, f64)]) -> Result<()> {
    match values.iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((name, v)) => Err(invalid(format!(
            "{step}: {name} must be a finite number, got {v}"
        ))),
    }
}

/// A zoom of 1 + z: the factor must stay positive.
fn check_zoom(step: &str, name: &str, z: f64) -> Result<()> {
    check_finite(step, &[(name, z)])?;
    if z > -1.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "{step}: {name} must be above -1 (the image is scaled by 1 + {name}), got {z}"
        )))
    }
}

fn check(spec: &PipelineSpec) -> Result<()> {
    if spec.sz == 0 {
        return Err(invalid("image size sz must be at least 1".into()));
    }
    if spec.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return Err(invalid(format!(
            "std must be finite and non-zero, got {:?}",
            spec.std
        )));
    }
    if spec.mean.iter().any(|m| !m.is_finite()) {
        return Err(invalid(format!("mean must be finite, got {:?}", spec.mean)));
    }
    if let Some(s) = &spec.scale {
        check_finite("RandomScale", &[("lo", s.lo), ("hi", s.hi)])?;
        if s.lo <= 0.0 || s.hi <= 0.0 {
            return Err(invalid(format!(
                "RandomScale: the zoom range must be positive, got ({}, {})",
                s.lo, s.hi
            )));
        }
        check_p("RandomScale", "p", s.p)?;
    }
    if let CropKind::GoogleNet {
        min_area_frac,
        min_aspect_ratio,
        max_aspect_ratio,
        flip_hw_p,
    } = spec.crop
    {
        let step = "GoogleNetResize";
        if !(min_area_frac > 0.0 && min_area_frac <= 1.0) {
            return Err(invalid(format!(
                "{step}: min_area_frac must be in (0, 1], got {min_area_frac}"
            )));
        }
        check_finite(
            step,
            &[
                ("min_aspect_ratio", min_aspect_ratio),
                ("max_aspect_ratio", max_aspect_ratio),
            ],
        )?;
        if min_aspect_ratio <= 0.0 || max_aspect_ratio <= 0.0 {
            return Err(invalid(format!(
                "{step}: aspect ratios must be positive, got {min_aspect_ratio} and {max_aspect_ratio}"
            )));
        }
        check_p(step, "flip_hw_p", flip_hw_p)?;
    }
    spec.augs.iter().try_for_each(check_aug)
}

fn check_aug(aug: &Aug) -> Result<()> {
    match aug {
        Aug::Rotate { deg, p, .. } => {
            check_finite("RandomRotate", &[("deg", *deg)])?;
            check_p("RandomRotate", "p", *p)
        }
        Aug::Lighting { b, c } => check_finite("RandomLighting", &[("b", *b), ("c", *c)]),
        Aug::Flip { p } => check_p("RandomFlip", "p", *p),
        Aug::Dihedral => Ok(()),
        Aug::Zoom {
            zoom_max, zoom_min, ..
        } => {
            check_zoom("RandomZoom", "zoom_max", *zoom_max)?;
            check_zoom("RandomZoom", "zoom_min", *zoom_min)
        }
        Aug::Stretch { max } => check_stretch("RandomStretch", "max_stretch", *max),
        Aug::RotateZoom {
            deg,
            zoom,
            stretch,
            ps,
            ..
        } => {
            let step = "RandomRotateZoom";
            check_finite(step, &[("deg", *deg)])?;
            check_zoom(step, "zoom", *zoom)?;
            check_stretch(step, "stretch", *stretch)?;
            ps.iter().try_for_each(|&p| check_p(step, "ps", p))
        }
        Aug::Cutout { .. } => Ok(()),
        Aug::Blur { sizes, p } => {
            if sizes.is_empty() || sizes.iter().any(|k| k % 2 == 0) {
                return Err(invalid(format!(
                    "blur kernel sizes must be odd, got {sizes:?}"
                )));
            }
            check_p("RandomBlur", "probability", *p)
        }
    }
}

/// A stretch of 1 + s (s ≥ 0: it only enlarges).
fn check_stretch(step: &str, name: &str, s: f64) -> Result<()> {
    check_finite(step, &[(name, s)])?;
    if s >= 0.0 {
        Ok(())
    } else {
        Err(invalid(format!("{step}: {name} must be >= 0, got {s}")))
    }
}

#[cfg(test)]
mod sweep_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PipelineSpec {
        PipelineSpec {
            sz: 224,
            scale: Some(RandomScale {
                lo: 1.0,
                hi: 1.1,
                p: 0.75,
            }),
            pad: 4,
            pad_border: Border::Constant,
            augs: vec![
                Aug::Rotate {
                    deg: 10.0,
                    p: 0.75,
                    border: Border::Reflect,
                },
                Aug::Lighting { b: 0.05, c: 0.05 },
                Aug::Blur {
                    sizes: vec![3, 5],
                    p: 0.5,
                },
                Aug::Cutout {
                    n_holes: 2,
                    length: 8,
                },
            ],
            crop: CropKind::GoogleNet {
                min_area_frac: 0.08,
                min_aspect_ratio: 0.75,
                max_aspect_ratio: 1.333,
                flip_hw_p: 0.5,
            },
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    #[test]
    fn the_key_is_the_one_caches_were_written_with() {
        // Written out by hand from the key of this pipeline before the checked constructor
        // existed: cache files made then must still be found.
        let expect = format!(
            "pipeline-v2 decoder {} Pipeline {{ sz: 224, scale: Some(RandomScale {{ lo: 1.0, \
             hi: 1.1, p: 0.75 }}), pad: 4, pad_border: Constant, augs: [Rotate {{ deg: 10.0, \
             p: 0.75, border: Reflect }}, Lighting {{ b: 0.05, c: 0.05 }}, Blur {{ sizes: [3, 5], \
             p: 0.5 }}, Cutout {{ n_holes: 2, length: 8 }}], crop: GoogleNet {{ min_area_frac: \
             0.08, min_aspect_ratio: 0.75, max_aspect_ratio: 1.333, flip_hw_p: 0.5 }}, mean: \
             [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }}",
            crate::image::decode::DECODER_VERSION
        );
        assert_eq!(Pipeline::new(spec()).unwrap().key(), expect);
    }

    #[test]
    fn the_source_side_needed_is_the_largest_scale_target() {
        let need = |f: &dyn Fn(&mut PipelineSpec)| {
            let mut s = spec();
            s.crop = CropKind::Center;
            f(&mut s);
            Pipeline::new(s).unwrap().min_source_side()
        };
        // RandomScale(224, 1.1, p=0.75): int(224 · 1.1) = 246 at most.
        assert_eq!(need(&|_| {}), Some(246));
        // Scale(224) (no random scale, or one that never fires): 224.
        assert_eq!(need(&|s| s.scale = None), Some(224));
        assert_eq!(need(&|s| s.scale.as_mut().unwrap().p = 0.0), Some(224));
        // A scale that always shrinks: int(100 · 0.8) = 80; one that sometimes does: sz.
        let shrink = |p| RandomScale {
            lo: 0.5,
            hi: 0.8,
            p,
        };
        let small = |p: f64| {
            move |s: &mut PipelineSpec| {
                s.sz = 100;
                s.scale = Some(shrink(p));
            }
        };
        assert_eq!(need(&small(1.0)), Some(80));
        assert_eq!(need(&small(0.5)), Some(100));
        // Zooms, padding and the crop type act on the scaled image: no more is needed.
        let zoomed = |s: &mut PipelineSpec| {
            s.augs.push(Aug::Zoom {
                zoom_max: 0.5,
                zoom_min: 0.0,
                border: Border::Reflect,
            });
            s.crop = CropKind::No;
        };
        assert_eq!(need(&zoomed), Some(246));
    }

    #[test]
    fn googlenet_needs_its_smallest_window_at_full_output_size() {
        let gnet = |augs: Vec<Aug>| {
            let mut s = spec();
            s.augs = augs;
            Pipeline::new(s).unwrap().min_source_side()
        };
        // Smallest window side: √(0.08 / (1 / 0.75)) = √0.06 = 0.24495 of the short side;
        // 224 / 0.24495 = 914.48.
        assert_eq!(gnet(vec![Aug::Flip { p: 0.5 }]), Some(915));
        // A zoom-in by up to 1.2 and a stretch by up to 1.1 enlarge it further:
        // 914.48 · 1.2 · 1.1 = 1207.1.
        let zoom = Aug::Zoom {
            zoom_max: 0.2,
            zoom_min: -0.1,
            border: Border::Reflect,
        };
        assert_eq!(gnet(vec![zoom, Aug::Stretch { max: 0.1 }]), Some(1208));
        // Cutout holes are counted in source pixels: the full size only.
        assert_eq!(gnet(spec().augs), None);
    }

    #[test]
    fn a_pipeline_failure_names_the_image_and_is_not_a_bad_file() {
        let path = Path::new("/data/train/cats/1.jpg");
        let e = naming_image(path)(Error::Pipeline {
            reason: "output buffer has 3 floats, expected 12".into(),
        });
        assert_eq!(
            e.to_string(),
            "image pipeline: /data/train/cats/1.jpg: output buffer has 3 floats, expected 12"
        );
        // What `skip_bad` skips is the file's own fault; this is not.
        assert!(e.bad_source().is_none());
    }

    /// The message of the error `Pipeline::new` gives for `spec` changed by `f`.
    fn refused(f: impl FnOnce(&mut PipelineSpec)) -> String {
        let mut s = spec();
        f(&mut s);
        match Pipeline::new(s) {
            Err(Error::InvalidArgument(msg)) => msg,
            other => panic!("expected an InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn out_of_range_parameters_are_refused_naming_the_step() {
        assert_eq!(refused(|s| s.sz = 0), "image size sz must be at least 1");
        assert!(refused(|s| s.std[1] = 0.0).starts_with("std must be finite and non-zero"));
        assert!(refused(|s| s.std[2] = f32::NAN).starts_with("std must be finite"));
        assert!(refused(|s| s.mean[0] = f32::INFINITY).starts_with("mean must be finite"));
        assert_eq!(
            refused(|s| s.augs = vec![Aug::Flip { p: 1.5 }]),
            "RandomFlip: p must be a probability in [0, 1], got 1.5"
        );
        assert_eq!(
            refused(|s| s.augs = vec![Aug::Blur {
                sizes: vec![3, 4],
                p: 0.5
            }]),
            "blur kernel sizes must be odd, got [3, 4]"
        );
        assert!(refused(|s| s.augs = vec![Aug::Blur {
            sizes: vec![],
            p: 0.5
        }])
        .starts_with("blur kernel sizes must be odd"));
        assert!(refused(|s| s.augs.push(Aug::Zoom {
            zoom_max: 0.5,
            zoom_min: -1.0,
            border: Border::Reflect
        }))
        .starts_with("RandomZoom: zoom_min must be above -1"));
        assert!(refused(|s| s.augs.push(Aug::Rotate {
            deg: f64::NAN,
            p: 0.5,
            border: Border::Reflect
        }))
        .starts_with("RandomRotate: deg must be a finite number"));
        assert!(refused(|s| s.augs.push(Aug::Stretch { max: -0.1 }))
            .starts_with("RandomStretch: max_stretch must be >= 0"));
        assert!(refused(|s| s.augs.push(Aug::RotateZoom {
            deg: 10.0,
            zoom: 0.1,
            stretch: 0.1,
            ps: [0.5, 0.5, -0.5, 0.5],
            border: Border::Reflect
        }))
        .starts_with("RandomRotateZoom: ps must be a probability"));
        assert!(refused(|s| s.scale = Some(RandomScale {
            lo: 0.0,
            hi: 1.2,
            p: 0.5
        }))
        .starts_with("RandomScale: the zoom range must be positive"));
        assert!(refused(|s| s.scale = Some(RandomScale {
            lo: 1.0,
            hi: 1.2,
            p: -0.1
        }))
        .starts_with("RandomScale: p must be a probability"));
        assert!(refused(|s| s.crop = CropKind::GoogleNet {
            min_area_frac: 0.0,
            min_aspect_ratio: 0.75,
            max_aspect_ratio: 1.333,
            flip_hw_p: 0.5
        })
        .starts_with("GoogleNetResize: min_area_frac must be in (0, 1]"));
    }
}
