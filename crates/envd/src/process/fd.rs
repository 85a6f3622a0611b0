//! Nonblocking pipe and PTY ends driven by Tokio's reactor.
//!
//! Reads call `read(2)` directly and only wait for readiness after `EAGAIN`, so a reader that is
//! told to stop can tell "nothing left right now" apart from "not polled yet".

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

/// An fd in O_NONBLOCK mode registered with the Tokio reactor.
#[derive(Debug)]
pub struct NonBlockingFd {
    fd: AsyncFd<OwnedFd>,
}

impl NonBlockingFd {
    /// Switches `fd` to nonblocking mode and registers it. Needs a Tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: the OwnedFd is valid and open, and the AsyncFd owns it for its whole life,
        // so its raw fd stays the same open file description.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|error| error.into_parts().1)?;
        Ok(Self { fd })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// One `read(2)`: `Ok(0)` at end of file, `WouldBlock` when nothing is buffered.
    ///
    /// `EIO` counts as end of file: that is how a PTY master reports that every slave fd closed.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::read(self.raw_fd(), buf) {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EIO) => return Ok(0),
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Waits until the fd may be readable. Call [`Self::try_read`] again afterwards.
    pub async fn readable(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        // Cleared before the next read, so data arriving after it raises a fresh edge.
        guard.clear_ready();
        Ok(())
    }

    /// Writes all of `data`, waiting for room as a blocking write would.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match nix::unistd::write(self.fd.get_ref(), data) {
                Ok(n) => data = &data[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    let mut guard = self.fd.writable().await?;
                    guard.clear_ready();
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(())
    }
}
