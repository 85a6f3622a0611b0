//! The API filesystems a PID 1 has to mount itself: proc, sys, dev, devpts, shm, run, cgroup2.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::users::UserDb;

#[derive(Debug)]
struct MountSpec {
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("create mount point {target}")]
    CreateTarget {
        target: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("mount {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: Errno,
    },
}

fn mount_table() -> Vec<MountSpec> {
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Debian's tty group owns terminals so `mesg` and `write` work; 5 is its fixed gid.
    let tty_gid = UserDb::load().group_id("tty").unwrap_or(5);
    vec![
        MountSpec {
            fstype: "proc",
            target: "/proc",
            flags: secure,
            data: None,
        },
        MountSpec {
            fstype: "sysfs",
            target: "/sys",
            flags: secure,
            data: None,
        },
        MountSpec {
            fstype: "devtmpfs",
            target: "/dev",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755".to_owned()),
        },
        MountSpec {
            fstype: "devpts",
            target: "/dev/pts",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some(format!("newinstance,ptmxmode=0666,mode=0620,gid={tty_gid}")),
        },
        MountSpec {
            fstype: "tmpfs",
            target: "/dev/shm",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=1777".to_owned()),
        },
        MountSpec {
            fstype: "tmpfs",
            target: "/run",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=0755".to_owned()),
        },
        MountSpec {
            fstype: "cgroup2",
            target: "/sys/fs/cgroup",
            flags: secure,
            data: None,
        },
    ]
}

/// Mounts everything in the table that is not mounted yet, then adds the /dev symlinks.
pub fn mount_api_filesystems() {
    for spec in mount_table() {
        match mount_one(&spec) {
            Ok(MountOutcome::Mounted) => tracing::debug!(target = spec.target, "mounted"),
            Ok(MountOutcome::AlreadyMounted) => {
                tracing::debug!(target = spec.target, "already mounted")
            }
            Err(error) => {
                tracing::warn!(error = %crate::report::error_chain(&error), "mount api filesystem")
            }
        }
    }
    dev_symlinks();
}

#[derive(Debug)]
enum MountOutcome {
    Mounted,
    AlreadyMounted,
}

fn mount_one(spec: &MountSpec) -> Result<MountOutcome, MountError> {
    let target = Path::new(spec.target);
    std::fs::create_dir_all(target).map_err(|source| MountError::CreateTarget {
        target: spec.target,
        source,
    })?;
    if is_mount_point(target) {
        return Ok(MountOutcome::AlreadyMounted);
    }
    match mount(
        Some(spec.fstype),
        target,
        Some(spec.fstype),
        spec.flags,
        spec.data.as_deref(),
    ) {
        Ok(()) => Ok(MountOutcome::Mounted),
        Err(Errno::EBUSY) => Ok(MountOutcome::AlreadyMounted),
        Err(source) => Err(MountError::Mount {
            fstype: spec.fstype,
            target: spec.target,
            source,
        }),
    }
}

/// A directory on a different device than its parent is a mount point.
fn is_mount_point(path: &Path) -> bool {
    let Some(parent) = path.parent() else {
        return true;
    };
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(dir), Ok(parent)) => dir.dev() != parent.dev(),
        _ => false,
    }
}

/// /dev/fd & co. make process substitution work. /dev/ptmx stays devtmpfs's device node
/// where there is one: since Linux 4.7 opening it allocates from the devpts mounted at
/// `pts` beside it. Replacing it with a link to pts/ptmx cost an unlink and a symlink on the
/// boot path (~200 guest blocks to translate under TCG); the link serves only where it is
/// missing.
fn dev_symlinks() {
    let links = [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ];
    for (link, target) in links {
        let link = Path::new(link);
        match std::fs::symlink_metadata(link) {
            Ok(meta) if meta.file_type().is_symlink() || meta.file_type().is_char_device() => {
                continue
            }
            Ok(_) => {
                if let Err(error) = std::fs::remove_file(link) {
                    tracing::warn!(link = %link.display(), %error, "replace device node");
                    continue;
                }
            }
            Err(_) => {}
        }
        if let Err(error) = std::os::unix::fs::symlink(target, link) {
            tracing::warn!(link = %link.display(), %error, "create /dev symlink");
        }
    }
}
