//! Control-plane configuration: built by `main` from flags and environment, or by tests.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CpConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_max_connections: u32,
    /// The host agent this control plane schedules on (multi-host arrives later).
    pub agent: AgentEndpoint,
    /// URL people and SDKs reach the API at (for OAuth redirects and printed links).
    pub public_url: String,
    /// Lifetime of a login session's JWT.
    pub session_ttl: Duration,
    /// Largest JSON request body.
    pub json_body_limit: usize,
    /// Largest file upload.
    pub upload_limit: u64,
    /// How often sandbox states are compared with the host's.
    pub reconcile_interval: Duration,
    /// Time a host call may take before the request fails with 503 (creates, pauses…).
    pub agent_timeout: Duration,
    pub github: Option<GithubOAuth>,
    /// Whether `POST /v1/auth/signup` is open to anyone (the first user may always sign up).
    pub open_signup: bool,
    /// How often WebSockets are pinged; a peer silent for three intervals counts as gone.
    pub ws_ping_interval: Duration,
    /// Most OAuth logins started and not finished (each expires after ten minutes); more
    /// starts get 429.
    pub oauth_pending_limit: u32,
}

#[derive(Debug, Clone)]
pub struct AgentEndpoint {
    /// Stable name of the host, e.g. its hostname.
    pub name: String,
    /// gRPC address, e.g. `http://127.0.0.1:7250`.
    pub address: String,
}

/// GitHub OAuth application settings. The URLs are overridable so tests can point at a
/// local stand-in provider.
#[derive(Debug, Clone)]
pub struct GithubOAuth {
    pub client_id: String,
    pub client_secret: String,
    pub authorize_url: String,
    pub token_url: String,
    pub api_url: String,
}

impl GithubOAuth {
    pub fn github(client_id: String, client_secret: String) -> Self {
        Self {
            client_id,
            client_secret,
            authorize_url: "https://github.com/login/oauth/authorize".into(),
            token_url: "https://github.com/login/oauth/access_token".into(),
            api_url: "https://api.github.com".into(),
        }
    }
}

impl CpConfig {
    /// Defaults for everything but where to listen, the database and the agent.
    pub fn new(listen: SocketAddr, database_url: String, agent: AgentEndpoint) -> Self {
        Self {
            listen,
            database_url,
            database_max_connections: 16,
            agent,
            public_url: format!("http://{listen}"),
            session_ttl: Duration::from_secs(24 * 3600),
            json_body_limit: 1 << 20,
            upload_limit: 1 << 30,
            reconcile_interval: Duration::from_secs(5),
            agent_timeout: Duration::from_secs(180),
            github: None,
            open_signup: true,
            ws_ping_interval: Duration::from_secs(20),
            oauth_pending_limit: 10_000,
        }
    }
}
