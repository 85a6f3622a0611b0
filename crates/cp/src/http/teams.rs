//! `/v1/teams`: teams, members and roles; `/v1/users/search` to find people to add. Every
//! route needs a person's session; API keys get 403.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{
    AddMemberRequest, CreateTeamRequest, ErrorBody, Member, MemberList, Team, TeamList,
    UpdateMemberRequest, UpdateTeamRequest, UserSearchResult,
};

use crate::app::caller::Caller;
use crate::app::team;
use crate::error::ApiResult;
use crate::http::extract::{ApiJson, ApiPath, QueryPairs};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(team_list, team_create))
        .routes(routes!(team_get, team_update, team_delete))
        .routes(routes!(member_list, member_add))
        .routes(routes!(member_update, member_remove))
        .routes(routes!(member_leave))
        .routes(routes!(user_search))
}

/// The caller's teams, with their role in each.
#[utoipa::path(get, path = "/v1/teams", tag = "teams", security(("bearer" = [])),
    responses((status = 200, body = TeamList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn team_list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<TeamList>> {
    Ok(Json(team::team_list(&state.pool, &caller).await?))
}

/// Creates a team; the caller becomes its owner.
#[utoipa::path(post, path = "/v1/teams", tag = "teams", request_body = CreateTeamRequest,
    security(("bearer" = [])),
    responses((status = 201, body = Team), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn team_create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateTeamRequest>,
) -> ApiResult<(StatusCode, Json<Team>)> {
    let created = team::team_create(&state.pool, &caller, request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A team the caller belongs to, with their role in it.
#[utoipa::path(get, path = "/v1/teams/{id}", tag = "teams",
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    security(("bearer" = [])),
    responses((status = 200, body = Team), (status = 404, body = ErrorBody, description = "No such team, or not the caller's")))]
async fn team_get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Team>> {
    Ok(Json(team::team_get(&state.pool, &caller, &id).await?))
}

/// Renames a team (admins and owners).
#[utoipa::path(patch, path = "/v1/teams/{id}", tag = "teams", request_body = UpdateTeamRequest,
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    security(("bearer" = [])),
    responses((status = 200, body = Team), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn team_update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateTeamRequest>,
) -> ApiResult<Json<Team>> {
    Ok(Json(
        team::team_update(&state.pool, &caller, &id, request).await?,
    ))
}

/// Deletes a team (owners only): its sandboxes are destroyed, its API keys and sessions stop
/// working.
#[utoipa::path(delete, path = "/v1/teams/{id}", tag = "teams",
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn team_delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    team::team_delete(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The team's members and their roles (any member may look).
#[utoipa::path(get, path = "/v1/teams/{id}/members", tag = "teams",
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    security(("bearer" = [])),
    responses((status = 200, body = MemberList), (status = 404, body = ErrorBody)))]
async fn member_list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<MemberList>> {
    Ok(Json(team::member_list(&state.pool, &caller, &id).await?))
}

/// Adds an existing user by id or email (admins and owners; only owners add owners).
#[utoipa::path(post, path = "/v1/teams/{id}/members", tag = "teams", request_body = AddMemberRequest,
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    security(("bearer" = [])),
    responses((status = 201, body = Member), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such team or user"),
        (status = 409, body = ErrorBody, description = "Already a member"), (status = 422, body = ErrorBody)))]
async fn member_add(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<AddMemberRequest>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    let member = team::member_add(&state.pool, &caller, &id, request).await?;
    Ok((StatusCode::CREATED, Json(member)))
}

/// Changes a member's role. Admins manage members and admins; owners anyone. The last owner
/// cannot be demoted.
#[utoipa::path(patch, path = "/v1/teams/{id}/members/{user_id}", tag = "teams", request_body = UpdateMemberRequest,
    params(("id" = String, Path, description = "Team id (`team-…`)"), ("user_id" = String, Path, description = "User id (`usr-…`)")),
    security(("bearer" = [])),
    responses((status = 200, body = Member), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The last owner")))]
async fn member_update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, user_id)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<UpdateMemberRequest>,
) -> ApiResult<Json<Member>> {
    Ok(Json(
        team::member_update(&state.pool, &caller, &id, &user_id, request).await?,
    ))
}

/// Removes a member and the API keys they created for the team. Admins remove members and
/// admins, owners anyone but the last owner; anyone may remove themselves.
#[utoipa::path(delete, path = "/v1/teams/{id}/members/{user_id}", tag = "teams",
    params(("id" = String, Path, description = "Team id (`team-…`)"), ("user_id" = String, Path, description = "User id (`usr-…`)")),
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The last owner")))]
async fn member_remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, user_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    team::member_remove(&state.pool, &caller, &id, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller leaves the team (their API keys for it are deleted). The last owner cannot.
#[utoipa::path(post, path = "/v1/teams/{id}/leave", tag = "teams",
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The last owner")))]
async fn member_leave(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    team::member_leave(&state.pool, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// People whose email contains the given text (at least 3 characters; at most 20 results),
/// to add to a team.
#[utoipa::path(get, path = "/v1/users/search", tag = "teams",
    params(("email" = String, Query, description = "Part of an email address, at least 3 characters")),
    security(("bearer" = [])),
    responses((status = 200, body = UserSearchResult), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn user_search(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> ApiResult<Json<UserSearchResult>> {
    query.only(&["email"])?;
    Ok(Json(
        team::user_search(&state.pool, &caller, query.one("email")).await?,
    ))
}
