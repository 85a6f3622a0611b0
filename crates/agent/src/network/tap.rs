//! The slot's TAP device, through `/dev/net/tun` ioctls (the kernel does not create TUN/TAP
//! devices over rtnetlink). Both functions act in the calling thread's network namespace.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// Attaches to the TAP named `name`, as a VMM does, creating it if it does not exist; the
/// attachment lasts until the file is closed. A single-queue TAP that already has a reader
/// refuses with `EBUSY`.
pub fn attach(name: &str) -> io::Result<File> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: an all-zero ifreq is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is too long"),
        ));
    }
    // The name is shorter than IFNAMSIZ, so the request stays NUL-terminated.
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun)
}

/// Creates a persistent TAP named `name` (as `ip tuntap add mode tap` does): it outlives the
/// descriptor that made it and waits, down, for a VMM to attach.
pub fn create_persistent(name: &str) -> io::Result<()> {
    let tap = attach(name)?;
    // SAFETY: TUNSETPERSIST takes an integer argument, no pointer.
    if unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
