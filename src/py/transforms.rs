//! `fastai._native.Pipeline`: a transform (fastai's `Transforms`) parsed and checked once, then
//! shared by every loader that uses it; and `transform_image`, which runs one on one image.

use std::sync::Arc;

use numpy::ndarray::Array3;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::convert::{array_shape, pixels_from_py, IntoPyArrayAny, Wrap};
use super::{run_detached, to_pyerr};
use crate::data::dataset::{ArrayData, Values};
use crate::transforms::{
    Aug, AugDraw, Border, CropKind, Params, Pipeline, PipelineSpec, RandomScale, Src, SrcRef,
    TargetIn, TargetKind, TargetOut, TargetSpec, TargetValues,
};
use crate::util::rng::{Rng, Stream};

/// A checked pipeline. `fastai.transforms.Transforms` builds one the first time a loader or a
/// call needs it and hands the same object to each of its loaders.
#[pyclass(name = "Pipeline", module = "fastai._native", frozen)]
pub struct PyPipeline {
    pub inner: Arc<Pipeline>,
}

#[pymethods]
impl PyPipeline {
    /// scale (with `scale` = (lo, hi, p): random) → `pad` pixels of `pad_mode` border → `augs`
    /// in order (`Transform._spec()` dicts) → `crop` ('random' | 'center' | 'no' |
    /// ('googlenet', min_area_frac, min_aspect_ratio, max_aspect_ratio, flip_hw_p)) →
    /// (x − mean) / std. Values out of their step's range are a ValueError naming the step.
    /// `target` = (kind 'class' | 'pixel' | 'coord', sz_y, pad, [per aug: transforms y],
    /// normalize) makes it transform y too.
    #[new]
    #[pyo3(signature = (*, sz, crop, mean, std, scale=None, pad=0, pad_mode=Wrap(Border::Reflect), augs=Vec::new(), target=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        sz: usize,
        crop: Wrap<CropKind>,
        mean: [f32; 3],
        std: [f32; 3],
        scale: Option<Wrap<RandomScale>>,
        pad: usize,
        pad_mode: Wrap<Border>,
        augs: Vec<Wrap<Aug>>,
        target: Option<(String, usize, bool, Vec<bool>, bool)>,
    ) -> PyResult<Self> {
        let pipeline = Pipeline::new(PipelineSpec {
            sz,
            scale: scale.map(|s| s.0),
            pad,
            pad_border: pad_mode.0,
            augs: augs.into_iter().map(|a| a.0).collect(),
            crop: crop.0,
            mean,
            std,
        })
        .map_err(to_pyerr)?;
        let pipeline = match target {
            None => pipeline,
            Some((kind, sz_y, pad, augs, normalize)) => {
                let kind = match kind.as_str() {
                    "class" => TargetKind::Class,
                    "pixel" => TargetKind::Pixel,
                    "coord" => TargetKind::Coord,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "target kind must be 'class', 'pixel' or 'coord', not {other:?}"
                        )))
                    }
                };
                pipeline
                    .with_target(TargetSpec {
                        kind,
                        sz_y,
                        pad,
                        augs,
                        normalize,
                    })
                    .map_err(to_pyerr)?
            }
        };
        Ok(PyPipeline {
            inner: Arc::new(pipeline),
        })
    }

    /// Side of the square output.
    #[getter]
    fn sz(&self) -> usize {
        self.inner.sz()
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// The draws of one image as Python values: {'scale_m', 'crop_u', 'augs': [(kind, ...)]}.
fn params_to_py<'py>(py: Python<'py>, p: &Params) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("scale_m", p.scale_m)?;
    d.set_item("crop_u", (p.crop_u.0, p.crop_u.1))?;
    let augs = PyList::empty(py);
    for a in &p.augs {
        let t: Bound<'py, PyTuple> = match a {
            AugDraw::Rotate(deg) => ("rotate", *deg).into_pyobject(py)?,
            AugDraw::Lighting { b, c } => ("lighting", *b, *c).into_pyobject(py)?,
            AugDraw::Flip(f) => ("flip", *f).into_pyobject(py)?,
            AugDraw::Dihedral { k, flip } => ("dihedral", *k, *flip).into_pyobject(py)?,
            AugDraw::Zoom(z) => ("zoom", *z).into_pyobject(py)?,
            AugDraw::Stretch { s, tall } => ("stretch", *s, *tall).into_pyobject(py)?,
            AugDraw::Pass => ("pass",).into_pyobject(py)?,
            AugDraw::Blur(k) => ("blur", *k).into_pyobject(py)?,
            AugDraw::Cutout(centres) => ("cutout", centres.clone()).into_pyobject(py)?,
        };
        augs.append(t)?;
    }
    d.set_item("augs", augs)?;
    Ok(d)
}

/// Runs `pipeline` on one (H, W, 3) image (uint8, or float32 in [0, 1]) with the draws of
/// (seed, epoch, index); returns (float32 (3, sz, sz), the drawn parameters).
#[pyfunction]
fn transform_image<'py>(
    py: Python<'py>,
    img: &Bound<'py, PyAny>,
    pipeline: &PyPipeline,
    seed: u64,
    epoch: u64,
    index: u64,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
    let shape = array_shape(img)?;
    if shape.len() != 3 || shape[2] != 3 {
        return Err(PyValueError::new_err(format!(
            "expected an (H, W, 3) image, got shape {shape:?}"
        )));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let owned = pixels_from_py(img, "image")?;
    let pipeline = pipeline.inner.clone();
    let params = pipeline.draw(&mut Rng::for_item(seed, Stream::Aug, epoch, index));
    let sz = pipeline.sz();
    let p2 = params.clone();
    let out = run_detached(py, move || {
        let data = match &owned {
            ArrayData::U8(v) => SrcRef::U8(v),
            ArrayData::F32(v) => SrcRef::F32(v),
        };
        let mut out = vec![0f32; 3 * sz * sz];
        pipeline
            .apply(&Src { data, rows, cols }, &p2, &mut out)
            .map(|_| out)
    })?;
    let a = Array3::from_shape_vec((3, sz, sz), out)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((a.into_pyarray_any(py), params_to_py(py, &params)?))
}

/// A target array: int64 or float32 (other numbers converted), row-major, with its shape.
pub fn target_from_py(y: &Bound<'_, PyAny>) -> PyResult<(Values, Vec<usize>)> {
    use numpy::{PyArrayDyn, PyArrayMethods};
    let np = y.py().import("numpy")?;
    let a = np.call_method1("asarray", (y,))?;
    let kind: String = a.getattr("dtype")?.getattr("kind")?.extract()?;
    let (dtype, is_int) = if "iub".contains(kind.as_str()) {
        ("int64", true)
    } else {
        ("float32", false)
    };
    let a = np.call_method1("ascontiguousarray", (a, dtype))?;
    let shape = array_shape(&a)?;
    let values = if is_int {
        let a = a.downcast::<PyArrayDyn<i64>>()?.readonly();
        Values::I64(a.as_array().iter().copied().collect())
    } else {
        let a = a.downcast::<PyArrayDyn<f32>>()?.readonly();
        Values::F32(a.as_array().iter().copied().collect())
    };
    Ok((values, shape))
}

/// A transformed target as numpy.
pub fn target_to_py<'py>(py: Python<'py>, y: TargetOut) -> PyResult<Bound<'py, PyAny>> {
    use numpy::ndarray::{ArrayD, IxDyn};
    let err = |e: numpy::ndarray::ShapeError| PyValueError::new_err(e.to_string());
    Ok(match y {
        TargetOut::F32 { data, shape } => ArrayD::from_shape_vec(IxDyn(&shape), data)
            .map_err(err)?
            .into_pyarray_any(py),
        TargetOut::I64 { data, shape } => ArrayD::from_shape_vec(IxDyn(&shape), data)
            .map_err(err)?
            .into_pyarray_any(py),
    })
}

/// Runs `pipeline` (one that transforms y) on one (H, W, 3) image and its y (a mask or image
/// array for 'class'/'pixel', boxes for 'coord') with the draws of (seed, epoch, index);
/// returns (x float32 (3, sz, sz), y as a batch holds it, the drawn parameters).
#[pyfunction]
fn transform_item<'py>(
    py: Python<'py>,
    img: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    pipeline: &PyPipeline,
    seed: u64,
    epoch: u64,
    index: u64,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyDict>)> {
    let (x, params) = transform_image(py, img, pipeline, seed, epoch, index)?;
    let shape = array_shape(img)?;
    let (rows, cols) = (shape[0], shape[1]);
    let (values, yshape) = target_from_py(y)?;
    let p = pipeline.inner.clone();
    let drawn = p.draw(&mut Rng::for_item(seed, Stream::Aug, epoch, index));
    let out = run_detached(py, move || {
        let input = match (p.target().map(|t| t.kind), &values) {
            (Some(TargetKind::Coord), Values::F32(v)) => TargetIn::Boxes {
                data: v,
                rows,
                cols,
            },
            (Some(TargetKind::Coord), Values::I64(v)) => {
                let v: Vec<f32> = v.iter().map(|&b| b as f32).collect();
                return p.apply_target(
                    TargetIn::Boxes {
                        data: &v,
                        rows,
                        cols,
                    },
                    &drawn,
                );
            }
            _ => {
                let (r, c, ch) = match yshape[..] {
                    [r, c] => (r, c, 0),
                    [r, c, ch] => (r, c, ch),
                    _ => {
                        return Err(crate::Error::InvalidArgument(format!(
                            "y of shape {yshape:?}: a mask or image target is 2-D or 3-D"
                        )))
                    }
                };
                let data = match &values {
                    Values::F32(v) => TargetValues::F32(v),
                    Values::I64(v) => TargetValues::I64(v),
                };
                TargetIn::Mask {
                    data,
                    rows: r,
                    cols: c,
                    channels: ch,
                }
            }
        };
        p.apply_target(input, &drawn)
    })?;
    Ok((x, target_to_py(py, out)?, params))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPipeline>()?;
    m.add_function(wrap_pyfunction!(transform_image, m)?)?;
    m.add_function(wrap_pyfunction!(transform_item, m)?)?;
    Ok(())
}
