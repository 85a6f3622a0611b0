//! Measures a directory tree the way `du` does: allocated blocks, hard links counted once.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Space and inodes a tree uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Errors walking a tree.
#[derive(Debug, thiserror::Error)]
#[error("measure {path}")]
pub struct UsageError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Walks `root` without following symlinks or crossing into other filesystems.
pub fn measure(root: &Path) -> Result<Usage, UsageError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| UsageError { path, source }
    };
    let root_meta = std::fs::symlink_metadata(root).map_err(err(root))?;
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let root_dev = root_meta.dev();
    let mut pending = vec![(root.to_owned(), root_meta)];
    while let Some((path, meta)) = pending.pop() {
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.bytes += meta.blocks() * 512;
        usage.inodes += 1;
        if !meta.is_dir() || meta.dev() != root_dev {
            continue;
        }
        for entry in std::fs::read_dir(&path).map_err(err(&path))? {
            let entry = entry.map_err(err(&path))?;
            let child = entry.path();
            let child_meta = std::fs::symlink_metadata(&child).map_err(err(&child))?;
            pending.push((child, child_meta));
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_count_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        let single = measure(dir.path()).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        let linked = measure(dir.path()).unwrap();
        assert_eq!(single, linked);
        assert!(single.bytes >= 100_000, "{single:?}");
        assert_eq!(single.inodes, 2);
    }
}
