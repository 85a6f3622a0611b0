//! Hosts: machines running a host agent.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HostRow {
    pub id: String,
    pub name: String,
    pub address: String,
    pub state: String,
    pub last_seen_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, name, address, state, last_seen_at";

/// Registers a host by name (or updates its address), returning its row.
pub async fn host_upsert(
    pool: &PgPool,
    id: &str,
    name: &str,
    address: &str,
) -> Result<HostRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO hosts (id, name, address, state) VALUES ($1, $2, $3, 'unreachable') \
         ON CONFLICT (name) DO UPDATE SET address = excluded.address RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(address)
    .fetch_one(pool)
    .await
}

pub async fn host_list(pool: &PgPool) -> Result<Vec<HostRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM hosts ORDER BY name"))
        .fetch_all(pool)
        .await
}

pub struct HostStatus<'a> {
    pub state: &'a str,
    pub accelerator: &'a str,
    pub cpus: i32,
    pub memory_mb: i64,
    pub agent_version: &'a str,
}

pub async fn host_update_status(
    pool: &PgPool,
    id: &str,
    status: &HostStatus<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE hosts SET state = $2, accelerator = $3, cpus = $4, memory_mb = $5, \
         agent_version = $6, last_seen_at = CASE WHEN $2 = 'ready' THEN now() ELSE last_seen_at END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.state)
    .bind(status.accelerator)
    .bind(status.cpus)
    .bind(status.memory_mb)
    .bind(status.agent_version)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn host_mark_unreachable(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE hosts SET state = 'unreachable' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Tries to take the session-level lock that makes this connection's replica the one
/// reconciling the host. Held until the connection closes.
pub async fn host_reconcile_try_lock(
    connection: &mut sqlx::PgConnection,
    host_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('wrenn.reconcile.' || $1))")
        .bind(host_id)
        .fetch_one(connection)
        .await
}
