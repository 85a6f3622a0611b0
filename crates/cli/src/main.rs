//! The `wrenn` command line: parses arguments and hands each subcommand to `commands/`.

mod commands;
mod terminal;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    terminal::init_tracing();
    let result = match cli.command {
        Command::Image(args) => commands::image::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
