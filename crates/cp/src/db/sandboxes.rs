//! Sandboxes: what the control plane believes each one is, reconciled with its host.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SandboxRow {
    pub id: String,
    pub team_id: String,
    pub host_id: Option<String>,
    pub template_id: String,
    pub template: String,
    pub state: String,
    pub vcpus: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub timeout_sec: i32,
    pub internet: bool,
    pub metadata: serde_json::Value,
    pub error: Option<String>,
    pub boot_ms: Option<i64>,
    pub auto_paused: bool,
    pub started_from: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, team_id, host_id, template_id, template, state, vcpus, memory_mb, \
                       disk_mb, timeout_sec, internet, metadata, error, boot_ms, auto_paused, \
                       started_from, created_at, updated_at";

pub struct NewSandbox<'a> {
    pub id: &'a str,
    pub team_id: &'a str,
    pub host_id: &'a str,
    pub template_id: &'a str,
    pub template: &'a str,
    pub vcpus: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub timeout_sec: i32,
    pub internet: bool,
    pub metadata: serde_json::Value,
    pub created_by_user: Option<&'a str>,
    pub created_by_api_key: Option<&'a str>,
}

pub async fn sandbox_create(
    db: impl PgExecutor<'_>,
    s: &NewSandbox<'_>,
) -> Result<SandboxRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO sandboxes (id, team_id, host_id, template_id, template, state, vcpus, \
         memory_mb, disk_mb, timeout_sec, internet, metadata, created_by_user, created_by_api_key) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13) \
         RETURNING {COLUMNS}"
    ))
    .bind(s.id)
    .bind(s.team_id)
    .bind(s.host_id)
    .bind(s.template_id)
    .bind(s.template)
    .bind(s.vcpus)
    .bind(s.memory_mb)
    .bind(s.disk_mb)
    .bind(s.timeout_sec)
    .bind(s.internet)
    .bind(&s.metadata)
    .bind(s.created_by_user)
    .bind(s.created_by_api_key)
    .fetch_one(db)
    .await
}

/// A team's sandbox. Other teams' sandboxes are invisible (None), never forbidden.
pub async fn sandbox_get(
    db: impl PgExecutor<'_>,
    team_id: &str,
    id: &str,
) -> Result<Option<SandboxRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM sandboxes WHERE team_id = $1 AND id = $2"
    ))
    .bind(team_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Any sandbox by id, whatever its team (for what hosts report).
pub async fn sandbox_get_any(
    db: impl PgExecutor<'_>,
    id: &str,
) -> Result<Option<SandboxRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// What the agent reported, applied to the row.
pub struct SandboxUpdate<'a> {
    pub state: &'a str,
    pub error: Option<&'a str>,
    pub vcpus: Option<i32>,
    pub memory_mb: Option<i32>,
    pub disk_mb: Option<i32>,
    pub boot_ms: Option<i64>,
    pub timeout_sec: Option<i32>,
    pub auto_paused: Option<bool>,
    pub started_from: Option<&'a str>,
}

impl<'a> SandboxUpdate<'a> {
    pub fn state(state: &'a str) -> Self {
        Self {
            state,
            error: None,
            vcpus: None,
            memory_mb: None,
            disk_mb: None,
            boot_ms: None,
            timeout_sec: None,
            auto_paused: None,
            started_from: None,
        }
    }
}

/// Updates a sandbox unless it is already `stopped` (a final state nothing may leave) or
/// nothing would change (the reconciler reports every sandbox every few seconds: no writes
/// for news that isn't). `None` in both cases.
pub async fn sandbox_update(
    db: impl PgExecutor<'_>,
    id: &str,
    update: &SandboxUpdate<'_>,
) -> Result<Option<SandboxRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE sandboxes SET state = $2, error = $3, vcpus = coalesce($4, vcpus), \
         memory_mb = coalesce($5, memory_mb), disk_mb = coalesce($6, disk_mb), \
         boot_ms = coalesce($7, boot_ms), timeout_sec = coalesce($8, timeout_sec), \
         auto_paused = coalesce($9, auto_paused), \
         started_from = coalesce($10, started_from), updated_at = now(), \
         stopped_at = CASE WHEN $2 = 'stopped' THEN now() ELSE stopped_at END \
         WHERE id = $1 AND state <> 'stopped' \
         AND (state <> $2 OR error IS DISTINCT FROM $3 OR vcpus <> coalesce($4, vcpus) \
              OR memory_mb <> coalesce($5, memory_mb) OR disk_mb <> coalesce($6, disk_mb) \
              OR boot_ms IS DISTINCT FROM coalesce($7, boot_ms) \
              OR timeout_sec <> coalesce($8, timeout_sec) \
              OR auto_paused <> coalesce($9, auto_paused) \
              OR started_from IS DISTINCT FROM coalesce($10, started_from)) \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(update.state)
    .bind(update.error)
    .bind(update.vcpus)
    .bind(update.memory_mb)
    .bind(update.disk_mb)
    .bind(update.boot_ms)
    .bind(update.timeout_sec)
    .bind(update.auto_paused)
    .bind(update.started_from)
    .fetch_optional(db)
    .await
}

/// Filters for [`sandbox_list`].
#[derive(Debug, Default)]
pub struct SandboxFilter {
    /// Any of these states; empty = every state but `stopped`.
    pub states: Vec<String>,
    /// Every pair must match.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Keyset cursor: rows strictly after (created_at, id) in newest-first order.
    pub after: Option<(DateTime<Utc>, String)>,
}

/// Newest first.
pub async fn sandbox_list(
    pool: &PgPool,
    team_id: &str,
    filter: &SandboxFilter,
    limit: i64,
) -> Result<Vec<SandboxRow>, sqlx::Error> {
    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {COLUMNS} FROM sandboxes WHERE team_id = "));
    query.push_bind(team_id);
    if filter.states.is_empty() {
        query.push(" AND state <> 'stopped'");
    } else {
        query.push(" AND state = ANY(");
        query.push_bind(filter.states.clone());
        query.push(")");
    }
    if !filter.metadata.is_empty() {
        query.push(" AND metadata @> ");
        query.push_bind(serde_json::Value::Object(filter.metadata.clone()));
    }
    if let Some((created_at, id)) = &filter.after {
        query.push(" AND (created_at, id) < (");
        query.push_bind(*created_at);
        query.push(", ");
        query.push_bind(id.clone());
        query.push(")");
    }
    query.push(" ORDER BY created_at DESC, id DESC LIMIT ");
    query.push_bind(limit);
    query.build_query_as().fetch_all(pool).await
}

/// Sandboxes a host should be running or holding paused.
pub async fn sandbox_list_on_host(
    pool: &PgPool,
    host_id: &str,
) -> Result<Vec<SandboxRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM sandboxes WHERE host_id = $1 \
         AND state IN ('pending', 'running', 'paused', 'missing')"
    ))
    .bind(host_id)
    .fetch_all(pool)
    .await
}

/// Live sandboxes of a team (for destroying them all when the team is deleted).
pub async fn sandbox_list_live(
    db: impl PgExecutor<'_>,
    team_id: &str,
) -> Result<Vec<SandboxRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM sandboxes WHERE team_id = $1 \
         AND state IN ('pending', 'running', 'paused', 'error', 'missing')"
    ))
    .bind(team_id)
    .fetch_all(db)
    .await
}
