//! I/O failures on a named path, shared by the image builder's steps.

use std::path::{Path, PathBuf};

/// What was being done to which path when the I/O failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct PathIoError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// For `map_err`: names the action and path of an I/O error (`?` then converts it into the
/// step's error type).
pub fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PathIoError {
    let path = path.to_owned();
    move |source| PathIoError {
        action,
        path,
        source,
    }
}
