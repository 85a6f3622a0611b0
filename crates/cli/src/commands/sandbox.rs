//! `wrenn sandbox …`: create, list, inspect and drive sandboxes through the control plane —
//! exec with streamed output, an interactive shell, file copies, pause/resume, snapshots.

use anyhow::Context;
use clap::{Args, Subcommand};
use wrenn_api::{
    CreateSandboxRequest, ExecRequest, Sandbox, SandboxList, SandboxState, StartedFrom,
};

use super::attach::{self, Attach, Ended, Interrupts, OnInterrupt, Stdin, Terminal};
use super::run::parse_pair;
use super::ApiArgs;
use crate::api::{ws, ApiClient, ProcessStream, SandboxFilter};
use crate::output::{self, print_json, Format, Table};

#[derive(Debug, Args)]
pub struct SandboxArgs {
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Boot a new sandbox and print its id.
    Create(CreateArgs),
    /// List the team's sandboxes (every state but stopped unless --state says otherwise).
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Show one sandbox.
    Get { id: String },
    /// Run a command in a sandbox, streaming its output; exits with its exit code.
    Exec(ExecArgs),
    /// Open an interactive terminal in a sandbox.
    Shell(ShellArgs),
    /// Copy a file into or out of a sandbox: `cp ./local ID:/path` or `cp ID:/path ./local`.
    Cp(super::copy::CopyArgs),
    /// Save a running sandbox to disk, releasing its CPU and memory.
    Pause { id: String },
    /// Bring a paused sandbox back with its processes and memory intact.
    Resume { id: String },
    /// Destroy a sandbox and everything in it.
    #[command(visible_alias = "rm")]
    Kill { id: String },
    /// Freeze a sandbox into a new template named NAME.
    Snapshot { id: String, name: String },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Template to boot (server default: minimal).
    #[arg(long)]
    template: Option<String>,
    /// Virtual CPUs (default 1).
    #[arg(long)]
    vcpus: Option<u32>,
    /// Guest memory in MiB.
    #[arg(long, visible_alias = "memory-mb", value_name = "MB")]
    memory: Option<u32>,
    /// Root disk size in MiB.
    #[arg(long, visible_alias = "disk-mb", value_name = "MB")]
    disk: Option<u32>,
    /// Pause the sandbox after this many idle seconds (0 = never).
    #[arg(long, value_name = "SEC")]
    timeout: Option<u32>,
    /// Environment for every process in the sandbox, KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// Metadata to find the sandbox by, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
    metadata: Vec<(String, String)>,
    /// Block internet access from the sandbox.
    #[arg(long)]
    no_internet: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only sandboxes in this state (repeatable): pending, running, paused, stopped, error,
    /// missing.
    #[arg(long, value_parser = parse_state)]
    state: Vec<SandboxState>,
    /// Only sandboxes with this metadata, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
    metadata: Vec<(String, String)>,
    /// Sandboxes fetched per request (1 to 1000; the server's default is 50). Every page is
    /// fetched either way.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: Option<u32>,
}

#[derive(Debug, Args)]
struct ExecArgs {
    id: String,
    /// Environment for the command, KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User inside the sandbox (default root).
    #[arg(short, long)]
    user: Option<String>,
    /// Forward stdin to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Kill the command after this many seconds.
    #[arg(long, value_name = "SEC")]
    timeout: Option<u64>,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct ShellArgs {
    id: String,
    /// Program to run instead of a login shell (no arguments), e.g. `--cmd python3`.
    #[arg(long, value_name = "PROGRAM")]
    cmd: Option<String>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User inside the sandbox (default root).
    #[arg(short, long)]
    user: Option<String>,
}

fn parse_state(s: &str) -> Result<SandboxState, String> {
    SandboxState::parse(s).ok_or_else(|| {
        let known: Vec<_> = SandboxState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {s:?}; one of {}", known.join(", "))
    })
}

pub async fn run(args: SandboxArgs, api: &ApiArgs) -> anyhow::Result<i32> {
    let client = api.client()?;
    let format = api.format();
    match args.command {
        SandboxCommand::Create(args) => create(&client, args, format).await?,
        SandboxCommand::Ls(args) => list(&client, args, format).await?,
        SandboxCommand::Get { id } => {
            let sandbox = client.sandbox_get(&id).await?;
            match format {
                Format::Json => print_json(&sandbox),
                Format::Human => print!("{}", describe(&sandbox)),
            }
        }
        SandboxCommand::Exec(args) => return exec(&client, args).await,
        SandboxCommand::Shell(args) => return shell(&client, args).await,
        SandboxCommand::Cp(args) => super::copy::copy(&client, args, format).await?,
        SandboxCommand::Pause { id } => {
            let spinner = output::spinner(format!("pausing {id}"));
            let paused = client.sandbox_pause(&id).await;
            output::finish(&spinner);
            report(format, &paused?, "paused");
        }
        SandboxCommand::Resume { id } => {
            let spinner = output::spinner(format!("resuming {id}"));
            let resumed = client.sandbox_resume(&id).await;
            output::finish(&spinner);
            report(format, &resumed?, "resumed");
        }
        SandboxCommand::Kill { id } => {
            client.sandbox_destroy(&id).await?;
            match format {
                Format::Json => print_json(&serde_json::json!({ "id": id, "destroyed": true })),
                Format::Human => println!("destroyed {id}"),
            }
        }
        SandboxCommand::Snapshot { id, name } => {
            let spinner = output::spinner(format!("snapshotting {id} into template {name}"));
            let template = client.sandbox_snapshot(&id, &name).await;
            output::finish(&spinner);
            let template = template?;
            match format {
                Format::Json => print_json(&template),
                Format::Human => println!("created template {} from {id}", template.name),
            }
        }
    }
    Ok(0)
}

async fn create(client: &ApiClient, args: CreateArgs, format: Format) -> anyhow::Result<()> {
    let request = CreateSandboxRequest {
        template: args.template.clone(),
        vcpus: args.vcpus,
        memory_mb: args.memory,
        disk_mb: args.disk,
        timeout_sec: args.timeout,
        env: (!args.env.is_empty()).then(|| args.env.into_iter().collect()),
        metadata: (!args.metadata.is_empty()).then(|| args.metadata.into_iter().collect()),
        internet: args.no_internet.then_some(false),
    };
    let template = args.template.as_deref().unwrap_or("default");
    let spinner = output::spinner(format!("creating a sandbox from the {template} template"));
    let created = client.sandbox_create(&request).await;
    output::finish(&spinner);
    let sandbox = created.context("could not create the sandbox")?;
    match format {
        Format::Json => print_json(&sandbox),
        // The id alone, so `id=$(wrenn sandbox create)` works.
        Format::Human => println!("{}", sandbox.id),
    }
    Ok(())
}

async fn list(client: &ApiClient, args: ListArgs, format: Format) -> anyhow::Result<()> {
    let filter = SandboxFilter {
        states: args.state,
        metadata: args.metadata,
        page_size: args.page_size,
    };
    let sandboxes = client.sandbox_list(&filter).await?;
    match format {
        Format::Json => print_json(&SandboxList {
            sandboxes,
            next_cursor: None,
        }),
        Format::Human if sandboxes.is_empty() => eprintln!("no sandboxes"),
        Format::Human => sandbox_table(&sandboxes).print(),
    }
    Ok(())
}

fn sandbox_table(sandboxes: &[Sandbox]) -> Table {
    let now = chrono::Utc::now();
    let mut table = Table::new(&[
        "ID", "TEMPLATE", "STATE", "VCPUS", "MEMORY", "CREATED", "METADATA",
    ]);
    for sandbox in sandboxes {
        table.row(vec![
            sandbox.id.clone(),
            sandbox.template.clone(),
            sandbox.state.as_str().to_owned(),
            sandbox.vcpus.to_string(),
            output::mebibytes(sandbox.memory_mb),
            output::age(sandbox.created_at, now),
            output::pairs(&sandbox.metadata),
        ]);
    }
    table
}

/// One sandbox, a field a line.
fn describe(sandbox: &Sandbox) -> String {
    let mut lines = vec![
        ("id", sandbox.id.clone()),
        ("state", sandbox.state.as_str().to_owned()),
        ("template", sandbox.template.clone()),
        ("vcpus", sandbox.vcpus.to_string()),
        ("memory", output::mebibytes(sandbox.memory_mb)),
        (
            "disk",
            if sandbox.disk_mb == 0 {
                "template size".into()
            } else {
                output::mebibytes(sandbox.disk_mb)
            },
        ),
        (
            "internet",
            if sandbox.internet { "yes" } else { "no" }.into(),
        ),
        (
            "idle timeout",
            match sandbox.timeout_sec {
                0 => "never".into(),
                secs => format!("{secs}s"),
            },
        ),
        ("metadata", output::pairs(&sandbox.metadata)),
        ("created", sandbox.created_at.to_rfc3339()),
    ];
    if let Some(boot_ms) = sandbox.boot_ms {
        let how = match sandbox.started_from {
            Some(StartedFrom::ColdBoot) => " (cold boot)",
            Some(StartedFrom::BootSnapshot) => " (from the image's boot snapshot)",
            Some(StartedFrom::Template) => " (from a snapshot template)",
            None => "",
        };
        lines.push(("boot", format!("{boot_ms} ms{how}")));
    }
    if sandbox.auto_paused {
        lines.push(("auto-paused", "yes".into()));
    }
    if let Some(error) = &sandbox.error {
        lines.push(("error", error.clone()));
    }
    lines
        .into_iter()
        .map(|(key, value)| format!("{:<14}{value}\n", format!("{key}:")))
        .collect()
}

fn report(format: Format, sandbox: &Sandbox, done: &str) {
    match format {
        Format::Json => print_json(sandbox),
        Format::Human => println!("{done} {}", sandbox.id),
    }
}

async fn exec(client: &ApiClient, args: ExecArgs) -> anyhow::Result<i32> {
    let request = ExecRequest {
        cmd: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        env: (!args.env.is_empty()).then(|| args.env.into_iter().collect()),
        cwd: args.workdir,
        user: args.user,
        timeout_sec: args.timeout,
        stdin: args.interactive,
        ..Default::default()
    };
    let mut stream = ProcessStream::connect(client, ws::exec_stream_url(client, &args.id)).await?;
    stream.start(&request).await?;
    let how = Attach {
        stdin: if args.interactive {
            Stdin::Forwarded
        } else {
            Stdin::Closed
        },
        terminal: Terminal::None,
        on_interrupt: OnInterrupt::Forward,
    };
    finish_attached(stream, how).await
}

async fn shell(client: &ApiClient, args: ShellArgs) -> anyhow::Result<i32> {
    let (cols, rows) = crate::tty::size();
    let options = ws::PtyOptions {
        cols,
        rows,
        cmd: args.cmd,
        cwd: args.workdir,
        user: args.user,
    };
    let url = ws::pty_url(client, &args.id, &options);
    let stream = ProcessStream::connect(client, url).await?;
    let how = Attach {
        stdin: Stdin::Forwarded,
        terminal: Terminal::Raw,
        on_interrupt: OnInterrupt::Forward,
    };
    finish_attached(stream, how).await
}

async fn finish_attached(mut stream: ProcessStream, how: Attach) -> anyhow::Result<i32> {
    let mut interrupts = Interrupts::watch().context("watch for Ctrl-C")?;
    let ended = attach::attach(&mut stream, how, &mut interrupts).await;
    stream.close().await;
    Ok(match ended? {
        Ended::Exited(code) => code,
        Ended::Interrupted => attach::INTERRUPTED_CODE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_by_name() {
        assert_eq!(parse_state("paused"), Ok(SandboxState::Paused));
        assert!(parse_state("sleeping").unwrap_err().contains("running"));
    }
}
