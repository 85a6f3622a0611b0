//! Metadata-level operations: stat, list, mkdir -p, move and rm -r. All are blocking calls;
//! the service runs them on the blocking pool.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Entry, FileKind, FsError};
use crate::users::{User, UserDb};

/// Mode for directories created without an explicit one.
const DEFAULT_DIR_MODE: u32 = 0o755;

pub fn stat(path: &Path) -> Result<Entry, FsError> {
    Entry::read(path, &UserDb::load())
}

/// Lists `path` down to `depth` levels (0 and 1 both mean direct children), sorted by path.
/// Symlinked directories are listed but not descended into.
pub fn list_dir(path: &Path, depth: u32) -> Result<Vec<Entry>, FsError> {
    let meta = std::fs::metadata(path).map_err(FsError::io("stat", path))?;
    if !meta.is_dir() {
        return Err(FsError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let users = UserDb::load();
    let mut entries = Vec::new();
    walk(path, depth.max(1), &users, &mut entries)?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

fn walk(dir: &Path, levels: u32, users: &UserDb, out: &mut Vec<Entry>) -> Result<(), FsError> {
    let children = match std::fs::read_dir(dir) {
        Ok(children) => children,
        // A directory removed while we walk is simply gone.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(FsError::io("list", dir)(error)),
    };
    for child in children {
        let child = child.map_err(FsError::io("list", dir))?;
        let path = child.path();
        let meta = match child.metadata() {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(FsError::io("stat", path)(error)),
        };
        let entry = Entry::from_metadata(&path, &meta, users)?;
        let descend = levels > 1 && entry.kind == FileKind::Directory;
        out.push(entry);
        if descend {
            walk(&path, levels - 1, users, out)?;
        }
    }
    Ok(())
}

/// What MakeDir asks for.
#[derive(Debug, Clone)]
pub struct DirRequest {
    pub path: PathBuf,
    /// Owner of created directories; empty means root.
    pub user: String,
    /// Permission bits of created directories; 0 means 0o755.
    pub mode: u32,
}

/// `mkdir -p`: creates missing directories with the requested mode and owner; existing ones
/// are left alone.
pub fn make_dir(request: &DirRequest) -> Result<Entry, FsError> {
    let users = UserDb::load();
    let owner = users.user_or_default(&request.user)?;
    let mode = match request.mode & 0o7777 {
        0 => DEFAULT_DIR_MODE,
        mode => mode,
    };
    create_dirs(&request.path, mode, &owner)?;
    Entry::read(&request.path, &users)
}

/// Creates `path` and its missing ancestors, each with `mode` (umask ignored) and owned by
/// `owner`. Fails if `path` or an ancestor exists but is not a directory.
pub fn create_dirs(path: &Path, mode: u32, owner: &User) -> Result<(), FsError> {
    let mut missing = Vec::new();
    let mut current = path;
    loop {
        match std::fs::metadata(current) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(FsError::ExistsNotDirectory {
                    path: current.to_path_buf(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                missing.push(current.to_path_buf());
                match current.parent() {
                    Some(parent) => current = parent,
                    None => break,
                }
            }
            Err(error) => return Err(FsError::io("stat", current)(error)),
        }
    }
    for dir in missing.iter().rev() {
        match DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {}
            // Created concurrently; fine as long as it is a directory.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
                continue
            }
            Err(error) => return Err(FsError::io("create directory", dir)(error)),
        }
        std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid))
            .map_err(FsError::io("chown", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(FsError::io("chmod", dir))?;
    }
    Ok(())
}

/// Renames `source` to `destination`, creating the destination's parent directories.
pub fn move_entry(source: &Path, destination: &Path) -> Result<Entry, FsError> {
    std::fs::symlink_metadata(source).map_err(FsError::io("stat", source))?;
    let users = UserDb::load();
    if let Some(parent) = destination.parent() {
        create_dirs(parent, DEFAULT_DIR_MODE, &users.user_or_default("")?)?;
    }
    std::fs::rename(source, destination).map_err(FsError::io("rename", source))?;
    Entry::read(destination, &users)
}

/// `rm -r`; a symlink is removed itself, never followed.
pub fn remove(path: &Path) -> Result<(), FsError> {
    if path == Path::new("/") {
        return Err(FsError::RemoveRoot);
    }
    let meta = std::fs::symlink_metadata(path).map_err(FsError::io("stat", path))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path).map_err(FsError::io("remove", path))
    } else {
        std::fs::remove_file(path).map_err(FsError::io("remove", path))
    }
}
