//! The audit log.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub team_id: Option<String>,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub action: String,
    pub status: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

pub struct NewAuditEntry<'a> {
    pub team_id: Option<&'a str>,
    pub actor_type: &'a str,
    pub actor_id: Option<&'a str>,
    pub resource_type: &'a str,
    pub resource_id: Option<&'a str>,
    pub action: &'a str,
    pub status: &'a str,
    pub metadata: serde_json::Value,
}

pub async fn audit_insert(
    db: impl PgExecutor<'_>,
    entry: &NewAuditEntry<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_logs (team_id, actor_type, actor_id, resource_type, resource_id, \
         action, status, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.team_id)
    .bind(entry.actor_type)
    .bind(entry.actor_id)
    .bind(entry.resource_type)
    .bind(entry.resource_id)
    .bind(entry.action)
    .bind(entry.status)
    .bind(&entry.metadata)
    .execute(db)
    .await?;
    Ok(())
}

/// Filters for [`audit_list`]; every list is "any of these" and empty means "no filter".
#[derive(Debug, Default)]
pub struct AuditFilter {
    pub actor_types: Vec<String>,
    pub actor_ids: Vec<String>,
    pub resource_types: Vec<String>,
    pub resource_ids: Vec<String>,
    pub actions: Vec<String>,
    pub statuses: Vec<String>,
    /// Only entries older than this id (the cursor).
    pub before_id: Option<i64>,
}

/// Newest first.
pub async fn audit_list(
    pool: &PgPool,
    team_id: &str,
    filter: &AuditFilter,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id, team_id, actor_type, actor_id, resource_type, resource_id, action, status, \
         metadata, created_at FROM audit_logs WHERE team_id = ",
    );
    query.push_bind(team_id);
    let lists = [
        ("actor_type", &filter.actor_types),
        ("actor_id", &filter.actor_ids),
        ("resource_type", &filter.resource_types),
        ("resource_id", &filter.resource_ids),
        ("action", &filter.actions),
        ("status", &filter.statuses),
    ];
    for (column, values) in lists {
        if !values.is_empty() {
            query.push(format!(" AND {column} = ANY("));
            query.push_bind(values.clone());
            query.push(")");
        }
    }
    if let Some(before) = filter.before_id {
        query.push(" AND id < ");
        query.push_bind(before);
    }
    query.push(" ORDER BY id DESC LIMIT ");
    query.push_bind(limit);
    query.build_query_as().fetch_all(pool).await
}

/// Failed logins for `email` in the last five minutes (login throttling reads the audit log,
/// so every replica counts the same).
pub async fn login_failures_recent(pool: &PgPool, email: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE resource_type = 'session' AND action = 'login' \
         AND status = 'failure' AND metadata->>'email' = lower($1) \
         AND created_at > now() - interval '5 minutes'",
    )
    .bind(email)
    .fetch_one(pool)
    .await
}
