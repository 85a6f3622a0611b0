//! Writing and reading the audit log. Every mutating operation records one entry with its
//! outcome; a failure to write the entry is logged, never turned into a failed request.

use base64::Engine;
use serde_json::json;
use sqlx::PgPool;
use wrenn_api::{AuditLog, AuditLogList};

use crate::app::caller::Caller;
use crate::db;
use crate::db::audit::{AuditFilter, AuditRow, NewAuditEntry};
use crate::error::{ApiError, ApiResult};

/// What an entry is about.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub resource_type: &'a str,
    pub resource_id: Option<&'a str>,
    pub action: &'a str,
}

impl<'a> Target<'a> {
    pub fn new(resource_type: &'a str, resource_id: Option<&'a str>, action: &'a str) -> Self {
        Self {
            resource_type,
            resource_id,
            action,
        }
    }
}

/// Records `outcome` of an action taken by `caller`, then returns it unchanged.
pub async fn record<T>(
    pool: &PgPool,
    caller: &Caller,
    target: Target<'_>,
    metadata: serde_json::Value,
    outcome: ApiResult<T>,
) -> ApiResult<T> {
    let (status, metadata) = match &outcome {
        Ok(_) => ("success", metadata),
        Err(error) => ("failure", with_error(metadata, error)),
    };
    write(
        pool,
        &NewAuditEntry {
            team_id: Some(&caller.team_id),
            actor_type: caller.actor_type(),
            actor_id: Some(caller.actor_id()),
            resource_type: target.resource_type,
            resource_id: target.resource_id,
            action: target.action,
            status,
            metadata,
        },
    )
    .await;
    outcome
}

/// Records an action the control plane took by itself (reconciliation, auto-pause).
pub async fn record_system(
    pool: &PgPool,
    team_id: &str,
    target: Target<'_>,
    metadata: serde_json::Value,
) {
    write(
        pool,
        &NewAuditEntry {
            team_id: Some(team_id),
            actor_type: "system",
            actor_id: None,
            resource_type: target.resource_type,
            resource_id: target.resource_id,
            action: target.action,
            status: "success",
            metadata,
        },
    )
    .await;
}

/// Records an action by a person outside any team session (signup, failed login).
pub async fn record_user(
    pool: &PgPool,
    team_id: Option<&str>,
    user_id: Option<&str>,
    target: Target<'_>,
    status: &str,
    metadata: serde_json::Value,
) {
    write(
        pool,
        &NewAuditEntry {
            team_id,
            actor_type: "user",
            actor_id: user_id,
            resource_type: target.resource_type,
            resource_id: target.resource_id,
            action: target.action,
            status,
            metadata,
        },
    )
    .await;
}

async fn write(pool: &PgPool, entry: &NewAuditEntry<'_>) {
    if let Err(error) = db::audit::audit_insert(pool, entry).await {
        tracing::error!(error = %error, action = entry.action, "write audit log entry");
    }
}

fn with_error(metadata: serde_json::Value, error: &ApiError) -> serde_json::Value {
    let mut object = match metadata {
        serde_json::Value::Object(object) => object,
        serde_json::Value::Null => serde_json::Map::new(),
        other => {
            let mut object = serde_json::Map::new();
            object.insert("detail".into(), other);
            object
        }
    };
    object.insert(
        "error".into(),
        json!({"code": error.code(), "message": error.public_message()}),
    );
    serde_json::Value::Object(object)
}

pub const MAX_PAGE: i64 = 200;
pub const DEFAULT_PAGE: i64 = 50;

/// The team's entries, newest first; `cursor` continues a previous page.
pub async fn audit_list(
    pool: &PgPool,
    caller: &Caller,
    mut filter: AuditFilter,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> ApiResult<AuditLogList> {
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "limit must be 1 to {MAX_PAGE}, got {n}"
            )))
        }
    };
    filter.before_id = cursor.map(cursor_decode).transpose()?;
    let rows = db::audit::audit_list(pool, &caller.team_id, &filter, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let entries: Vec<AuditLog> = rows.into_iter().take(limit as usize).map(view).collect();
    let next_cursor = match (more, entries.last()) {
        (true, Some(last)) => Some(cursor_encode(last.id)),
        _ => None,
    };
    Ok(AuditLogList {
        audit_logs: entries,
        next_cursor,
    })
}

fn cursor_encode(id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("a:{id}"))
}

fn cursor_decode(cursor: &str) -> ApiResult<i64> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("a:")?.parse().ok())
        .ok_or_else(|| ApiError::BadRequest("cursor is not one this server issued".into()))
}

fn view(row: AuditRow) -> AuditLog {
    AuditLog {
        id: row.id,
        team_id: row.team_id,
        actor_type: row.actor_type,
        actor_id: row.actor_id,
        resource_type: row.resource_type,
        resource_id: row.resource_id,
        action: row.action,
        status: row.status,
        metadata: row.metadata,
        created_at: row.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        assert_eq!(cursor_decode(&cursor_encode(42)).unwrap(), 42);
        assert!(cursor_decode("nonsense!").is_err());
        assert!(
            cursor_decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("b:1")).is_err()
        );
    }
}
