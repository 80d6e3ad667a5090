//! Python values → core values, each spelling parsed in one place.
//!
//! A binding names the core type it wants in its signature (`output: Wrap<Output>`), and pyo3
//! runs the conversion below while it extracts the arguments, so no binding parses strings,
//! tuples or dicts itself. A value the user got wrong is a ValueError naming what was expected
//! (a value of the wrong Python type stays pyo3's TypeError, which names the argument).
//! Numpy helpers shared by the data bindings live here too.

use numpy::ndarray::{Array1, Array2, ArrayD, IxDyn};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_tch::PyTensor;
use tch::Device;

use super::head::PyHead;
use crate::cache::{Precision, Split};
use crate::data::dataset::{ArrayData, GivenPixels, ItemTarget, Targets, Values};
use crate::models::{EntryKind, HeadChoice, Output};
use crate::transforms::{Aug, Border, CropKind, RandomScale};

/// A core value read from its Python spelling (the newtype lets us implement pyo3's trait for
/// types of this crate and of others, such as tch's `Device`).
pub struct Wrap<T>(pub T);

/// `what` must be one of `expected`, given as `got`.
fn unknown(what: &str, got: &str, expected: &str) -> PyErr {
    PyValueError::new_err(format!("unknown {what} {got:?} (use {expected})"))
}

/// 'log_softmax' (single label) | 'sigmoid' (multi-label) | 'identity' (regression).
impl FromPyObject<'_> for Wrap<Output> {
    fn extract_bound(ob: &Bound<'_, PyAny>) -> PyResult<Self> {
        let s: String = ob.extract()?;
        Ok(Wrap(match s.as_str() {
            "log_softmax" => Output::LogSoftmax,
            "sigmoid" => Output::Sigmoid,
            "identity" => Output::Identity,
            o => {
                return Err(unknown(
                    "output",
                    o,
                    "'log_softmax', 'sigmoid' or 'identity'",
                ))
            }
        }))
    }
}

/// 'cpu' | 'cuda' (the first GPU) | 'cuda:N'.
impl FromPyObject<'_> for Wrap<Device> {
    fn extract_bound(ob: &Bound<'_, PyAny>) -> PyResult<Self> {
        let d: String = ob.extract()?;
        match d.as_str() {
            "cpu" => Ok(Wrap(Device::Cpu)),
            "cuda" => Ok(Wrap(Device::Cuda(0))),
            _ => d
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| Wrap(Device::Cuda(n)))
                .ok_or_else(|| unknown("device", &d, "'cpu', 'cuda' or 'cuda:N'")),
        }
    }
}

/// 'float32' | 'bfloat16' (the bindings take `Option<Wrap<Precision>>`: None is float32).
impl FromPyObject<'_> for Wrap<Precision> {
    fn extract_bound(ob: &Bound<'_, PyAny>) -> PyResult<Self> {
        let p: String = ob.extract()?;
        match p.as_str() {
            "float32" => Ok(Wrap(Precision::Float32)),
            "bfloat16" => Ok(Wrap(Precision::Bfloat16)),
            _ => Err(unknown("precision", &p, "None or 'bfloat16'")),
        }
    }
}

/// 'trn' | 'val' | 'test'.
impl FromPyObject<'_> for Wrap<Split> {
    fn extract_bound(ob: &Bound<'_, PyAny>) -> PyResult<Self> {
        let s: String = ob.extract()?;
        Split::from_name(&s).map(Wrap).map_err(super::to_pyerr)
    }
}

/// 'reflect' | 'constant'.
impl FromPyObject<'_> for Wrap<Border> {
    fn extract_bound(ob: &Bound<'_, PyAny>) -> PyResult<Self> {
        let s: String = ob.extract()?;
        match s.as_str() {
            "reflect" => Ok(Wrap(Border::Reflect)),
            "constant" => Ok(Wrap(Border::Constant)),
            other => Err(PyValueError::new_err(format!(
                "unknown border mode {other:?} (use 'reflect' or 'constant')"
            ))),
        }
    }
}

/// 'random' | 'center' | 'no' | ('googlenet', min_area_frac, min_aspect_ratio,
/// max_aspect_ratio, flip_hw_p).
impl FromPyObject<'_> for Wrap<CropKind> {
    fn extract_bound(ob: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok((name, a, b, c, d)) = ob.extract::<(String, f64, f64, f64, f64)>() {
            if name == "googlenet" {
                return Ok(Wrap(CropKind::GoogleNet {
                    min_area_frac: a,
                    min_aspect_ratio: b,
                    max_aspect_ratio: c,
                    flip_hw_p: d,
                }));
            }
            return Err(unknown("crop type", &name, "'googlenet' with 4 numbers"));
        }
        let name: String = ob.extract().map_err(|_| {
            PyTypeError::new_err(
                "crop must be 'random', 'center', 'no' or ('googlenet', min_area_frac, \
                 min_aspect_ratio, max_aspect_ratio, flip_hw_p)",
            )
        })?;
        Ok(Wrap(match name.as_str() {
            "random" => CropKind::Random,
            "center" => CropKind::Center,
            "no" => CropKind::No,
            other => {
                return Err(unknown(
                    "crop type",
                    other,
                    "'random', 'center', 'no' or a ('googlenet', ...) tuple",
                ))
            }
        }))
    }
}

/// `RandomScale`: (lo, hi, p).
impl FromPyObject<'_> for Wrap<RandomScale> {
    fn extract_bound(ob: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (lo, hi, p): (f64, f64, f64) = ob.extract()?;
        Ok(Wrap(RandomScale { lo, hi, p }))
    }
}

/// `d[key]`, converted; a missing or mistyped entry names the key.
fn req<'py, T: FromPyObject<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    match d.get_item(key)? {
        Some(v) => v
            .extract()
            .map_err(|e| PyValueError::new_err(format!("transform spec {key:?}: {e}"))),
        None => Err(PyValueError::new_err(format!(
            "transform spec lacks {key:?}"
        ))),
    }
}

/// One augmentation as `Transform._spec()` describes it (fastai/transforms.py): a dict with
/// its `kind` and that step's parameters under the Python names.
impl<'py> FromPyObject<'py> for Wrap<Aug> {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        let a = ob.downcast::<PyDict>()?;
        let border = |key| req::<Wrap<Border>>(a, key).map(|b| b.0);
        let kind: String = req(a, "kind")?;
        Ok(Wrap(match kind.as_str() {
            "rotate" => Aug::Rotate {
                deg: req(a, "deg")?,
                p: req(a, "p")?,
                border: border("mode")?,
            },
            "lighting" => Aug::Lighting {
                b: req(a, "b")?,
                c: req(a, "c")?,
            },
            "flip" => Aug::Flip { p: req(a, "p")? },
            "dihedral" => Aug::Dihedral,
            "zoom" => Aug::Zoom {
                zoom_max: req(a, "zoom_max")?,
                zoom_min: req(a, "zoom_min")?,
                border: border("mode")?,
            },
            "stretch" => Aug::Stretch {
                max: req(a, "max_stretch")?,
            },
            "blur" => Aug::Blur {
                sizes: req(a, "sizes")?,
                p: req(a, "p")?,
            },
            "cutout" => Aug::Cutout {
                n_holes: req(a, "n_holes")?,
                length: req(a, "length")?,
            },
            "rotate_zoom" => Aug::RotateZoom {
                deg: req(a, "deg")?,
                zoom: req(a, "zoom")?,
                stretch: req(a, "stretch")?,
                ps: req(a, "ps")?,
                border: border("mode")?,
            },
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown augmentation {other:?}"
                )))
            }
        }))
    }
}

/// fastai's `custom_head` as `conv_learner._custom_head_args` hands it over: (forward(x,
/// train, bn_train) callable, layer name, [(state key, tensor, is_parameter)] of the module's
/// state dict).
pub struct CustomHead(pub HeadChoice);

impl FromPyObject<'_> for CustomHead {
    fn extract_bound(ob: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (forward, name, state): (PyObject, String, Vec<(String, PyTensor, bool)>) =
            ob.extract()?;
        let entries = state
            .into_iter()
            .map(|(k, t, is_param)| {
                let kind = if is_param {
                    EntryKind::Param
                } else {
                    EntryKind::Buffer
                };
                (k, t.0, kind)
            })
            .collect();
        Ok(CustomHead(HeadChoice::External {
            head: Box::new(PyHead { forward, name }),
            entries,
        }))
    }
}

/// What a dataset's labels are: 'none' | 'class' | 'multihot' | 'continuous'.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Unlabelled,
    Class,
    MultiHot,
    Continuous,
}

impl FromPyObject<'_> for TargetKind {
    fn extract_bound(ob: &Bound<'_, PyAny>) -> PyResult<Self> {
        let s: String = ob.extract()?;
        match s.as_str() {
            "none" => Ok(TargetKind::Unlabelled),
            "class" => Ok(TargetKind::Class),
            "multihot" => Ok(TargetKind::MultiHot),
            "continuous" => Ok(TargetKind::Continuous),
            other => Err(PyValueError::new_err(format!(
                "unknown target kind {other:?}"
            ))),
        }
    }
}

impl TargetKind {
    fn name(self) -> &'static str {
        match self {
            TargetKind::Unlabelled => "none",
            TargetKind::Class => "class",
            TargetKind::MultiHot => "multihot",
            TargetKind::Continuous => "continuous",
        }
    }

    /// The labels of `n` items of this kind from `y`: int64 (n,) class indices, float32 (n, k)
    /// rows, or nothing when unlabelled.
    pub fn targets(self, y: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Targets> {
        let kind = self.name();
        let shape_err = |what: String| PyValueError::new_err(format!("targets ({kind}): {what}"));
        let y = match (self, y) {
            (TargetKind::Unlabelled, _) => return Ok(Targets::Unlabelled),
            (_, None) => return Err(shape_err("missing array".into())),
            (_, Some(y)) => y,
        };
        if self == TargetKind::Class {
            let a = y.downcast::<PyArrayDyn<i64>>().map_err(|_| {
                PyTypeError::new_err("targets (class): class indices must be an int64 array")
            })?;
            let r = a.readonly();
            let v = r.as_array();
            if v.ndim() != 1 || v.len() != n {
                return Err(shape_err(format!(
                    "expected shape ({n},), got {:?}",
                    v.shape()
                )));
            }
            return Ok(Targets::Class(v.iter().copied().collect()));
        }
        let a = y.downcast::<PyArrayDyn<f32>>().map_err(|_| {
            PyTypeError::new_err(format!("targets ({kind}): rows must be a float32 array"))
        })?;
        let r = a.readonly();
        let v = r.as_array();
        if v.ndim() != 2 || v.shape()[0] != n {
            return Err(shape_err(format!(
                "expected shape ({n}, k), got {:?}",
                v.shape()
            )));
        }
        let c = v.shape()[1];
        let data: Vec<f32> = v.iter().copied().collect();
        Ok(if self == TargetKind::MultiHot {
            Targets::MultiHot { data, c }
        } else {
            Targets::Continuous { data, dim: c }
        })
    }
}

/// Labels as numpy: int64 (n,) class indices, float32 (n, k) rows, or float32 zeros (n,) when
/// unlabelled (fastai 0.7's test sets have (n,), not (n, 1)).
pub fn targets_to_py<'py>(py: Python<'py>, t: Targets, n: usize) -> PyResult<Bound<'py, PyAny>> {
    Ok(match t {
        Targets::Class(v) => Array1::from_vec(v).into_pyarray_any(py),
        Targets::MultiHot { data, c } => Array2::from_shape_vec((n, c), data)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .into_pyarray_any(py),
        Targets::Continuous { data, dim } => Array2::from_shape_vec((n, dim), data)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .into_pyarray_any(py),
        Targets::PerItem { data, shape, .. } => {
            let mut full = vec![n];
            full.extend_from_slice(&shape);
            let bad = |e: numpy::ndarray::ShapeError| PyValueError::new_err(e.to_string());
            match data {
                Values::I64(v) => ArrayD::from_shape_vec(IxDyn(&full), v)
                    .map_err(bad)?
                    .into_pyarray_any(py),
                Values::F32(v) => ArrayD::from_shape_vec(IxDyn(&full), v)
                    .map_err(bad)?
                    .into_pyarray_any(py),
            }
        }
        Targets::Unlabelled => Array1::<f32>::zeros(n).into_pyarray_any(py),
    })
}

/// The values of a numpy array of `T` in C order (one slice copy when contiguous).
fn array_values<T: numpy::Element + Copy>(a: &Bound<'_, PyArrayDyn<T>>) -> Vec<T> {
    let ro = a.readonly();
    match ro.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => ro.as_array().iter().copied().collect(),
    }
}

/// A made item's x: a float32 (C, H, W) numpy array, as (values, shape); anything else is a
/// ValueError naming the item (`who`) and what was expected.
pub fn made_x(x: &Bound<'_, PyAny>, who: &str) -> PyResult<(Vec<f32>, [usize; 3])> {
    let expected = "a float32 numpy array (C, sz, sz), CHW, as fastai's transforms return";
    let Ok(arr) = x.downcast::<numpy::PyUntypedArray>() else {
        return Err(PyValueError::new_err(format!(
            "{who}: the transformed x is a {}; expected {expected}",
            x.get_type().name()?
        )));
    };
    let (dtype, shape) = (arr.dtype().str()?.to_string(), arr.shape().to_vec());
    let Ok(f) = x.downcast::<PyArrayDyn<f32>>() else {
        return Err(PyValueError::new_err(format!(
            "{who}: the transformed x is {dtype} of shape {shape:?}; expected {expected}"
        )));
    };
    if shape.len() != 3 {
        return Err(PyValueError::new_err(format!(
            "{who}: the transformed x has shape {shape:?}; expected {expected}"
        )));
    }
    Ok((array_values(f), [shape[0], shape[1], shape[2]]))
}

/// The image a dataset's own `get_x` returned for item `who`: a uint8 (0-255) or float32
/// (0-1, as `open_image` gives) numpy array (H, W, 3), copied into Rust memory; anything else
/// is a ValueError naming the item and what was expected.
pub fn given_pixels(x: &Bound<'_, PyAny>, who: &str) -> PyResult<GivenPixels> {
    let expected = "an (H, W, 3) RGB numpy array, float32 in [0, 1] as open_image gives or \
                    uint8 0-255";
    let Ok(arr) = x.downcast::<numpy::PyUntypedArray>() else {
        return Err(PyValueError::new_err(format!(
            "{who}: get_x returned a {}; expected {expected}",
            x.get_type().name()?
        )));
    };
    let (dtype, shape) = (arr.dtype().str()?.to_string(), arr.shape().to_vec());
    let bad = || {
        PyValueError::new_err(format!(
            "{who}: get_x returned {dtype} of shape {shape:?}; expected {expected}"
        ))
    };
    if shape.len() != 3 || shape[2] != 3 || shape[0] == 0 || shape[1] == 0 {
        return Err(bad());
    }
    let data = pixels_from_py(x, who).map_err(|_| bad())?;
    Ok(GivenPixels {
        data,
        rows: shape[0],
        cols: shape[1],
    })
}

/// A made item's y: None (no label), an int (a class index), or an int64 / float32 numpy
/// array (a float scalar is a 0-d array). The Python side brings other spellings to these.
pub fn made_y(y: &Bound<'_, PyAny>, who: &str) -> PyResult<ItemTarget> {
    if y.is_none() {
        return Ok(ItemTarget::None);
    }
    if let Ok(i) = y.downcast::<pyo3::types::PyInt>() {
        return Ok(ItemTarget::Class(i.extract()?));
    }
    if let Ok(a) = y.downcast::<PyArrayDyn<i64>>() {
        return Ok(ItemTarget::Array {
            shape: a.shape().to_vec(),
            data: Values::I64(array_values(a)),
        });
    }
    if let Ok(a) = y.downcast::<PyArrayDyn<f32>>() {
        return Ok(ItemTarget::Array {
            shape: a.shape().to_vec(),
            data: Values::F32(array_values(a)),
        });
    }
    Err(PyValueError::new_err(format!(
        "{who}: y is a {}; expected an integer class index, a number, or an integer or float \
         numpy array",
        y.get_type().name()?
    )))
}

/// The values of a uint8 (0-255) or float32 (0-1) numpy array, copied into Rust memory.
/// Contiguous arrays are copied as one slice (element-wise iteration over a dynamic-rank view
/// is an order of magnitude slower).
pub fn pixels_from_py(arr: &Bound<'_, PyAny>, what: &str) -> PyResult<ArrayData> {
    if let Ok(a) = arr.downcast::<PyArrayDyn<u8>>() {
        let r = a.readonly();
        Ok(ArrayData::U8(match r.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => r.as_array().iter().copied().collect(),
        }))
    } else if let Ok(a) = arr.downcast::<PyArrayDyn<f32>>() {
        let r = a.readonly();
        Ok(ArrayData::F32(match r.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => r.as_array().iter().copied().collect(),
        }))
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be a uint8 (0-255) or float32 (0-1) numpy array"
        )))
    }
}

/// The shape of a numpy array argument.
pub fn array_shape(arr: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    Ok(arr.downcast::<numpy::PyUntypedArray>()?.shape().to_vec())
}

pub trait IntoPyArrayAny {
    fn into_pyarray_any(self, py: Python<'_>) -> Bound<'_, PyAny>;
}

impl<T: numpy::Element, D: numpy::ndarray::Dimension> IntoPyArrayAny
    for numpy::ndarray::Array<T, D>
{
    fn into_pyarray_any(self, py: Python<'_>) -> Bound<'_, PyAny> {
        // Moves the buffer into numpy without copying it.
        numpy::PyArray::from_owned_array(py, self).into_any()
    }
}
