//! Filesystem operations of the Filesystem service: metadata, directory listing, moves and
//! removals, streamed transfers and watches.

mod entry;
mod ops;
mod path;
mod transfer;
mod watch;

use std::path::PathBuf;

pub use entry::{Entry, FileKind};
pub use ops::{list_dir, make_dir, move_entry, remove, stat, DirRequest};
pub use path::resolve;
pub use transfer::{open_for_read, read_chunks, AtomicWrite, WriteTarget, READ_CHUNK};
pub use watch::{watch, Change, ChangeKind, WatchMode};

use crate::users::UserError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("path must not be empty")]
    EmptyPath,
    #[error(transparent)]
    UnknownUser(#[from] UserError),
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is a directory", path.display())]
    IsADirectory { path: PathBuf },
    #[error("{} exists and is not a directory", path.display())]
    ExistsNotDirectory { path: PathBuf },
    #[error("refusing to remove /")]
    RemoveRoot,
    #[error("the first message must be a header")]
    MissingHeader,
    #[error("only the first message may be a header")]
    RepeatedHeader,
    #[error("message has neither header nor data")]
    EmptyMessage,
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("watch {}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

impl FsError {
    fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
