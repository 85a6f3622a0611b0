//! The virtual machine monitor boundary: what the rest of the agent asks of a VMM, whatever
//! runs underneath: QEMU (`qemu.rs`, any host, TCG or KVM) or Firecracker (`firecracker/`,
//! hosts with hardware KVM).

pub mod firecracker;
mod memfd_ram;
mod private_ram;
mod proc_maps;
mod process;
pub mod qemu;
pub mod qmp;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::accel::Accelerator;
use crate::disk::RootDisk;

/// Everything a VMM needs to boot one guest. Paths are absolute.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Marker visible in the VMM's command line; start-up reclaim finds strays by it.
    pub name: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub kernel: PathBuf,
    /// Kernel command line shared by every VMM (root, init, ip=...).
    pub kernel_args: String,
    /// Writable root disk (a qcow2 overlay over the template's read-only base).
    pub root_disk: PathBuf,
    pub network: VmNetwork,
    /// Directory for the VMM's sockets and logs.
    pub run_dir: PathBuf,
    /// File backing guest RAM; with [`MemorySharing::Anonymous`], where it goes at the first
    /// pause.
    pub memory_file: PathBuf,
    pub memory_sharing: MemorySharing,
    pub accelerator: Accelerator,
}

/// How guest RAM maps its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySharing {
    /// The sandbox's own file, written through (`share=on`): a pause saves only device state.
    Shared,
    /// A snapshot template's file, mapped copy-on-write (`share=off`): clones share its pages
    /// and never change it; a pause must save RAM with the device state.
    Private,
    /// No file yet: guest RAM is the VMM's own memory (QEMU: a memfd), so a guest's first
    /// touch of a page costs no filesystem work. Only a boot runs this way; its first pause
    /// writes the pages the guest touched into the sandbox's memory file.
    Anonymous,
}

/// The guest NIC: a TAP device inside the sandbox's network namespace.
#[derive(Debug, Clone)]
pub struct VmNetwork {
    /// Network namespace the VMM process joins, e.g. /run/netns/wrenn-3.
    pub netns: PathBuf,
    pub tap: String,
    pub mac: String,
}

/// How a VMM process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    /// Exit code, or None when a signal ended it.
    pub code: Option<i32>,
    /// Last lines of the guest console and VMM log, for error reports.
    pub log_tail: String,
}

/// VMM failures.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("open network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open saved VM state {path}")]
    StateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("create VMM files in {path}")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spawn {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("VMM exited during start-up (code {code:?}); last output:\n{log_tail}")]
    ExitedEarly { code: Option<i32>, log_tail: String },
    #[error("control the VMM")]
    Qmp(#[from] qmp::QmpError),
    #[error("{operation} ended in state {status:?}: {error}")]
    Migration {
        operation: &'static str,
        status: String,
        error: String,
    },
    #[error("{operation} did not finish within {timeout:?}")]
    MigrationTimeout {
        operation: &'static str,
        timeout: std::time::Duration,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("control Firecracker")]
    Firecracker(#[from] firecracker::api::ApiError),
    #[error("write the guest's RAM to {path}")]
    OwnMemory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stop VMM process {pid}")]
    Kill {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A hypervisor driver.
#[async_trait]
pub trait Vmm: Send + Sync + 'static {
    /// "qemu" or "firecracker".
    fn kind(&self) -> &'static str;
    /// The root disk this VMM takes.
    fn root_disk(&self) -> RootDisk;
    /// How a VM booted by [`Vmm::start`] keeps its RAM. `Anonymous` means in the VMM's own
    /// memory, which a pause writes out; `Shared` means in the sandbox's memory file itself.
    fn boot_memory(&self) -> MemorySharing;
    /// Starts a VMM process and returns once it accepts control commands.
    async fn start(&self, spec: &VmSpec) -> Result<Box<dyn VmInstance>, VmmError>;
    /// Starts a VMM with the same devices as `spec`, loads the state saved by
    /// [`VmInstance::save_and_exit`] and, with [`AfterRestore::Run`], lets the guest run on.
    async fn restore(
        &self,
        spec: &VmSpec,
        saved: SavedState<'_>,
        after: AfterRestore,
    ) -> Result<Box<dyn VmInstance>, VmmError>;
}

/// A VM saved by [`VmInstance::save_and_exit`].
#[derive(Debug, Clone, Copy)]
pub struct SavedState<'a> {
    pub file: &'a Path,
    pub ram: SavedRam,
}

/// Where a saved VM's RAM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedRam {
    /// In the memory file it was mapped from with [`MemorySharing::Shared`]; the state file
    /// holds device state only.
    InMemoryFile,
    /// In the state file, beside device state: the VM mapped its memory
    /// [`MemorySharing::Private`]. Restoring it into a `Shared` spec writes the RAM into that
    /// spec's memory file.
    InStateFile,
    /// Written by the save into the memory file of the VM's own it was given: the VM mapped
    /// its memory [`MemorySharing::Private`] or kept it [`MemorySharing::Anonymous`]. It
    /// restores like [`SavedRam::InMemoryFile`] with a `Shared` spec on that file.
    InOwnMemoryFile,
}

impl SavedRam {
    /// Where `save_and_exit` puts the RAM of a VM whose memory is mapped this way.
    pub fn saved_from(sharing: MemorySharing) -> Self {
        match sharing {
            MemorySharing::Shared => Self::InMemoryFile,
            MemorySharing::Private => Self::InStateFile,
            MemorySharing::Anonymous => Self::InOwnMemoryFile,
        }
    }
}

/// Where a VMM that cannot put RAM inside its state file (Firecracker) keeps the RAM saved
/// with [`SavedRam::InStateFile`]: a file beside it.
pub fn ram_beside_state(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_owned();
    name.push(".memory");
    PathBuf::from(name)
}

/// What a restored VM does once its state is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRestore {
    /// The guest runs on.
    Run,
    /// The guest stays stopped, e.g. to be saved again in another shape.
    StayStopped,
}

/// One running VMM process.
#[async_trait]
pub trait VmInstance: Send + Sync {
    fn pid(&self) -> Option<u32>;
    /// Resolves when the VMM process exits, for whatever reason. Cancel-safe.
    async fn wait_exit(&mut self) -> VmExit;
    /// Stops the VMM at once and reaps it. The guest gets no chance to shut down.
    async fn kill(&mut self) -> Result<(), VmmError>;
    /// Stops the guest, writes its state to `state_file` and ends the VMM. Guest RAM stays in
    /// a `Shared` memory file; a `Private` VM's goes into the state file or into `own_memory`,
    /// as the answer says. The caller makes the files durable.
    async fn save_and_exit(
        &mut self,
        state_file: &Path,
        own_memory: &Path,
    ) -> Result<SavedRam, VmmError>;
}

/// The last `max_lines` lines of a log file, or a note that it could not be read.
pub(crate) fn tail_of_file(path: &std::path::Path, max_lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(max_lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}
