//! The target (y) of one item through the image's draws ([`Pipeline::apply_target`]): label
//! masks sampled nearest-neighbour through the same inverse map as the image, image-like
//! targets sampled as the image is, boxes drawn as masks, mapped, and read back as extents.

use super::plan::{reflect, Steps};
use super::render::{check_source, Finish};
use super::{Params, Pipeline, Src, SrcRef, TargetKind};
use crate::{Error, Result};

/// Values of a mask or of an image-like target, row-major.
#[derive(Clone, Copy, Debug)]
pub enum TargetValues<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

impl TargetValues<'_> {
    fn len(&self) -> usize {
        match self {
            TargetValues::F32(v) => v.len(),
            TargetValues::I64(v) => v.len(),
        }
    }
}

/// The y of one item as the dataset gives it.
#[derive(Clone, Copy, Debug)]
pub enum TargetIn<'a> {
    /// `rows × cols` (channels 0: a 2-D array) or `rows × cols × channels`, HWC.
    Mask {
        data: TargetValues<'a>,
        rows: usize,
        cols: usize,
        channels: usize,
    },
    /// Boxes `[r1, c1, r2, c2]` (4 numbers each) on the item's image of `rows × cols`.
    Boxes {
        data: &'a [f32],
        rows: usize,
        cols: usize,
    },
}

/// A transformed y as the batch holds it: a label mask keeps its dtype, anything else is
/// float32; `shape` as 0.7's pipeline ended it (`(sz_y, sz_y)` for a mask, channel 0 of a 3-D
/// one; `(C, sz_y, sz_y)` for a pixel target; `(4k,)` for boxes).
#[derive(Clone, Debug, PartialEq)]
pub enum TargetOut {
    F32 { data: Vec<f32>, shape: Vec<usize> },
    I64 { data: Vec<i64>, shape: Vec<usize> },
}

fn bad(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

impl Pipeline {
    /// Transforms the y of an item with the draws `params` its image was transformed with.
    /// `Error::InvalidArgument` when the pipeline has no target, or `y` is not what its kind
    /// takes (a mask with fewer values than its size, boxes not in fours, a pixel target
    /// without 3 channels).
    pub fn apply_target(&self, y: TargetIn, params: &Params) -> Result<TargetOut> {
        let Some(t) = self.target() else {
            return Err(bad("this pipeline does not transform y".into()));
        };
        let sz = t.sz_y;
        match (t.kind, y) {
            (TargetKind::Coord, TargetIn::Boxes { data, rows, cols }) => {
                if data.len() % 4 != 0 {
                    return Err(bad(format!(
                        "boxes come in fours [r1, c1, r2, c2]; got {} numbers",
                        data.len()
                    )));
                }
                if rows == 0 || cols == 0 {
                    return Err(bad("boxes on an empty image".into()));
                }
                let steps = self.build_target_plan((rows, cols), params, t);
                let out = data
                    .chunks_exact(4)
                    .flat_map(|b| {
                        let (r0, r1) = py_slice(b[0], b[2], rows);
                        let (c0, c1) = py_slice(b[1], b[3], cols);
                        steps.box_stepwise((r0, r1, c0, c1), (rows, cols), sz)
                    })
                    .collect();
                Ok(TargetOut::F32 {
                    data: out,
                    shape: vec![data.len()],
                })
            }
            (
                kind @ (TargetKind::Class | TargetKind::Pixel),
                TargetIn::Mask {
                    data,
                    rows,
                    cols,
                    channels,
                },
            ) => {
                let ch = channels.max(1);
                let need = rows.checked_mul(cols).and_then(|n| n.checked_mul(ch));
                if rows == 0 || cols == 0 || need.is_none_or(|n| data.len() < n) {
                    return Err(bad(format!(
                        "a {rows}x{cols}x{ch} target given {} values",
                        data.len()
                    )));
                }
                let steps = self.build_target_plan((rows, cols), params, t);
                if kind == TargetKind::Pixel {
                    return self.pixel_target(data, (rows, cols, channels), &steps, sz);
                }
                let map = nearest_map(&steps, (rows, cols), sz);
                // Channel 0 of every pixel (what 0.7's ChannelOrder kept of a mask).
                let at = |k: Option<usize>| k.map(|k| k * ch);
                let shape = vec![sz, sz];
                Ok(match data {
                    TargetValues::F32(v) => TargetOut::F32 {
                        data: map.iter().map(|&k| at(k).map_or(0.0, |i| v[i])).collect(),
                        shape,
                    },
                    TargetValues::I64(v) => TargetOut::I64 {
                        data: map.iter().map(|&k| at(k).map_or(0, |i| v[i])).collect(),
                        shape,
                    },
                })
            }
            (kind, _) => Err(bad(format!(
                "a {kind:?} target needs {}",
                if kind == TargetKind::Coord {
                    "boxes"
                } else {
                    "a mask or an image"
                }
            ))),
        }
    }

    /// An image-like target: sampled as the image is (bilinear through the same map, the
    /// antialiasing resize for strong shrinks), no lighting, normalised when asked.
    fn pixel_target(
        &self,
        data: TargetValues,
        (rows, cols, channels): (usize, usize, usize),
        steps: &Steps,
        sz: usize,
    ) -> Result<TargetOut> {
        if channels != 3 {
            return Err(bad(format!(
                "a pixel target in the fused pipeline has 3 channels, not {channels}"
            )));
        }
        let owned: Vec<f32>;
        let values = match data {
            TargetValues::F32(v) => v,
            TargetValues::I64(v) => {
                owned = v.iter().map(|&x| x as f32).collect();
                &owned
            }
        };
        let src = Src {
            data: SrcRef::F32(values),
            rows,
            cols,
        };
        check_source(&src)?;
        let normalize = self.target().is_some_and(|t| t.normalize);
        let (mean, std) = if normalize {
            (self.mean, self.std)
        } else {
            ([0.0; 3], [1.0; 3])
        };
        let fin = Finish::new(&[], 0.0, mean, std);
        let mut out = vec![0f32; 3 * sz * sz];
        self.sample(&src, steps, &fin, sz, &mut out)?;
        Ok(TargetOut::F32 {
            data: out,
            shape: vec![3, sz, sz],
        })
    }
}

/// For each output pixel of the `sz × sz` y (row-major), the source pixel (row·cols + col)
/// it takes, or `None` on a black border. Nearest twice, as 0.7 read a mask: the output
/// pixel reads the nearest pixel of the working (scaled) image, which is OpenCV's nearest
/// resize of the source (working pixel i reads source `floor(i · source / working)`), so
/// a mask through the scale, crops and flips equals 0.7's exactly.
fn nearest_map(steps: &Steps, (rows, cols): (usize, usize), sz: usize) -> Vec<Option<usize>> {
    let (wr, wc) = steps.work;
    let (fy, fx) = (rows as f64 / wr as f64, cols as f64 / wc as f64);
    // NaN (never from a checked pipeline) lands on 0.
    let index = |v: f32, n_work: usize, f: f64, n: usize| {
        let w = ((reflect(v, n_work) + 0.5).floor().max(0.0) as usize).min(n_work - 1);
        ((w as f64 * f).floor() as usize).min(n - 1)
    };
    let mut out = Vec::with_capacity(sz * sz);
    for i in 0..sz {
        for j in 0..sz {
            out.push(
                steps
                    .map_nearest(i, j)
                    .map(|(y, x)| index(y, wr, fy, rows) * cols + index(x, wc, fx, cols)),
            );
        }
    }
    out
}

/// One half-open range of Python slicing `[a:b]` on an axis of `n`, with 0.7's box
/// coordinates truncated toward zero first (negative ones count from the end).
fn py_slice(a: f32, b: f32, n: usize) -> (usize, usize) {
    let n = n as i64;
    let fix = |v: f32| {
        let v = v as i64; // truncation toward zero, as numpy's astype(int)
        let v = if v < 0 { v + n } else { v };
        v.clamp(0, n) as usize
    };
    (fix(a), fix(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::{Aug, AugDraw, Border, CropKind, PipelineSpec, TargetSpec};

    fn pipeline(kind: TargetKind, augs: Vec<Aug>, crop: CropKind, sz: usize) -> Pipeline {
        let n = augs.len();
        Pipeline::new(PipelineSpec {
            sz,
            scale: None,
            pad: 0,
            pad_border: Border::Reflect,
            augs,
            crop,
            mean: [0.0; 3],
            std: [1.0; 3],
        })
        .unwrap()
        .with_target(TargetSpec {
            kind,
            sz_y: sz,
            pad: false,
            augs: vec![true; n],
            normalize: false,
        })
        .unwrap()
    }

    fn params(augs: Vec<AugDraw>) -> Params {
        Params {
            scale_m: 1.0,
            augs,
            crop_u: (0.0, 0.0),
            gnet: Vec::new(),
            gnet_flip_hw: false,
        }
    }

    #[test]
    fn python_slicing_of_box_coordinates() {
        assert_eq!(py_slice(10.7, 50.9, 100), (10, 50));
        assert_eq!(py_slice(-10.0, 120.0, 100), (90, 100));
        assert_eq!(py_slice(0.0, 0.0, 100), (0, 0));
    }

    #[test]
    fn the_spec_worked_example_scale_and_flip() {
        // 200×300 image, box [20, 30, 120, 180], Scale(100) then a flip, centre crop of 100
        // from the 100×150 image at column 25. The worked example of 0.7's box steps:
        // [10, 15, 59, 89] after the scale; the flip fills rows 10..58, cols 15..88 and
        // mirrors them to [10, 61, 58, 134]; the crop fills rows 10..57, cols 61..133 and
        // shifts by 25, cut at its right edge: [10, 36, 57, 99].
        let p = pipeline(
            TargetKind::Coord,
            vec![Aug::Flip { p: 1.0 }],
            CropKind::Center,
            100,
        );
        let boxes = [20.0, 30.0, 120.0, 180.0, 0.0, 0.0, 0.0, 0.0];
        let out = p
            .apply_target(
                TargetIn::Boxes {
                    data: &boxes,
                    rows: 200,
                    cols: 300,
                },
                &params(vec![AugDraw::Flip(true)]),
            )
            .unwrap();
        assert_eq!(
            out,
            TargetOut::F32 {
                data: vec![10.0, 36.0, 57.0, 99.0, 0.0, 0.0, 0.0, 0.0],
                shape: vec![8]
            }
        );
    }

    #[test]
    fn a_rotated_mask_keeps_only_its_labels_and_black_corners() {
        let p = pipeline(
            TargetKind::Class,
            vec![Aug::Rotate {
                deg: 30.0,
                p: 1.0,
                border: Border::Reflect,
            }],
            CropKind::Center,
            16,
        );
        let mask: Vec<i64> = (0..16 * 16).map(|k| 1 + (k % 16 >= 8) as i64).collect();
        let out = p
            .apply_target(
                TargetIn::Mask {
                    data: TargetValues::I64(&mask),
                    rows: 16,
                    cols: 16,
                    channels: 0,
                },
                &params(vec![AugDraw::Rotate(Some(30.0))]),
            )
            .unwrap();
        let TargetOut::I64 { data, shape } = out else {
            panic!("an int mask stays int")
        };
        assert_eq!(shape, vec![16, 16]);
        assert!(data.iter().all(|v| [0, 1, 2].contains(v)));
        assert_eq!(
            data[0], 0,
            "a rotated corner is outside: black, not mirrored"
        );
        assert!(data.contains(&1) && data.contains(&2));
    }
}
