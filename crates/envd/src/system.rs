//! Guest-wide settings that `Envd.Init` brings up to date: wall clock, RNG entropy, hostname.
//!
//! After a resume or clone the guest's clock lags and its RNG state is shared with every other
//! clone, so the host hands over fresh values on every Init.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_settime, ClockId};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// `RNDADDENTROPY` from linux/random.h: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong =
    nix::request_code_write!(b'R', 0x03, 2 * std::mem::size_of::<libc::c_int>()) as libc::c_ulong;

/// Largest entropy blob accepted in one Init; far more than the pool can use.
const MAX_ENTROPY_BYTES: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("set the wall clock")]
    SetClock(#[source] nix::Error),
    #[error("entropy blob of {len} bytes is larger than {MAX_ENTROPY_BYTES}")]
    EntropyTooLarge { len: usize },
    #[error("open /dev/random")]
    OpenRandom(#[source] std::io::Error),
    #[error("credit entropy to the kernel pool")]
    AddEntropy(#[source] std::io::Error),
    #[error("set hostname to {hostname:?}")]
    SetHostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },
}

/// Sets CLOCK_REALTIME and logs how far off it was.
pub fn set_wall_clock(unix_time_nanos: i64) -> Result<(), SystemError> {
    let target = TimeSpec::new(
        unix_time_nanos.div_euclid(NANOS_PER_SECOND),
        unix_time_nanos.rem_euclid(NANOS_PER_SECOND),
    );
    let before = clock_gettime(ClockId::CLOCK_REALTIME).ok();
    clock_settime(ClockId::CLOCK_REALTIME, target).map_err(SystemError::SetClock)?;
    match before {
        Some(before) => {
            let correction_ms = (timespec_nanos(target) - timespec_nanos(before)) / 1_000_000;
            tracing::debug!(correction_ms, "set wall clock");
        }
        None => tracing::debug!("set wall clock"),
    }
    Ok(())
}

fn timespec_nanos(spec: TimeSpec) -> i128 {
    i128::from(spec.tv_sec()) * i128::from(NANOS_PER_SECOND) + i128::from(spec.tv_nsec())
}

/// Mixes `entropy` into the kernel pool and credits it as fully random.
pub fn add_entropy(entropy: &[u8]) -> Result<(), SystemError> {
    if entropy.len() > MAX_ENTROPY_BYTES {
        return Err(SystemError::EntropyTooLarge { len: entropy.len() });
    }
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let len = entropy.len() as libc::c_int;
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&(len * 8).to_ne_bytes());
    info.extend_from_slice(&len.to_ne_bytes());
    info.extend_from_slice(entropy);

    let random = OpenOptions::new()
        .write(true)
        .open("/dev/random")
        .map_err(SystemError::OpenRandom)?;
    // SAFETY: `info` is a complete rand_pool_info whose buf_size matches the bytes that follow
    // the header, and it outlives the call; the fd is open for the duration.
    let result = unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    if result < 0 {
        return Err(SystemError::AddEntropy(std::io::Error::last_os_error()));
    }
    tracing::debug!(bytes = entropy.len(), "credited entropy");
    Ok(())
}

pub fn set_hostname(hostname: &str) -> Result<(), SystemError> {
    nix::unistd::sethostname(hostname).map_err(|source| SystemError::SetHostname {
        hostname: hostname.to_owned(),
        source,
    })?;
    tracing::debug!(hostname, "set hostname");
    Ok(())
}
