//! OAuth `state` values in flight: written when a login starts, consumed once by its callback.

use std::time::Duration;

use sqlx::PgPool;

/// What a login remembered between its start and its callback.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OAuthStateRow {
    pub redirect: Option<String>,
}

/// Stores a new state valid for `ttl`, sweeping expired ones on the way (the table stays
/// small without a background job).
pub async fn oauth_state_create(
    pool: &PgPool,
    state: &str,
    redirect: Option<&str>,
    ttl: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM oauth_states WHERE expires_at < now()")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO oauth_states (state, expires_at, redirect) \
         VALUES ($1, now() + make_interval(secs => $2), $3)",
    )
    .bind(state)
    .bind(ttl.as_secs_f64())
    .bind(redirect)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes and returns an unexpired state. One statement, so of two callbacks racing with the
/// same state exactly one gets it.
/// Logins started and not yet finished nor expired.
pub async fn oauth_states_pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM oauth_states WHERE expires_at > now()")
        .fetch_one(pool)
        .await
}

pub async fn oauth_state_take(
    pool: &PgPool,
    state: &str,
) -> Result<Option<OAuthStateRow>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM oauth_states WHERE state = $1 AND expires_at > now() RETURNING redirect",
    )
    .bind(state)
    .fetch_optional(pool)
    .await
}
