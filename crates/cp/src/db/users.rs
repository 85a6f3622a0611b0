//! Users.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub github_id: Option<i64>,
    pub default_team_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, email, name, password_hash, is_admin, github_id, default_team_id, created_at";

pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: Option<&'a str>,
    pub github_id: Option<i64>,
    pub default_team_id: &'a str,
}

pub async fn user_create(
    db: impl PgExecutor<'_>,
    user: &NewUser<'_>,
) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO users (id, email, name, password_hash, github_id, default_team_id) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(user.id)
    .bind(user.email)
    .bind(user.name)
    .bind(user.password_hash)
    .bind(user.github_id)
    .bind(user.default_team_id)
    .fetch_one(db)
    .await
}

pub async fn user_get(db: impl PgExecutor<'_>, id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn user_get_by_email(
    db: impl PgExecutor<'_>,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE lower(email) = lower($1)"
    ))
    .bind(email)
    .fetch_optional(db)
    .await
}

pub async fn user_get_by_github(
    db: impl PgExecutor<'_>,
    github_id: i64,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE github_id = $1"))
        .bind(github_id)
        .fetch_optional(db)
        .await
}

pub async fn user_link_github(
    db: impl PgExecutor<'_>,
    id: &str,
    github_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET github_id = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(github_id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn user_update(
    db: impl PgExecutor<'_>,
    id: &str,
    name: Option<&str>,
    email: Option<&str>,
) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE users SET name = coalesce($2, name), email = coalesce($3, email), \
         updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(email)
    .fetch_one(db)
    .await
}

pub async fn user_set_password(
    db: impl PgExecutor<'_>,
    id: &str,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(password_hash)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn user_set_admin(
    db: impl PgExecutor<'_>,
    id: &str,
    is_admin: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET is_admin = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(is_admin)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn user_set_default_team(
    db: impl PgExecutor<'_>,
    id: &str,
    team_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET default_team_id = $2 WHERE id = $1")
        .bind(id)
        .bind(team_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Users whose email contains `pattern` (already LIKE-escaped), case-insensitively.
pub async fn user_search(
    pool: &PgPool,
    escaped_pattern: &str,
    limit: i64,
) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE lower(email) LIKE '%' || lower($1) || '%' ESCAPE '\\' \
         ORDER BY email LIMIT $2"
    ))
    .bind(escaped_pattern)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Serialises sign-ups for the rest of the transaction ("the first user is an admin" must
/// hold when two sign up at once).
pub async fn signup_lock(db: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('wrenn.signup'))")
        .execute(db)
        .await
        .map(drop)
}

pub async fn users_exist(db: impl PgExecutor<'_>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
        .fetch_one(db)
        .await
}
