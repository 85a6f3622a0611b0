//! envd entry point: arguments, logging, runtime; everything else is in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use envd::cli::{Cli, Invocation};
use envd::init::RunMode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let mode = RunMode::detect();
    if mode == RunMode::Init {
        envd::init::populate_code();
    }
    let args = std::env::args_os().skip(1);
    let cli = match Cli::parse_args(args.map(|arg| arg.to_string_lossy().into_owned())) {
        Invocation::Run(cli) => cli,
        Invocation::Print(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        // The kernel hands init the command-line words it does not know; PID 1 exiting over
        // one would panic the guest.
        Invocation::Error(message) if mode == RunMode::Init => {
            eprintln!("envd: ignoring the arguments: {message}");
            Cli::default()
        }
        Invocation::Error(message) => {
            eprintln!("envd: {message}\n\n{}", Cli::usage());
            return ExitCode::from(2);
        }
    };
    // As PID 1 stderr is the serial console, which the host keeps as a plain log file.
    let colors = mode == RunMode::Hosted && std::io::stderr().is_terminal();
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colors);
    // Parsing a filter is measurable at boot under TCG; a plain level is enough by default.
    match EnvFilter::try_from_default_env() {
        Ok(filter) => logs.with_env_filter(filter).init(),
        Err(_) => logs.with_max_level(tracing::Level::INFO).init(),
    }

    // One vCPU gains nothing from worker threads; every hand-off between them is a futex
    // wake-up and a context switch, which under TCG is first-time guest code after a restore.
    let single_cpu = std::thread::available_parallelism().map_or(true, |n| n.get() == 1);
    let mut runtime = if single_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let result = runtime
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(envd::run(cli, mode)).map_err(Into::into));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "envd failed");
            if mode == RunMode::Init {
                // PID 1 must not just exit; take the VM down cleanly instead.
                envd::init::power::halt();
            }
            ExitCode::FAILURE
        }
    }
}
