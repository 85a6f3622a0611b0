//! Logging in with GitHub against a real control plane and PostgreSQL.
//!
//! The real GitHub cannot be reached from the machines these tests run on, so each test runs
//! a stand-in provider ([`StandInGithub`]): a small axum server on 127.0.0.1:0 implementing
//! the three endpoints the control plane calls — `POST /login/oauth/access_token`,
//! `GET /user` and `GET /user/emails` — with the request and answer shapes GitHub documents
//! (including its habit of answering a bad code with HTTP 200 and an `error` field). It is a
//! stand-in, not GitHub: the browser's visit to GitHub's authorization page is played by
//! [`StandInGithub::approve`], which hands out the one-time code GitHub would.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header::{ACCEPT, AUTHORIZATION, LOCATION, SET_COOKIE, USER_AGENT};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use common::{read_json, Auth, TestCp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use wrenn_cp::config::{AgentEndpoint, CpConfig, GithubOAuth};
use wrenn_cp::server::ControlPlane;

const CLIENT_ID: &str = "test-client";
const CLIENT_SECRET: &str = "test-secret";
const PUBLIC_URL: &str = "http://wrenn.test";
const CALLBACK: &str = "http://wrenn.test/v1/auth/oauth/github/callback";

/// A GitHub account as the stand-in serves it.
#[derive(Debug, Clone)]
struct Account {
    id: i64,
    login: &'static str,
    name: Option<&'static str>,
    /// The profile's public email (GitHub only lets verified addresses be public).
    email: Option<&'static str>,
    /// `(email, primary, verified)` as `GET /user/emails` lists them.
    emails: Vec<(&'static str, bool, bool)>,
}

impl Account {
    fn new(id: i64, login: &'static str) -> Self {
        Self {
            id,
            login,
            name: None,
            email: None,
            emails: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Provider {
    codes: HashMap<String, Account>,
    tokens: HashMap<String, Account>,
    /// The token endpoint answers 500.
    token_failing: bool,
    /// The API answers 502.
    api_failing: bool,
    token_requests: Vec<HashMap<String, String>>,
}

type Shared = Arc<Mutex<Provider>>;

/// The stand-in GitHub (see the file's doc comment).
struct StandInGithub {
    base: String,
    provider: Shared,
    server: JoinHandle<()>,
}

impl StandInGithub {
    async fn start() -> Self {
        let provider = Shared::default();
        let app = Router::new()
            .route("/login/oauth/access_token", post(token))
            .route("/user", get(user))
            .route("/user/emails", get(emails))
            .with_state(provider.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            provider,
            server,
        }
    }

    fn config(&self) -> GithubOAuth {
        GithubOAuth {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            authorize_url: format!("{}/login/oauth/authorize", self.base),
            token_url: format!("{}/login/oauth/access_token", self.base),
            api_url: self.base.clone(),
        }
    }

    /// What GitHub does when the person approves the login: a one-time code for the account.
    fn approve(&self, account: &Account) -> String {
        let code = format!("code{:016x}", rand::random::<u64>());
        self.provider
            .lock()
            .unwrap()
            .codes
            .insert(code.clone(), account.clone());
        code
    }

    fn with<T>(&self, f: impl FnOnce(&mut Provider) -> T) -> T {
        f(&mut self.provider.lock().unwrap())
    }
}

impl Drop for StandInGithub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn token(
    State(provider): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut provider = provider.lock().unwrap();
    if provider.token_failing {
        return (StatusCode::INTERNAL_SERVER_ERROR, "unicorn").into_response();
    }
    provider.token_requests.push(form.clone());
    if headers.get(ACCEPT).and_then(|v| v.to_str().ok()) != Some("application/json") {
        // GitHub answers form-encoded unless asked for JSON.
        return "error=not_json".into_response();
    }
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return Json(json!({"error": "incorrect_client_credentials"})).into_response();
    }
    let code = form.get("code").cloned().unwrap_or_default();
    match provider.codes.remove(&code) {
        Some(account) => {
            let token = format!("gho_{:016x}", rand::random::<u64>());
            provider.tokens.insert(token.clone(), account);
            Json(json!({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})).into_response()
        }
        None => Json(json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired."
        }))
        .into_response(),
    }
}

/// The account behind the request's token; GitHub also refuses requests without a User-Agent.
fn caller(provider: &Provider, headers: &HeaderMap) -> Result<Account, Response> {
    if provider.api_failing {
        return Err((StatusCode::BAD_GATEWAY, "Server Error").into_response());
    }
    if headers.get(USER_AGENT).is_none() {
        return Err((
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules.",
        )
            .into_response());
    }
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| provider.tokens.get(token))
        .cloned()
        .ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Bad credentials"})),
            )
                .into_response()
        })
}

async fn user(State(provider): State<Shared>, headers: HeaderMap) -> Response {
    match caller(&provider.lock().unwrap(), &headers) {
        Ok(account) => Json(json!({
            "id": account.id,
            "login": account.login,
            "name": account.name,
            "email": account.email,
            "type": "User",
        }))
        .into_response(),
        Err(response) => response,
    }
}

async fn emails(State(provider): State<Shared>, headers: HeaderMap) -> Response {
    match caller(&provider.lock().unwrap(), &headers) {
        Ok(account) => {
            let list: Vec<Value> = account
                .emails
                .iter()
                .map(|(email, primary, verified)| {
                    json!({"email": email, "primary": primary, "verified": verified, "visibility": null})
                })
                .collect();
            Json(list).into_response()
        }
        Err(response) => response,
    }
}

async fn start_cp(github: &StandInGithub) -> TestCp {
    let config = github.config();
    TestCp::start_with_config(move |c| {
        c.github = Some(config);
        c.public_url = PUBLIC_URL.into();
    })
    .await
}

/// A client that shows redirects instead of following them, as the tests check them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A login started at `GET /v1/auth/oauth/github{query}`.
struct Started {
    state: String,
    /// `wrenn_oauth_state=…`, ready for a Cookie header.
    cookie: String,
    location: url::Url,
}

async fn start_login(base: &str, query: &str) -> Started {
    let response = no_redirects()
        .get(format!("{base}/v1/auth/oauth/github{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "{:?}",
        response.text().await
    );
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let location = url::Url::parse(&location).unwrap();
    let state = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state in the authorize URL");
    Started {
        state,
        cookie: cookie.split(';').next().unwrap().to_owned(),
        location,
    }
}

async fn callback(base: &str, query: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = no_redirects().get(format!("{base}/v1/auth/oauth/github/callback?{query}"));
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    request.send().await.unwrap()
}

/// The whole login for `account`, ending in a JSON answer.
async fn login(cp: &TestCp, github: &StandInGithub, account: &Account) -> (StatusCode, Value) {
    let started = start_login(&cp.base, "").await;
    let code = github.approve(account);
    let response = callback(
        &cp.base,
        &format!("code={code}&state={}", started.state),
        None,
    )
    .await;
    read_json(response, "callback").await
}

fn octocat() -> Account {
    Account {
        name: Some("Mona Octocat"),
        emails: vec![
            ("old@example.com", false, true),
            ("mona@example.com", true, true),
        ],
        ..Account::new(101, "octocat")
    }
}

#[tokio::test]
async fn a_first_github_login_signs_up_and_the_next_finds_the_same_user() {
    let github = StandInGithub::start().await;
    let cp = start_cp(&github).await;

    let started = start_login(&cp.base, "").await;
    assert_eq!(
        started.location.as_str().split('?').next().unwrap(),
        format!("{}/login/oauth/authorize", github.base)
    );
    let query: HashMap<String, String> = started.location.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["redirect_uri"], CALLBACK);
    assert_eq!(query["scope"], "read:user user:email");
    assert!(
        started
            .location
            .query()
            .unwrap()
            .ends_with("&scope=read:user%20user:email"),
        "{}",
        started.location
    );
    assert!(started.state.len() >= 32, "{}", started.state);
    assert_eq!(
        started.cookie,
        format!("wrenn_oauth_state={}", started.state)
    );
    let lifetime: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - now())::float8 FROM oauth_states WHERE state = $1",
    )
    .bind(&started.state)
    .fetch_one(cp.pool())
    .await
    .unwrap();
    assert!(
        (590.0..=600.0).contains(&lifetime),
        "the state lives 10 minutes: {lifetime}"
    );

    let code = github.approve(&octocat());
    let response = callback(
        &cp.base,
        &format!("code={code}&state={}", started.state),
        None,
    )
    .await;
    let (status, session) = read_json(response, "callback").await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(
        session["user"]["email"], "mona@example.com",
        "the primary verified address"
    );
    assert_eq!(session["user"]["name"], "Mona Octocat");
    assert_eq!(session["role"], "owner", "a team of their own");
    let user_id = session["user"]["id"].as_str().unwrap().to_owned();
    let token = Auth::Bearer(session["token"].as_str().unwrap().to_owned());
    let (status, me) = cp.get("/v1/me", &token).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let (github_id, password): (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT github_id, password_hash FROM users WHERE id = $1")
            .bind(&user_id)
            .fetch_one(cp.pool())
            .await
            .unwrap();
    assert_eq!(github_id, Some(101));
    assert_eq!(password, None, "no password for an OAuth-only account");
    let sent = github.with(|p| p.token_requests.last().cloned().unwrap());
    assert_eq!(sent["redirect_uri"], CALLBACK);
    assert_eq!(sent["code"], code);

    // Next time, the GitHub account finds the same user, whatever changed at GitHub.
    let renamed = Account {
        name: Some("Mona L. Octocat"),
        emails: vec![("new@example.com", true, true)],
        ..octocat()
    };
    let (status, again) = login(&cp, &github, &renamed).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["user"]["id"], user_id.as_str());
    assert_eq!(again["team_id"], session["team_id"]);
    let (_, teams) = cp
        .get(
            "/v1/teams",
            &Auth::Bearer(again["token"].as_str().unwrap().into()),
        )
        .await;
    assert_eq!(teams["teams"].as_array().unwrap().len(), 1, "{teams}");

    let signups: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE actor_id = $1 AND resource_type = 'user' AND action = 'signup' \
         AND metadata->>'provider' = 'github'",
    )
    .bind(&user_id)
    .fetch_one(cp.pool())
    .await
    .unwrap();
    assert_eq!(signups, 1);
    cp.shutdown().await;
}

#[tokio::test]
async fn any_control_plane_on_the_database_can_finish_a_login() {
    let github = StandInGithub::start().await;
    let first = start_cp(&github).await;
    let mut config = CpConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        first.db.url.clone(),
        AgentEndpoint {
            name: "test-host".into(),
            address: "http://127.0.0.1:9".into(),
        },
    );
    config.database_max_connections = 4;
    config.github = Some(github.config());
    config.public_url = PUBLIC_URL.into();
    let second = ControlPlane::start(config)
        .await
        .expect("start a second control plane");
    let second_base = format!("http://{}", second.addr());

    let started = start_login(&first.base, "").await;
    let code = github.approve(&octocat());
    let response = callback(
        &second_base,
        &format!("code={code}&state={}", started.state),
        None,
    )
    .await;
    let (status, session) = read_json(response, "callback on the second control plane").await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let token = Auth::Bearer(session["token"].as_str().unwrap().to_owned());
    let (status, me) = first.get("/v1/me", &token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "sessions work on every replica: {me}"
    );
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn github_login_links_an_existing_account_by_verified_email() {
    let github = StandInGithub::start().await;
    let cp = start_cp(&github).await;
    let linus = cp.signup("linus@example.com").await;

    let account = Account {
        email: Some("Linus@Example.com"),
        ..Account::new(202, "torvalds")
    };
    let (status, session) = login(&cp, &github, &account).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(
        session["user"]["id"],
        linus.user_id.as_str(),
        "linked, not a second account"
    );
    assert_eq!(session["team_id"], linus.team_id.as_str());
    let github_id: Option<i64> = sqlx::query_scalar("SELECT github_id FROM users WHERE id = $1")
        .bind(&linus.user_id)
        .fetch_one(cp.pool())
        .await
        .unwrap();
    assert_eq!(github_id, Some(202));
    let (status, body) = cp
        .post(
            "/v1/auth/login",
            &Auth::None,
            json!({"email": "linus@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the password still works: {body}");

    // Another GitHub account with the same address does not take the account over.
    let impostor = Account {
        email: Some("linus@example.com"),
        ..Account::new(303, "not-linus")
    };
    let (status, body) = login(&cp, &github, &impostor).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // An address GitHub has not verified neither links nor signs up.
    let unverified = Account {
        emails: vec![
            ("linus@example.com", true, false),
            ("other@example.com", false, true),
        ],
        ..Account::new(404, "unverified")
    };
    let (status, body) = login(&cp, &github, &unverified).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(cp.pool())
        .await
        .unwrap();
    assert_eq!(users, 1);
    cp.shutdown().await;
}

#[tokio::test]
async fn bad_expired_and_reused_states_are_refused() {
    let github = StandInGithub::start().await;
    let cp = start_cp(&github).await;
    let base = cp.base.clone();
    let expect_400 = |what: &'static str| {
        move |(status, body): (StatusCode, Value)| {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}")
        }
    };

    let code = github.approve(&octocat());
    expect_400("unknown state")(
        read_json(
            callback(&base, &format!("code={code}&state=nonsense"), None).await,
            "",
        )
        .await,
    );
    expect_400("no state")(
        read_json(callback(&base, &format!("code={code}"), None).await, "").await,
    );
    let huge = "s".repeat(5000);
    expect_400("huge state")(
        read_json(
            callback(&base, &format!("code={code}&state={huge}"), None).await,
            "",
        )
        .await,
    );

    // A state works once.
    let started = start_login(&base, "").await;
    let response = callback(&base, &format!("code={code}&state={}", started.state), None).await;
    let (status, body) = read_json(response, "first use").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = github.approve(&octocat());
    let reused = callback(&base, &format!("code={code}&state={}", started.state), None).await;
    let (status, body) = read_json(reused, "reuse").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("start the login again"),
        "{body}"
    );

    // An expired state is refused, and swept when the next login starts.
    let started = start_login(&base, "").await;
    sqlx::query(
        "UPDATE oauth_states SET expires_at = now() - interval '1 second' WHERE state = $1",
    )
    .bind(&started.state)
    .execute(cp.pool())
    .await
    .unwrap();
    expect_400("expired state")(
        read_json(
            callback(&base, &format!("code={code}&state={}", started.state), None).await,
            "",
        )
        .await,
    );
    start_login(&base, "").await;
    let expired: i64 =
        sqlx::query_scalar("SELECT count(*) FROM oauth_states WHERE expires_at < now()")
            .fetch_one(cp.pool())
            .await
            .unwrap();
    assert_eq!(expired, 0);

    // Declined at GitHub: refused, and the state is spent.
    let started = start_login(&base, "").await;
    let (status, body) = read_json(
        callback(
            &base,
            &format!("error=access_denied&state={}", started.state),
            None,
        )
        .await,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("access_denied"),
        "{body}"
    );
    expect_400("state of a declined login")(
        read_json(
            callback(&base, &format!("code={code}&state={}", started.state), None).await,
            "",
        )
        .await,
    );

    // A code GitHub does not know (expired, or made up).
    let started = start_login(&base, "").await;
    let (status, body) = read_json(
        callback(
            &base,
            &format!("code=made-up&state={}", started.state),
            None,
        )
        .await,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    cp.shutdown().await;
}

#[tokio::test]
async fn provider_failures_are_503() {
    let github = StandInGithub::start().await;
    let cp = start_cp(&github).await;
    for (what, token_failing, api_failing) in
        [("token endpoint", true, false), ("API", false, true)]
    {
        github.with(|p| {
            p.token_failing = token_failing;
            p.api_failing = api_failing;
        });
        let (status, body) = login(&cp, &github, &octocat()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("GitHub"),
            "{what}: {body}"
        );
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(cp.pool())
        .await
        .unwrap();
    assert_eq!(users, 0);
    cp.shutdown().await;

    // Nothing listens where this control plane looks for GitHub.
    let cp = TestCp::start_with_config(|c| {
        c.github = Some(GithubOAuth {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            authorize_url: "http://127.0.0.1:9/login/oauth/authorize".into(),
            token_url: "http://127.0.0.1:9/login/oauth/access_token".into(),
            api_url: "http://127.0.0.1:9".into(),
        })
    })
    .await;
    let started = start_login(&cp.base, "").await;
    let (status, body) = read_json(
        callback(&cp.base, &format!("code=abc&state={}", started.state), None).await,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    cp.shutdown().await;
}

#[tokio::test]
async fn github_login_is_404_when_disabled() {
    let cp = TestCp::start().await;
    for path in [
        "/v1/auth/oauth/github",
        "/v1/auth/oauth/github?redirect=/x",
        "/v1/auth/oauth/github/callback?code=a&state=b",
    ] {
        let response = no_redirects().get(cp.url(path)).send().await.unwrap();
        let (status, body) = read_json(response, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(
            body["error"]["message"], "GitHub login is not enabled",
            "{path}"
        );
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn browser_logins_go_back_to_the_page_with_the_token() {
    let github = StandInGithub::start().await;
    let cp = start_cp(&github).await;

    let started = start_login(&cp.base, "?redirect=%2Fdashboard%3Ftab%3Dsandboxes").await;
    let code = github.approve(&octocat());
    let response = callback(
        &cp.base,
        &format!("code={code}&state={}", started.state),
        Some(&started.cookie),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let cleared = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cleared.contains("Max-Age=0"),
        "the state cookie is cleared: {cleared}"
    );
    let token = location
        .strip_prefix("/dashboard?tab=sandboxes#token=")
        .unwrap_or_else(|| panic!("unexpected Location {location}"));
    let (status, me) = cp.get("/v1/me", &Auth::Bearer(token.into())).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "mona@example.com");

    // The token goes only to the browser that started the login.
    for cookie in [None, Some("wrenn_oauth_state=someone-elses")] {
        let started = start_login(&cp.base, "?redirect=/dashboard").await;
        let code = github.approve(&octocat());
        let response = callback(
            &cp.base,
            &format!("code={code}&state={}", started.state),
            cookie,
        )
        .await;
        let (status, body) = read_json(response, "callback from another browser").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{cookie:?}: {body}");
    }

    // Only paths on this site are remembered.
    let states_before: i64 = sqlx::query_scalar("SELECT count(*) FROM oauth_states")
        .fetch_one(cp.pool())
        .await
        .unwrap();
    for redirect in [
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example%2F",
        "dashboard",
        "%2F%5Cevil.example",
        "%2F%09%2Fevil.example",
        "%2Fa%23b",
        "",
    ] {
        let path = format!("/v1/auth/oauth/github?redirect={redirect}");
        let response = no_redirects().get(cp.url(&path)).send().await.unwrap();
        let (status, body) = read_json(response, &path).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{redirect}: {body}"
        );
    }
    let states_after: i64 = sqlx::query_scalar("SELECT count(*) FROM oauth_states")
        .fetch_one(cp.pool())
        .await
        .unwrap();
    assert_eq!(states_before, states_after, "refused logins store nothing");
    cp.shutdown().await;
}

#[tokio::test]
async fn too_many_unfinished_logins_get_429() {
    let github = StandInGithub::start().await;
    let config = github.config();
    let cp = TestCp::start_with_config(move |c| {
        c.github = Some(config);
        c.public_url = PUBLIC_URL.into();
        c.oauth_pending_limit = 3;
    })
    .await;
    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(start_login(&cp.base, "").await);
    }
    let response = no_redirects()
        .get(cp.url("/v1/auth/oauth/github"))
        .send()
        .await
        .unwrap();
    let (status, body) = read_json(response, "a fourth start").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");

    // Finishing a login makes room for another.
    let code = github.approve(&octocat());
    let response = callback(
        &cp.base,
        &format!("code={code}&state={}", started[0].state),
        Some(&started[0].cookie),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    start_login(&cp.base, "").await;
    cp.shutdown().await;
}
