//! What the CLI's end-to-end tests run against: a host agent in this process (real VMs, on a
//! test lease), a control plane in this process on a PostgreSQL database of its own, and the
//! built `wrenn` binary with an empty config directory.
//!
//! PostgreSQL comes from `WRENN_TEST_DATABASE_URL` (default: the local server over its unix
//! socket, as `scripts/ensure-postgres` sets it up).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use wrenn_cp::config::{AgentEndpoint, CpConfig};
use wrenn_cp::server::ControlPlane;

pub const PASSWORD: &str = "correct horse battery";

pub fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/wrenn/images"))
}

#[path = "../../../cp/tests/common/db.rs"]
mod db;
/// A database created for one test and dropped with it.
pub use db::TestDb as Database;

/// A real host agent serving gRPC on a port of its own.
pub struct Agent {
    pub url: String,
    local: wrenn_agent::server::LocalAgent,
    _lease: wrenn_agent::lease::InstanceLease,
    _state: tempfile::TempDir,
}

impl Agent {
    pub async fn start() -> Self {
        let manifest = images_dir().join("templates/minimal/template.json");
        assert!(
            manifest.exists(),
            "{} is missing: build the images first (`wrenn image build` or scripts/test)",
            manifest.display()
        );
        let lease = wrenn_agent::lease::TESTS
            .acquire()
            .expect("take a test agent lease");
        let state = tempfile::tempdir().unwrap();
        let mut config = wrenn_agent::config::AgentConfig::new(state.path());
        config.images_dir = images_dir();
        config.state_dir = state.path().join("sandboxes");
        lease.apply(&mut config);
        // Two shared cores under TCG: boots can be slow.
        config.ready_timeout = Duration::from_secs(120);
        config.on_shutdown = wrenn_agent::config::ShutdownPolicy::DestroySandboxes;
        // Exact host-object counts and nothing left behind; spares have their own test.
        config.spare_slots = 0;
        let agent = wrenn_agent::server::Agent::start(config)
            .await
            .expect("start the host agent");
        let local = wrenn_agent::server::LocalAgent::serve(agent)
            .await
            .expect("serve the host agent");
        Self {
            url: local.url(),
            local,
            _lease: lease,
            _state: state,
        }
    }

    pub async fn stop(self) {
        self.local.stop(Duration::from_secs(60)).await;
    }
}

/// A control plane (and, when asked, the agent it schedules on), a signed-up user with an API
/// key, and a private config directory for the `wrenn` binary.
pub struct Stack {
    pub url: String,
    pub email: String,
    pub key: String,
    pub config_home: tempfile::TempDir,
    cp: Option<ControlPlane>,
    agent: Option<Agent>,
    _database: Database,
}

impl Stack {
    /// With a real agent: sandboxes boot.
    pub async fn with_agent() -> Self {
        let agent = Agent::start().await;
        let url = agent.url.clone();
        Self::start(url, Some(agent)).await
    }

    /// With an address where no agent listens: accounts, keys and templates only.
    pub async fn without_agent() -> Self {
        Self::start("http://127.0.0.1:9".into(), None).await
    }

    async fn start(agent_url: String, agent: Option<Agent>) -> Self {
        let database = Database::create().await;
        let mut config = CpConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            database.url.clone(),
            AgentEndpoint {
                name: "cli-test-host".into(),
                address: agent_url,
            },
        );
        config.database_max_connections = 8;
        config.reconcile_interval = Duration::from_millis(500);
        let cp = ControlPlane::start(config)
            .await
            .expect("start the control plane");
        let url = format!("http://{}", cp.addr());
        let email = format!("cli-{:08x}@example.com", rand::random::<u32>());
        let key = signup_with_key(&url, &email).await;
        Self {
            url,
            email,
            key,
            config_home: tempfile::tempdir().unwrap(),
            cp: Some(cp),
            agent,
            _database: database,
        }
    }

    /// `wrenn` with this stack's URL and key.
    pub async fn wrenn(&self, args: &[&str]) -> Output {
        self.wrenn_with(args, &[("WRENN_API_KEY", Some(&self.key))], None)
            .await
    }

    /// `wrenn` with this stack's URL, extra environment (`None` removes a variable) and
    /// optional stdin.
    pub async fn wrenn_with(
        &self,
        args: &[&str],
        env: &[(&str, Option<&str>)],
        stdin: Option<&[u8]>,
    ) -> Output {
        let mut command = self.command(args);
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        run_with_stdin(command, stdin).await
    }

    /// The command, not yet started: the URL set, the key not, config in a private directory.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wrenn"));
        command
            .args(args)
            .env("WRENN_API_URL", &self.url)
            .env_remove("WRENN_API_KEY")
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env("HOME", self.config_home.path())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        command
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_home.path().join("wrenn/config.json")
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

/// Signs up `email` and returns a fresh API key of their team.
async fn signup_with_key(url: &str, email: &str) -> String {
    let http = reqwest::Client::new();
    let session: serde_json::Value = http
        .post(format!("{url}/v1/auth/signup"))
        .json(&serde_json::json!({"email": email, "password": PASSWORD, "name": "CLI test"}))
        .send()
        .await
        .expect("sign up")
        .error_for_status()
        .expect("sign up")
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().expect("session token");
    let created: serde_json::Value = http
        .post(format!("{url}/v1/api-keys"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "cli test"}))
        .send()
        .await
        .expect("create API key")
        .error_for_status()
        .expect("create API key")
        .json()
        .await
        .unwrap();
    created["key"].as_str().expect("API key").to_owned()
}

pub async fn run_with_stdin(mut command: tokio::process::Command, stdin: Option<&[u8]>) -> Output {
    use tokio::io::AsyncWriteExt;
    command
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("start wrenn");
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).await.expect("write wrenn's stdin");
        // Dropping the pipe closes it: the child sees EOF.
    }
    tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("wrenn finished within 5 minutes")
        .expect("wait for wrenn")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Panics with both streams unless the command succeeded.
#[track_caller]
pub fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
