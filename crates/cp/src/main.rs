//! `wrenn-cp`: the control plane process. Flags and environment build a [`CpConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wrenn_cp::config::{AgentEndpoint, CpConfig, GithubOAuth};
use wrenn_cp::server::ControlPlane;

#[derive(Debug, Parser)]
#[command(
    name = "wrenn-cp",
    version,
    about = "Wrenn control plane: the REST API over host agents."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[arg(long, env = "WRENN_CP_LISTEN", default_value = "127.0.0.1:7200")]
    listen: SocketAddr,
    /// PostgreSQL URL, e.g. postgres://wrenn@localhost/wrenn.
    #[arg(
        long,
        env = "WRENN_DATABASE_URL",
        default_value = "postgres:///wrenn?host=/var/run/postgresql"
    )]
    database_url: String,
    /// gRPC address of the host agent.
    #[arg(
        long,
        env = "WRENN_AGENT_ADDR",
        default_value = "http://127.0.0.1:7250"
    )]
    agent_addr: String,
    /// Name the host is registered under (default: this machine's hostname).
    #[arg(long, env = "WRENN_AGENT_NAME")]
    agent_name: Option<String>,
    /// URL people reach the API at (default: http://<listen>).
    #[arg(long, env = "WRENN_PUBLIC_URL")]
    public_url: Option<String>,
    /// Lifetime of login sessions, in hours.
    #[arg(long, env = "WRENN_SESSION_HOURS", default_value_t = 24)]
    session_hours: u64,
    /// Largest JSON request body, in KiB.
    #[arg(long, env = "WRENN_JSON_LIMIT_KIB", default_value_t = 1024)]
    json_limit_kib: usize,
    /// Largest file upload, in MiB.
    #[arg(long, env = "WRENN_UPLOAD_LIMIT_MIB", default_value_t = 1024)]
    upload_limit_mib: u64,
    /// Seconds between pings on WebSockets (exec streams, terminals, watches); a client silent
    /// for three intervals counts as gone.
    #[arg(long, env = "WRENN_WS_PING_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    ws_ping_secs: u64,
    /// Refuse sign-ups after the first user.
    #[arg(long, env = "WRENN_CLOSED_SIGNUP")]
    closed_signup: bool,
    #[arg(long, env = "WRENN_GITHUB_CLIENT_ID")]
    github_client_id: Option<String>,
    #[arg(long, env = "WRENN_GITHUB_CLIENT_SECRET", hide_env_values = true)]
    github_client_secret: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the OpenAPI document (or write it to a file).
    Openapi { out: Option<PathBuf> },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(Command::Openapi { out }) = &args.command {
        let text = wrenn_cp::http::openapi_json();
        match out {
            Some(path) => {
                std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?
            }
            None => print!("{text}"),
        }
        return Ok(());
    }
    let agent_name = match &args.agent_name {
        Some(name) => name.clone(),
        None => nix_hostname(),
    };
    let mut config = CpConfig::new(
        args.listen,
        args.database_url.clone(),
        AgentEndpoint {
            name: agent_name,
            address: args.agent_addr.clone(),
        },
    );
    if let Some(url) = &args.public_url {
        config.public_url = url.trim_end_matches('/').to_owned();
    }
    config.session_ttl = Duration::from_secs(args.session_hours * 3600);
    config.json_body_limit = args.json_limit_kib * 1024;
    config.upload_limit = args.upload_limit_mib << 20;
    config.open_signup = !args.closed_signup;
    config.ws_ping_interval = Duration::from_secs(args.ws_ping_secs);
    if let (Some(id), Some(secret)) = (&args.github_client_id, &args.github_client_secret) {
        config.github = Some(GithubOAuth::github(id.clone(), secret.clone()));
    }
    let cp = ControlPlane::start(config)
        .await
        .context("start the control plane")?;
    cp.serve_until(shutdown_signal()).await;
    Ok(())
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
