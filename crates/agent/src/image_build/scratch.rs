//! Removing half-built directory trees (an interrupted debootstrap, an old staging copy) safely.
//!
//! debootstrap mounts /proc and /sys inside its target while it runs; if it was killed those
//! mounts can outlive it, and deleting through them would reach the host. So a tree is only
//! removed after every mount below it has been detached.

use std::path::{Path, PathBuf};

/// Errors removing a scratch tree.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error("read /proc/self/mountinfo")]
    MountInfo {
        #[source]
        source: std::io::Error,
    },
    #[error("unmount {mount_point} left inside {tree}")]
    Unmount {
        tree: PathBuf,
        mount_point: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("remove {tree}")]
    Remove {
        tree: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Detaches any mounts inside `tree`, then deletes it. A missing tree is fine.
pub fn remove_tree(tree: &Path) -> Result<(), ScratchError> {
    if std::fs::symlink_metadata(tree).is_err() {
        return Ok(());
    }
    let canonical = tree.canonicalize().map_err(|source| ScratchError::Remove {
        tree: tree.to_owned(),
        source,
    })?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|source| ScratchError::MountInfo { source })?;
    let mut inside: Vec<PathBuf> = mount_points(&mountinfo)
        .filter(|m| m.starts_with(&canonical))
        .collect();
    // Deepest first, so nested mounts come off before their parents.
    inside.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount_point in inside {
        tracing::warn!(mount_point = %mount_point.display(), "unmount leftover mount in scratch tree");
        nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH).map_err(|source| {
            ScratchError::Unmount {
                tree: tree.to_owned(),
                mount_point: mount_point.clone(),
                source,
            }
        })?;
    }
    std::fs::remove_dir_all(tree).map_err(|source| ScratchError::Remove {
        tree: tree.to_owned(),
        source,
    })
}

/// Mount points (field 5) of a mountinfo table, with `\040`-style escapes decoded.
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match escape {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_parsed_and_unescaped() {
        let table = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                     90 27 0:50 / /var/cache/wrenn/rootfs/k/proc rw - proc proc rw\n\
                     91 27 0:51 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        let points: Vec<_> = mount_points(table).collect();
        assert_eq!(
            points,
            vec![
                PathBuf::from("/proc"),
                PathBuf::from("/var/cache/wrenn/rootfs/k/proc"),
                PathBuf::from("/mnt/with space")
            ]
        );
    }

    #[test]
    fn removes_a_tree_and_tolerates_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), "x").unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        remove_tree(&tree).unwrap();
    }
}
