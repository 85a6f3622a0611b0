//! `/v1/sandboxes/{id}/processes`: list and signal processes. Their WebSockets (exec streams,
//! terminals, re-attaching) live in `streams.rs`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{ErrorBody, ProcessList};

use crate::app::caller::Caller;
use crate::app::process::{self, Selector, SIGKILL};
use crate::error::ApiResult;
use crate::http::extract::{ApiPath, QueryPairs};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(process_list))
        .routes(routes!(process_kill))
}

/// Processes started in the sandbox (by exec, streams and terminals): the running ones, then
/// the most recently exited.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = ProcessList), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn process_list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<Json<ProcessList>> {
    query.only(&[])?;
    Ok(Json(process::process_list(&state, &caller, &id).await?))
}

/// Sends a signal (SIGKILL unless told otherwise) to a process and its process group.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/processes/{selector}", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("selector" = String, Path, description = "A pid (all digits) or a tag"),
        ("signal" = Option<String>, Query, description = "A number or a name: KILL (the default), TERM, INT, HUP, QUIT, USR1, USR2, with or without `SIG`")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The sandbox is not running, or the process has exited")))]
async fn process_kill(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, selector)): ApiPath<(String, String)>,
    query: QueryPairs,
) -> ApiResult<StatusCode> {
    query.only(&["signal"])?;
    let selector = Selector::parse(&selector)?;
    let signal = query
        .one("signal")
        .map(process::signal_parse)
        .transpose()?
        .unwrap_or(SIGKILL);
    process::process_kill(&state, &caller, &id, &selector, signal).await?;
    Ok(StatusCode::NO_CONTENT)
}
