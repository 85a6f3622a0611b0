//! Metadata of one filesystem entry, as Stat and ListDir report it.

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::FsError;
use crate::users::UserDb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub modified: SystemTime,
    pub symlink_target: Option<PathBuf>,
}

impl Entry {
    /// Reads the entry at `path` without following a final symlink.
    pub fn read(path: &Path, users: &UserDb) -> Result<Self, FsError> {
        let meta = std::fs::symlink_metadata(path).map_err(FsError::io("stat", path))?;
        Self::from_metadata(path, &meta, users)
    }

    pub fn from_metadata(path: &Path, meta: &Metadata, users: &UserDb) -> Result<Self, FsError> {
        let file_type = meta.file_type();
        let kind = if file_type.is_symlink() {
            FileKind::Symlink
        } else if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_file() {
            FileKind::File
        } else {
            FileKind::Other
        };
        let symlink_target = match kind {
            FileKind::Symlink => {
                Some(std::fs::read_link(path).map_err(FsError::io("read link", path))?)
            }
            _ => None,
        };
        Ok(Self {
            name: path.file_name().map_or_else(
                || path.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            ),
            path: path.to_path_buf(),
            kind,
            size: meta.len(),
            mode: meta.permissions().mode() & 0o7777,
            owner: users.user_name(meta.uid()),
            group: users.group_name(meta.gid()),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            symlink_target,
        })
    }
}
