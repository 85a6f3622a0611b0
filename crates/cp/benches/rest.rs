//! REST overhead benchmark: the same operations through the control plane and directly on the
//! host agent, measured in one run on one machine, plus sandbox listing with 1 000 rows.
//!
//! Run as root with images built and PostgreSQL up (`scripts/ensure-postgres`):
//! `cargo bench -p wrenn-cp --bench rest`. `WRENN_BENCH_EXECS` (default 200) and
//! `WRENN_BENCH_CREATES` (default 5) size the runs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Connection;
use tonic::transport::Channel;
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;
use wrenn_agent_api::v1::host_agent_client::HostAgentClient;
use wrenn_cp::config::{AgentEndpoint, CpConfig};
use wrenn_cp::server::ControlPlane;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sorted samples in milliseconds.
struct Samples(Vec<f64>);

impl Samples {
    fn new(mut values: Vec<f64>) -> Self {
        values.sort_by(|a, b| a.total_cmp(b));
        Self(values)
    }
    fn quantile(&self, q: f64) -> f64 {
        self.0[((self.0.len() as f64 - 1.0) * q).round() as usize]
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` asks benches to list tests.
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

struct Bench {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Bench {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", &self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {text}");
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }
}

async fn timed<F: std::future::Future<Output = anyhow::Result<T>>, T>(
    f: F,
) -> anyhow::Result<(f64, T)> {
    let started = Instant::now();
    let value = f.await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, value))
}

async fn run() -> anyhow::Result<()> {
    let execs = env_count("WRENN_BENCH_EXECS", 200);
    let creates = env_count("WRENN_BENCH_CREATES", 5);
    let admin_url = std::env::var("WRENN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres:///postgres?host=/var/run/postgresql".into());
    let db_name = format!("wrenn_bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE \"{db_name}\""))
        .execute(&mut admin)
        .await?;
    let mut db_url = url::Url::parse(&admin_url)?;
    db_url.set_path(&format!("/{db_name}"));

    // The host agent, in-process.
    let images_dir = std::env::var_os("WRENN_IMAGES_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/wrenn/images"), PathBuf::from);
    let lease = wrenn_agent::lease::BENCHES.acquire()?;
    let state = tempfile::tempdir()?;
    let mut agent_config = wrenn_agent::config::AgentConfig::new(state.path());
    agent_config.images_dir = images_dir;
    agent_config.state_dir = state.path().join("sandboxes");
    lease.apply(&mut agent_config);
    agent_config.on_shutdown = wrenn_agent::config::ShutdownPolicy::DestroySandboxes;
    let agent = wrenn_agent::server::Agent::start(agent_config).await?;
    let local = wrenn_agent::server::LocalAgent::serve(agent).await?;
    let agent_addr = local.addr;

    let mut config = CpConfig::new(
        "127.0.0.1:0".parse()?,
        db_url.to_string(),
        AgentEndpoint {
            name: "bench-host".into(),
            address: format!("http://{agent_addr}"),
        },
    );
    // Keep the reconciler out of the measurements (and off the synthetic rows below).
    config.reconcile_interval = Duration::from_secs(3600);
    let cp = ControlPlane::start(config).await?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", cp.addr());
    let session: Value = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&json!({"email": "bench@example.com", "password": "benchmark password", "name": "Bench"}))
        .send()
        .await?
        .json()
        .await?;
    let token = session["token"].as_str().unwrap_or_default().to_owned();
    let created: Value = http
        .post(format!("{base}/v1/api-keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let bench = Bench {
        http,
        base,
        key: created["key"].as_str().unwrap_or_default().to_owned(),
    };
    let mut agent_client: HostAgentClient<Channel> =
        HostAgentClient::connect(format!("http://{agent_addr}")).await?;

    eprintln!("booting a sandbox…");
    let sandbox = bench
        .call(
            reqwest::Method::POST,
            "/v1/sandboxes",
            Some(json!({"template": "minimal"})),
        )
        .await?;
    let id = sandbox["id"].as_str().unwrap_or_default().to_owned();

    eprintln!("exec `true` × {execs}, through REST and directly on the agent…");
    let exec_path = format!("/v1/sandboxes/{id}/exec");
    let (mut rest_exec, mut agent_exec) = (Vec::new(), Vec::new());
    for _ in 0..execs {
        let (ms, result) = timed(bench.call(
            reqwest::Method::POST,
            &exec_path,
            Some(json!({"cmd": "true"})),
        ))
        .await?;
        anyhow::ensure!(result["exit_code"] == 0, "{result}");
        rest_exec.push(ms);
        let request = pb::ExecRequest {
            sandbox_id: id.clone(),
            process: Some(envd::ProcessSpec {
                cmd: "true".into(),
                timeout_ms: 300_000,
                ..Default::default()
            }),
        };
        let (ms, _) = timed(async { Ok(agent_client.exec(request).await?) }).await?;
        agent_exec.push(ms);
    }

    eprintln!("snapshot, then create-from-template × {creates} each way…");
    bench
        .call(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{id}/snapshot"),
            Some(json!({"name": "bench"})),
        )
        .await?;
    let agent_template: String =
        sqlx::query_scalar("SELECT agent_name FROM templates WHERE name = 'bench'")
            .fetch_one(&cp.state().pool)
            .await?;
    let (mut rest_create, mut agent_create) = (Vec::new(), Vec::new());
    for _ in 0..creates {
        let (ms, clone) = timed(bench.call(
            reqwest::Method::POST,
            "/v1/sandboxes",
            Some(json!({"template": "bench"})),
        ))
        .await?;
        rest_create.push(ms);
        bench
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/sandboxes/{}", clone["id"].as_str().unwrap_or_default()),
                None,
            )
            .await?;
        let request = pb::CreateSandboxRequest {
            template: agent_template.clone(),
            ..Default::default()
        };
        let (ms, clone) =
            timed(async { Ok(agent_client.create_sandbox(request).await?.into_inner()) }).await?;
        agent_create.push(ms);
        agent_client
            .destroy_sandbox(pb::DestroySandboxRequest {
                sandbox_id: clone.sandbox_id,
            })
            .await?;
    }
    bench
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/sandboxes/{id}"),
            None,
        )
        .await?;
    bench
        .call(reqwest::Method::DELETE, "/v1/templates/bench", None)
        .await?;

    eprintln!("listing with 1 000 sandbox rows…");
    sqlx::query(
        "INSERT INTO sandboxes (id, team_id, host_id, template_id, template, state, vcpus, memory_mb, disk_mb, \
         timeout_sec, internet, metadata) \
         SELECT 'sb-bench' || i, s.team_id, s.host_id, s.template_id, s.template, 'running', 1, 256, 0, 0, TRUE, \
         jsonb_build_object('i', i::text) FROM generate_series(1, 1000) i, (SELECT * FROM sandboxes LIMIT 1) s",
    )
    .execute(&cp.state().pool)
    .await?;
    let (mut list_page, mut list_all) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        list_page.push(
            timed(bench.call(reqwest::Method::GET, "/v1/sandboxes", None))
                .await?
                .0,
        );
    }
    for _ in 0..50 {
        let (ms, all) =
            timed(bench.call(reqwest::Method::GET, "/v1/sandboxes?limit=1000", None)).await?;
        anyhow::ensure!(
            all["sandboxes"].as_array().map_or(0, Vec::len) == 1000,
            "expected 1000 rows"
        );
        list_all.push(ms);
    }

    let rows = [
        (
            "exec `true`",
            Samples::new(rest_exec),
            Some(Samples::new(agent_exec)),
        ),
        (
            "create from template → running",
            Samples::new(rest_create),
            Some(Samples::new(agent_create)),
        ),
        (
            "GET /v1/sandboxes (page of 50, 1 000 rows)",
            Samples::new(list_page),
            None,
        ),
        (
            "GET /v1/sandboxes?limit=1000 (1 000 rows)",
            Samples::new(list_all),
            None,
        ),
    ];
    println!("\n| operation | REST p50 | REST p99 | agent p50 | agent p99 | added p50 |");
    println!("|---|---|---|---|---|---|");
    for (name, rest, agent) in rows {
        match agent {
            Some(agent) => println!(
                "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:+.2} ms |",
                rest.quantile(0.5),
                rest.quantile(0.99),
                agent.quantile(0.5),
                agent.quantile(0.99),
                rest.quantile(0.5) - agent.quantile(0.5)
            ),
            None => println!(
                "| {name} | {:.2} ms | {:.2} ms | — | — | — |",
                rest.quantile(0.5),
                rest.quantile(0.99)
            ),
        }
    }

    cp.shutdown().await;
    local.stop(Duration::from_secs(60)).await;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
    ))
    .execute(&mut admin)
    .await?;
    Ok(())
}
