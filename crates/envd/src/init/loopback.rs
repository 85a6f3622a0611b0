//! Brings `lo` up, which the kernel only does itself when `ip=` autoconfiguration runs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("open control socket")]
    Socket(#[source] std::io::Error),
    #[error("read interface flags")]
    GetFlags(#[source] std::io::Error),
    #[error("set interface flags")]
    SetFlags(#[source] std::io::Error),
}

pub fn bring_up() -> Result<(), LoopbackError> {
    // SAFETY: socket has no memory-safety preconditions.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(LoopbackError::Socket(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the named interface into `request`, which is
    // valid and writable for the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(LoopbackError::GetFlags(std::io::Error::last_os_error()));
    }
    // SAFETY: the union's flags member was just written by SIOCGIFFLAGS.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the name and flags from `request`, valid for the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(LoopbackError::SetFlags(std::io::Error::last_os_error()));
    }
    tracing::info!("brought up loopback interface");
    Ok(())
}
