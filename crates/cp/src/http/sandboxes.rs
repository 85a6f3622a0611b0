//! `/v1/sandboxes`: create, list, lifecycle, exec and snapshot. Streams, processes and files
//! live in their own modules.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{
    BackgroundProcess, CreateSandboxRequest, ErrorBody, ExecRequest, ExecResult,
    ForkSandboxRequest, ForkSandboxResponse, Sandbox, SandboxList, SetTimeoutRequest,
    SnapshotRequest, Template,
};

use crate::app::caller::Caller;
use crate::app::exec::{self, ExecOutcome};
use crate::app::sandbox::{self, Lifecycle, ListQuery};
use crate::app::template;
use crate::error::ApiResult;
use crate::http::extract::{ApiJson, ApiPath, QueryPairs};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sandbox_create, sandbox_list))
        .routes(routes!(sandbox_get, sandbox_destroy))
        .routes(routes!(sandbox_pause))
        .routes(routes!(sandbox_resume))
        .routes(routes!(sandbox_ping))
        .routes(routes!(sandbox_connect))
        .routes(routes!(sandbox_timeout))
        .routes(routes!(sandbox_fork))
        .routes(routes!(sandbox_snapshot))
        .routes(routes!(sandbox_exec))
}

/// Boots a sandbox from a template and returns it running (or a clear error).
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes", request_body = CreateSandboxRequest,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = Sandbox), (status = 404, body = ErrorBody, description = "No such template"),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody, description = "No host could run it")))]
async fn sandbox_create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateSandboxRequest>,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    let created = sandbox::sandbox_create(&state, &caller, request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The team's sandboxes, newest first. By default every state but `stopped`.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    params(
        ("state" = Option<Vec<String>>, Query, description = "Only these states (repeat or comma-separate)"),
        ("metadata" = Option<Vec<String>>, Query, description = "Only sandboxes with this `key=value` metadata (repeat for several)"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = SandboxList), (status = 400, body = ErrorBody)))]
async fn sandbox_list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<SandboxList>> {
    query.only(&["state", "metadata", "limit", "cursor"])?;
    let list = sandbox::sandbox_list(
        &state,
        &caller,
        ListQuery {
            states: query.all("state"),
            metadata: query.all_raw("metadata"),
            limit: query.int("limit")?,
            cursor: query.one("cursor").map(str::to_owned),
        },
    )
    .await?;
    Ok(Json(list))
}

/// One of the team's sandboxes, stopped ones included.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody)))]
async fn sandbox_get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(sandbox::sandbox_get(&state, &caller, &id).await?))
}

/// Destroys the sandbox's VM and everything in it. Idempotent.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn sandbox_destroy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    sandbox::sandbox_destroy(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn lifecycle(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: Lifecycle,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(
        sandbox::sandbox_lifecycle(state, caller, id, action).await?,
    ))
}

/// Stops the VM and saves it to disk; its CPU and memory are released.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes",
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn sandbox_pause(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Sandbox>> {
    lifecycle(&state, &caller, &id, Lifecycle::Pause).await
}

/// Restores a paused sandbox with its processes and memory intact.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes",
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn sandbox_resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Sandbox>> {
    lifecycle(&state, &caller, &id, Lifecycle::Resume).await
}

/// Counts as activity: postpones the idle auto-pause.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/ping", tag = "sandboxes",
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn sandbox_ping(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Sandbox>> {
    lifecycle(&state, &caller, &id, Lifecycle::Ping).await
}

/// Makes the sandbox ready to use: resumes it if paused, else postpones its auto-pause.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/connect", tag = "sandboxes",
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn sandbox_connect(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Sandbox>> {
    lifecycle(&state, &caller, &id, Lifecycle::Connect).await
}

/// Sets how long the sandbox may be idle before it is paused (0 = never).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes", request_body = SetTimeoutRequest,
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn sandbox_timeout(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<SetTimeoutRequest>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(
        sandbox::sandbox_timeout(&state, &caller, &id, request.timeout_sec).await?,
    ))
}

/// Copies a running sandbox into `count` independent new sandboxes.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/fork", tag = "sandboxes", request_body = ForkSandboxRequest,
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = ForkSandboxResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn sandbox_fork(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ForkSandboxRequest>,
) -> ApiResult<(StatusCode, Json<ForkSandboxResponse>)> {
    let sandboxes = sandbox::sandbox_fork(&state, &caller, &id, request).await?;
    Ok((StatusCode::CREATED, Json(ForkSandboxResponse { sandboxes })))
}

/// Freezes the sandbox (running ones keep running after a brief pause) into a team template.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/snapshot", tag = "templates", request_body = SnapshotRequest,
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = Template), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn sandbox_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<SnapshotRequest>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    let created = template::sandbox_snapshot(&state, &caller, &id, &request.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Runs a command to completion and returns its output; with `background`, starts it and
/// returns its pid at once (202).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "exec", request_body = ExecRequest,
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = ExecResult), (status = 202, body = BackgroundProcess),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn sandbox_exec(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    Ok(
        match exec::sandbox_exec(&state, &caller, &id, request).await? {
            ExecOutcome::Finished(result) => Json(result).into_response(),
            ExecOutcome::Started(started) => (StatusCode::ACCEPTED, Json(started)).into_response(),
        },
    )
}
