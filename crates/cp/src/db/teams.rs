//! Teams and their members.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TeamRow {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A team as one member sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipRow {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub role: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

pub async fn team_create(
    db: impl PgExecutor<'_>,
    id: &str,
    name: &str,
) -> Result<TeamRow, sqlx::Error> {
    sqlx::query_as("INSERT INTO teams (id, name) VALUES ($1, $2) RETURNING id, name, created_at")
        .bind(id)
        .bind(name)
        .fetch_one(db)
        .await
}

pub async fn team_get(db: impl PgExecutor<'_>, id: &str) -> Result<Option<TeamRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at FROM teams WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn team_update(
    db: impl PgExecutor<'_>,
    id: &str,
    name: &str,
) -> Result<Option<TeamRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE teams SET name = $2, updated_at = now() WHERE id = $1 AND deleted_at IS NULL \
         RETURNING id, name, created_at",
    )
    .bind(id)
    .bind(name)
    .fetch_optional(db)
    .await
}

pub async fn team_delete(db: impl PgExecutor<'_>, id: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE teams SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The caller's membership in a live team, if any.
pub async fn membership_get(
    db: impl PgExecutor<'_>,
    team_id: &str,
    user_id: &str,
) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id, t.name, t.created_at, m.role FROM teams t \
         JOIN team_members m ON m.team_id = t.id \
         WHERE t.id = $1 AND m.user_id = $2 AND t.deleted_at IS NULL",
    )
    .bind(team_id)
    .bind(user_id)
    .fetch_optional(db)
    .await
}

pub async fn membership_list(
    pool: &PgPool,
    user_id: &str,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id, t.name, t.created_at, m.role FROM teams t \
         JOIN team_members m ON m.team_id = t.id \
         WHERE m.user_id = $1 AND t.deleted_at IS NULL ORDER BY t.created_at, t.id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

pub async fn member_add(
    db: impl PgExecutor<'_>,
    team_id: &str,
    user_id: &str,
    role: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, $3)")
        .bind(team_id)
        .bind(user_id)
        .bind(role)
        .execute(db)
        .await?;
    Ok(())
}

/// A team's members with their accounts; callers add conditions after `m.team_id = $1`.
const MEMBER_SELECT: &str = "SELECT u.id AS user_id, u.email, u.name, m.role, \
     m.created_at AS joined_at FROM team_members m JOIN users u ON u.id = m.user_id \
     WHERE m.team_id = $1";

pub async fn member_get(
    db: impl PgExecutor<'_>,
    team_id: &str,
    user_id: &str,
) -> Result<Option<MemberRow>, sqlx::Error> {
    sqlx::query_as(&format!("{MEMBER_SELECT} AND m.user_id = $2"))
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(db)
        .await
}

pub async fn member_list(pool: &PgPool, team_id: &str) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as(&format!("{MEMBER_SELECT} ORDER BY m.created_at, u.id"))
        .bind(team_id)
        .fetch_all(pool)
        .await
}

pub async fn member_update(
    db: impl PgExecutor<'_>,
    team_id: &str,
    user_id: &str,
    role: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE team_members SET role = $3 WHERE team_id = $1 AND user_id = $2")
        .bind(team_id)
        .bind(user_id)
        .bind(role)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn member_remove(
    db: impl PgExecutor<'_>,
    team_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
        .bind(team_id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Owners of a team, locked for the rest of the transaction so two concurrent demotions
/// cannot both pass the "one owner must remain" check.
pub async fn owners_lock(
    db: impl PgExecutor<'_>,
    team_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM team_members WHERE team_id = $1 AND role = 'owner' FOR UPDATE",
    )
    .bind(team_id)
    .fetch_all(db)
    .await
}

/// Deletes the API keys `user_id` created for `team_id`: someone who leaves a team (or is
/// removed from it) must not keep acting for it through a key. Returns how many went.
pub async fn member_api_keys_delete(
    db: impl PgExecutor<'_>,
    team_id: &str,
    user_id: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM api_keys WHERE team_id = $1 AND created_by = $2")
        .bind(team_id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
