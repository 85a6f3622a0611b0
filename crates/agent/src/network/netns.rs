//! Named network namespaces, made and removed by the agent itself: a namespace is pinned by a
//! bind mount of its `nsfs` file at `/run/netns/<name>`, the place `ip netns` uses, so
//! `ip netns exec <name> …` keeps working for people debugging a slot.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

const NETNS_DIR: &str = "/run/netns";

/// Path of a named namespace's bind mount.
pub fn netns_path(netns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(netns)
}

/// Creates a new, empty network namespace named `netns`. Fails with `AlreadyExists` when the
/// name is taken.
pub fn create_netns(netns: &str) -> io::Result<()> {
    share_netns_dir()?;
    let path = netns_path(netns);
    // The mount point: an empty file, made exclusively so two callers never share a name.
    drop(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)?,
    );
    let pinned = std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<()> {
                // Only this short-lived thread moves into the new namespace; the mount keeps
                // the namespace alive after the thread is gone.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if pinned.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    pinned
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so a namespace pinned
/// later is visible from every mount namespace that sees this directory.
fn share_netns_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_DIR)?;
    let make_shared = || {
        nix::mount::mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind the directory onto itself first.
        Err(nix::errno::Errno::EINVAL) => {
            nix::mount::mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            Ok(make_shared()?)
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Opens a named namespace, e.g. to move a link into it or to join it.
pub fn open_netns(netns: &str) -> io::Result<File> {
    File::open(netns_path(netns))
}

/// Deletes a named namespace: unmounts its bind mount (detached, as `ip netns delete` does)
/// and removes the file. Its veth end and TAP go with the namespace once nothing holds it.
pub fn delete_netns(netns: &str) -> io::Result<()> {
    let path = netns_path(netns);
    match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a file left half made); remove it all the same.
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(errno) => return Err(errno.into()),
    }
    std::fs::remove_file(&path)
}

/// Names of all named network namespaces on the host.
pub fn list_netns() -> io::Result<Vec<String>> {
    names_in(Path::new(NETNS_DIR))
}

/// Names of all links in the host namespace (as the host's sysfs shows them).
pub fn list_links() -> io::Result<Vec<String>> {
    names_in(Path::new("/sys/class/net"))
}

fn names_in(dir: &Path) -> io::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root, as the agent does (the suites under tests/ need it too).
    #[test]
    fn a_created_namespace_is_new_pinned_and_deleted() {
        let name = format!("wrenn-unit-{}", std::process::id());
        create_netns(&name).unwrap();
        let ours = std::fs::metadata(format!("/proc/{}/ns/net", std::process::id())).unwrap();
        let pinned = std::fs::metadata(netns_path(&name)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(ours.ino(), pinned.ino(), "the pin is a different namespace");
        assert!(list_netns().unwrap().contains(&name));
        assert_eq!(
            create_netns(&name).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        delete_netns(&name).unwrap();
        assert!(!netns_path(&name).exists());
    }
}
