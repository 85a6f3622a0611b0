//! The Firecracker driver, for hosts with hardware KVM. One `firecracker` process per VM,
//! started in the sandbox's network namespace like QEMU, configured over its API socket
//! (`api.rs`).
//!
//! Differences from QEMU that the rest of the agent sees:
//! * Root disks are raw files ([`RootDisk::Raw`]): Firecracker has no qcow2.
//! * The process runs in the sandbox directory and the drive path it gets is relative to it,
//!   so saved state names `rootfs.raw` and restores against whichever sandbox directory the
//!   new process runs in: a resumed sandbox's own, or a clone's.
//! * Guest RAM is anonymous while the VM runs (or a private mapping of the file it was
//!   restored from), so a pause writes all of it: into the sandbox's memory file for a
//!   [`MemorySharing::Shared`] spec, beside the state file ([`ram_beside_state`]) for a clone.
//!   Memory files are written under a temporary name and renamed, because the running VM may
//!   still map the file being replaced.

pub mod api;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use self::api::{ApiClient, ApiError};
use super::process::{self, VmmProcess, CONSOLE_LOG, VMM_LOG};
use super::{
    ram_beside_state, AfterRestore, MemorySharing, SavedRam, SavedState, VmExit, VmInstance,
    VmSpec, Vmm, VmmError,
};
use crate::accel::Accelerator;
use crate::disk::RootDisk;

const API_SOCKET: &str = "firecracker.sock";

/// Runs guests with Firecracker.
#[derive(Debug, Clone)]
pub struct FirecrackerVmm {
    binary: PathBuf,
    api_timeout: Duration,
}

impl FirecrackerVmm {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            // Loading a snapshot of a large guest maps its memory file; generous.
            api_timeout: Duration::from_secs(30),
        }
    }

    /// Why Firecracker cannot run VMs on this host, or `None` when it can: the binary must
    /// run and KVM must be usable.
    pub fn unavailable_reason(binary: &Path, accelerator: Accelerator) -> Option<String> {
        if accelerator != Accelerator::Kvm {
            return Some("Firecracker needs hardware KVM, and this host has none usable".into());
        }
        match std::process::Command::new(binary).arg("--version").output() {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(format!(
                "{} --version failed: {}",
                binary.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(e) => Some(format!("cannot run {}: {e}", binary.display())),
        }
    }
}

/// Firecracker's `--id` allows letters, digits and '-': the VM name with its dots replaced.
/// Reclaim finds stray VMs by it (`reclaim::find_vmm_processes`).
pub fn instance_id(vm_name: &str) -> String {
    vm_name.replace('.', "-")
}

/// The root disk's path as the VMM sees it: relative to the sandbox directory.
fn relative_root_disk(spec: &VmSpec) -> Result<String, VmmError> {
    spec.root_disk
        .strip_prefix(&spec.run_dir)
        .ok()
        .and_then(|p| p.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            VmmError::Unsupported(format!(
                "the root disk {} must lie in the sandbox directory {}",
                spec.root_disk.display(),
                spec.run_dir.display()
            ))
        })
}

#[async_trait]
impl Vmm for FirecrackerVmm {
    fn kind(&self) -> &'static str {
        "firecracker"
    }

    fn root_disk(&self) -> RootDisk {
        RootDisk::Raw
    }

    /// Firecracker boots with anonymous RAM whatever the spec says, and its pause writes RAM
    /// into the sandbox's memory file.
    fn boot_memory(&self) -> MemorySharing {
        MemorySharing::Shared
    }

    async fn start(&self, spec: &VmSpec) -> Result<Box<dyn VmInstance>, VmmError> {
        let root_disk = relative_root_disk(spec)?;
        let mut instance = self.spawn(spec).await?;
        match instance
            .api
            .send_all(&api::boot_requests(spec, &root_disk))
            .await
        {
            Ok(()) => Ok(Box::new(instance)),
            Err(e) => Err(instance.fail(e).await),
        }
    }

    async fn restore(
        &self,
        spec: &VmSpec,
        saved: SavedState<'_>,
        after: AfterRestore,
    ) -> Result<Box<dyn VmInstance>, VmmError> {
        let memory = match saved.ram {
            SavedRam::InMemoryFile | SavedRam::InOwnMemoryFile => spec.memory_file.clone(),
            SavedRam::InStateFile => ram_beside_state(saved.file),
        };
        for file in [saved.file, memory.as_path()] {
            File::open(file).map_err(|source| VmmError::StateFile {
                path: file.to_owned(),
                source,
            })?;
        }
        let mut instance = self.spawn(spec).await?;
        match instance
            .api
            .send(&api::load_request(saved.file, &memory, after))
            .await
        {
            Ok(()) => Ok(Box::new(instance)),
            Err(e) => Err(instance.fail(e).await),
        }
    }
}

impl FirecrackerVmm {
    async fn spawn(&self, spec: &VmSpec) -> Result<FirecrackerInstance, VmmError> {
        if spec.accelerator != Accelerator::Kvm {
            return Err(VmmError::Unsupported(
                "Firecracker needs hardware KVM; use the QEMU driver on this host".into(),
            ));
        }
        let netns = process::prepare(spec, API_SOCKET)?;
        let socket = spec.run_dir.join(API_SOCKET);
        let console = process::create_log(spec, CONSOLE_LOG)?;
        // Firecracker appends to its log file but does not create it.
        let log = process::create_log(spec, VMM_LOG)?;

        let mut command = Command::new(&self.binary);
        command
            .arg("--api-sock")
            .arg(&socket)
            .args(["--id", &instance_id(&spec.name)])
            .arg("--log-path")
            .arg(spec.run_dir.join(VMM_LOG))
            .args(["--level", "Warning"])
            // Relative drive paths resolve here (see the module comment).
            .current_dir(&spec.run_dir)
            .stdin(Stdio::null())
            // The guest's serial console is Firecracker's standard output.
            .stdout(console)
            .stderr(log)
            .kill_on_drop(true);
        crate::command::join_netns_at_exec(&mut command, netns);
        let mut process = VmmProcess::spawn(command, &self.binary, &spec.run_dir, "firecracker")?;
        let api = process
            .connect(ApiClient::connect(&socket, self.api_timeout))
            .await?;
        Ok(FirecrackerInstance {
            process,
            api,
            memory_sharing: spec.memory_sharing,
            memory_file: spec.memory_file.clone(),
        })
    }
}

struct FirecrackerInstance {
    process: VmmProcess,
    api: ApiClient,
    memory_sharing: MemorySharing,
    memory_file: PathBuf,
}

impl FirecrackerInstance {
    /// Ends a VM whose set-up failed and returns the error.
    async fn fail(mut self, error: ApiError) -> VmmError {
        let _ = self.kill().await;
        VmmError::Firecracker(error)
    }
}

#[async_trait]
impl VmInstance for FirecrackerInstance {
    fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    async fn wait_exit(&mut self) -> VmExit {
        self.process.wait_exit().await
    }

    async fn kill(&mut self) -> Result<(), VmmError> {
        self.process.kill().await
    }

    async fn save_and_exit(
        &mut self,
        state_file: &Path,
        _own_memory: &Path,
    ) -> Result<SavedRam, VmmError> {
        let ram = SavedRam::saved_from(self.memory_sharing);
        let memory = match ram {
            SavedRam::InStateFile => ram_beside_state(state_file),
            _ => self.memory_file.clone(),
        };
        let partial = PathBuf::from(format!("{}.partial", memory.display()));
        let saved = self
            .api
            .send_all(&api::save_requests(state_file, &partial))
            .await;
        // Nothing of the guest is left to shut down cleanly: its state is on disk, or lost.
        self.kill().await?;
        if let Err(e) = saved {
            let _ = std::fs::remove_file(&partial);
            return Err(VmmError::Firecracker(e));
        }
        std::fs::rename(&partial, &memory).map_err(|source| VmmError::StateFile {
            path: memory,
            source,
        })?;
        Ok(ram)
    }
}

#[cfg(test)]
mod tests;
