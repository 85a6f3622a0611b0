//! `/v1/auth/oauth/github*`: logging in with GitHub. Both routes answer 404 when GitHub login
//! is not configured.

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, COOKIE, LOCATION, REFERRER_POLICY, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_api::{ErrorBody, Session};

use crate::app::oauth::{self, Callback, STATE_COOKIE, STATE_TTL};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::QueryPairs;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(github_start))
        .routes(routes!(github_callback))
}

/// The state cookie: sent back only to these routes, never readable by scripts.
fn state_cookie(value: &str, max_age_secs: u64, public_url: &str) -> ApiResult<HeaderValue> {
    let secure = if public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let path = cookie_path(public_url);
    let cookie = format!(
        "{STATE_COOKIE}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"
    );
    HeaderValue::from_str(&cookie)
        .map_err(|error| ApiError::Internal(format!("state cookie: {error}")))
}

/// The routes' path as browsers see it: below the public URL's own path when the API is
/// served under a prefix (`https://example.com/wrenn`).
fn cookie_path(public_url: &str) -> String {
    let prefix = url::Url::parse(public_url)
        .map(|url| url.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let plain = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~%".contains(&b));
    let prefix = if plain { prefix.as_str() } else { "" };
    format!("{prefix}/v1/auth/oauth/github")
}

/// The state cookie's value among the request's cookies.
fn state_cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == STATE_COOKIE)
        .map(|(_, value)| value)
}

fn header_value(text: &str) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(text)
        .map_err(|error| ApiError::Internal(format!("header value: {error}")))
}

/// Sends the browser to GitHub to approve the login. With `redirect`, the callback sends the
/// browser on to that path of this site with the session token in the fragment
/// (`/path#token=…`); without, the callback answers with the session as JSON.
#[utoipa::path(get, path = "/v1/auth/oauth/github", tag = "auth",
    params(("redirect" = Option<String>, Query, description = "Path on this site to go to after login, e.g. `/dashboard`")),
    responses((status = 302, description = "To GitHub's authorization page",
            headers(("Location" = String), ("Set-Cookie" = String, description = "Binds the login to this browser"))),
        (status = 404, body = ErrorBody, description = "GitHub login is not enabled"),
        (status = 422, body = ErrorBody, description = "`redirect` is not a path on this site"),
        (status = 429, body = ErrorBody, description = "Too many logins are in progress")))]
async fn github_start(State(state): State<AppState>, query: QueryPairs) -> ApiResult<Response> {
    query.only(&["redirect"])?;
    let started = oauth::github_start(&state, query.one("redirect")).await?;
    let cookie = state_cookie(
        &started.state,
        STATE_TTL.as_secs(),
        &state.config.public_url,
    )?;
    Ok((
        StatusCode::FOUND,
        [
            (LOCATION, header_value(&started.authorize_url)?),
            (SET_COOKIE, cookie),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

/// Where GitHub sends the browser back. Consumes the login's state (once), trades the code
/// for a GitHub token, then finds the Wrenn user by GitHub account, links one by verified
/// email, or creates one with a team of their own.
#[utoipa::path(get, path = "/v1/auth/oauth/github/callback", tag = "auth",
    params(
        ("code" = Option<String>, Query, description = "From GitHub"),
        ("state" = Option<String>, Query, description = "From GitHub: the state the login started with"),
        ("error" = Option<String>, Query, description = "From GitHub, instead of `code`, when the login was declined"),
    ),
    responses((status = 200, body = Session, description = "Logged in (the login had no `redirect`)"),
        (status = 302, description = "Logged in: on to the login's `redirect` with `#token=<session token>`",
            headers(("Location" = String))),
        (status = 400, body = ErrorBody, description = "Unknown, expired or reused state; declined login"),
        (status = 404, body = ErrorBody, description = "GitHub login is not enabled"),
        (status = 503, body = ErrorBody, description = "GitHub could not be reached or failed")))]
async fn github_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> ApiResult<Response> {
    let done = oauth::github_callback(
        &state,
        Callback {
            code: query.one("code"),
            state: query.one("state"),
            error: query.one("error"),
            cookie_state: state_cookie_value(&headers),
        },
    )
    .await?;
    let clear = state_cookie("", 0, &state.config.public_url)?;
    let no_store = HeaderValue::from_static("no-store");
    let response = match done.redirect {
        Some(redirect) => (
            StatusCode::FOUND,
            [
                (
                    LOCATION,
                    header_value(&format!("{redirect}#token={}", done.session.token))?,
                ),
                (SET_COOKIE, clear),
                (CACHE_CONTROL, no_store),
                (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            ],
        )
            .into_response(),
        None => (
            StatusCode::OK,
            [(SET_COOKIE, clear), (CACHE_CONTROL, no_store)],
            Json(done.session),
        )
            .into_response(),
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; wrenn_oauth_state=xyz; b=2"),
        );
        assert_eq!(state_cookie_value(&headers), Some("xyz"));
        assert_eq!(state_cookie_value(&HeaderMap::new()), None);
        let cookie = state_cookie("xyz", 600, "https://wrenn.example").unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("Secure")
                && cookie.contains("Max-Age=600"),
            "{cookie}"
        );
        assert!(cookie.contains("; Path=/v1/auth/oauth/github;"), "{cookie}");
        assert_eq!(
            cookie_path("https://example.com/wrenn/"),
            "/wrenn/v1/auth/oauth/github"
        );
        assert_eq!(
            cookie_path("http://127.0.0.1:7200"),
            "/v1/auth/oauth/github"
        );
        assert_eq!(
            cookie_path("https://example.com/a;b"),
            "/v1/auth/oauth/github"
        );
    }
}
