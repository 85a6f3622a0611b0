//! `/v1/api-keys`: the team's API keys.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{ApiKeyList, CreateApiKeyRequest, CreatedApiKey, ErrorBody};

use crate::app::api_key;
use crate::app::caller::Caller;
use crate::error::ApiResult;
use crate::http::extract::{ApiJson, ApiPath};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(api_key_create, api_key_list))
        .routes(routes!(api_key_delete))
}

/// Creates a key for the caller's current team. The response is the only time the key is shown.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKeyRequest,
    security(("bearer" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn api_key_create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let created = api_key::api_key_create(&state.pool, &caller, request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The team's API keys (never the keys themselves: prefix, creator, last use).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, body = ApiKeyList), (status = 401, body = ErrorBody)))]
async fn api_key_list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ApiKeyList>> {
    Ok(Json(api_key::api_key_list(&state.pool, &caller).await?))
}

/// Members delete their own keys; admins and owners any of the team's.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "API key id (`key-…`)")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn api_key_delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    api_key::api_key_delete(&state.pool, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
