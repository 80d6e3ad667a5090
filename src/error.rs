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

    /// A callback handed to the core (a progress hook, a custom head's forward) failed. The
    /// caller's own error rides inside, so the bindings can raise the very exception the
    /// callback raised (a Python exception, or the KeyboardInterrupt of a pending Ctrl-C).
    #[error("a callback failed: {0}")]
    Callback(Box<dyn std::error::Error + Send + Sync>),

    /// The object is already in use by another call (e.g. `learn.save` from a callback of a
    /// running `fit`): waiting would deadlock, so the call fails instead.
    #[error("{what} is busy (a fit or prediction is running, possibly in a callback of it)")]
    Busy { what: &'static str },

    /// A failure of this library, not of the input: a thread that could not start or stopped
    /// without a word, an internal protocol misused, a lock poisoned by an earlier panic.
    #[error("internal error: {what}")]
    Internal { what: String },
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
    pub fn internal(what: impl Into<String>) -> Self {
        Error::Internal { what: what.into() }
    }
    pub fn torch(op: impl Into<String>) -> impl FnOnce(tch::TchError) -> Self {
        let op = op.into();
        move |source| Error::Torch { op, source }
    }
}
