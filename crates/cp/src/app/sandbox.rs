//! Sandboxes: create, list, lifecycle. The database row is what the team sees; the host agent
//! owns the VM. Host calls run in their own task so a client hanging up mid-call never leaves
//! a row out of step with its VM.

use std::collections::BTreeMap;
use std::future::Future;

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use wrenn_agent_api::v1 as pb;
use wrenn_api::{
    CreateSandboxRequest, ForkSandboxRequest, Sandbox, SandboxList, SandboxState, StartedFrom,
};

use crate::app::audit::{self, Target};
use crate::app::caller::Caller;
use crate::app::hosts::{Host, Placement};
use crate::db;
use crate::db::sandboxes::{NewSandbox, SandboxFilter, SandboxRow, SandboxUpdate};
use crate::error::{ApiError, ApiResult};
use crate::ids::{self, IdKind};
use crate::state::AppState;

pub const DEFAULT_TEMPLATE: &str = "minimal";
const DEFAULT_VCPUS: u32 = 1;
const DEFAULT_MEMORY_MB: u32 = 256;
const MAX_VCPUS: u32 = 64;
const MIN_MEMORY_MB: u32 = 64;
const MAX_MEMORY_MB: u32 = 1 << 20;
const MAX_DISK_MB: u32 = 1 << 20;
const MAX_TIMEOUT_SEC: u32 = 7 * 24 * 3600;
const MAX_METADATA: usize = 64;
const MAX_ENV: usize = 256;
const MAX_FORKS: u32 = 16;
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 1000;

pub fn sandbox_view(row: &SandboxRow) -> Sandbox {
    let metadata = match &row.metadata {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        _ => BTreeMap::new(),
    };
    Sandbox {
        id: row.id.clone(),
        team_id: row.team_id.clone(),
        template: row.template.clone(),
        state: SandboxState::parse(&row.state).unwrap_or(SandboxState::Error),
        vcpus: row.vcpus as u32,
        memory_mb: row.memory_mb as u32,
        disk_mb: row.disk_mb as u32,
        timeout_sec: row.timeout_sec as u32,
        internet: row.internet,
        metadata,
        error: row.error.clone(),
        boot_ms: row.boot_ms.map(|ms| ms as u64),
        auto_paused: row.auto_paused,
        started_from: row.started_from.as_deref().and_then(StartedFrom::parse),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// The control plane's state for what an agent reports. `None`: in transition, keep ours.
pub fn state_from_agent(state: i32) -> Option<SandboxState> {
    match pb::SandboxState::try_from(state).ok()? {
        pb::SandboxState::Starting => Some(SandboxState::Pending),
        pb::SandboxState::Running => Some(SandboxState::Running),
        pb::SandboxState::Paused => Some(SandboxState::Paused),
        pb::SandboxState::Stopping | pb::SandboxState::Stopped => Some(SandboxState::Stopped),
        pb::SandboxState::Error => Some(SandboxState::Error),
        pb::SandboxState::Pausing | pb::SandboxState::Resuming | pb::SandboxState::Unspecified => {
            None
        }
    }
}

/// How the agent says a sandbox's VM first came to run.
fn started_from_agent(start: i32) -> Option<StartedFrom> {
    match pb::StartMethod::try_from(start).ok()? {
        pb::StartMethod::ColdBoot => Some(StartedFrom::ColdBoot),
        pb::StartMethod::BootSnapshot => Some(StartedFrom::BootSnapshot),
        pb::StartMethod::Template => Some(StartedFrom::Template),
        pb::StartMethod::Unspecified => None,
    }
}

/// Applies an agent's view of a sandbox to its row.
pub async fn apply_agent_view(
    state: &AppState,
    agent: &pb::Sandbox,
) -> ApiResult<Option<SandboxRow>> {
    let Some(new_state) = state_from_agent(agent.state) else {
        return Ok(None);
    };
    let error = (!agent.error.is_empty()).then_some(agent.error.as_str());
    let update = SandboxUpdate {
        state: new_state.as_str(),
        error: if new_state == SandboxState::Error {
            error
        } else {
            None
        },
        vcpus: Some(agent.vcpus as i32),
        memory_mb: Some(agent.memory_mb as i32),
        disk_mb: Some(agent.disk_mb as i32),
        boot_ms: (agent.boot_ms > 0).then_some(agent.boot_ms as i64),
        timeout_sec: Some(agent.timeout_sec as i32),
        auto_paused: Some(agent.auto_paused),
        started_from: started_from_agent(agent.start).map(StartedFrom::as_str),
    };
    Ok(db::sandboxes::sandbox_update(&state.pool, &agent.sandbox_id, &update).await?)
}

/// Runs a host call to completion in its own task, even if the request is abandoned.
pub async fn detached<T: Send + 'static>(
    state: &AppState,
    call: impl Future<Output = Result<T, tonic::Status>> + Send + 'static,
) -> ApiResult<T> {
    let timeout = state.config.agent_timeout;
    tokio::spawn(async move { tokio::time::timeout(timeout, call).await })
        .await
        .map_err(|error| ApiError::Internal(format!("host call task: {error}")))?
        .map_err(|_| ApiError::Unavailable("the host did not answer in time".into()))?
        .map_err(ApiError::from)
}

fn metadata_check(metadata: &BTreeMap<String, String>) -> ApiResult<serde_json::Value> {
    if metadata.len() > MAX_METADATA {
        return Err(ApiError::invalid(format!(
            "metadata: at most {MAX_METADATA} entries"
        )));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.len() > 64 || key.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!(
                "metadata: key {key:?} must be 1 to 64 bytes without control characters"
            )));
        }
        if value.len() > 1024 || value.contains('\0') {
            return Err(ApiError::invalid(format!(
                "metadata: the value of {key:?} must be at most 1024 bytes without NUL"
            )));
        }
    }
    Ok(json!(metadata))
}

fn env_check(env: &BTreeMap<String, String>) -> ApiResult<()> {
    if env.len() > MAX_ENV {
        return Err(ApiError::invalid(format!(
            "env: at most {MAX_ENV} variables"
        )));
    }
    for (key, value) in env {
        let valid_name = key.len() <= 256
            && key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(ApiError::invalid(format!(
                "env: {key:?} is not a variable name (letters, digits, '_'; not starting with a digit)"
            )));
        }
        if value.len() > 128 * 1024 || value.contains('\0') {
            return Err(ApiError::invalid(format!(
                "env: the value of {key} must be at most 128 KiB without NUL"
            )));
        }
    }
    Ok(())
}

fn range_check(field: &str, value: u32, min: u32, max: u32) -> ApiResult<u32> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "{field}: must be {min} to {max}, got {value}"
        )))
    }
}

pub async fn sandbox_create(
    state: &AppState,
    caller: &Caller,
    request: CreateSandboxRequest,
) -> ApiResult<Sandbox> {
    let template_name = request
        .template
        .clone()
        .unwrap_or_else(|| DEFAULT_TEMPLATE.into());
    let outcome = create(state, caller, &template_name, request).await;
    let id = outcome.as_ref().ok().map(|s| s.id.clone());
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", id.as_deref(), "create"),
        json!({"template": template_name}),
        outcome,
    )
    .await
}

async fn create(
    state: &AppState,
    caller: &Caller,
    template_name: &str,
    request: CreateSandboxRequest,
) -> ApiResult<Sandbox> {
    let template = db::templates::template_get_visible(&state.pool, &caller.team_id, template_name)
        .await?
        .ok_or_else(|| ApiError::not_found("template", template_name))?;
    let metadata = metadata_check(&request.metadata.clone().unwrap_or_default())?;
    let env = request.env.unwrap_or_default();
    env_check(&env)?;
    let (vcpus, memory_mb) = if template.snapshot {
        // The agent checks that explicit sizes match the template's.
        (request.vcpus.unwrap_or(0), request.memory_mb.unwrap_or(0))
    } else {
        (
            range_check(
                "vcpus",
                request.vcpus.unwrap_or(DEFAULT_VCPUS),
                1,
                MAX_VCPUS,
            )?,
            range_check(
                "memory_mb",
                request.memory_mb.unwrap_or(DEFAULT_MEMORY_MB),
                MIN_MEMORY_MB,
                MAX_MEMORY_MB,
            )?,
        )
    };
    let disk_mb = match request.disk_mb {
        Some(disk) => range_check("disk_mb", disk, 1, MAX_DISK_MB)?,
        None => 0,
    };
    let timeout_sec = range_check(
        "timeout_sec",
        request.timeout_sec.unwrap_or(0),
        0,
        MAX_TIMEOUT_SEC,
    )?;
    let internet = request.internet.unwrap_or(true);

    let host = state.scheduler.place(
        &state.hosts,
        Placement {
            vcpus,
            memory_mb,
            pinned_host: template.host_id.as_deref(),
        },
    )?;
    let id = ids::generate(IdKind::Sandbox);
    db::sandboxes::sandbox_create(
        &state.pool,
        &NewSandbox {
            id: &id,
            team_id: &caller.team_id,
            host_id: &host.id,
            template_id: &template.id,
            template: &template.name,
            vcpus: if template.snapshot {
                template.vcpus
            } else {
                vcpus as i32
            },
            memory_mb: if template.snapshot {
                template.memory_mb
            } else {
                memory_mb as i32
            },
            disk_mb: disk_mb as i32,
            timeout_sec: timeout_sec as i32,
            internet,
            metadata,
            created_by_user: caller.user_id(),
            created_by_api_key: caller.api_key_id(),
        },
    )
    .await?;

    let agent_request = pb::CreateSandboxRequest {
        sandbox_id: id.clone(),
        template: template.agent_name.clone(),
        vcpus,
        memory_mb,
        disk_mb,
        env: env.into_iter().collect(),
        metadata: request.metadata.unwrap_or_default().into_iter().collect(),
        internet: if internet {
            pb::InternetAccess::Allowed
        } else {
            pb::InternetAccess::Blocked
        } as i32,
        timeout_sec,
        cold_boot: false,
    };
    let mut client = host.client.clone();
    let created = detached(state, async move {
        client
            .create_sandbox(agent_request)
            .await
            .map(|r| r.into_inner())
    })
    .await;
    match created {
        Ok(agent) => {
            let row = apply_agent_view(state, &agent).await?;
            sandbox_row(state, caller, &id, row).await
        }
        Err(error) => {
            let mut update = SandboxUpdate::state(SandboxState::Error.as_str());
            let message = error.public_message();
            update.error = Some(&message);
            db::sandboxes::sandbox_update(&state.pool, &id, &update).await?;
            Err(error)
        }
    }
}

async fn sandbox_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    row: Option<SandboxRow>,
) -> ApiResult<Sandbox> {
    let row = match row {
        Some(row) => row,
        None => sandbox_load(state, caller, id).await?,
    };
    Ok(sandbox_view(&row))
}

/// The caller's team's sandbox; anyone else's is "not found".
pub async fn sandbox_load(state: &AppState, caller: &Caller, id: &str) -> ApiResult<SandboxRow> {
    if !ids::is_well_formed(IdKind::Sandbox, id) {
        return Err(ApiError::not_found("sandbox", id));
    }
    db::sandboxes::sandbox_get(&state.pool, &caller.team_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("sandbox", id))
}

pub async fn sandbox_get(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Sandbox> {
    Ok(sandbox_view(&sandbox_load(state, caller, id).await?))
}

/// A loaded sandbox and the host it lives on.
pub async fn sandbox_with_host(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<(SandboxRow, Host)> {
    let row = sandbox_load(state, caller, id).await?;
    let host_id = row
        .host_id
        .clone()
        .ok_or_else(|| ApiError::Conflict(format!("sandbox {id} is not placed on a host")))?;
    let host = state.hosts.get(&host_id)?.clone();
    Ok((row, host))
}

/// Refuses operations on sandboxes that are not in `expected`.
pub fn state_require(row: &SandboxRow, expected: &[SandboxState], doing: &str) -> ApiResult<()> {
    let current = SandboxState::parse(&row.state).unwrap_or(SandboxState::Error);
    if expected.contains(&current) {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "cannot {doing} sandbox {}: it is {}",
            row.id, row.state
        )))
    }
}

/// A running sandbox and its host, for exec, files and processes.
pub async fn sandbox_running(
    state: &AppState,
    caller: &Caller,
    id: &str,
    doing: &str,
) -> ApiResult<(SandboxRow, Host)> {
    let (row, host) = sandbox_with_host(state, caller, id).await?;
    state_require(&row, &[SandboxState::Running], doing)?;
    Ok((row, host))
}

pub struct ListQuery {
    pub states: Vec<String>,
    pub metadata: Vec<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub async fn sandbox_list(
    state: &AppState,
    caller: &Caller,
    query: ListQuery,
) -> ApiResult<SandboxList> {
    let limit = match query.limit {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "limit must be 1 to {MAX_PAGE}, got {n}"
            )))
        }
    };
    let mut filter = SandboxFilter::default();
    for value in query.states.iter().flat_map(|s| s.split(',')) {
        let parsed = SandboxState::parse(value.trim()).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state: unknown state {value:?} (pending, running, paused, stopped, error, missing)"
            ))
        })?;
        filter.states.push(parsed.as_str().to_owned());
    }
    for pair in &query.metadata {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            ApiError::BadRequest(format!("metadata: expected key=value, got {pair:?}"))
        })?;
        filter.metadata.insert(key.to_owned(), json!(value));
    }
    if let Some(cursor) = &query.cursor {
        filter.after = Some(cursor_decode(cursor)?);
    }
    let rows =
        db::sandboxes::sandbox_list(&state.pool, &caller.team_id, &filter, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    let next_cursor = match (more, rows.last()) {
        (true, Some(last)) => Some(cursor_encode(last.created_at, &last.id)),
        _ => None,
    };
    Ok(SandboxList {
        sandboxes: rows.iter().map(sandbox_view).collect(),
        next_cursor,
    })
}

fn cursor_encode(created_at: DateTime<Utc>, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}:{id}", created_at.timestamp_micros()))
}

fn cursor_decode(cursor: &str) -> ApiResult<(DateTime<Utc>, String)> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (micros, id) = text.split_once(':')?;
            let at = Utc.timestamp_micros(micros.parse().ok()?).single()?;
            ids::is_well_formed(IdKind::Sandbox, id).then(|| (at, id.to_owned()))
        })
        .ok_or_else(|| ApiError::BadRequest("cursor is not one this server issued".into()))
}

/// Destroys the VM (if any) and marks the sandbox stopped. Idempotent.
pub async fn sandbox_destroy(state: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    let row = sandbox_load(state, caller, id).await?;
    let outcome = destroy_row(state, &row).await;
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "destroy"),
        json!({}),
        outcome,
    )
    .await
}

pub async fn destroy_row(state: &AppState, row: &SandboxRow) -> ApiResult<()> {
    if row.state == SandboxState::Stopped.as_str() {
        return Ok(());
    }
    if let Some(host_id) = &row.host_id {
        let mut client = state.hosts.get(host_id)?.client.clone();
        let request = pb::DestroySandboxRequest {
            sandbox_id: row.id.clone(),
        };
        match detached(state, async move { client.destroy_sandbox(request).await }).await {
            Ok(_) | Err(ApiError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
    }
    db::sandboxes::sandbox_update(&state.pool, &row.id, &SandboxUpdate::state("stopped")).await?;
    Ok(())
}

/// The lifecycle actions that take a sandbox id and return the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Pause,
    Resume,
    Ping,
    /// Resume if paused, else ping.
    Connect,
}

impl Lifecycle {
    fn action(self) -> &'static str {
        match self {
            Lifecycle::Pause => "pause",
            Lifecycle::Resume => "resume",
            Lifecycle::Ping => "ping",
            Lifecycle::Connect => "connect",
        }
    }
}

pub async fn sandbox_lifecycle(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: Lifecycle,
) -> ApiResult<Sandbox> {
    let outcome = lifecycle(state, caller, id, action).await;
    if action == Lifecycle::Ping {
        // Pings are keep-alives, not changes: they would flood the log.
        return outcome;
    }
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), action.action()),
        json!({}),
        outcome,
    )
    .await
}

async fn lifecycle(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: Lifecycle,
) -> ApiResult<Sandbox> {
    let (row, host) = sandbox_with_host(state, caller, id).await?;
    let mut client = host.client.clone();
    let sandbox_id = id.to_owned();
    let action = match action {
        Lifecycle::Connect if row.state == SandboxState::Paused.as_str() => Lifecycle::Resume,
        Lifecycle::Connect => Lifecycle::Ping,
        other => other,
    };
    let agent = match action {
        Lifecycle::Pause => {
            state_require(&row, &[SandboxState::Running], "pause")?;
            detached(state, async move {
                client
                    .pause_sandbox(pb::PauseSandboxRequest { sandbox_id })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?
        }
        Lifecycle::Resume => {
            state_require(&row, &[SandboxState::Paused], "resume")?;
            detached(state, async move {
                client
                    .resume_sandbox(pb::ResumeSandboxRequest { sandbox_id })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?
        }
        Lifecycle::Ping | Lifecycle::Connect => {
            state_require(&row, &[SandboxState::Running], "ping")?;
            detached(state, async move {
                client
                    .ping_sandbox(pb::PingSandboxRequest { sandbox_id })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?
        }
    };
    let updated = apply_agent_view(state, &agent).await?;
    sandbox_row(state, caller, id, updated).await
}

pub async fn sandbox_timeout(
    state: &AppState,
    caller: &Caller,
    id: &str,
    timeout_sec: u32,
) -> ApiResult<Sandbox> {
    let outcome = async {
        let timeout_sec = range_check("timeout_sec", timeout_sec, 0, MAX_TIMEOUT_SEC)?;
        let (row, host) = sandbox_with_host(state, caller, id).await?;
        state_require(
            &row,
            &[SandboxState::Running, SandboxState::Paused],
            "set the timeout of",
        )?;
        let mut client = host.client.clone();
        let sandbox_id = id.to_owned();
        let agent = detached(state, async move {
            client
                .set_sandbox_timeout(pb::SetSandboxTimeoutRequest {
                    sandbox_id,
                    timeout_sec,
                })
                .await
                .map(|r| r.into_inner())
        })
        .await?;
        let updated = apply_agent_view(state, &agent).await?;
        sandbox_row(state, caller, id, updated).await
    }
    .await;
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "set_timeout"),
        json!({"timeout_sec": timeout_sec}),
        outcome,
    )
    .await
}

pub async fn sandbox_fork(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request: ForkSandboxRequest,
) -> ApiResult<Vec<Sandbox>> {
    let count = request.count.unwrap_or(1);
    let outcome = fork(state, caller, id, count, request.metadata).await;
    let forks: Vec<String> = outcome
        .as_ref()
        .map(|v| v.iter().map(|s| s.id.clone()).collect())
        .unwrap_or_default();
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "fork"),
        json!({"count": count, "forks": forks}),
        outcome,
    )
    .await
}

async fn fork(
    state: &AppState,
    caller: &Caller,
    id: &str,
    count: u32,
    metadata: Option<BTreeMap<String, String>>,
) -> ApiResult<Vec<Sandbox>> {
    let count = range_check("count", count, 1, MAX_FORKS)?;
    let metadata_json = match &metadata {
        Some(m) => Some(metadata_check(m)?),
        None => None,
    };
    let (row, host) = sandbox_running(state, caller, id, "fork").await?;
    let mut client = host.client.clone();
    let request = pb::ForkSandboxRequest {
        sandbox_id: id.to_owned(),
        count,
        metadata: metadata.unwrap_or_default().into_iter().collect(),
    };
    let forks = detached(state, async move {
        client.fork_sandbox(request).await.map(|r| r.into_inner())
    })
    .await?;
    let mut created = Vec::with_capacity(forks.sandboxes.len());
    for agent in forks.sandboxes {
        let new = db::sandboxes::sandbox_create(
            &state.pool,
            &NewSandbox {
                id: &agent.sandbox_id,
                team_id: &caller.team_id,
                host_id: &host.id,
                template_id: &row.template_id,
                template: &row.template,
                vcpus: agent.vcpus as i32,
                memory_mb: agent.memory_mb as i32,
                disk_mb: agent.disk_mb as i32,
                timeout_sec: agent.timeout_sec as i32,
                internet: row.internet,
                metadata: metadata_json
                    .clone()
                    .unwrap_or_else(|| row.metadata.clone()),
                created_by_user: caller.user_id(),
                created_by_api_key: caller.api_key_id(),
            },
        )
        .await?;
        let updated = apply_agent_view(state, &agent).await?.unwrap_or(new);
        created.push(sandbox_view(&updated));
    }
    Ok(created)
}

/// Epoch milliseconds as a UTC time (0 and garbage become the epoch).
pub fn time_from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_cursors_round_trip() {
        let at = Utc.timestamp_micros(1_700_000_000_123_456).unwrap();
        let cursor = cursor_encode(at, "sb-abc");
        assert_eq!(cursor_decode(&cursor).unwrap(), (at, "sb-abc".to_owned()));
        assert!(cursor_decode("x").is_err());
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1:sb-'; drop");
        assert!(cursor_decode(&forged).is_err());
    }

    #[test]
    fn env_names_are_checked() {
        let ok: BTreeMap<_, _> = [("PATH_2".to_owned(), "x".to_owned())].into();
        assert!(env_check(&ok).is_ok());
        for bad in ["", "2X", "A-B", "A B", "Ä"] {
            let env: BTreeMap<_, _> = [(bad.to_owned(), "x".to_owned())].into();
            assert!(env_check(&env).is_err(), "{bad}");
        }
    }

    #[test]
    fn agent_states_map_and_transitions_are_skipped() {
        assert_eq!(
            state_from_agent(pb::SandboxState::Running as i32),
            Some(SandboxState::Running)
        );
        assert_eq!(
            state_from_agent(pb::SandboxState::Stopped as i32),
            Some(SandboxState::Stopped)
        );
        assert_eq!(state_from_agent(pb::SandboxState::Pausing as i32), None);
        assert_eq!(state_from_agent(99), None);
    }
}
