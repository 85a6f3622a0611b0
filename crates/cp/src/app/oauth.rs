//! Logging in with GitHub (the OAuth 2.0 web flow). A login starts with a random `state`
//! stored in the database, so any control-plane replica can finish it; the callback consumes
//! the state once, trades the code for a token, reads the GitHub profile and finds, links or
//! creates the Wrenn user.

use std::time::Duration;

use reqwest::header::{ACCEPT, USER_AGENT};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use wrenn_api::Session;

use crate::app::audit::{self, Target};
use crate::app::auth;
use crate::app::user::{self, email_check, name_check};
use crate::config::GithubOAuth;
use crate::db;
use crate::db::users::UserRow;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How long a started login may take to come back.
pub const STATE_TTL: Duration = Duration::from_secs(600);
/// Cookie tying a browser login's callback to the browser that started it.
pub const STATE_COOKIE: &str = "wrenn_oauth_state";
/// Where GitHub sends the browser back, below the public URL.
pub const CALLBACK_PATH: &str = "/v1/auth/oauth/github/callback";
const STATE_LEN: usize = 32;
const MAX_STATE_LEN: usize = 128;
const MAX_REDIRECT_LEN: usize = 2048;
/// Time each call to GitHub may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);
/// GitHub refuses API calls without a User-Agent.
const CLIENT_NAME: &str = concat!("wrenn-cp/", env!("CARGO_PKG_VERSION"));

fn github(state: &AppState) -> ApiResult<&GithubOAuth> {
    state
        .config
        .github
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("GitHub login is not enabled".into()))
}

pub fn callback_url(public_url: &str) -> String {
    format!("{}{CALLBACK_PATH}", public_url.trim_end_matches('/'))
}

/// A path on this site to send the browser to after login: starts with exactly one `/` (so
/// never `//host` or `/\host`, which browsers read as another site) and holds only visible
/// ASCII without `\` or `#` (browsers drop tabs and newlines, which would reopen that hole;
/// the fragment is where the token goes).
pub fn redirect_check(redirect: &str) -> ApiResult<()> {
    let same_site = redirect.starts_with('/')
        && !redirect.starts_with("//")
        && redirect.len() <= MAX_REDIRECT_LEN
        && redirect
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'#');
    if same_site {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "redirect: must be a path on this site starting with a single \"/\", e.g. /dashboard, \
             without \"#\", \"\\\" or spaces",
        ))
    }
}

fn authorize_url(github: &GithubOAuth, redirect_uri: &str, state: &str) -> String {
    let encode =
        |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let separator = if github.authorize_url.contains('?') {
        '&'
    } else {
        '?'
    };
    format!(
        "{}{separator}client_id={}&redirect_uri={}&state={}&scope=read:user%20user:email",
        github.authorize_url,
        encode(&github.client_id),
        encode(redirect_uri),
        encode(state),
    )
}

/// A started login: where to send the browser, and the state to bind to it.
#[derive(Debug)]
pub struct LoginStart {
    pub authorize_url: String,
    pub state: String,
}

pub async fn github_start(state: &AppState, redirect: Option<&str>) -> ApiResult<LoginStart> {
    let github = github(state)?;
    if let Some(redirect) = redirect {
        redirect_check(redirect)?;
    }
    // Starting a login needs no account and stores a row for ten minutes: a cap keeps a
    // flood of starts from growing the table without bound.
    let pending = db::oauth::oauth_states_pending(&state.pool).await?;
    if pending >= i64::from(state.config.oauth_pending_limit) {
        return Err(ApiError::TooManyRequests(
            "too many logins are in progress; try again in a few minutes".into(),
        ));
    }
    let value = auth::random_string(STATE_LEN);
    db::oauth::oauth_state_create(&state.pool, &value, redirect, STATE_TTL).await?;
    Ok(LoginStart {
        authorize_url: authorize_url(github, &callback_url(&state.config.public_url), &value),
        state: value,
    })
}

/// What the callback request carried.
#[derive(Debug, Default)]
pub struct Callback<'a> {
    pub code: Option<&'a str>,
    pub state: Option<&'a str>,
    /// Set by GitHub instead of `code` when the person declined or something failed.
    pub error: Option<&'a str>,
    /// The state cookie the browser sent, if any.
    pub cookie_state: Option<&'a str>,
}

/// A finished login: the session, and where the browser goes with it (if the login asked).
#[derive(Debug)]
pub struct LoginDone {
    pub session: Session,
    pub redirect: Option<String>,
}

fn state_refused() -> ApiError {
    ApiError::BadRequest(
        "the login state is unknown, expired or already used; start the login again".into(),
    )
}

pub async fn github_callback(state: &AppState, callback: Callback<'_>) -> ApiResult<LoginDone> {
    let github = github(state)?;
    let state_value = callback.state.filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::BadRequest("state is missing; start the login at /v1/auth/oauth/github".into())
    })?;
    if state_value.len() > MAX_STATE_LEN {
        return Err(state_refused());
    }
    let remembered = db::oauth::oauth_state_take(&state.pool, state_value)
        .await?
        .ok_or_else(state_refused)?;
    if let Some(error) = callback.error {
        // GitHub's codes are short snake_case words; anything else is not echoed back.
        let error =
            if error.len() <= 64 && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                error
            } else {
                "unknown"
            };
        return Err(ApiError::BadRequest(format!(
            "GitHub login was not completed ({error}); start the login again"
        )));
    }
    let code = callback
        .code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::BadRequest("code is missing".into()))?;
    // A login that ends by handing its token to a page must end in the browser that started
    // it, or someone could send a victim a callback link for the sender's own GitHub account
    // and have the victim work in it unknowingly. A JSON answer installs nothing anywhere.
    if remembered.redirect.is_some() && callback.cookie_state != Some(state_value) {
        return Err(ApiError::BadRequest(
            "this login was started in another browser; start it again here".into(),
        ));
    }
    let provider = Provider {
        http: &state.http,
        github,
    };
    let token = provider
        .token(code, &callback_url(&state.config.public_url))
        .await
        .map_err(|error| provider_failure("exchange the login code for a token", error))?;
    let profile: GithubUser = provider
        .api_get("/user", &token)
        .await
        .map_err(|error| provider_failure("read the GitHub profile", error))?;
    let user = user_for_github(state, &provider, &token, &profile).await?;
    let session = user::session_for_user(&state.pool, &state.sessions, &user).await?;
    audit::record_user(
        &state.pool,
        Some(&session.team_id),
        Some(&user.id),
        Target::new("session", None, "login"),
        "success",
        json!({"provider": "github", "github_login": profile.login}),
    )
    .await;
    Ok(LoginDone {
        session,
        redirect: remembered.redirect,
    })
}

/// The Wrenn user for a GitHub account: the one linked to it, else the one with its verified
/// email (linked now), else a new one with a team of their own.
async fn user_for_github(
    state: &AppState,
    provider: &Provider<'_>,
    token: &str,
    profile: &GithubUser,
) -> ApiResult<UserRow> {
    let pool = &state.pool;
    if let Some(user) = db::users::user_get_by_github(pool, profile.id).await? {
        return Ok(user);
    }
    let email = match profile
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        // GitHub shows only a verified address as a profile's public email.
        Some(email) => email.to_owned(),
        None => {
            let emails: Vec<GithubEmail> = provider
                .api_get("/user/emails", token)
                .await
                .map_err(|error| provider_failure("read the GitHub email addresses", error))?;
            primary_verified(emails).ok_or_else(|| {
                ApiError::Forbidden(
                    "the GitHub account has no verified primary email address; verify one on \
                     GitHub and log in again"
                        .into(),
                )
            })?
        }
    };
    let email = email_check(&email).map_err(|_| {
        tracing::warn!(
            github_id = profile.id,
            "GitHub returned an unusable email address"
        );
        ApiError::Unavailable("GitHub returned an email address Wrenn cannot use".into())
    })?;
    if let Some(user) = db::users::user_get_by_email(pool, &email).await? {
        if user.github_id.is_some_and(|linked| linked != profile.id) {
            return Err(ApiError::Conflict(
                "the Wrenn account with this email is linked to another GitHub account".into(),
            ));
        }
        if let Err(error) = db::users::user_link_github(pool, &user.id, profile.id).await {
            // A concurrent callback for the same GitHub account linked or created it first.
            return if db::is_unique_violation(&error) {
                user_linked_meanwhile(pool, profile.id).await
            } else {
                Err(error.into())
            };
        }
        audit::record_user(
            pool,
            user.default_team_id.as_deref(),
            Some(&user.id),
            Target::new("user", Some(&user.id), "link_github"),
            "success",
            json!({"github_id": profile.id, "github_login": profile.login}),
        )
        .await;
        return Ok(UserRow {
            github_id: Some(profile.id),
            ..user
        });
    }
    let name = display_name(profile);
    match user::user_create_with_team(
        pool,
        &email,
        &name,
        None,
        Some(profile.id),
        state.config.open_signup,
    )
    .await
    {
        Ok((user, team_id)) => {
            audit::record_user(
                pool,
                Some(&team_id),
                Some(&user.id),
                Target::new("user", Some(&user.id), "signup"),
                "success",
                json!({"email": user.email, "provider": "github", "github_login": profile.login}),
            )
            .await;
            Ok(user)
        }
        Err(ApiError::Conflict(message)) => {
            match db::users::user_get_by_github(pool, profile.id).await? {
                Some(user) => Ok(user),
                None => Err(ApiError::Conflict(message)),
            }
        }
        Err(error) => Err(error),
    }
}

async fn user_linked_meanwhile(pool: &sqlx::PgPool, github_id: i64) -> ApiResult<UserRow> {
    db::users::user_get_by_github(pool, github_id)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict("this GitHub account is linked to another Wrenn account".into())
        })
}

/// The profile's name, else its login, fitted to what Wrenn accepts as a name.
fn display_name(profile: &GithubUser) -> String {
    let candidates = [
        profile.name.as_deref().unwrap_or_default(),
        profile.login.as_str(),
    ];
    candidates
        .iter()
        .map(|name| {
            name.chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        })
        .find_map(|name| name_check("name", &name).ok())
        .unwrap_or_else(|| "GitHub user".into())
}

fn primary_verified(emails: Vec<GithubEmail>) -> Option<String> {
    emails
        .into_iter()
        .find(|e| e.primary && e.verified)
        .map(|e| e.email)
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GithubUser {
    id: i64,
    login: String,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GithubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Debug, thiserror::Error)]
enum ProviderError {
    #[error("call {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("read the answer of {url}")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the token endpoint refused the code: {error}")]
    Refused { error: String },
}

/// Turns a failed provider call into the caller's error, logging the detail once here.
fn provider_failure(step: &str, error: ProviderError) -> ApiError {
    if let ProviderError::Refused { error: code } = &error {
        if code == "bad_verification_code" {
            return ApiError::BadRequest(
                "GitHub did not accept the login code (expired or already used); start the login \
                 again"
                    .into(),
            );
        }
    }
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::warn!(error = %detail, "GitHub login: {step}");
    ApiError::Unavailable(format!(
        "GitHub login failed: could not {step}; try again later"
    ))
}

/// The GitHub endpoints a login calls.
struct Provider<'a> {
    http: &'a reqwest::Client,
    github: &'a GithubOAuth,
}

impl Provider<'_> {
    async fn token(&self, code: &str, redirect_uri: &str) -> Result<String, ProviderError> {
        let url = &self.github.token_url;
        let request = self
            .http
            .post(url)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, CLIENT_NAME)
            .form(&[
                ("client_id", self.github.client_id.as_str()),
                ("client_secret", self.github.client_secret.as_str()),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ]);
        let answer: TokenAnswer = send_json(url, request).await?;
        match answer.access_token.filter(|t| !t.is_empty()) {
            Some(token) => Ok(token),
            None => Err(ProviderError::Refused {
                error: answer
                    .error
                    .unwrap_or_else(|| "no access_token in the answer".into()),
            }),
        }
    }

    async fn api_get<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
    ) -> Result<T, ProviderError> {
        let url = format!("{}{path}", self.github.api_url.trim_end_matches('/'));
        let request = self
            .http
            .get(&url)
            .bearer_auth(token)
            .header(ACCEPT, "application/vnd.github+json")
            .header(USER_AGENT, CLIENT_NAME)
            .header("X-GitHub-Api-Version", "2022-11-28");
        send_json(&url, request).await
    }
}

async fn send_json<T: DeserializeOwned>(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<T, ProviderError> {
    let response = request
        .timeout(PROVIDER_TIMEOUT)
        .send()
        .await
        .map_err(|source| ProviderError::Request {
            url: url.to_owned(),
            source,
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(ProviderError::Status {
            url: url.to_owned(),
            status,
        });
    }
    response.json().await.map_err(|source| ProviderError::Body {
        url: url.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_redirect_targets() {
        for good in ["/", "/dashboard", "/teams/team-1?tab=members", "/a/b%2Fc"] {
            assert!(redirect_check(good).is_ok(), "{good}");
        }
        let long = format!("/{}", "a".repeat(MAX_REDIRECT_LEN));
        for bad in [
            "",
            "dashboard",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "/\t/evil.example",
            "/a b",
            "/x#y",
            "/é",
            &long,
        ] {
            assert!(redirect_check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_authorize_url_carries_what_github_needs() {
        let github = GithubOAuth::github("id 1".into(), "secret".into());
        let url = authorize_url(
            &github,
            "http://cp.example:7200/v1/auth/oauth/github/callback",
            "abc",
        );
        assert_eq!(
            url,
            "https://github.com/login/oauth/authorize?client_id=id+1\
             &redirect_uri=http%3A%2F%2Fcp.example%3A7200%2Fv1%2Fauth%2Foauth%2Fgithub%2Fcallback\
             &state=abc&scope=read:user%20user:email"
        );
        assert_eq!(
            callback_url("http://cp.example/"),
            "http://cp.example/v1/auth/oauth/github/callback"
        );
    }

    #[test]
    fn names_fall_back_to_the_login() {
        let profile = |name: Option<&str>| GithubUser {
            id: 1,
            login: "octo".into(),
            name: name.map(str::to_owned),
            email: None,
        };
        assert_eq!(display_name(&profile(Some("Mona Lisa"))), "Mona Lisa");
        assert_eq!(display_name(&profile(None)), "octo");
        assert_eq!(display_name(&profile(Some("  "))), "octo");
        assert_eq!(display_name(&profile(Some(&"x".repeat(300)))).len(), 100);
    }

    #[test]
    fn only_the_primary_verified_email_counts() {
        let email = |email: &str, primary, verified| GithubEmail {
            email: email.into(),
            primary,
            verified,
        };
        let emails = vec![email("a@x.io", false, true), email("b@x.io", true, false)];
        assert_eq!(primary_verified(emails), None);
        let emails = vec![email("a@x.io", false, true), email("b@x.io", true, true)];
        assert_eq!(primary_verified(emails).as_deref(), Some("b@x.io"));
    }
}
