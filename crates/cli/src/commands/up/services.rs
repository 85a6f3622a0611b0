//! Running the host agent and the control plane as supervised child processes. Children get a
//! process group of their own, so Ctrl-C reaches only `wrenn up`, which stops them in order:
//! the control plane first, then the agent (which pauses its sandboxes).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::config::Settings;
use super::setup::{step, Binaries};

const AGENT_READY: Duration = Duration::from_secs(120);
const CP_READY: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(90);

/// A child process and where its output goes.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Service {
    fn spawn(
        name: &'static str,
        mut command: Command,
        settings: &Settings,
    ) -> anyhow::Result<Self> {
        let log = settings.logs_dir().join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        // SAFETY: the closure runs in the child between fork and exec and only makes one
        // async-signal-safe system call (prctl).
        unsafe {
            command.pre_exec(|| {
                // If `wrenn up` dies without stopping us (SIGKILL, a crash), stop too.
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Self { name, child, log })
    }

    /// SIGTERM, then SIGKILL if it hasn't exited within the grace period.
    pub async fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "wrenn up: {} did not stop in {}s; killing it",
                self.name,
                STOP_GRACE.as_secs()
            );
            let _ = self.child.kill().await;
        }
    }

    /// The last lines of the service's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    async fn fail_if_exited(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited during start-up ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }
}

/// Refuses to start when something already listens where the agent or the control plane
/// would (most likely another `wrenn up`): starting anyway would fight over its sandboxes.
pub async fn refuse_if_running(settings: &Settings) -> anyhow::Result<()> {
    for (what, addr) in [
        ("host agent", settings.agent_listen),
        ("control plane", settings.listen),
    ] {
        let probe = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        if tokio::net::TcpStream::connect(probe).await.is_ok() {
            bail!(
                "something already listens on {addr}, where the {what} would: is Wrenn already up? \
                 (stop it, or choose other addresses with --listen / --agent-listen)"
            );
        }
    }
    Ok(())
}

pub async fn start_agent(settings: &Settings, binaries: &Binaries) -> anyhow::Result<Service> {
    step(&format!("host agent on {}", settings.agent_listen));
    let mut command = Command::new(&binaries.agent);
    command
        .arg("--listen")
        .arg(settings.agent_listen.to_string())
        .arg("--data-dir")
        .arg(&settings.data_dir)
        .arg("--images-dir")
        .arg(&settings.images_dir);
    if let Some(instance) = &settings.instance {
        command.arg("--instance").arg(instance);
    }
    if let Some(network) = &settings.slot_network {
        command.arg("--slot-network").arg(network);
    }
    let mut service = Service::spawn("agent", command, settings)?;
    let started = Instant::now();
    loop {
        service.fail_if_exited().await?;
        if tokio::net::TcpStream::connect(settings.agent_listen)
            .await
            .is_ok()
        {
            return Ok(service);
        }
        if started.elapsed() > AGENT_READY {
            service.stop().await;
            bail!(
                "the host agent did not listen within {}s; see {}",
                AGENT_READY.as_secs(),
                service.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn start_control_plane(
    settings: &Settings,
    binaries: &Binaries,
) -> anyhow::Result<Service> {
    step(&format!("control plane on {}", settings.listen));
    let mut command = Command::new(&binaries.control_plane);
    command
        .env("WRENN_CP_LISTEN", settings.listen.to_string())
        .env("WRENN_DATABASE_URL", settings.database_url())
        .env(
            "WRENN_AGENT_ADDR",
            format!("http://{}", settings.agent_listen),
        )
        .env("WRENN_PUBLIC_URL", &settings.public_url);
    let mut service = Service::spawn("control-plane", command, settings)?;
    let health = format!("{}/health", settings.local_api_url());
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        service.fail_if_exited().await?;
        if let Ok(response) = client
            .get(&health)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if response.status().is_success() {
                return Ok(service);
            }
        }
        if started.elapsed() > CP_READY {
            service.stop().await;
            bail!(
                "the control plane was not healthy within {}s; see {}",
                CP_READY.as_secs(),
                service.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ctrl-C and SIGTERM, caught from the moment `wrenn up` starts (a signal that arrived before
/// the handlers were installed would kill it and orphan its children).
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("handle SIGTERM")?,
        })
    }

    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Waits for Ctrl-C or SIGTERM (Ok 0) or for a service to die (Err, with its log's tail).
pub async fn wait_until_stopped(
    signals: &mut StopSignals,
    agent: &mut Service,
    cp: &mut Service,
) -> anyhow::Result<i32> {
    tokio::select! {
        () = signals.recv() => Ok(0),
        status = agent.child.wait() => {
            bail!("the host agent exited ({}); last lines of {}:\n{}", describe(status), agent.log.display(), agent.log_tail())
        }
        status = cp.child.wait() => {
            bail!("the control plane exited ({}); last lines of {}:\n{}", describe(status), cp.log.display(), cp.log_tail())
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => error.to_string(),
    }
}
