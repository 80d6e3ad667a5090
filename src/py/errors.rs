//! The one place where core errors become Python exceptions.
//!
//! The exception classes are defined in Python (`fastai/exceptions.py`), because they derive
//! from two bases (e.g. `ImageDecodeError(FastaiError, OSError)`); this module looks them up.
//! OS errors map by kind to FileNotFoundError / PermissionError / OSError with `filename` set.
//! User input is a ValueError (or a class deriving from it); failures of the library itself
//! are `InternalError`; an exception raised by a Python callback comes back unchanged.

use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyIsADirectoryError, PyNotADirectoryError, PyOSError,
    PyPermissionError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::Error;

/// Builds an instance of `fastai.exceptions.<name>` carrying `msg`.
fn fastai_exception(name: &str, msg: String) -> PyErr {
    Python::with_gil(|py| {
        let cls = py
            .import("fastai.exceptions")
            .and_then(|m| m.getattr(name))
            .and_then(|c| c.downcast_into::<PyType>().map_err(PyErr::from));
        match cls {
            Ok(cls) => PyErr::from_type(cls, msg),
            // Only if the Python package is broken; still raise something readable.
            Err(_) => PyRuntimeError::new_err(msg),
        }
    })
}

/// errno for the kinds we map, so `e.errno` is meaningful as for a built-in OSError.
fn errno_of(kind: std::io::ErrorKind) -> i32 {
    use std::io::ErrorKind as K;
    match kind {
        K::NotFound => 2,
        K::PermissionDenied => 13,
        K::AlreadyExists => 17,
        K::NotADirectory => 20,
        K::IsADirectory => 21,
        K::ReadOnlyFilesystem => 30,
        K::StorageFull => 28,
        _ => 5, // EIO
    }
}

pub fn to_pyerr(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Io { path, source } => {
            let errno = source
                .raw_os_error()
                .unwrap_or_else(|| errno_of(source.kind()));
            let args = (errno, msg, path.display().to_string());
            use std::io::ErrorKind as K;
            match source.kind() {
                K::NotFound => PyFileNotFoundError::new_err(args),
                K::PermissionDenied | K::ReadOnlyFilesystem => PyPermissionError::new_err(args),
                K::AlreadyExists => PyFileExistsError::new_err(args),
                K::IsADirectory => PyIsADirectoryError::new_err(args),
                K::NotADirectory => PyNotADirectoryError::new_err(args),
                _ => PyOSError::new_err(args),
            }
        }
        Error::Decode { .. } | Error::ImageTooLarge { .. } => {
            fastai_exception("ImageDecodeError", msg)
        }
        Error::DatasetLayout { .. } => fastai_exception("DatasetLayoutError", msg),
        Error::Weights { .. } => fastai_exception("WeightsError", msg),
        Error::InvalidArgument(_) => PyValueError::new_err(msg),
        Error::Pipeline { .. } => fastai_exception("PipelineError", msg),
        Error::Torch { .. } | Error::Busy { .. } => PyRuntimeError::new_err(msg),
        Error::Internal { .. } => fastai_exception("InternalError", msg),
        // The callback's own exception, as it raised it (traceback included).
        Error::Callback(inner) => match inner.downcast::<PyErr>() {
            Ok(e) => *e,
            Err(_) => PyRuntimeError::new_err(msg),
        },
    }
}

/// A Python exception (a callback's, or the KeyboardInterrupt of a pending signal) as a core
/// error, to travel out of the Rust loop inside it; `to_pyerr` gives it back unchanged.
pub fn from_pyerr(e: PyErr) -> Error {
    Error::Callback(Box::new(e))
}
