//! Templates: the platform's base images and each team's snapshots. Team templates get a
//! collision-free name on the host (`tpl-…`) so two teams may both call theirs `py`.

use serde_json::json;
use wrenn_agent_api::v1 as pb;
use wrenn_api::{SandboxState, Template, TemplateList};

use crate::app::audit::{self, Target};
use crate::app::caller::Caller;
use crate::app::sandbox::{detached, sandbox_with_host, state_require};
use crate::db;
use crate::db::templates::{NewTemplate, TemplateRow};
use crate::error::{ApiError, ApiResult};
use crate::ids::{self, IdKind};
use crate::state::AppState;

/// Templates every installation has from its first start.
pub const PLATFORM_TEMPLATES: &[&str] = &["minimal"];
const MAX_NAME_LEN: usize = 64;

pub fn template_view(row: &TemplateRow) -> Template {
    Template {
        name: row.name.clone(),
        team_id: row.team_id.clone(),
        snapshot: row.snapshot,
        vcpus: row.vcpus as u32,
        memory_mb: row.memory_mb as u32,
        disk_mb: row.disk_mb as u32,
        source_sandbox_id: row.source_sandbox_id.clone(),
        created_at: row.created_at,
    }
}

/// 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit (so never `..`).
pub fn name_check(name: &str) -> ApiResult<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "name: {name:?} must be 1 to {MAX_NAME_LEN} of a-z, 0-9, '-', '_', '.', starting with a letter or digit"
        )))
    }
}

pub async fn template_list(state: &AppState, caller: &Caller) -> ApiResult<TemplateList> {
    let rows = db::templates::template_list_visible(&state.pool, &caller.team_id).await?;
    Ok(TemplateList {
        templates: rows.iter().map(template_view).collect(),
    })
}

async fn load(state: &AppState, caller: &Caller, name: &str) -> ApiResult<TemplateRow> {
    if name_check(name).is_err() {
        return Err(ApiError::not_found("template", name));
    }
    db::templates::template_get_visible(&state.pool, &caller.team_id, name)
        .await?
        .ok_or_else(|| ApiError::not_found("template", name))
}

pub async fn template_get(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Template> {
    Ok(template_view(&load(state, caller, name).await?))
}

/// Deletes a template no live sandbox uses. Platform templates: platform admins only.
pub async fn template_delete(state: &AppState, caller: &Caller, name: &str) -> ApiResult<()> {
    let outcome = async {
        let row = load(state, caller, name).await?;
        if row.team_id.is_none() {
            caller.require_platform_admin()?;
        }
        let mut tx = state.pool.begin().await?;
        db::templates::template_lock(&mut *tx, &row.id).await?;
        let users = db::templates::template_users(&mut *tx, &row.id).await?;
        if users > 0 {
            return Err(ApiError::Conflict(format!(
                "template {name} is used by {users} sandbox(es); destroy them first"
            )));
        }
        if let Some(host_id) = &row.host_id {
            let mut client = state.hosts.get(host_id)?.client.clone();
            match client
                .delete_template(pb::DeleteTemplateRequest {
                    name: row.agent_name.clone(),
                })
                .await
            {
                Ok(_) => {}
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => return Err(status.into()),
            }
        }
        db::templates::template_delete(&mut *tx, &row.id).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    audit::record(
        &state.pool,
        caller,
        Target::new("template", Some(name), "delete"),
        json!({}),
        outcome,
    )
    .await
}

/// Freezes a running or paused sandbox into a new team template.
pub async fn sandbox_snapshot(
    state: &AppState,
    caller: &Caller,
    sandbox_id: &str,
    name: &str,
) -> ApiResult<Template> {
    let outcome = snapshot(state, caller, sandbox_id, name).await;
    audit::record(
        &state.pool,
        caller,
        Target::new("template", Some(name), "create"),
        json!({"sandbox_id": sandbox_id}),
        outcome,
    )
    .await
}

async fn snapshot(
    state: &AppState,
    caller: &Caller,
    sandbox_id: &str,
    name: &str,
) -> ApiResult<Template> {
    name_check(name)?;
    let (row, host) = sandbox_with_host(state, caller, sandbox_id).await?;
    state_require(
        &row,
        &[SandboxState::Running, SandboxState::Paused],
        "snapshot",
    )?;
    if db::templates::template_get_visible(&state.pool, &caller.team_id, name)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "a template named {name} already exists"
        )));
    }
    let id = ids::generate(IdKind::Template);
    let agent_name = id.clone();
    // The row reserves the name before the host does the work; it is withdrawn on failure.
    let reserved = db::templates::template_create(
        &state.pool,
        &NewTemplate {
            id: &id,
            team_id: Some(&caller.team_id),
            name,
            agent_name: &agent_name,
            host_id: Some(&host.id),
            snapshot: true,
            vcpus: row.vcpus,
            memory_mb: row.memory_mb,
            disk_mb: row.disk_mb,
            source_sandbox_id: Some(sandbox_id),
            created_by: Some(caller.actor_id()),
        },
    )
    .await
    .map_err(|error| {
        if db::is_unique_violation(&error) {
            ApiError::Conflict(format!("a template named {name} already exists"))
        } else {
            error.into()
        }
    })?;
    let mut client = host.client.clone();
    let request = pb::SnapshotSandboxRequest {
        sandbox_id: sandbox_id.to_owned(),
        template_name: agent_name,
    };
    let result = detached(state, async move {
        client
            .snapshot_sandbox(request)
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let agent = match result {
        Ok(agent) => agent,
        Err(error) => {
            db::templates::template_delete(&state.pool, &id).await?;
            return Err(error);
        }
    };
    let updated = db::templates::template_set_sizes(
        &state.pool,
        &id,
        agent.vcpus as i32,
        agent.memory_mb as i32,
        agent.disk_mb as i32,
    )
    .await?
    .unwrap_or(reserved);
    Ok(template_view(&updated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names_are_checked() {
        for good in ["py", "my-env_2.1", "0x"] {
            assert!(name_check(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "../etc",
            "Py",
            "é",
            &"a".repeat(65),
        ] {
            assert!(name_check(bad).is_err(), "{bad}");
        }
    }
}
