//! Sandboxes: create, list, lifecycle and metrics.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a sandbox is in its life. `missing`: its host no longer knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Pending,
    Running,
    Paused,
    Stopped,
    Error,
    Missing,
}

impl SandboxState {
    pub const ALL: [SandboxState; 6] = [
        SandboxState::Pending,
        SandboxState::Running,
        SandboxState::Paused,
        SandboxState::Stopped,
        SandboxState::Error,
        SandboxState::Missing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Pending => "pending",
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Stopped => "stopped",
            SandboxState::Error => "error",
            SandboxState::Missing => "missing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// Template name; defaults to `minimal`.
    pub template: Option<String>,
    /// Defaults to 1 (snapshot templates: their own size).
    pub vcpus: Option<u32>,
    /// Defaults to 256 (snapshot templates: their own size).
    pub memory_mb: Option<u32>,
    /// Root disk size; defaults to the template's.
    pub disk_mb: Option<u32>,
    /// Pause after this many seconds without activity; 0 (the default) never.
    pub timeout_sec: Option<u32>,
    /// Extra environment for every process in the sandbox.
    pub env: Option<BTreeMap<String, String>>,
    pub metadata: Option<BTreeMap<String, String>>,
    /// Outbound internet access; defaults to true.
    pub internet: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    pub id: String,
    pub team_id: String,
    pub template: String,
    pub state: SandboxState,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub timeout_sec: u32,
    pub internet: bool,
    pub metadata: BTreeMap<String, String>,
    /// Why the sandbox is in `error`.
    pub error: Option<String>,
    /// Milliseconds from the create call to the sandbox answering.
    pub boot_ms: Option<u64>,
    /// Set when the sandbox was paused for being idle.
    pub auto_paused: bool,
    /// How its VM first came to run; absent until the host reports it.
    pub started_from: Option<StartedFrom>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How a sandbox's VM first came to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartedFrom {
    /// The guest kernel booted (the first sandbox of its size on the host, or asked for).
    ColdBoot,
    /// Restored from the host's snapshot of the template's image freshly booted.
    BootSnapshot,
    /// Restored from a snapshot template.
    Template,
}

impl StartedFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            StartedFrom::ColdBoot => "cold_boot",
            StartedFrom::BootSnapshot => "boot_snapshot",
            StartedFrom::Template => "template",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::ColdBoot, Self::BootSnapshot, Self::Template]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkSandboxRequest {
    /// Number of copies, 1 to 16; defaults to 1.
    pub count: Option<u32>,
    /// Metadata for the copies (the source's otherwise).
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ForkSandboxResponse {
    pub sandboxes: Vec<Sandbox>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimeoutRequest {
    /// Seconds without activity before the sandbox is paused; 0 = never.
    pub timeout_sec: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Name of the new template: 1-64 of a-z, 0-9, `-`, `_`, `.`.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MetricSample {
    pub at: DateTime<Utc>,
    /// Host CPU used by the VM, percent of one core.
    pub cpu_percent: f32,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    /// Bytes the sandbox's writable disk occupies on its host.
    pub disk_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxMetrics {
    pub sandbox_id: String,
    /// `live` (from the host) or `stored` (flushed when the sandbox paused or stopped).
    pub source: String,
    pub samples: Vec<MetricSample>,
}
