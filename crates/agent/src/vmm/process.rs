//! The VMM process as both drivers run it: started in a prepared run directory inside the
//! slot's network namespace, reached over a control socket unless it dies first, and then
//! waited for, killed and reported on with the tails of its logs.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{tail_of_file, VmExit, VmSpec, VmmError};

/// The guest's serial console, in the run directory.
pub const CONSOLE_LOG: &str = "console.log";
/// The VMM's own log, in the run directory.
pub const VMM_LOG: &str = "vmm.log";

/// Readies `spec.run_dir` for a new VMM whose control socket is `socket` there: creates the
/// directory, removes a socket a previous VMM left, and opens the slot's network namespace.
pub fn prepare(spec: &VmSpec, socket: &str) -> Result<File, VmmError> {
    std::fs::create_dir_all(&spec.run_dir).map_err(|source| run_dir_error(spec, source))?;
    let _ = std::fs::remove_file(spec.run_dir.join(socket));
    File::open(&spec.network.netns).map_err(|source| VmmError::OpenNetns {
        path: spec.network.netns.clone(),
        source,
    })
}

/// Creates (truncating) a log file in the run directory.
pub fn create_log(spec: &VmSpec, name: &str) -> Result<File, VmmError> {
    File::create(spec.run_dir.join(name)).map_err(|source| run_dir_error(spec, source))
}

fn run_dir_error(spec: &VmSpec, source: std::io::Error) -> VmmError {
    VmmError::RunDir {
        path: spec.run_dir.clone(),
        source,
    }
}

/// One running VMM process.
pub struct VmmProcess {
    child: Child,
    pid: Option<u32>,
    run_dir: PathBuf,
    /// Heads the VMM log in error reports ("qemu", "firecracker").
    label: &'static str,
}

impl VmmProcess {
    /// Spawns `command` (already set up to run in `run_dir`'s VMM's namespace and files).
    pub fn spawn(
        mut command: Command,
        binary: &Path,
        run_dir: &Path,
        label: &'static str,
    ) -> Result<Self, VmmError> {
        let child = command.spawn().map_err(|source| VmmError::Spawn {
            binary: binary.to_owned(),
            source,
        })?;
        Ok(Self {
            pid: child.id(),
            child,
            run_dir: run_dir.to_owned(),
            label,
        })
    }

    /// Waits for `connect` (to the control socket) unless the process exits first. If it exits,
    /// or the connection fails, the process is gone afterwards.
    pub async fn connect<T, E: Into<VmmError>>(
        &mut self,
        connect: impl Future<Output = Result<T, E>>,
    ) -> Result<T, VmmError> {
        let connected = tokio::select! {
            connected = connect => connected,
            status = self.child.wait() => {
                let code = status.ok().and_then(|s| s.code());
                return Err(VmmError::ExitedEarly { code, log_tail: self.log_tail() });
            }
        };
        match connected {
            Ok(control) => Ok(control),
            Err(e) => {
                let _ = self.kill().await;
                Err(e.into())
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Resolves when the process exits, for whatever reason. Cancel-safe.
    pub async fn wait_exit(&mut self) -> VmExit {
        let code = self
            .child
            .wait()
            .await
            .ok()
            .and_then(|status| status.code());
        VmExit {
            code,
            log_tail: self.log_tail(),
        }
    }

    /// Gives the process up to `patience` to exit by itself (after a quit request), then
    /// kills it.
    pub async fn end(&mut self, patience: Duration) -> Result<(), VmmError> {
        let _ = tokio::time::timeout(patience, self.child.wait()).await;
        self.kill().await
    }

    /// Kills the process and reaps it; one that already exited and was reaped is fine.
    pub async fn kill(&mut self) -> Result<(), VmmError> {
        match self.child.kill().await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            Err(source) => Err(VmmError::Kill {
                pid: self.pid.unwrap_or_default(),
                source,
            }),
        }
    }

    /// The guest console's and the VMM log's last lines.
    pub fn log_tail(&self) -> String {
        format!(
            "--- console ---\n{}\n--- {} ---\n{}",
            tail_of_file(&self.run_dir.join(CONSOLE_LOG), 20),
            self.label,
            tail_of_file(&self.run_dir.join(VMM_LOG), 10)
        )
    }
}
