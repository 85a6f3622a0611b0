//! The `wrenn` command line: parses arguments and hands each subcommand to `commands/`.

mod commands;
mod terminal;
mod tty;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "wrenn",
    version,
    about = "Run untrusted code in microVM sandboxes."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build and manage guest images (kernel and template root filesystems).
    Image(commands::image::ImageArgs),
    /// Boot a sandbox on this machine, run one command in it, then destroy it.
    Run(commands::run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    terminal::init_tracing();
    let result = match cli.command {
        Command::Image(args) => commands::image::run(args).map(|()| 0),
        Command::Run(args) => commands::run::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            // The chain, not `{:?}`: that would add a backtrace whenever RUST_BACKTRACE is set.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
