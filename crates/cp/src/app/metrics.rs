//! A sandbox's resource use: live from its host while it runs, else the samples its host
//! flushed when it paused or stopped.

use chrono::Utc;
use wrenn_agent_api::v1 as pb;
use wrenn_api::{MetricSample, SandboxMetrics, SandboxState};

use crate::app::caller::Caller;
use crate::app::files::host_call;
use crate::app::sandbox::{sandbox_load, time_from_ms};
use crate::db;
use crate::db::metrics::MetricRow;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The time ranges callers may ask for, with their length in seconds.
pub const RANGES: &[(&str, u32)] = &[
    ("5m", 300),
    ("1h", 3600),
    ("6h", 6 * 3600),
    ("24h", 24 * 3600),
];
pub const DEFAULT_RANGE: &str = "5m";

pub fn range_parse(text: &str) -> ApiResult<u32> {
    RANGES
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, seconds)| *seconds)
        .ok_or_else(|| {
            let names: Vec<&str> = RANGES.iter().map(|(name, _)| *name).collect();
            ApiError::BadRequest(format!(
                "range: {text:?} is not one of {}",
                names.join(", ")
            ))
        })
}

fn stored_view(row: MetricRow) -> MetricSample {
    MetricSample {
        at: row.at,
        cpu_percent: row.cpu_percent,
        rss_bytes: row.rss_bytes.max(0) as u64,
        pss_bytes: row.pss_bytes.max(0) as u64,
        disk_bytes: row.disk_bytes.max(0) as u64,
    }
}

fn live_view(sample: pb::MetricSample) -> MetricSample {
    MetricSample {
        at: time_from_ms(sample.at_ms),
        cpu_percent: sample.cpu_percent,
        rss_bytes: sample.rss_bytes,
        pss_bytes: sample.pss_bytes,
        disk_bytes: sample.disk_bytes,
    }
}

pub async fn sandbox_metrics(
    state: &AppState,
    caller: &Caller,
    id: &str,
    range_sec: u32,
) -> ApiResult<SandboxMetrics> {
    let row = sandbox_load(state, caller, id).await?;
    let running = row.state == SandboxState::Running.as_str();
    if let (true, Some(host_id)) = (running, &row.host_id) {
        let mut client = state.hosts.get(host_id)?.client.clone();
        let request = pb::GetSandboxMetricsRequest {
            sandbox_id: row.id.clone(),
            range_sec,
        };
        let live = host_call(state, client.get_sandbox_metrics(request)).await?;
        return Ok(SandboxMetrics {
            sandbox_id: row.id,
            source: "live".into(),
            samples: live.samples.into_iter().map(live_view).collect(),
        });
    }
    let since = Utc::now() - chrono::Duration::seconds(i64::from(range_sec));
    let stored = db::metrics::metrics_since(&state.pool, &row.id, since).await?;
    Ok(SandboxMetrics {
        sandbox_id: row.id,
        source: "stored".into(),
        samples: stored.into_iter().map(stored_view).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_a_fixed_set() {
        assert_eq!(range_parse("5m").unwrap(), 300);
        assert_eq!(range_parse("24h").unwrap(), 86_400);
        for bad in ["", "5", "2h", "5M", "1d"] {
            assert!(
                matches!(range_parse(bad), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
