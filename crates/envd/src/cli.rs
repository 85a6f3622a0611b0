//! Command line of the envd binary.
//!
//! Parsed by hand: envd has one option, and as a guest's PID 1 every piece of code it runs
//! before listening is translated on first use under TCG. Building a clap parser took 14 ms
//! of a cold boot (measured with boot-time marks), this takes well under one.

use std::net::SocketAddr;

use wrenn_envd_api::ENVD_PORT;

const USAGE: &str = "\
Wrenn guest agent

Usage: envd [--listen <ADDR>]

Options:
      --listen <ADDR>  Address to serve gRPC on. Port 0 picks a free port; the chosen address
                       is printed [default: 0.0.0.0:49983]
  -h, --help           Print help
  -V, --version        Print version
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// Address to serve gRPC on. Port 0 picks a free port; the chosen address is printed.
    pub listen: SocketAddr,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Run(Cli),
    /// Print this text to stdout and exit successfully (`--help`, `--version`).
    Print(String),
    /// Print this error and the usage to stderr and exit with status 2.
    Error(String),
}

impl Default for Cli {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], ENVD_PORT)),
        }
    }
}

impl Cli {
    /// Reads the arguments after the program name.
    pub fn parse_args(args: impl IntoIterator<Item = String>) -> Invocation {
        let mut listen = Cli::default().listen;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let value = match arg.as_str() {
                "-h" | "--help" => return Invocation::Print(USAGE.to_owned()),
                "-V" | "--version" => {
                    return Invocation::Print(format!("envd {}\n", env!("CARGO_PKG_VERSION")))
                }
                "--listen" => match args.next() {
                    Some(value) => value,
                    None => return Invocation::Error("--listen needs an address".to_owned()),
                },
                other => match other.strip_prefix("--listen=") {
                    Some(value) => value.to_owned(),
                    None => return Invocation::Error(format!("unexpected argument {other:?}")),
                },
            };
            listen = match value.parse() {
                Ok(addr) => addr,
                Err(_) => {
                    return Invocation::Error(format!(
                        "--listen {value:?} is not an address such as 0.0.0.0:49983"
                    ))
                }
            };
        }
        Invocation::Run(Cli { listen })
    }

    /// The usage text printed after an argument error.
    pub fn usage() -> &'static str {
        USAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Invocation {
        Cli::parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn listens_on_the_envd_port_by_default() {
        let expected = Cli {
            listen: "0.0.0.0:49983".parse().unwrap(),
        };
        assert_eq!(parse(&[]), Invocation::Run(expected.clone()));
        assert_eq!(Cli::default(), expected);
    }

    #[test]
    fn takes_the_listen_address_in_both_spellings() {
        let expected = Invocation::Run(Cli {
            listen: "127.0.0.1:0".parse().unwrap(),
        });
        assert_eq!(parse(&["--listen", "127.0.0.1:0"]), expected);
        assert_eq!(parse(&["--listen=127.0.0.1:0"]), expected);
    }

    #[test]
    fn help_and_version_print() {
        let Invocation::Print(help) = parse(&["--help"]) else {
            panic!("--help does not print");
        };
        assert!(help.contains("--listen <ADDR>"));
        assert_eq!(
            parse(&["-V"]),
            Invocation::Print(format!("envd {}\n", env!("CARGO_PKG_VERSION")))
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        for (args, named) in [
            (&["--listen"][..], "--listen"),
            (&["--listen", "nowhere"], "nowhere"),
            (&["--port", "1"], "--port"),
        ] {
            let Invocation::Error(message) = parse(args) else {
                panic!("{args:?} was accepted");
            };
            assert!(message.contains(named), "{args:?}: {message}");
        }
    }
}
