//! A property test over the whole pipeline: image sizes from 1 pixel to far larger than the
//! output, very wide and very tall, every crop kind, padding, random scale and every
//! augmentation with ordinary and extreme parameters, for 8-bit and float sources. Every run
//! must finish without a panic (the debug build checks overflow) and give finite values.

use super::*;
use crate::util::rng::{Rng, Stream};

fn pick<T: Clone>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.below(xs.len() as u64) as usize].clone()
}

fn border(rng: &mut Rng) -> Border {
    pick(rng, &[Border::Reflect, Border::Constant])
}

fn prob(rng: &mut Rng) -> f64 {
    pick(rng, &[0.0, 0.5, 1.0])
}

fn aug(rng: &mut Rng) -> Aug {
    match rng.below(9) {
        0 => Aug::Rotate {
            deg: pick(rng, &[0.0, 10.0, 45.0, 180.0]),
            p: prob(rng),
            border: border(rng),
        },
        1 => Aug::Lighting {
            b: pick(rng, &[0.0, 0.05, 0.5, 1.0]),
            c: pick(rng, &[0.0, 0.05, 0.5, 0.95]),
        },
        2 => Aug::Flip { p: prob(rng) },
        3 => Aug::Dihedral,
        4 => Aug::Zoom {
            zoom_max: pick(rng, &[0.0, 0.1, 1.0, 3.0]),
            zoom_min: pick(rng, &[-0.5, 0.0, 0.1]),
            border: border(rng),
        },
        5 => Aug::Stretch {
            max: pick(rng, &[0.0, 0.2, 1.0, 4.0]),
        },
        6 => Aug::RotateZoom {
            deg: pick(rng, &[0.0, 10.0, 90.0]),
            zoom: pick(rng, &[0.0, 0.5, 2.0]),
            stretch: pick(rng, &[0.0, 0.2, 1.0]),
            ps: pick(
                rng,
                &[
                    [0.25; 4],
                    [1.0, 0.0, 0.0, 0.0],
                    [0.0, 1.0, 0.0, 0.0],
                    [0.0, 0.0, 1.0, 0.0],
                ],
            ),
            border: border(rng),
        },
        7 => Aug::Cutout {
            n_holes: pick(rng, &[0, 1, 3]),
            length: pick(rng, &[0, 1, 5, 100]),
        },
        _ => Aug::Blur {
            sizes: pick(rng, &[vec![1], vec![3], vec![5, 7], vec![9], vec![13]]),
            p: prob(rng),
        },
    }
}

fn crop(rng: &mut Rng) -> CropKind {
    match rng.below(5) {
        0 => CropKind::Random,
        1 => CropKind::Center,
        2 => CropKind::No,
        3 => CropKind::GoogleNet {
            min_area_frac: 0.08,
            min_aspect_ratio: 0.75,
            max_aspect_ratio: 1.333,
            flip_hw_p: 0.5,
        },
        // Extreme tries, most of which do not fit: the fallback window.
        _ => CropKind::GoogleNet {
            min_area_frac: 0.9,
            min_aspect_ratio: 0.05,
            max_aspect_ratio: 20.0,
            flip_hw_p: 1.0,
        },
    }
}

/// (rows, cols) of a source image for output size `sz`.
fn dims(rng: &mut Rng, sz: usize) -> (usize, usize) {
    let sides = [1, 2, 3, 5, sz, sz + 1, 3 * sz + 7];
    match rng.below(4) {
        0 => (1, pick(rng, &[1, 2, 4 * sz + 5])), // very wide
        1 => (pick(rng, &[2, 4 * sz + 5]), 1),    // very tall
        _ => (pick(rng, &sides), pick(rng, &sides)),
    }
}

fn pipeline(rng: &mut Rng) -> Pipeline {
    let sz = pick(rng, &[1, 2, 3, 7, 16, 32]);
    let scale = match rng.below(3) {
        0 => None,
        1 => Some(RandomScale {
            lo: 1.0,
            hi: pick(rng, &[1.1, 2.0]),
            p: prob(rng),
        }),
        _ => Some(RandomScale {
            lo: 0.3,
            hi: 1.5,
            p: 1.0,
        }),
    };
    let n_augs = rng.below(5) as usize;
    let spec = PipelineSpec {
        sz,
        scale,
        pad: pick(rng, &[0, 0, 1, 2, 4, sz + 3]),
        pad_border: border(rng),
        augs: (0..n_augs).map(|_| aug(rng)).collect(),
        crop: crop(rng),
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    match Pipeline::new(spec) {
        Ok(p) => p,
        Err(e) => panic!("the sweep made a pipeline Pipeline::new refuses: {e}"),
    }
}

enum Pixels {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// One case: a pipeline, a source image and the draws, all from `case`'s seed.
fn case(case: u64) -> (Pipeline, Pixels, usize, usize, Params) {
    let mut rng = Rng::new(case);
    let p = pipeline(&mut rng);
    let (rows, cols) = dims(&mut rng, p.sz());
    let n = rows * cols * 3;
    let pixels = if rng.below(2) == 0 {
        Pixels::U8((0..n).map(|_| rng.below(256) as u8).collect())
    } else {
        Pixels::F32((0..n).map(|_| rng.uniform() as f32).collect())
    };
    let params = p.draw(&mut Rng::for_item(7, Stream::Aug, 0, case));
    (p, pixels, rows, cols, params)
}

fn run(p: &Pipeline, pixels: &Pixels, rows: usize, cols: usize, params: &Params) -> Vec<f32> {
    let data = match pixels {
        Pixels::U8(v) => SrcRef::U8(v),
        Pixels::F32(v) => SrcRef::F32(v),
    };
    let mut out = vec![f32::NAN; 3 * p.sz() * p.sz()];
    let src = Src { data, rows, cols };
    if let Err(e) = p.apply(&src, params, &mut out) {
        panic!("{e}");
    }
    out
}

/// About 5 s in a debug build.
const CASES: u64 = 40000;

#[test]
fn every_pipeline_on_every_image_gives_finite_values() {
    for c in 0..CASES {
        let (p, pixels, rows, cols, params) = case(c);
        let out = run(&p, &pixels, rows, cols, &params);
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            panic!(
                "case {c}: value {i} is {} ({rows}x{cols}, {p:?}, {params:?})",
                out[i]
            );
        }
    }
}
