//! The audit log: who did what to which resource.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditLog {
    pub id: i64,
    pub team_id: Option<String>,
    /// `user`, `api_key` or `system`.
    pub actor_type: String,
    pub actor_id: Option<String>,
    /// e.g. `sandbox`, `template`, `api_key`, `team`, `member`, `user`.
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// e.g. `create`, `delete`, `pause`.
    pub action: String,
    /// `success` or `failure`.
    pub status: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditLogList {
    pub audit_logs: Vec<AuditLog>,
    pub next_cursor: Option<String>,
}
