//! One error type for the whole core. Every variant that concerns a file carries its path, so
//! the Python exception built from it (src/py/errors.rs) can name the file and the problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while touching `path` (open, read, write, rename, mkdir).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The file exists but is not an image we can decode (corrupt, truncated, wrong format).
    #[error("{path}: cannot decode image ({reason})")]
    Decode { path: PathBuf, reason: String },

    /// The header claims dimensions we refuse to allocate for.
    #[error("{path}: image is {width}x{height} pixels, larger than the limit of {limit} pixels per side")]
    ImageTooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit: u32,
    },

    /// The folder layout does not fit what the API expects (missing/empty folder, class mismatch).
    #[error("{path}: {reason}")]
    DatasetLayout { path: PathBuf, reason: String },

    /// A weights file or state dict that does not fit the model.
    #[error("{context}: {reason}")]
    Weights { context: String, reason: String },

    /// The activation cache is unreadable or does not fit.
    #[error("{path}: activation cache: {reason}")]
    Cache { path: PathBuf, reason: String },

    /// A wrong argument from the user (bad lr length, unknown option, bad shape).
    #[error("{0}")]
    InvalidArgument(String),

    /// The image pipeline failed on an image it accepted: a bug, not the file's fault, so
    /// `skip_bad` never skips it.
    #[error("image pipeline: {reason}")]
    Pipeline { reason: String },

    /// An error raised inside libtorch, with the operation that raised it.
    #[error("{op}: {source}")]
    Torch { op: String, source: tch::TchError },

    /// A Python callback raised; the binding re-raises the original exception.
    #[error("a Python callback raised an exception")]
    Callback,

    /// The user interrupted a long-running call (Ctrl-C / KeyboardInterrupt).
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn decode(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Decode {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub fn layout(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::DatasetLayout {
            path: path.into(),
            reason: reason.into(),
        }
    }
    /// The file, when the error is that file's own fault (unreadable, undecodable, too
    /// large): what `skip_bad` skips and reports.
    pub fn bad_source(&self) -> Option<&std::path::Path> {
        match self {
            Error::Io { path, .. }
            | Error::Decode { path, .. }
            | Error::ImageTooLarge { path, .. } => Some(path),
            _ => None,
        }
    }
    pub fn torch(op: impl Into<String>) -> impl FnOnce(tch::TchError) -> Self {
        let op = op.into();
        move |source| Error::Torch { op, source }
    }
}
