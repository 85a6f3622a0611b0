//! The tonic service implementations. They convert between wire and domain types and
//! delegate; the work happens in `process`, `files` and `init`.

// tonic's generated traits fix `Status` as the error type, large or not.
#![allow(clippy::result_large_err)]

mod envd;
mod files;
mod process;

pub use envd::EnvdService;
pub use files::FilesystemService;
pub use process::ProcessService;

use crate::report::error_chain;

/// An internal error as a status, with its whole chain as the message.
fn internal(error: &dyn std::error::Error) -> tonic::Status {
    internal_message(error_chain(error))
}

/// Internal errors are unexpected, so they are also logged here, where they are handled.
fn internal_message(message: String) -> tonic::Status {
    tracing::warn!(error = %message, "request failed");
    tonic::Status::internal(message)
}

/// The status for an I/O failure, chosen by its kind.
fn io_status(kind: std::io::ErrorKind, message: String) -> tonic::Status {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::NotFound => tonic::Status::not_found(message),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            tonic::Status::permission_denied(message)
        }
        ErrorKind::AlreadyExists | ErrorKind::DirectoryNotEmpty => {
            tonic::Status::already_exists(message)
        }
        ErrorKind::InvalidInput
        | ErrorKind::InvalidFilename
        | ErrorKind::NotADirectory
        | ErrorKind::IsADirectory => tonic::Status::invalid_argument(message),
        _ => internal_message(message),
    }
}
