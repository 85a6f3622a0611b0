//! Cluster-wide settings shared by every control-plane replica.

use sqlx::PgPool;

/// Returns the stored value, storing `candidate` first if there is none. Concurrent callers
/// all get the same value: whichever insert won.
pub async fn setting_get_or_init(
    pool: &PgPool,
    key: &str,
    candidate: &str,
) -> Result<String, sqlx::Error> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(candidate)
        .execute(pool)
        .await?;
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
}
