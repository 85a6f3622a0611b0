//! Sandboxes on this host: what they are (`SandboxInfo`), the task that owns each VM
//! (`actor`), and the registry the gRPC service talks to (`manager`).

mod activity;
mod actor;
pub mod boot_snapshot;
mod flatten;
pub mod manager;
pub mod metrics;
pub mod record;
pub mod request;
mod snapshot;
mod suspend;

use std::collections::BTreeMap;

use crate::ids::SandboxId;
use crate::network::InternetAccess;

pub(crate) use actor::vmm_name_prefix;
pub use manager::SandboxManager;
pub use request::CreateSandbox;

/// Lifecycle state of a sandbox on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    Starting,
    Running,
    Pausing,
    /// Saved to disk: no VMM, no CPU, no network slot.
    Paused,
    Resuming,
    Stopping,
    Stopped,
    /// The VMM died or boot failed; resources are released. Destroy removes it.
    Error,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Starting => "starting",
            SandboxState::Running => "running",
            SandboxState::Pausing => "pausing",
            SandboxState::Paused => "paused",
            SandboxState::Resuming => "resuming",
            SandboxState::Stopping => "stopping",
            SandboxState::Stopped => "stopped",
            SandboxState::Error => "error",
        }
    }
}

/// A snapshot of one sandbox, as reported to the control plane.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    pub id: SandboxId,
    pub template: String,
    pub state: SandboxState,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub metadata: BTreeMap<String, String>,
    pub internet: InternetAccess,
    pub created_at_ms: i64,
    pub error: Option<String>,
    /// From the create call to envd answering.
    pub boot_ms: u64,
    /// PID of the VMM process while it runs.
    pub vmm_pid: Option<u32>,
    /// The template whose disk this sandbox's overlay stands on: the one it was created from,
    /// then the last snapshot made from it.
    pub disk_template: String,
    /// Templates whose files this sandbox's disk or memory rests on: `disk_template` and its
    /// ancestors as they were when the VMM last opened the disk (see `images::ImageStore::lineage`).
    pub depends_on: std::collections::BTreeSet<String>,
    /// Idle seconds before an automatic pause (0 = never).
    pub timeout_sec: u32,
    pub last_activity_ms: i64,
    /// The last pause was automatic (idle timeout).
    pub auto_paused: bool,
    /// How the sandbox's VM first came to run.
    pub start: StartMethod,
}

/// How a sandbox's VM first came to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMethod {
    /// The kernel booted.
    #[default]
    ColdBoot,
    /// Restored from the boot snapshot of its base image (`boot_snapshot`).
    BootSnapshot,
    /// Restored from a snapshot template.
    Template,
}

/// A state change, as broadcast to watchers.
#[derive(Debug, Clone)]
pub struct SandboxEvent {
    pub info: SandboxInfo,
    /// On pause, destroy and error: full-rate metrics since the previous flush.
    pub flushed_metrics: Vec<metrics::Sample>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
