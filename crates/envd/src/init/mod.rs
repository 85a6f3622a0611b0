//! Duties of envd as the guest's PID 1: mounting the API filesystems, naming the host,
//! configuring the network interfaces, growing the root filesystem, and powering the VM off.
//!
//! Run as an ordinary process (tests, development) envd skips all of that and only becomes a
//! child subreaper so orphans of the processes it starts still come back to its reaper.

mod mounts;
mod network;
pub mod power;
mod prefault;
mod resize;

pub use power::Power;
pub use prefault::populate_code;

/// Hostname set at boot; Init may change it.
const BOOT_HOSTNAME: &str = "sandbox";

/// How envd was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// PID 1 of the guest.
    Init,
    /// An ordinary process on some host.
    Hosted,
}

impl RunMode {
    pub fn detect() -> Self {
        if nix::unistd::getpid().as_raw() == 1 {
            RunMode::Init
        } else {
            RunMode::Hosted
        }
    }
}

/// Prepares the process environment for `mode`. Failures are logged, never fatal: a guest
/// with a missing mount is still more useful than one without an agent.
pub fn prepare(mode: RunMode) {
    match mode {
        RunMode::Init => {
            mounts::mount_api_filesystems();
            if let Err(error) = nix::unistd::sethostname(BOOT_HOSTNAME) {
                tracing::warn!(%error, "set boot hostname");
            }
            if let Err(error) = network::configure() {
                tracing::warn!(error = %crate::report::error_chain(&error), "configure network interfaces");
            }
        }
        RunMode::Hosted => {
            if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
                tracing::warn!(%error, "become child subreaper");
            }
        }
    }
}

/// Grows the root filesystem in the background when its device is bigger (PID 1 only); it
/// does not delay serving. The check is inline: on the usual boot there is nothing to grow,
/// and starting a thread is first-time work at boot under TCG, better not done for nothing.
pub fn grow_root_filesystem(mode: RunMode) {
    if mode != RunMode::Init {
        return;
    }
    let warn = |error: resize::ResizeError| {
        tracing::warn!(error = %crate::report::error_chain(&error), "grow root filesystem");
    };
    match resize::growth_due() {
        Ok(None) => {}
        Ok(Some(growth)) => {
            tokio::task::spawn_blocking(move || resize::grow_root(growth).map_err(warn));
        }
        Err(error) => warn(error),
    }
}
