//! API keys (only their SHA-256 is stored).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub team_id: String,
    pub created_by: String,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, team_id, created_by, name, prefix, created_at, last_used_at";

pub struct NewApiKey<'a> {
    pub id: &'a str,
    pub team_id: &'a str,
    pub created_by: &'a str,
    pub name: &'a str,
    pub prefix: &'a str,
    pub key_hash: &'a str,
}

pub async fn api_key_create(
    db: impl PgExecutor<'_>,
    key: &NewApiKey<'_>,
) -> Result<ApiKeyRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, team_id, created_by, name, prefix, key_hash) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(key.id)
    .bind(key.team_id)
    .bind(key.created_by)
    .bind(key.name)
    .bind(key.prefix)
    .bind(key.key_hash)
    .fetch_one(db)
    .await
}

pub async fn api_key_list(pool: &PgPool, team_id: &str) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE team_id = $1 ORDER BY created_at, id"
    ))
    .bind(team_id)
    .fetch_all(pool)
    .await
}

pub async fn api_key_get(
    db: impl PgExecutor<'_>,
    team_id: &str,
    id: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE team_id = $1 AND id = $2"
    ))
    .bind(team_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn api_key_delete(
    db: impl PgExecutor<'_>,
    team_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM api_keys WHERE team_id = $1 AND id = $2")
        .bind(team_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The key with this hash, if its team still exists.
pub async fn api_key_by_hash(
    pool: &PgPool,
    key_hash: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.id, k.team_id, k.created_by, k.name, k.prefix, k.created_at, k.last_used_at \
         FROM api_keys k JOIN teams t ON t.id = k.team_id \
         WHERE k.key_hash = $1 AND t.deleted_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await
}

/// Records a use, at most once a minute per key so busy keys don't write on every request.
pub async fn api_key_touch(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now() WHERE id = $1 \
         AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
