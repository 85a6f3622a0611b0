//! `GET /v1/audit-logs`: the team's audit log.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{AuditLogList, ErrorBody};

use crate::app::audit;
use crate::app::caller::Caller;
use crate::db::audit::AuditFilter;
use crate::error::ApiResult;
use crate::http::extract::QueryPairs;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_log_list))
}

/// Newest first. Every filter may repeat (or be comma-separated) and matches any of its values.
#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit",
    params(
        ("actor_type" = Option<Vec<String>>, Query, description = "`user`, `api_key`, `system`"),
        ("actor_id" = Option<Vec<String>>, Query),
        ("resource_type" = Option<Vec<String>>, Query, description = "e.g. `sandbox`, `template`, `api_key`"),
        ("resource_id" = Option<Vec<String>>, Query),
        ("action" = Option<Vec<String>>, Query, description = "e.g. `create`, `destroy`, `pause`"),
        ("status" = Option<Vec<String>>, Query, description = "`success` or `failure`"),
        ("limit" = Option<i64>, Query, description = "1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = AuditLogList), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn audit_log_list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<AuditLogList>> {
    query.only(&[
        "actor_type",
        "actor_id",
        "resource_type",
        "resource_id",
        "action",
        "status",
        "limit",
        "cursor",
    ])?;
    let filter = AuditFilter {
        actor_types: query.all("actor_type"),
        actor_ids: query.all("actor_id"),
        resource_types: query.all("resource_type"),
        resource_ids: query.all("resource_id"),
        actions: query.all("action"),
        statuses: query.all("status"),
        before_id: None,
    };
    let list = audit::audit_list(
        &state.pool,
        &caller,
        filter,
        query.int("limit")?,
        query.one("cursor"),
    )
    .await?;
    Ok(Json(list))
}
