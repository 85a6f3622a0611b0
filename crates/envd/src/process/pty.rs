//! Pseudo-terminals for processes started with a `pty` size.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};

use super::PtySize;

/// A new PTY pair: the master stays in envd, the slave becomes the child's stdio.
#[derive(Debug)]
pub struct PtyPair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a PTY of `size`. Both ends are close-on-exec, so no other child inherits them.
pub fn open(size: PtySize) -> io::Result<PtyPair> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave_path = ptsname_r(&master)?;
    // SAFETY: into_raw_fd hands over sole ownership of a valid, open fd.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(slave_path)?;
    resize(master.as_raw_fd(), size)?;
    Ok(PtyPair {
        master,
        slave: slave.into(),
    })
}

/// Sets the window size (TIOCSWINSZ); the kernel sends SIGWINCH to the foreground group.
pub fn resize(master: RawFd, size: PtySize) -> io::Result<()> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call.
    let result = unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &winsize) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
