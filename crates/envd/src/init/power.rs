//! Stopping everything and powering off, for the Shutdown call and SIGTERM.
//!
//! As PID 1: SIGTERM every process in the guest, give them up to two seconds, SIGKILL the rest,
//! sync, and reboot (QEMU runs with -no-reboot, so that ends the VM). As an ordinary process
//! only envd's own processes are stopped before envd exits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::RunMode;
use crate::process::Processes;
use crate::reaper::{Children, Reaper};

/// How long processes get to exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for SIGKILLed processes to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);
/// Delay between answering Shutdown and powering off, so the answer reaches the host.
const RESPONSE_FLUSH: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Power {
    mode: RunMode,
    reaper: Arc<Reaper>,
    processes: Arc<Processes>,
}

impl Power {
    pub fn new(mode: RunMode, reaper: Arc<Reaper>, processes: Arc<Processes>) -> Self {
        Self {
            mode,
            reaper,
            processes,
        }
    }

    /// Stops every process and syncs; the machine is still on afterwards.
    pub async fn stop_processes(&self) {
        match self.mode {
            RunMode::Init => {
                tracing::info!("stopping all processes");
                self.signal_everyone(Signal::SIGTERM);
                if !self.wait_for_no_children(TERM_GRACE).await {
                    tracing::warn!("processes left after SIGTERM; sending SIGKILL");
                    self.signal_everyone(Signal::SIGKILL);
                    self.wait_for_no_children(KILL_GRACE).await;
                }
                nix::unistd::sync();
            }
            RunMode::Hosted => {
                tracing::info!("stopping envd's processes");
                self.processes.stop_all(TERM_GRACE).await;
            }
        }
    }

    /// Stops everything, then powers off (or exits) after the Shutdown answer went out.
    pub async fn shutdown_after_response(self: &Arc<Self>) {
        self.stop_processes().await;
        let power = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(RESPONSE_FLUSH).await;
            power.power_off();
        });
    }

    /// Stops everything and powers off at once.
    pub async fn shutdown_now(&self) -> ! {
        self.stop_processes().await;
        self.power_off()
    }

    /// Reboots the VM (PID 1) or exits the process.
    pub fn power_off(&self) -> ! {
        match self.mode {
            RunMode::Init => halt(),
            RunMode::Hosted => {
                tracing::info!("exiting");
                std::process::exit(0)
            }
        }
    }

    /// Handles SIGTERM by shutting down. Needs a Tokio runtime.
    pub fn on_sigterm(self: &Arc<Self>) -> std::io::Result<()> {
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let power = Arc::clone(self);
        tokio::spawn(async move {
            if sigterm.recv().await.is_some() {
                tracing::info!("received SIGTERM");
                power.shutdown_now().await;
            }
        });
        Ok(())
    }

    fn signal_everyone(&self, signal: Signal) {
        // pid -1: every process but PID 1 itself.
        if let Err(error) = kill(Pid::from_raw(-1), signal) {
            if error != nix::errno::Errno::ESRCH {
                tracing::warn!(%error, ?signal, "signal all processes");
            }
        }
    }

    /// As PID 1 every process ends up as our child, so "no children" means "no processes".
    async fn wait_for_no_children(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.reaper.reap() == Children::None {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Syncs and reboots; as PID 1 under QEMU's -no-reboot that ends the VM.
pub fn halt() -> ! {
    nix::unistd::sync();
    tracing::info!("powering off");
    let Err(error) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    tracing::error!(%error, "reboot failed");
    // Exiting PID 1 panics the kernel, which with panic=-1 also ends the VM.
    std::process::exit(1)
}
