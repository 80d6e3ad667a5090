//! `cv_resize` and `cv_warp_affine`: the OpenCV-compatible kernels of `crate::image::cv` for
//! the functional transforms of `fastai.transforms`, taking OpenCV's integer constants.

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::convert::IntoPyArrayAny;
use super::run_detached;
use crate::image::cv::{self, Border, Image, Interp};

/// The (rows, cols, channels) of a 2-D or 3-D array; 2-D is one channel.
fn hwc(shape: &[usize]) -> PyResult<(usize, usize, usize)> {
    match *shape {
        [r, c] => Ok((r, c, 1)),
        [r, c, ch] => Ok((r, c, ch)),
        _ => Err(PyValueError::new_err(format!(
            "img: expected an (H, W) or (H, W, C) array, got shape {shape:?}"
        ))),
    }
}

fn interp(code: i64, warp: bool) -> PyResult<Interp> {
    match code {
        0 => Ok(Interp::Nearest),
        1 => Ok(Interp::Linear),
        // OpenCV's warps treat INTER_AREA as bilinear.
        3 if warp => Ok(Interp::Linear),
        3 => Ok(Interp::Area),
        _ => Err(PyValueError::new_err(format!(
            "interpolation: {code} is not supported (use INTER_NEAREST=0, INTER_LINEAR=1 or \
             INTER_AREA=3)"
        ))),
    }
}

fn border(code: i64) -> PyResult<Border> {
    match code {
        0 => Ok(Border::Constant),
        1 => Ok(Border::Replicate),
        2 => Ok(Border::Reflect),
        3 => Ok(Border::Wrap),
        4 => Ok(Border::Reflect101),
        _ => Err(PyValueError::new_err(format!(
            "border: {code} is not supported (use BORDER_CONSTANT=0, BORDER_REPLICATE=1, \
             BORDER_REFLECT=2, BORDER_WRAP=3 or BORDER_REFLECT_101=4)"
        ))),
    }
}

fn owned(img: &PyReadonlyArrayDyn<'_, f32>) -> Vec<f32> {
    match img.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => img.as_array().iter().copied().collect(),
    }
}

/// The output array: the caller's number of dimensions (2-D stays 2-D).
fn shaped(
    py: Python<'_>,
    data: Vec<f32>,
    ndim: usize,
    h: usize,
    w: usize,
    ch: usize,
) -> PyResult<Bound<'_, PyAny>> {
    let shape = if ndim == 2 {
        vec![h, w]
    } else {
        vec![h, w, ch]
    };
    let a = ArrayD::from_shape_vec(IxDyn(&shape), data)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray_any(py))
}

/// `cv2.resize(img, (width, height), fx=fx, fy=fy, interpolation=...)` on a float32 (H, W) or
/// (H, W, C) array; `fx`, `fy` of 0 mean width / W and height / H, as in OpenCV.
#[pyfunction]
#[pyo3(signature = (img, width, height, interpolation, fx=0.0, fy=0.0))]
fn cv_resize<'py>(
    py: Python<'py>,
    img: PyReadonlyArrayDyn<'py, f32>,
    width: usize,
    height: usize,
    interpolation: i64,
    fx: f64,
    fy: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let factors = (fx != 0.0 || fy != 0.0).then_some((fx, fy));
    let ndim = img.ndim();
    let (rows, cols, channels) = hwc(img.shape())?;
    let how = interp(interpolation, false)?;
    let data = owned(&img);
    let out = run_detached(py, move || {
        let src = Image {
            data: &data,
            rows,
            cols,
            channels,
        };
        cv::resize_by(src, width, height, factors, how)
    })?;
    shaped(py, out, ndim, height, width, channels)
}

/// `cv2.warpAffine(img, m, (width, height), flags=interpolation, borderMode=border)` (constant
/// border value 0) on a float32 (H, W) or (H, W, C) array; `m` maps source to destination.
#[pyfunction]
fn cv_warp_affine<'py>(
    py: Python<'py>,
    img: PyReadonlyArrayDyn<'py, f32>,
    m: [[f64; 3]; 2],
    width: usize,
    height: usize,
    interpolation: i64,
    border: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let ndim = img.ndim();
    let (rows, cols, channels) = hwc(img.shape())?;
    let how = interp(interpolation, true)?;
    let edge = self::border(border)?;
    let data = owned(&img);
    let out = run_detached(py, move || {
        let src = Image {
            data: &data,
            rows,
            cols,
            channels,
        };
        cv::warp_affine(src, m, width, height, how, edge)
    })?;
    shaped(py, out, ndim, height, width, channels)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cv_resize, m)?)?;
    m.add_function(wrap_pyfunction!(cv_warp_affine, m)?)?;
    Ok(())
}
