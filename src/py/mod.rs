//! Python bindings: the only module that knows about pyo3. It converts arguments into owned
//! Rust values (each Python spelling parsed once, in convert.rs), runs the core without the GIL
//! (`run_detached`), and maps errors (errors.rs). `python/fastai/_native.pyi` types every
//! binding; `mypy.stubtest` checks it against the built module (scripts/test.sh).
//!
//! The rule: a call that may take long (decoding, a forward pass, a copy of the weights, a
//! file read or write) runs inside `run_detached`, so other Python threads and Ctrl-C keep
//! working. It is the only place that releases the GIL (tests/python/test_native.py checks).

mod convert;
mod cv;
mod data;
mod distributed;
mod errors;
mod head;
mod learner;
mod models;
mod module;
mod schedule;
mod transforms;

use pyo3::prelude::*;

pub use errors::to_pyerr;

/// Runs `f` without the GIL and turns a core error into the matching Python exception (a
/// callback's own exception, carried inside the error, comes back unchanged). Every slow
/// entry point goes through here so other Python threads (and Ctrl-C handling in the
/// progress callbacks) keep running.
pub fn run_detached<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: Send + FnOnce() -> crate::Result<T>,
{
    py.allow_threads(f).map_err(to_pyerr)
}

/// Hands a torch tensor to Rust and back (used by tests to prove the tensor bridge works).
#[pyfunction]
fn _roundtrip_tensor(t: pyo3_tch::PyTensor) -> PyResult<pyo3_tch::PyTensor> {
    // A real copy through libtorch, so the test sees a new tensor with the same values.
    Ok(pyo3_tch::PyTensor(t.0.copy()))
}

/// Hands a float32 numpy array to Rust and back, doubled (the doubling proves Rust saw it).
#[pyfunction]
fn _roundtrip_array<'py>(
    py: Python<'py>,
    a: numpy::PyReadonlyArrayDyn<'py, f32>,
) -> Bound<'py, numpy::PyArrayDyn<f32>> {
    let doubled = a.as_array().mapv(|v| v * 2.0);
    numpy::PyArrayDyn::from_owned_array(py, doubled)
}

/// Raises a core error of the given kind, so tests can check the Rust→Python error mapping.
#[pyfunction]
fn _raise_error(kind: &str, path: &str) -> PyResult<()> {
    use crate::Error;
    let err = match kind {
        "decode" => Error::decode(path, "not a JPEG file"),
        "layout" => Error::layout(path, "folder is empty"),
        "io" => Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)),
        "argument" => Error::InvalidArgument(format!("bad argument: {path}")),
        "internal" => Error::internal(format!("something broke: {path}")),
        "busy" => Error::Busy {
            what: "the learner",
        },
        "storage_full" => Error::io(path, std::io::Error::from_raw_os_error(28)),
        _ => Error::InvalidArgument(format!("unknown error kind {kind:?}")),
    };
    Err(to_pyerr(err))
}

/// Keeps freed tensor memory in the process instead of unmapping it (glibc only).
///
/// glibc serves every allocation above `M_MMAP_THRESHOLD` (at most 32 MB with its dynamic
/// rule) with a fresh `mmap` and returns it with `munmap` on free. A CNN's activations at
/// 224 px are 40-300 MB per layer per batch, so every layer of every batch page-faults its
/// output in from zeroed pages: profiled (perf) on the EfficientNet-Lite0 precompute, over
/// half the CPU time was the kernel's page-fault / clear_page / munmap path, and raising both
/// thresholds made the forward pass about 1.7x faster. The cost: the heap does not shrink
/// below its peak (as PyTorch's CUDA caching allocator). Skipped when the user set any
/// malloc tuning (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `GLIBC_TUNABLES`) or
/// `FASTAI_KEEP_MALLOC=1`. Returns whether it applied the tuning.
fn tune_malloc() -> bool {
    let user_set = [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "GLIBC_TUNABLES",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
        || std::env::var("FASTAI_KEEP_MALLOC").is_ok_and(|v| v == "1");
    if user_set {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        const M_TRIM_THRESHOLD: std::os::raw::c_int = -1;
        const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
        // SAFETY: mallopt only sets allocator parameters; it is thread-safe in glibc.
        unsafe {
            mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1 && mallopt(M_MMAP_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("malloc_tuned", tune_malloc())?;
    m.add(
        "build_profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    learner::register(m)?;
    m.add_function(wrap_pyfunction!(_roundtrip_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(_roundtrip_array, m)?)?;
    m.add_function(wrap_pyfunction!(_raise_error, m)?)?;
    schedule::register(m)?;
    models::register(m)?;
    transforms::register(m)?;
    cv::register(m)?;
    data::register(m)?;
    Ok(())
}
