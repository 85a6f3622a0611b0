//! The single reaper of child processes.
//!
//! As PID 1 (or a child subreaper) envd inherits every orphan in the guest, so something has
//! to `waitpid` them all. Exactly one place does: on SIGCHLD it collects every exited child and
//! hands the status to whoever registered that pid. Nothing else in envd may wait for a child
//! (no `tokio::process`, no `Child::wait`), or it would race this loop.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Returned from main or called exit.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

/// Whether any child is left after a reaping pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Children {
    Remaining,
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("install SIGCHLD handler")]
    Signal(#[source] std::io::Error),
}

type Waiters = HashMap<i32, oneshot::Sender<ExitStatus>>;

/// Owns the pid -> waiter map; see the module docs.
#[derive(Debug, Default)]
pub struct Reaper {
    waiters: Mutex<Waiters>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts the reaping task. Needs a Tokio runtime.
    pub fn start() -> Result<Arc<Self>, ReaperError> {
        let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::Signal)?;
        let reaper = Arc::new(Self::default());
        let task_reaper = Arc::clone(&reaper);
        tokio::spawn(async move {
            // Children that exited before the handler existed.
            task_reaper.reap();
            while sigchld.recv().await.is_some() {
                task_reaper.reap();
            }
        });
        Ok(reaper)
    }

    /// Spawns `command` and registers its pid before any reaping pass can see it exit.
    ///
    /// The map's lock is held across the fork, and the reaper only calls `waitpid` under the
    /// same lock, so neither a child that exits at once nor std's own wait after a failed exec
    /// can race the reaper.
    pub fn spawn(
        &self,
        command: &mut Command,
    ) -> std::io::Result<(Child, oneshot::Receiver<ExitStatus>)> {
        let mut waiters = self.lock();
        let child = command.spawn()?;
        let (sender, receiver) = oneshot::channel();
        waiters.insert(child.id() as i32, sender);
        Ok((child, receiver))
    }

    /// Collects every exited child, delivering statuses to registered waiters.
    pub fn reap(&self) -> Children {
        let mut waiters = self.lock();
        loop {
            let (pid, status) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _core_dumped)) => {
                    (pid, ExitStatus::Signal(signal as i32))
                }
                Ok(WaitStatus::StillAlive) => return Children::Remaining,
                // Stops and continues are not requested; nothing to deliver.
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return Children::None,
                Err(error) => {
                    tracing::warn!(%error, "waitpid failed");
                    return Children::Remaining;
                }
            };
            match waiters.remove(&pid.as_raw()) {
                Some(waiter) => {
                    // The receiver may be gone if its supervisor was dropped; nothing to do then.
                    let _ = waiter.send(status);
                }
                None => tracing::debug!(pid = pid.as_raw(), ?status, "reaped orphan"),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // A panic while holding this lock leaves the map consistent, so poisoning is ignored.
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
