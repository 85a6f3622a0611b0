//! Test harness: a real control plane (in-process) on a fresh PostgreSQL database of its own,
//! and, for sandbox routes, a real in-process host agent booting real VMs.
//!
//! The database server comes from `WRENN_TEST_DATABASE_URL` (default: the local server over
//! its unix socket, as the root role `scripts/ensure-postgres` creates). Each test gets a new
//! database, dropped when the test ends.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wrenn_cp::config::{AgentEndpoint, CpConfig};
use wrenn_cp::server::ControlPlane;

mod db;
pub use db::TestDb;

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(String),
    Key(String),
    /// Any header, e.g. a malformed Authorization value.
    Header(&'static str, String),
}

/// A running control plane on its own database.
pub struct TestCp {
    pub cp: Option<ControlPlane>,
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub agent: Option<TestAgent>,
}

/// An address where no agent listens: for tests that never reach a host.
const NO_AGENT: &str = "http://127.0.0.1:9";

impl TestCp {
    /// A control plane whose host agent is unreachable (accounts, keys, teams, templates).
    pub async fn start() -> Self {
        Self::start_with(NO_AGENT.into(), None, |_| {}).await
    }

    pub async fn start_with_config(adjust: impl FnOnce(&mut CpConfig)) -> Self {
        Self::start_with(NO_AGENT.into(), None, adjust).await
    }

    /// A control plane over a real in-process host agent that boots real VMs.
    pub async fn start_with_agent() -> Self {
        Self::start_with_agent_config(|_| {}).await
    }

    /// Like [`TestCp::start_with_agent`], with the control plane's configuration adjusted.
    pub async fn start_with_agent_config(adjust: impl FnOnce(&mut CpConfig)) -> Self {
        let agent = TestAgent::start().await;
        let address = format!("http://{}", agent.addr);
        Self::start_with(address, Some(agent), adjust).await
    }

    async fn start_with(
        agent_address: String,
        agent: Option<TestAgent>,
        adjust: impl FnOnce(&mut CpConfig),
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("wrenn_cp=debug,wrenn_agent=info")
            .try_init();
        let db = TestDb::create().await;
        let mut config = CpConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            db.url.clone(),
            AgentEndpoint {
                name: "test-host".into(),
                address: agent_address,
            },
        );
        config.database_max_connections = 8;
        config.reconcile_interval = Duration::from_millis(500);
        adjust(&mut config);
        let cp = ControlPlane::start(config)
            .await
            .expect("start control plane");
        let base = format!("http://{}", cp.addr());
        Self {
            cp: Some(cp),
            base,
            http: reqwest::Client::new(),
            db,
            agent,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str, auth: &Auth) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match auth {
            Auth::None => builder,
            Auth::Bearer(token) => builder.bearer_auth(token),
            Auth::Key(key) => builder.header("X-API-Key", key),
            Auth::Header(name, value) => builder.header(*name, value),
        }
    }

    /// Sends a request with an optional JSON body; returns the status and the JSON body
    /// (Null when empty). Panics on a non-JSON error body: every error must be JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut builder = self.request(method.clone(), path, auth);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        read_json(response, &format!("{method} {path}")).await
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> (StatusCode, Value) {
        self.call(Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: &Auth, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, auth, Some(body)).await
    }

    pub async fn patch(&self, path: &str, auth: &Auth, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, auth, Some(body)).await
    }

    pub async fn delete(&self, path: &str, auth: &Auth) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, auth, None).await
    }

    /// Signs up a new user; returns their session.
    pub async fn signup(&self, email: &str) -> Person {
        let (status, body) = self
            .post(
                "/v1/auth/signup",
                &Auth::None,
                json!({"email": email, "password": "correct horse battery", "name": email.split('@').next().unwrap()}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "signup {email}: {body}");
        Person::from_session(&body)
    }

    /// A new API key for the person's current team.
    pub async fn api_key(&self, person: &Person) -> String {
        let (status, body) = self
            .post("/v1/api-keys", &person.auth(), json!({"name": "test key"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "create API key: {body}");
        body["key"].as_str().unwrap().to_owned()
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.cp.as_ref().unwrap().state().pool
    }

    /// Waits until `path` (GET) returns a body for which `done` holds.
    pub async fn wait_for(
        &self,
        path: &str,
        auth: &Auth,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, body) = self.get(path, auth).await;
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on {path}; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(cp) = self.cp.take() {
            cp.shutdown().await;
        }
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
    }
}

/// `(action, status)` of the team's audit entries about `resource_id`, newest first.
pub async fn audit_actions(cp: &TestCp, auth: &Auth, resource_id: &str) -> Vec<(String, String)> {
    let (status, log) = cp
        .get(
            &format!("/v1/audit-logs?resource_id={resource_id}&limit=200"),
            auth,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    log["audit_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub async fn read_json(response: reqwest::Response, what: &str) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap();
    if text.is_empty() {
        return (status, Value::Null);
    }
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {status} with content-type {content_type:?}: {text}"
    );
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text}"));
    if !status.is_success() {
        assert_error_shape(&body, what);
    }
    (status, body)
}

/// Every error body is `{"error":{"code":"...","message":"..."}}`.
pub fn assert_error_shape(body: &Value, what: &str) {
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{what}: error body has the wrong shape: {body}"
    );
}

/// A signed-up person and their current session.
#[derive(Debug, Clone)]
pub struct Person {
    pub token: String,
    pub user_id: String,
    pub team_id: String,
    pub email: String,
}

impl Person {
    pub fn from_session(body: &Value) -> Self {
        Self {
            token: body["token"].as_str().expect("session token").to_owned(),
            user_id: body["user"]["id"].as_str().unwrap().to_owned(),
            team_id: body["team_id"].as_str().unwrap().to_owned(),
            email: body["user"]["email"].as_str().unwrap().to_owned(),
        }
    }

    pub fn auth(&self) -> Auth {
        Auth::Bearer(self.token.clone())
    }
}

pub fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/wrenn/images"))
}

/// Boot readiness timeout: generous because tests share two cores under TCG.
pub fn ready_timeout() -> Duration {
    let secs = std::env::var("WRENN_TEST_READY_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// An images directory of the test's own whose kernels and base templates link to the shared
/// ones: templates the test snapshots stay in its temporary directory, whatever happens.
fn private_images_dir(state: &std::path::Path) -> PathBuf {
    let shared = images_dir();
    let private = state.join("images");
    std::fs::create_dir_all(private.join("templates")).unwrap();
    std::os::unix::fs::symlink(shared.join("kernels"), private.join("kernels")).unwrap();
    for entry in std::fs::read_dir(shared.join("templates")).unwrap() {
        let entry = entry.unwrap();
        let manifest = entry.path().join("template.json");
        let base =
            std::fs::read_to_string(&manifest).is_ok_and(|text| !text.contains("\"snapshot\""));
        if base {
            std::os::unix::fs::symlink(
                entry.path(),
                private.join("templates").join(entry.file_name()),
            )
            .unwrap();
        }
    }
    private
}

/// A real host agent in-process, on a lease of its own (instance name, slot network).
pub struct TestAgent {
    pub addr: std::net::SocketAddr,
    local: wrenn_agent::server::LocalAgent,
    _lease: wrenn_agent::lease::InstanceLease,
    _state: tempfile::TempDir,
}

impl TestAgent {
    pub async fn start() -> Self {
        assert!(
            images_dir().join("templates/minimal/template.json").exists(),
            "template 'minimal' is not built in {}: run `scripts/test` or `wrenn image build` first",
            images_dir().display()
        );
        let lease = wrenn_agent::lease::TESTS
            .acquire()
            .expect("take a test agent lease");
        let state = tempfile::tempdir().unwrap();
        let mut config = wrenn_agent::config::AgentConfig::new(state.path());
        config.images_dir = private_images_dir(state.path());
        config.state_dir = state.path().join("sandboxes");
        lease.apply(&mut config);
        config.ready_timeout = ready_timeout();
        config.on_shutdown = wrenn_agent::config::ShutdownPolicy::DestroySandboxes;
        // Exact host-object counts and nothing left behind; spares have their own test.
        config.spare_slots = 0;
        let agent = wrenn_agent::server::Agent::start(config)
            .await
            .expect("start agent");
        let local = wrenn_agent::server::LocalAgent::serve(agent)
            .await
            .expect("serve agent");
        Self {
            addr: local.addr,
            local,
            _lease: lease,
            _state: state,
        }
    }

    pub async fn stop(self) {
        self.local.stop(Duration::from_secs(60)).await;
    }
}
