//! Templates: platform ones (team_id NULL) and each team's snapshots.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub id: String,
    pub team_id: Option<String>,
    pub name: String,
    pub agent_name: String,
    pub host_id: Option<String>,
    pub snapshot: bool,
    pub vcpus: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub source_sandbox_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, team_id, name, agent_name, host_id, snapshot, vcpus, memory_mb, \
                       disk_mb, source_sandbox_id, created_at";

pub struct NewTemplate<'a> {
    pub id: &'a str,
    pub team_id: Option<&'a str>,
    pub name: &'a str,
    pub agent_name: &'a str,
    pub host_id: Option<&'a str>,
    pub snapshot: bool,
    pub vcpus: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub source_sandbox_id: Option<&'a str>,
    pub created_by: Option<&'a str>,
}

pub async fn template_create(
    db: impl PgExecutor<'_>,
    t: &NewTemplate<'_>,
) -> Result<TemplateRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO templates (id, team_id, name, agent_name, host_id, snapshot, vcpus, \
         memory_mb, disk_mb, source_sandbox_id, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    ))
    .bind(t.id)
    .bind(t.team_id)
    .bind(t.name)
    .bind(t.agent_name)
    .bind(t.host_id)
    .bind(t.snapshot)
    .bind(t.vcpus)
    .bind(t.memory_mb)
    .bind(t.disk_mb)
    .bind(t.source_sandbox_id)
    .bind(t.created_by)
    .fetch_one(db)
    .await
}

/// Registers a platform template unless one of that name exists.
pub async fn template_ensure_platform(
    pool: &PgPool,
    id: &str,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO templates (id, team_id, name, agent_name, snapshot) \
         SELECT $1, NULL, $2, $2, FALSE WHERE NOT EXISTS \
         (SELECT 1 FROM templates WHERE team_id IS NULL AND name = $2 AND deleted_at IS NULL)",
    )
    .bind(id)
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

/// A template the team can use: its own first, then the platform's.
pub async fn template_get_visible(
    db: impl PgExecutor<'_>,
    team_id: &str,
    name: &str,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM templates WHERE name = $2 AND deleted_at IS NULL \
         AND (team_id = $1 OR team_id IS NULL) ORDER BY team_id NULLS LAST LIMIT 1"
    ))
    .bind(team_id)
    .bind(name)
    .fetch_optional(db)
    .await
}

pub async fn template_list_visible(
    pool: &PgPool,
    team_id: &str,
) -> Result<Vec<TemplateRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM templates WHERE deleted_at IS NULL \
         AND (team_id = $1 OR team_id IS NULL) ORDER BY team_id NULLS FIRST, name"
    ))
    .bind(team_id)
    .fetch_all(pool)
    .await
}

/// Locks the template's row for the rest of the transaction (a create cannot start a user
/// while a delete checks for them).
pub async fn template_lock(db: impl PgExecutor<'_>, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1 FROM templates WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(db)
        .await
        .map(drop)
}

/// Records the sizes the host gave a snapshot template.
pub async fn template_set_sizes(
    db: impl PgExecutor<'_>,
    id: &str,
    vcpus: i32,
    memory_mb: i32,
    disk_mb: i32,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE templates SET vcpus = $2, memory_mb = $3, disk_mb = $4 WHERE id = $1 \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(vcpus)
    .bind(memory_mb)
    .bind(disk_mb)
    .fetch_optional(db)
    .await
}

pub async fn template_delete(db: impl PgExecutor<'_>, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE templates SET deleted_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Sandboxes not yet stopped that were started from the template.
pub async fn template_users(db: impl PgExecutor<'_>, id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM sandboxes WHERE template_id = $1 \
         AND state IN ('pending', 'running', 'paused')",
    )
    .bind(id)
    .fetch_one(db)
    .await
}
