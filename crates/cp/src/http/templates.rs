//! `/v1/templates`: the team's and the platform's templates.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{ErrorBody, Template, TemplateList};

use crate::app::caller::Caller;
use crate::app::template;
use crate::error::ApiResult;
use crate::http::extract::ApiPath;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(template_list))
        .routes(routes!(template_get, template_delete))
}

/// The platform's templates and the team's own.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = TemplateList), (status = 401, body = ErrorBody)))]
async fn template_list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<TemplateList>> {
    Ok(Json(template::template_list(&state, &caller).await?))
}

/// A template the team can use: its own, else the platform's of that name.
#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Template), (status = 404, body = ErrorBody)))]
async fn template_get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Template>> {
    Ok(Json(template::template_get(&state, &caller, &name).await?))
}

/// Deletes a team template (platform templates: platform admins only). A template that live
/// sandboxes use is refused with 409.
#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn template_delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    template::template_delete(&state, &caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
