//! Sign-up, login, team switching and the caller's own account (`/v1/auth/*`, `/v1/me*`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{
    ChangePasswordRequest, ErrorBody, LoginRequest, Session, SignupRequest, SwitchTeamRequest,
    UpdateMeRequest, User,
};

use crate::app::caller::Caller;
use crate::app::user;
use crate::error::ApiResult;
use crate::http::extract::ApiJson;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(switch_team))
        .routes(routes!(me_get, me_update))
        .routes(routes!(me_password))
}

/// Creates an account and its personal team; returns a session. The first account of an
/// installation is a platform administrator.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, body = Session), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn signup(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<SignupRequest>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    let session = user::signup(
        &state.pool,
        &state.sessions,
        state.config.open_signup,
        request,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// Exchanges email and password for a session in the person's default team.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Session), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> ApiResult<Json<Session>> {
    Ok(Json(
        user::login(&state.pool, &state.sessions, request).await?,
    ))
}

/// A new session in another of the caller's teams.
#[utoipa::path(post, path = "/v1/auth/switch-team", tag = "auth", request_body = SwitchTeamRequest,
    security(("bearer" = [])),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)))]
async fn switch_team(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<SwitchTeamRequest>,
) -> ApiResult<Json<Session>> {
    Ok(Json(
        user::switch_team(&state.pool, &state.sessions, &caller, &request.team_id).await?,
    ))
}

/// The signed-in person's account.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = ErrorBody)))]
async fn me_get(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<User>> {
    Ok(Json(user::me_get(&state.pool, &caller).await?))
}

/// Changes the signed-in person's name or email.
#[utoipa::path(patch, path = "/v1/me", tag = "me", request_body = UpdateMeRequest,
    security(("bearer" = [])),
    responses((status = 200, body = User), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn me_update(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<UpdateMeRequest>,
) -> ApiResult<Json<User>> {
    Ok(Json(user::me_update(&state.pool, &caller, request).await?))
}

/// Changes the password; the current one is required (OAuth-only accounts set a first one).
#[utoipa::path(post, path = "/v1/me/password", tag = "me", request_body = ChangePasswordRequest,
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn me_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    user::me_password(&state.pool, &caller, request).await?;
    Ok(StatusCode::NO_CONTENT)
}
