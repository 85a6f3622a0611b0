//! Metric samples flushed by agents when a sandbox pauses or stops.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MetricRow {
    pub at: DateTime<Utc>,
    pub cpu_percent: f32,
    pub rss_bytes: i64,
    pub pss_bytes: i64,
    pub disk_bytes: i64,
}

pub async fn metrics_store(
    pool: &PgPool,
    sandbox_id: &str,
    samples: &[MetricRow],
) -> Result<(), sqlx::Error> {
    if samples.is_empty() {
        return Ok(());
    }
    let mut query = sqlx::QueryBuilder::new(
        "INSERT INTO sandbox_metrics (sandbox_id, at, cpu_percent, rss_bytes, pss_bytes, disk_bytes) ",
    );
    query.push_values(samples, |mut row, sample| {
        row.push_bind(sandbox_id)
            .push_bind(sample.at)
            .push_bind(sample.cpu_percent)
            .push_bind(sample.rss_bytes)
            .push_bind(sample.pss_bytes)
            .push_bind(sample.disk_bytes);
    });
    query.push(" ON CONFLICT DO NOTHING");
    query.build().execute(pool).await?;
    Ok(())
}

/// Stored samples newer than `since`, oldest first.
pub async fn metrics_since(
    pool: &PgPool,
    sandbox_id: &str,
    since: DateTime<Utc>,
) -> Result<Vec<MetricRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, cpu_percent, rss_bytes, pss_bytes, disk_bytes FROM sandbox_metrics \
         WHERE sandbox_id = $1 AND at >= $2 ORDER BY at",
    )
    .bind(sandbox_id)
    .bind(since)
    .fetch_all(pool)
    .await
}
