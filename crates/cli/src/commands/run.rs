//! `wrenn run`: boot a sandbox on this machine, run one command in it with its output streamed,
//! then destroy it — the Docker-like first contact, with no control plane involved.
//! An agent runs in-process under its own instance name, so it never disturbs a host agent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use wrenn_agent::config::AgentConfig;
use wrenn_agent::envd_client::EnvdClient;
use wrenn_agent::network::InternetAccess;
use wrenn_agent::sandbox::CreateSandbox;
use wrenn_agent::server::Agent;
use wrenn_agent_api::envd;

use crate::tty::RawMode;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Template to boot.
    #[arg(long, default_value = "minimal")]
    template: String,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    #[arg(long, default_value_t = 512)]
    memory_mb: u32,
    /// Root disk size; 0 means the template's size.
    #[arg(long, default_value_t = 0)]
    disk_mb: u32,
    /// Environment for the command, KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User inside the sandbox.
    #[arg(short, long, default_value = "root")]
    user: String,
    /// Block internet access from the sandbox.
    #[arg(long)]
    no_internet: bool,
    /// Keep stdin open and forward it to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Run the command on a terminal (use with -i for shells).
    #[arg(short, long)]
    tty: bool,
    /// Kill the command after this many seconds (0 = no limit).
    #[arg(long, default_value_t = 0)]
    timeout_secs: u64,
    #[arg(long, env = "WRENN_DATA_DIR", default_value = "/var/lib/wrenn")]
    data_dir: PathBuf,
    #[arg(long, env = "WRENN_IMAGES_DIR")]
    images_dir: Option<PathBuf>,
    /// Seconds the sandbox may take to boot.
    #[arg(long, env = "WRENN_READY_TIMEOUT_SECS", default_value_t = 60)]
    ready_timeout_secs: u64,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// A spinner on stderr while the sandbox boots (hidden when stderr is not a terminal).
fn boot_spinner(template: &str) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    spinner.set_message(format!("booting a {template} sandbox"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

/// Runs the command and returns its exit code.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<i32> {
    let lease = wrenn_agent::lease::LOCAL_RUNS.acquire()?;
    let mut config = AgentConfig::new(&args.data_dir);
    if let Some(images_dir) = &args.images_dir {
        config.images_dir = images_dir.clone();
    }
    config.state_dir = args
        .data_dir
        .join("local-runs")
        .join(lease.index.to_string());
    lease.apply(&mut config);
    config.on_shutdown = wrenn_agent::config::ShutdownPolicy::DestroySandboxes;
    config.ready_timeout = Duration::from_secs(args.ready_timeout_secs);

    let spinner = boot_spinner(&args.template);
    let agent = Agent::start(config).await.context("prepare this host")?;
    let manager = agent.manager.clone();
    let created = manager
        .create(CreateSandbox {
            id: None,
            template: args.template.clone(),
            vcpus: args.vcpus,
            memory_mb: args.memory_mb,
            disk_mb: args.disk_mb,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            internet: if args.no_internet {
                InternetAccess::Blocked
            } else {
                InternetAccess::Allowed
            },
            timeout_sec: 0,
        })
        .await;
    let sandbox = match created {
        Ok(sandbox) => sandbox,
        Err(e) => {
            spinner.finish_and_clear();
            manager.shutdown().await;
            bail!("could not start the sandbox: {e}");
        }
    };
    spinner.finish_and_clear();
    tracing::debug!(sandbox = %sandbox.id, boot_ms = sandbox.boot_ms, "sandbox running");

    let envd = manager.envd(sandbox.id.as_str())?;
    let outcome = tokio::select! {
        outcome = run_command(&envd, &args) => outcome,
        _ = tokio::signal::ctrl_c() => Ok(130),
    };
    manager.shutdown().await;
    outcome
}

async fn run_command(envd: &EnvdClient, args: &RunArgs) -> anyhow::Result<i32> {
    let (cols, rows) = crate::tty::size();
    let spec = envd::ProcessSpec {
        cmd: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        env: args.env.iter().cloned().collect(),
        cwd: args.workdir.clone().unwrap_or_default(),
        user: args.user.clone(),
        timeout_ms: args.timeout_secs * 1000,
        tag: String::new(),
        pty: args.tty.then_some(envd::PtySize { cols, rows }),
        stdin: args.interactive,
    };
    let mut events = envd
        .process()
        .start(envd::StartRequest {
            process: Some(spec),
        })
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    let _raw = if args.tty && args.interactive {
        RawMode::enable()
    } else {
        None
    };
    let mut input_task = None;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(event) = events.next().await {
        use envd::process_event::Event;
        match event
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .event
        {
            Some(Event::Started(started)) if args.interactive => {
                input_task = Some(tokio::spawn(forward_stdin(envd.clone(), started.pid)));
            }
            Some(Event::Stdout(data)) | Some(Event::Pty(data)) => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            Some(Event::Stderr(data)) => {
                stderr.write_all(&data)?;
                stderr.flush()?;
            }
            Some(Event::Exited(exit)) => {
                if let Some(task) = input_task {
                    task.abort();
                }
                if exit.timed_out {
                    eprintln!("wrenn: command timed out after {} s", args.timeout_secs);
                }
                return Ok(match (exit.exit_code, exit.signal) {
                    (code, 0) => code,
                    (_, signal) => 128 + signal,
                });
            }
            _ => {}
        }
    }
    bail!("the sandbox ended the command's stream before it exited")
}

/// Copies our stdin to the process until EOF, then closes its stdin.
async fn forward_stdin(envd: EnvdClient, pid: u32) {
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 16 << 10];
    let selector = || {
        Some(envd::ProcessSelector {
            selector: Some(envd::process_selector::Selector::Pid(pid)),
        })
    };
    loop {
        let read = stdin.read(&mut buffer).await.unwrap_or(0);
        let request = envd::SendInputRequest {
            process: selector(),
            data: buffer[..read].to_vec(),
            close: read == 0,
        };
        if envd.process().send_input(request).await.is_err() || read == 0 {
            return;
        }
    }
}
