//! The `wrenn` command line: parses arguments and hands each subcommand to `commands/`.

mod api;
mod commands;
mod output;
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
    #[command(flatten)]
    api: commands::ApiArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build and manage guest images (kernel and template root filesystems).
    Image(commands::image::ImageArgs),
    /// Boot a sandbox, run one command in it with its output streamed, then destroy it.
    Run(commands::run::RunArgs),
    /// Create, list and use sandboxes.
    Sandbox(commands::sandbox::SandboxArgs),
    /// List and delete templates.
    Template(commands::template::TemplateArgs),
    /// Store an API key for the control plane (logging in with email and password).
    Login(commands::login::LoginArgs),
    /// Forget the stored API key (and revoke it if `wrenn login` created it).
    Logout,
    /// Bring the whole system up on this machine: PostgreSQL, images, host agent, control plane.
    Up(commands::up::UpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    terminal::init_tracing();
    let api = cli.api;
    let result = match cli.command {
        Command::Image(args) => commands::image::run(args).map(|()| 0),
        Command::Run(args) => commands::block_on(commands::run::run(args, &api)),
        Command::Sandbox(args) => commands::block_on(commands::sandbox::run(args, &api)),
        Command::Template(args) => commands::block_on(commands::template::run(args, &api)),
        Command::Login(args) => commands::block_on(commands::login::login(args, &api)),
        Command::Logout => commands::block_on(commands::login::logout(&api)),
        Command::Up(args) => commands::block_on(commands::up::run(args)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_subcommands() {
        let cli = Cli::try_parse_from([
            "wrenn",
            "sandbox",
            "ls",
            "--json",
            "--api-url",
            "http://cp:7200",
            "--state",
            "paused",
        ])
        .unwrap();
        assert!(cli.api.json);
        assert_eq!(cli.api.api_url.as_deref(), Some("http://cp:7200"));

        let cli = Cli::try_parse_from(["wrenn", "--api-key", "wrn_k", "login"]).unwrap();
        assert_eq!(cli.api.api_key.as_deref(), Some("wrn_k"));
        assert!(matches!(cli.command, Command::Login(_)));
    }

    #[test]
    fn commands_parse_or_fail_as_documented() {
        let ok: &[&[&str]] = &[
            &["wrenn", "run", "--", "python3", "-c", "print(6*7)"],
            &[
                "wrenn", "run", "--agent", "local", "-e", "A=1", "--", "true",
            ],
            &[
                "wrenn",
                "run",
                "--agent",
                "http://127.0.0.1:7250",
                "--",
                "true",
            ],
            &[
                "wrenn",
                "sandbox",
                "create",
                "--template",
                "minimal",
                "--vcpus",
                "2",
                "--memory",
                "512",
                "--disk",
                "2048",
                "--timeout",
                "60",
                "--env",
                "A=1",
                "--metadata",
                "k=v",
                "--no-internet",
            ],
            &[
                "wrenn", "sandbox", "exec", "sb-1", "--", "sh", "-c", "exit 3",
            ],
            &["wrenn", "sandbox", "shell", "sb-1"],
            &["wrenn", "sandbox", "cp", "./a", "sb-1:/tmp/"],
            &["wrenn", "sandbox", "snapshot", "sb-1", "my-template"],
            &["wrenn", "sandbox", "kill", "sb-1"],
            &["wrenn", "template", "rm", "my-template"],
            &["wrenn", "logout"],
        ];
        for args in ok {
            if let Err(error) = Cli::try_parse_from(*args) {
                panic!("{args:?}: {error}");
            }
        }
        let bad: &[&[&str]] = &[
            &["wrenn", "run"],
            &["wrenn", "run", "--agent", "somewhere", "--", "true"],
            &["wrenn", "sandbox", "create", "--env", "NOEQUALS"],
            &["wrenn", "sandbox", "ls", "--state", "sleeping"],
            &["wrenn", "sandbox", "exec", "sb-1"],
            &["wrenn", "sandbox", "pause"],
        ];
        for args in bad {
            assert!(Cli::try_parse_from(*args).is_err(), "{args:?} parsed");
        }
    }
}
