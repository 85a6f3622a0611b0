//! `wrenn run --agent …`: one command in a fresh sandbox without a control plane. With
//! `--agent local` a host agent runs inside this process under its own instance name (so it
//! never disturbs a host agent); with `--agent http://HOST:PORT` a running `wrenn-agent` does
//! the work over its gRPC API.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use wrenn_agent::config::AgentConfig;
use wrenn_agent::envd_client::EnvdClient;
use wrenn_agent::network::InternetAccess;
use wrenn_agent::sandbox::CreateSandbox;
use wrenn_agent::server::Agent;
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;
use wrenn_agent_api::v1::host_agent_client::HostAgentClient;

use super::attach::Interrupts;
use super::run::{Boot, RunArgs};
use crate::tty::RawMode;

/// Defaults of the agent modes, which (unlike the control plane) need explicit sizes.
const DEFAULT_VCPUS: u32 = 1;
const DEFAULT_MEMORY_MB: u32 = 512;

/// A spinner on stderr while the sandbox boots (hidden when stderr is not a terminal).
fn boot_spinner(template: &str) -> indicatif::ProgressBar {
    crate::output::spinner(format!("booting a {template} sandbox"))
}

/// Boots a host agent in this process, runs the command, destroys everything.
pub async fn run_local(args: &RunArgs) -> anyhow::Result<i32> {
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
    // One sandbox, then exit: spare slots would only compete with its boot.
    config.spare_slots = 0;
    config.ready_timeout = Duration::from_secs(args.ready_timeout_secs);

    let spinner = boot_spinner(&args.template);
    let agent = Agent::start(config).await.context("prepare this host")?;
    let manager = agent.manager.clone();
    let created = manager
        .create(CreateSandbox {
            id: None,
            template: args.template.clone(),
            vcpus: args.vcpus.unwrap_or(DEFAULT_VCPUS),
            memory_mb: args.memory_mb.unwrap_or(DEFAULT_MEMORY_MB),
            disk_mb: args.disk_mb.unwrap_or(0),
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            internet: if args.no_internet {
                InternetAccess::Blocked
            } else {
                InternetAccess::Allowed
            },
            timeout_sec: 0,
            cold_boot: args.cold_boot,
        })
        .await;
    crate::output::finish(&spinner);
    let sandbox = match created {
        Ok(sandbox) => sandbox,
        Err(e) => {
            manager.shutdown().await;
            bail!("could not start the sandbox: {e}");
        }
    };
    tracing::debug!(sandbox = %sandbox.id, boot_ms = sandbox.boot_ms, "sandbox running");

    let processes = Processes::Local(manager.envd(sandbox.id.as_str())?);
    let outcome = tokio::select! {
        outcome = run_command(&processes, args) => outcome,
        _ = tokio::signal::ctrl_c() => Ok(super::attach::INTERRUPTED_CODE),
    };
    manager.shutdown().await;
    outcome
}

/// Creates a sandbox on a running host agent, runs the command, destroys the sandbox.
pub async fn run_remote(address: &str, args: &RunArgs) -> anyhow::Result<i32> {
    let channel = Channel::from_shared(address.to_owned())
        .with_context(|| format!("invalid agent address {address:?}"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the host agent at {address}"))?;
    let mut client = HostAgentClient::new(channel)
        .max_decoding_message_size(wrenn_agent::envd_client::MAX_MESSAGE_BYTES);
    let spinner = boot_spinner(&args.template);
    let request = pb::CreateSandboxRequest {
        sandbox_id: String::new(),
        template: args.template.clone(),
        vcpus: args.vcpus.unwrap_or(DEFAULT_VCPUS),
        memory_mb: args.memory_mb.unwrap_or(DEFAULT_MEMORY_MB),
        disk_mb: args.disk_mb.unwrap_or(0),
        env: Default::default(),
        metadata: Default::default(),
        internet: if args.no_internet {
            pb::InternetAccess::Blocked
        } else {
            pb::InternetAccess::Allowed
        } as i32,
        timeout_sec: 0,
        cold_boot: args.cold_boot,
    };
    let mut interrupts = Interrupts::watch().context("watch for Ctrl-C")?;
    let booted =
        super::run::boot_shielded(client.create_sandbox(request), &spinner, &mut interrupts).await;
    crate::output::finish(&spinner);
    let (created, interrupted) = match booted {
        Boot::Done(created, interrupted) => (created, interrupted),
        Boot::Abandoned => {
            eprintln!("wrenn: interrupted twice; the sandbox may be left running on the agent");
            return Ok(super::attach::INTERRUPTED_CODE);
        }
    };
    let sandbox = created
        .map_err(|status| anyhow::anyhow!("could not start the sandbox: {}", status.message()))?
        .into_inner();
    let id = sandbox.sandbox_id;
    tracing::debug!(sandbox = %id, boot_ms = sandbox.boot_ms, "sandbox running");

    let processes = Processes::Remote {
        client: client.clone(),
        sandbox_id: id.clone(),
    };
    let outcome = if interrupted {
        Ok(super::attach::INTERRUPTED_CODE)
    } else {
        tokio::select! {
            outcome = run_command(&processes, args) => outcome,
            _ = interrupts.next() => Ok(super::attach::INTERRUPTED_CODE),
        }
    };
    let destroyed = client
        .destroy_sandbox(pb::DestroySandboxRequest {
            sandbox_id: id.clone(),
        })
        .await;
    if let Err(status) = destroyed {
        eprintln!(
            "wrenn: could not destroy sandbox {id}: {}",
            status.message()
        );
    }
    outcome
}

/// Where the sandbox's processes are reached: its envd directly (in-process agent) or
/// through a host agent's gRPC API.
#[derive(Clone)]
enum Processes {
    Local(EnvdClient),
    Remote {
        client: HostAgentClient<Channel>,
        sandbox_id: String,
    },
}

impl Processes {
    async fn start(
        &self,
        spec: envd::ProcessSpec,
    ) -> Result<tonic::Streaming<envd::ProcessEvent>, tonic::Status> {
        let response = match self {
            Processes::Local(envd) => {
                envd.process()
                    .start(envd::StartRequest {
                        process: Some(spec),
                    })
                    .await?
            }
            Processes::Remote { client, sandbox_id } => {
                client
                    .clone()
                    .start_process(pb::StartProcessRequest {
                        sandbox_id: sandbox_id.clone(),
                        process: Some(spec),
                    })
                    .await?
            }
        };
        Ok(response.into_inner())
    }

    async fn send_input(&self, input: envd::SendInputRequest) -> Result<(), tonic::Status> {
        match self {
            Processes::Local(envd) => envd.process().send_input(input).await.map(drop),
            Processes::Remote { client, sandbox_id } => client
                .clone()
                .send_process_input(pb::SendProcessInputRequest {
                    sandbox_id: sandbox_id.clone(),
                    input: Some(input),
                })
                .await
                .map(drop),
        }
    }
}

async fn run_command(processes: &Processes, args: &RunArgs) -> anyhow::Result<i32> {
    let (cols, rows) = crate::tty::size();
    let timeout_secs = args.timeout_secs.unwrap_or(0);
    let spec = envd::ProcessSpec {
        cmd: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        env: args.env.iter().cloned().collect(),
        cwd: args.workdir.clone().unwrap_or_default(),
        user: args.user.clone().unwrap_or_else(|| "root".into()),
        timeout_ms: timeout_secs * 1000,
        tag: String::new(),
        pty: args.tty.then_some(envd::PtySize { cols, rows }),
        stdin: args.interactive,
    };
    let mut events = processes
        .start(spec)
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
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
                input_task = Some(tokio::spawn(forward_stdin(processes.clone(), started.pid)));
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
                    eprintln!("wrenn: command timed out after {timeout_secs} s");
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
async fn forward_stdin(processes: Processes, pid: u32) {
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
        if processes.send_input(request).await.is_err() || read == 0 {
            return;
        }
    }
}
