//! Keeps sandbox rows in step with what each host reports: a periodic full comparison plus
//! the host's event stream (auto-pauses, VMs that died, flushed metrics).
//!
//! Safe with several control planes on one database: for each host, only the replica holding
//! that host's advisory lock (on a connection it keeps open) reconciles it; if that replica
//! dies its connection closes, the lock is freed and another replica takes over.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use sqlx::PgConnection;
use tokio_stream::StreamExt;
use wrenn_agent_api::v1 as pb;
use wrenn_api::SandboxState;

use crate::app::audit::{self, Target};
use crate::app::hosts::Host;
use crate::app::sandbox::{apply_agent_view, time_from_ms};
use crate::db;
use crate::db::hosts::HostStatus;
use crate::db::metrics::MetricRow;
use crate::db::sandboxes::{SandboxRow, SandboxUpdate};
use crate::error::ApiResult;
use crate::state::AppState;

/// Sandboxes the host has but the database doesn't are destroyed once this old (younger ones
/// may be forks whose rows are being written).
const ORPHAN_GRACE: Duration = Duration::from_secs(300);

/// Runs until the process ends (or the task is aborted, which aborts every host's loop too):
/// reconciles every host this replica holds the lock for.
pub async fn run(state: AppState) {
    let mut loops = tokio::task::JoinSet::new();
    for host in state.hosts.all().cloned() {
        loops.spawn(host_loop(state.clone(), host));
    }
    while loops.join_next().await.is_some() {}
}

/// Aborts a spawned task when dropped, so no task outlives the loop that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn host_loop(state: AppState, host: Host) {
    loop {
        match lock_host(&state, &host).await {
            Ok(Some(connection)) => {
                tracing::info!(host = %host.name, "reconciling host");
                lead(&state, &host, connection).await;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(host = %host.name, error = %error, "take host reconcile lock")
            }
        }
        tokio::time::sleep(state.config.reconcile_interval).await;
    }
}

/// The host's advisory lock on a connection of our own, or None if another replica holds it.
/// A locked connection is detached from the pool: when the loop ends it closes, releasing the
/// lock, instead of going back to the pool still holding it.
async fn lock_host(state: &AppState, host: &Host) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut connection = state.pool.acquire().await?;
    let locked = db::hosts::host_reconcile_try_lock(&mut connection, &host.id).await?;
    Ok(locked.then(|| connection.detach()))
}

/// Reconciles while the lock's connection stays healthy.
async fn lead(state: &AppState, host: &Host, mut connection: PgConnection) {
    let mut watch = AbortOnDrop(tokio::spawn(watch_events(state.clone(), host.clone())));
    loop {
        if let Err(error) = reconcile_host(state, host).await {
            tracing::warn!(host = %host.name, error = %error, "reconcile host");
        }
        tokio::select! {
            _ = tokio::time::sleep(state.config.reconcile_interval) => {}
            _ = &mut watch.0 => {
                // The event stream ended (host restarted or unreachable): start it again.
                watch = AbortOnDrop(tokio::spawn(watch_events(state.clone(), host.clone())));
            }
        }
        if db::ping(&mut connection).await.is_err() {
            tracing::warn!(host = %host.name, "lost the reconcile lock's connection");
            return;
        }
    }
}

/// One full comparison of the host's sandboxes with the database.
pub async fn reconcile_host(state: &AppState, host: &Host) -> ApiResult<()> {
    let mut client = host.client.clone();
    let info = match client.get_host_info(pb::GetHostInfoRequest {}).await {
        Ok(info) => info.into_inner(),
        Err(status) => {
            tracing::debug!(host = %host.name, error = %status, "host unreachable");
            db::hosts::host_mark_unreachable(&state.pool, &host.id).await?;
            return Ok(());
        }
    };
    db::hosts::host_update_status(
        &state.pool,
        &host.id,
        &HostStatus {
            state: "ready",
            accelerator: &info.accelerator,
            cpus: info.cpus as i32,
            memory_mb: info.memory_mb as i64,
            agent_version: &info.agent_version,
        },
    )
    .await?;
    // Rows first: a sandbox created between the two reads is then on the host, not missing.
    let rows = db::sandboxes::sandbox_list_on_host(&state.pool, &host.id).await?;
    let listed = client
        .list_sandboxes(pb::ListSandboxesRequest {})
        .await?
        .into_inner();
    let mut on_host: HashMap<String, pb::Sandbox> = listed
        .sandboxes
        .into_iter()
        .map(|s| (s.sandbox_id.clone(), s))
        .collect();
    for row in rows {
        match on_host.remove(&row.id) {
            Some(agent) => observe(state, &row, &agent).await?,
            None => mark_missing(state, &row).await?,
        }
    }
    let now = chrono::Utc::now();
    for (id, agent) in on_host {
        let age = now - time_from_ms(agent.created_at_ms);
        if age.to_std().unwrap_or_default() < ORPHAN_GRACE {
            continue;
        }
        if db::sandboxes::sandbox_get_any(&state.pool, &id)
            .await?
            .is_none()
        {
            tracing::warn!(host = %host.name, sandbox = %id, "destroying a sandbox no team owns");
            let _ = client
                .destroy_sandbox(pb::DestroySandboxRequest { sandbox_id: id })
                .await;
        }
    }
    Ok(())
}

/// Applies what the host says about a row, auditing changes the control plane didn't make.
async fn observe(state: &AppState, row: &SandboxRow, agent: &pb::Sandbox) -> ApiResult<()> {
    let Some(updated) = apply_agent_view(state, agent).await? else {
        return Ok(());
    };
    // The host may report the pause and the reason for it in two separate updates.
    let newly_auto_paused = updated.state == "paused" && updated.auto_paused && !row.auto_paused;
    if updated.state == row.state && !newly_auto_paused {
        return Ok(());
    }
    tracing::info!(sandbox = %row.id, from = %row.state, to = %updated.state, "sandbox state changed on its host");
    // Changes the control plane asked for are audited where it asked; the host's own
    // decisions (idle pause, a VM that died or was destroyed after a failed pause) are audited here.
    let action = match updated.state.as_str() {
        _ if newly_auto_paused => Some("auto_pause"),
        "error" => Some("fail"),
        "stopped" if !agent.error.is_empty() => Some("stop"),
        _ => None,
    };
    if let Some(action) = action {
        audit::record_system(
            &state.pool,
            &row.team_id,
            Target::new("sandbox", Some(&row.id), action),
            json!({"from": row.state, "to": updated.state, "error": agent.error}),
        )
        .await;
    }
    Ok(())
}

async fn mark_missing(state: &AppState, row: &SandboxRow) -> ApiResult<()> {
    if row.state == SandboxState::Missing.as_str() {
        return Ok(());
    }
    let in_flight = row.state == SandboxState::Pending.as_str()
        && (chrono::Utc::now() - row.created_at)
            .to_std()
            .unwrap_or_default()
            < state.config.agent_timeout * 2;
    if in_flight {
        return Ok(());
    }
    let mut update = SandboxUpdate::state(SandboxState::Missing.as_str());
    update.error = Some("its host no longer knows this sandbox");
    if db::sandboxes::sandbox_update(&state.pool, &row.id, &update)
        .await?
        .is_some()
    {
        tracing::warn!(sandbox = %row.id, "sandbox missing from its host");
        audit::record_system(
            &state.pool,
            &row.team_id,
            Target::new("sandbox", Some(&row.id), "missing"),
            json!({"from": row.state}),
        )
        .await;
    }
    Ok(())
}

/// Follows the host's event stream until it ends.
async fn watch_events(state: AppState, host: Host) {
    let mut client = host.client.clone();
    let mut events = match client.watch_sandboxes(pb::WatchSandboxesRequest {}).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => {
            tracing::debug!(host = %host.name, error = %status, "watch sandboxes");
            tokio::time::sleep(state.config.reconcile_interval).await;
            return;
        }
    };
    while let Some(event) = events.next().await {
        let Ok(event) = event else { break };
        if let Err(error) = handle_event(&state, event).await {
            tracing::warn!(host = %host.name, error = %error, "apply sandbox event");
        }
    }
}

async fn handle_event(state: &AppState, event: pb::SandboxEvent) -> ApiResult<()> {
    let Some(agent) = event.sandbox else {
        return Ok(());
    };
    let Some(row) = db::sandboxes::sandbox_get_any(&state.pool, &agent.sandbox_id).await? else {
        return Ok(());
    };
    let samples: Vec<MetricRow> = event
        .flushed_metrics
        .iter()
        .map(|m| MetricRow {
            at: time_from_ms(m.at_ms),
            cpu_percent: m.cpu_percent,
            rss_bytes: m.rss_bytes as i64,
            pss_bytes: m.pss_bytes as i64,
            disk_bytes: m.disk_bytes as i64,
        })
        .collect();
    db::metrics::metrics_store(&state.pool, &row.id, &samples).await?;
    observe(state, &row, &agent).await
}
