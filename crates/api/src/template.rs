//! Templates: the images and snapshots sandboxes start from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub name: String,
    /// The owning team; absent for platform templates, which every team can use.
    pub team_id: Option<String>,
    /// A frozen VM (from a sandbox snapshot) rather than a root filesystem image.
    pub snapshot: bool,
    /// Sizes of a snapshot template's sandboxes (0 for base templates: chosen per sandbox).
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    /// Sandbox the snapshot was taken from.
    pub source_sandbox_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}
