//! `wrenn run`: boot a sandbox, run one command in it with its output streamed live, exit
//! with its exit code and destroy the sandbox — also on Ctrl-C. By default through the control
//! plane's REST API; `--agent` goes to a host agent directly (see `run_agent.rs`).

use std::future::Future;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::ProgressBar;
use wrenn_api::{CreateSandboxRequest, ExecRequest};

use super::attach::{self, Attach, Ended, Interrupts, OnInterrupt, Stdin, Terminal};
use super::ApiArgs;
use crate::api::ws::{self, PtyOptions};
use crate::api::{ApiClient, ApiError, ProcessStream};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Skip the control plane: `local` boots a host agent inside this process; a URL such as
    /// http://127.0.0.1:7250 uses a running wrenn-agent.
    #[arg(long, value_name = "local|URL", value_parser = parse_agent)]
    pub agent: Option<AgentTarget>,
    /// Template to boot.
    #[arg(long, default_value = "minimal")]
    pub template: String,
    /// Virtual CPUs (default 1).
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Guest memory in MiB (control plane default 256, agent modes 512).
    #[arg(long, visible_alias = "memory")]
    pub memory_mb: Option<u32>,
    /// Root disk size in MiB; the template's size when absent.
    #[arg(long, visible_alias = "disk")]
    pub disk_mb: Option<u32>,
    /// Environment for the command, KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User inside the sandbox (default root).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Block internet access from the sandbox.
    #[arg(long)]
    pub no_internet: bool,
    /// Keep stdin open and forward it to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Run the command on a terminal (use with -i for shells).
    #[arg(short, long)]
    pub tty: bool,
    /// Kill the command after this many seconds.
    #[arg(long)]
    pub timeout_secs: Option<u64>,
    /// With `--agent`: boot the kernel even where the agent has a boot snapshot of the image.
    #[arg(long)]
    pub cold_boot: bool,
    /// With `--agent local`: where images and sandboxes live.
    #[arg(long, env = "WRENN_DATA_DIR", default_value = "/var/lib/wrenn")]
    pub data_dir: PathBuf,
    /// With `--agent local`: the images directory (default <data-dir>/images).
    #[arg(long, env = "WRENN_IMAGES_DIR")]
    pub images_dir: Option<PathBuf>,
    /// With `--agent local`: seconds the sandbox may take to boot.
    #[arg(long, env = "WRENN_READY_TIMEOUT_SECS", default_value_t = 60)]
    pub ready_timeout_secs: u64,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

/// Which host agent `--agent` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTarget {
    /// One inside this process.
    Local,
    /// A running `wrenn-agent` at this gRPC address.
    Remote(String),
}

fn parse_agent(s: &str) -> Result<AgentTarget, String> {
    if s == "local" {
        return Ok(AgentTarget::Local);
    }
    match url::Url::parse(s) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(AgentTarget::Remote(s.trim_end_matches('/').to_owned()))
        }
        _ => Err(format!(
            "{s:?} is neither `local` nor an agent URL such as http://127.0.0.1:7250"
        )),
    }
}

/// `KEY=VALUE`, for environment and metadata flags.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Runs the command and returns its exit code.
pub async fn run(args: RunArgs, api: &ApiArgs) -> anyhow::Result<i32> {
    match &args.agent {
        Some(AgentTarget::Local) => super::run_agent::run_local(&args).await,
        Some(AgentTarget::Remote(address)) => super::run_agent::run_remote(address, &args).await,
        None => run_on_control_plane(&args, &api.client()?).await,
    }
}

async fn run_on_control_plane(args: &RunArgs, client: &ApiClient) -> anyhow::Result<i32> {
    if args.tty && args.command.len() > 1 {
        bail!(
            "through the control plane, -t runs one program without arguments (its terminal \
             API takes none); drop -t, or put the command in a script"
        );
    }
    // The sandbox is the command's alone, so its environment can go on the sandbox: that
    // reaches terminals too, which take no environment of their own.
    let request = CreateSandboxRequest {
        template: Some(args.template.clone()),
        vcpus: args.vcpus,
        memory_mb: args.memory_mb,
        disk_mb: args.disk_mb,
        env: (!args.env.is_empty()).then(|| args.env.iter().cloned().collect()),
        internet: args.no_internet.then_some(false),
        ..Default::default()
    };
    let mut interrupts = Interrupts::watch().context("watch for Ctrl-C")?;
    let spinner = crate::output::spinner(format!("booting a {} sandbox", args.template));
    let booted = boot_shielded(client.sandbox_create(&request), &spinner, &mut interrupts).await;
    crate::output::finish(&spinner);
    let (sandbox, interrupted) = match booted {
        Boot::Done(Err(error @ ApiError::Unreachable { .. }), _) => {
            return Err(anyhow::Error::new(error).context(
                "could not start the sandbox; to run without a control plane, pass \
                 `--agent local` (or `--agent http://HOST:7250` for a running wrenn-agent)",
            ));
        }
        Boot::Done(created, interrupted) => {
            (created.context("could not start the sandbox")?, interrupted)
        }
        Boot::Abandoned => {
            eprintln!("wrenn: interrupted twice; the sandbox may be left running (see `wrenn sandbox ls`)");
            return Ok(attach::INTERRUPTED_CODE);
        }
    };
    tracing::debug!(sandbox = %sandbox.id, boot_ms = ?sandbox.boot_ms, "sandbox running");
    let outcome = if interrupted {
        Ok(attach::INTERRUPTED_CODE)
    } else {
        run_in(client, &sandbox.id, args, &mut interrupts).await
    };
    if let Err(error) = client.sandbox_destroy(&sandbox.id).await {
        eprintln!(
            "wrenn: could not destroy sandbox {}: {error}; remove it with `wrenn sandbox kill {}`",
            sandbox.id, sandbox.id
        );
    }
    outcome
}

async fn run_in(
    client: &ApiClient,
    id: &str,
    args: &RunArgs,
    interrupts: &mut Interrupts,
) -> anyhow::Result<i32> {
    let stdin = if args.interactive {
        Stdin::Forwarded
    } else {
        Stdin::Closed
    };
    let (mut stream, terminal) = if args.tty {
        let (cols, rows) = crate::tty::size();
        let options = PtyOptions {
            cols,
            rows,
            cmd: Some(args.command[0].clone()),
            cwd: args.workdir.clone(),
            user: args.user.clone(),
        };
        let url = ws::pty_url(client, id, &options);
        (ProcessStream::connect(client, url).await?, Terminal::Raw)
    } else {
        let mut stream = ProcessStream::connect(client, ws::exec_stream_url(client, id)).await?;
        stream.start(&exec_request(args)).await?;
        (stream, Terminal::None)
    };
    let how = Attach {
        stdin,
        terminal,
        on_interrupt: OnInterrupt::Detach,
    };
    let ended = attach::attach(&mut stream, how, interrupts).await;
    stream.close().await;
    Ok(match ended? {
        Ended::Exited(code) => code,
        Ended::Interrupted => attach::INTERRUPTED_CODE,
    })
}

fn exec_request(args: &RunArgs) -> ExecRequest {
    ExecRequest {
        cmd: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        cwd: args.workdir.clone(),
        user: args.user.clone(),
        timeout_sec: args.timeout_secs,
        stdin: args.interactive,
        ..Default::default()
    }
}

/// How a create that Ctrl-C may interrupt ended.
pub enum Boot<T> {
    /// The create finished; `true` when Ctrl-C was pressed meanwhile (destroy, don't run).
    Done(T, bool),
    /// Ctrl-C twice: the user wants out now.
    Abandoned,
}

/// Awaits a create without abandoning it on the first Ctrl-C — that would leave a sandbox
/// nobody knows the id of — but remembers it, so the caller destroys the sandbox at once.
pub async fn boot_shielded<T>(
    create: impl Future<Output = T>,
    spinner: &ProgressBar,
    interrupts: &mut Interrupts,
) -> Boot<T> {
    tokio::pin!(create);
    let mut interrupted = false;
    loop {
        tokio::select! {
            created = &mut create => return Boot::Done(created, interrupted),
            _ = interrupts.next() => {
                if interrupted {
                    return Boot::Abandoned;
                }
                interrupted = true;
                spinner.set_message("interrupted: destroying the sandbox as soon as it exists");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_targets_and_pairs_parse() {
        assert_eq!(parse_agent("local"), Ok(AgentTarget::Local));
        assert_eq!(
            parse_agent("http://127.0.0.1:7250/"),
            Ok(AgentTarget::Remote("http://127.0.0.1:7250".into()))
        );
        assert!(parse_agent("127.0.0.1:7250").is_err());
        assert_eq!(parse_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_pair("A="), Ok(("A".into(), String::new())));
        assert!(parse_pair("=x").is_err());
        assert!(parse_pair("novalue").is_err());
    }
}
