//! The only place with SQL. One file per table family; functions are named after the
//! operation they serve (`sandbox_create` here, in `app/` and in `http/`).

pub mod api_keys;
pub mod audit;
pub mod hosts;
pub mod metrics;
pub mod oauth;
pub mod sandboxes;
pub mod settings;
pub mod teams;
pub mod templates;
pub mod users;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL")]
    Url(#[source] sqlx::Error),
    #[error("connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("apply database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Connects and applies the embedded migrations (sqlx serialises concurrent migrators with
/// an advisory lock, so several control planes may start at once).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = url.parse().map_err(DbError::Url)?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(DbError::Connect)?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(DbError::Migrate)?;
    Ok(pool)
}

/// One round trip: the database answers.
pub async fn ping(db: impl sqlx::PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(db).await.map(drop)
}

/// Whether an error is a unique-constraint violation (someone else has that name).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// Escapes `%`, `_` and `\` for a LIKE pattern (used with `ESCAPE '\'`).
pub fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(escape_like("a%b_c\\d"), "a\\%b\\_c\\\\d");
        assert_eq!(escape_like("plain@x.io"), "plain@x.io");
    }
}
