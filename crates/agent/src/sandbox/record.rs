//! The on-disk record of a paused sandbox (`sandbox.json` beside its saved state). It is what
//! lets an agent that restarted — cleanly or after a crash — list paused sandboxes and resume
//! them: reclaim keeps exactly the directories holding a complete record.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::suspend::STATE_FILE;
use super::{SandboxInfo, SandboxState};
use crate::accel::Accelerator;
use crate::ids::SandboxId;
use crate::network::{InternetAccess, GUEST_MAC, TAP_NAME};
use crate::vmm::{MemorySharing, VmNetwork, VmSpec};

pub const RECORD_FILE: &str = "sandbox.json";

/// Everything needed to list and resume a paused sandbox. Holds envd's token: root-only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PausedRecord {
    pub id: String,
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub metadata: BTreeMap<String, String>,
    pub internet_allowed: bool,
    pub created_at_ms: i64,
    pub depends_on: BTreeSet<String>,
    /// Empty in records written before it existed: `template` then.
    #[serde(default)]
    pub disk_template: String,
    pub vmm_name: String,
    pub kernel: PathBuf,
    pub kernel_args: String,
    pub root_disk: PathBuf,
    pub memory_file: PathBuf,
    pub memory_shared: bool,
    pub envd_token: String,
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_sec: u32,
    #[serde(default)]
    pub auto_paused: bool,
    #[serde(default)]
    pub start: super::StartMethod,
}

impl PausedRecord {
    pub fn new(
        info: &SandboxInfo,
        spec: &VmSpec,
        token: &str,
        env: BTreeMap<String, String>,
    ) -> Self {
        Self {
            id: info.id.to_string(),
            template: info.template.clone(),
            vcpus: info.vcpus,
            memory_mb: info.memory_mb,
            disk_mb: info.disk_mb,
            metadata: info.metadata.clone(),
            internet_allowed: info.internet == InternetAccess::Allowed,
            created_at_ms: info.created_at_ms,
            depends_on: info.depends_on.clone(),
            disk_template: info.disk_template.clone(),
            vmm_name: spec.name.clone(),
            kernel: spec.kernel.clone(),
            kernel_args: spec.kernel_args.clone(),
            root_disk: spec.root_disk.clone(),
            memory_file: spec.memory_file.clone(),
            memory_shared: spec.memory_sharing == MemorySharing::Shared,
            envd_token: token.to_owned(),
            env,
            timeout_sec: info.timeout_sec,
            auto_paused: info.auto_paused,
            start: info.start,
        }
    }

    pub fn info(&self) -> Option<SandboxInfo> {
        Some(SandboxInfo {
            id: SandboxId::parse(&self.id).ok()?,
            template: self.template.clone(),
            state: SandboxState::Paused,
            vcpus: self.vcpus,
            memory_mb: self.memory_mb,
            disk_mb: self.disk_mb,
            metadata: self.metadata.clone(),
            internet: if self.internet_allowed {
                InternetAccess::Allowed
            } else {
                InternetAccess::Blocked
            },
            created_at_ms: self.created_at_ms,
            error: None,
            boot_ms: 0,
            vmm_pid: None,
            disk_template: if self.disk_template.is_empty() {
                self.template.clone()
            } else {
                self.disk_template.clone()
            },
            depends_on: self.depends_on.clone(),
            timeout_sec: self.timeout_sec,
            last_activity_ms: 0,
            auto_paused: self.auto_paused,
            start: self.start,
        })
    }

    /// The VM spec to resume with; the network namespace is filled in by the resume.
    pub fn spec(&self, run_dir: &Path, accelerator: Accelerator) -> VmSpec {
        VmSpec {
            name: self.vmm_name.clone(),
            vcpus: self.vcpus,
            memory_mb: self.memory_mb,
            kernel: self.kernel.clone(),
            kernel_args: self.kernel_args.clone(),
            root_disk: self.root_disk.clone(),
            network: VmNetwork {
                netns: PathBuf::new(),
                tap: TAP_NAME.into(),
                mac: GUEST_MAC.into(),
            },
            run_dir: run_dir.to_owned(),
            memory_file: self.memory_file.clone(),
            memory_sharing: if self.memory_shared {
                MemorySharing::Shared
            } else {
                MemorySharing::Private
            },
            accelerator,
        }
    }

    /// Writes the record durably (temp file, fsync, rename).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{RECORD_FILE}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(RECORD_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// The record of a complete paused sandbox in `dir`, if there is one.
    pub fn read(dir: &Path) -> Option<Self> {
        if !dir.join(STATE_FILE).is_file() {
            return None;
        }
        let record: Self =
            serde_json::from_slice(&std::fs::read(dir.join(RECORD_FILE)).ok()?).ok()?;
        let name_matches = dir
            .file_name()
            .is_some_and(|name| name.to_string_lossy() == record.id);
        (name_matches && record.info().is_some()).then_some(record)
    }

    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(RECORD_FILE));
    }
}
