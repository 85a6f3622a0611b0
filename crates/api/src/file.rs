//! Files in a sandbox.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EntryInfo {
    pub name: String,
    /// Absolute path in the sandbox.
    pub path: String,
    #[serde(rename = "type")]
    pub file_type: FileType,
    pub size: u64,
    /// Permission bits, e.g. 420 (0o644).
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub modified_at: DateTime<Utc>,
    pub symlink_target: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EntryList {
    pub entries: Vec<EntryInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MakeDirRequest {
    pub path: String,
    /// Owner of created directories; defaults to root.
    pub user: Option<String>,
    /// Permission bits; defaults to 0o755.
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadResult {
    pub files: Vec<EntryInfo>,
}

/// One event on the file-watch WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileEvent {
    /// `create`, `write`, `remove`, `rename` or `chmod`.
    pub kind: String,
    pub path: String,
    /// For `rename`: the old path when known.
    pub from_path: Option<String>,
}
