//! `/v1/sandboxes/{id}/metrics`: CPU, memory and disk use over a time range.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{ErrorBody, SandboxMetrics};

use crate::app::caller::Caller;
use crate::app::metrics::{self, DEFAULT_RANGE};
use crate::error::ApiResult;
use crate::http::extract::{ApiPath, QueryPairs};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sandbox_metrics))
}

/// Resource use over the last `range`: live from the host while the sandbox runs (500 ms
/// samples up to 10 minutes, 30 s averages up to 2 hours, 5 min averages beyond), else the
/// samples stored when it paused or stopped.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/metrics", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("range" = Option<String>, Query, description = "`5m` (the default), `1h`, `6h` or `24h`")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = SandboxMetrics), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn sandbox_metrics(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
) -> ApiResult<Json<SandboxMetrics>> {
    query.only(&["range"])?;
    let range_sec = metrics::range_parse(query.one("range").unwrap_or(DEFAULT_RANGE))?;
    Ok(Json(
        metrics::sandbox_metrics(&state, &caller, &id, range_sec).await?,
    ))
}
