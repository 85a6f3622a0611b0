//! `wrenn login` and `wrenn logout`: get an API key for this machine (by email and password,
//! or given with `--api-key`) and keep it, with the API URL, in the config file.

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsFd;

use anyhow::{bail, Context};
use clap::Args;
use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
use wrenn_api::LoginRequest;

use super::ApiArgs;
use crate::api::{ApiClient, ApiTarget, ConfigFile, Credential, StoredLogin};
use crate::output::{self, print_json, Format};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Account email (asked for when absent). The password is asked for on the terminal, or
    /// read from the first line of stdin when stdin is not a terminal. To store an existing
    /// key instead, pass the global --api-key.
    #[arg(long)]
    email: Option<String>,
}

pub async fn login(args: LoginArgs, api: &ApiArgs) -> anyhow::Result<i32> {
    let target = api.target()?;
    let file = ConfigFile::from_process_env()?;
    let anonymous = ApiClient::new(target.url.clone(), Credential::Missing(String::new()));
    let stored = match &api.api_key {
        Some(key) => store_key(&anonymous, &target, key).await?,
        None => log_in(&anonymous, &target, args.email).await?,
    };
    file.save(&stored)?;
    match api.format() {
        Format::Json => print_json(&serde_json::json!({
            "api_url": stored.api_url,
            "api_key_id": stored.api_key_id,
            "config_file": file.path,
        })),
        Format::Human => eprintln!(
            "logged in to {}; key stored in {}",
            stored.api_url,
            file.path.display()
        ),
    }
    Ok(0)
}

/// Checks a given key against the server before keeping it.
async fn store_key(
    anonymous: &ApiClient,
    target: &ApiTarget,
    key: &str,
) -> anyhow::Result<StoredLogin> {
    let client = anonymous.with_credential(Credential::ApiKey(key.trim().to_owned()));
    client
        .template_list()
        .await
        .context("the API key does not work with this control plane")?;
    Ok(StoredLogin {
        api_url: target.url.to_string(),
        api_key: key.trim().to_owned(),
        api_key_id: None,
    })
}

/// Logs in with email and password and creates a key named after this machine.
async fn log_in(
    anonymous: &ApiClient,
    target: &ApiTarget,
    email: Option<String>,
) -> anyhow::Result<StoredLogin> {
    let interactive = std::io::stdin().is_terminal();
    let email = match email {
        Some(email) => email,
        None if interactive => prompt("Email: ")?,
        None => bail!("pass --email when stdin is not a terminal"),
    };
    let password = if interactive {
        prompt_hidden("Password: ")?
    } else {
        read_line().context("read the password from stdin")?
    };
    if email.trim().is_empty() || password.is_empty() {
        bail!("an email and a password are both needed");
    }
    let spinner = output::spinner(format!("logging in to {}", target.url));
    let created = async {
        let session = anonymous
            .login(&LoginRequest {
                email: email.trim().to_owned(),
                password,
            })
            .await
            .context("log in")?;
        anonymous
            .with_credential(Credential::Bearer(session.token))
            .api_key_create(&key_name())
            .await
            .context("create an API key")
    }
    .await;
    output::finish(&spinner);
    let created = created?;
    Ok(StoredLogin {
        api_url: target.url.to_string(),
        api_key: created.key,
        api_key_id: Some(created.api_key.id),
    })
}

/// The machine's hostname, which names its key in the team's key list.
fn key_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "wrenn CLI".into())
}

/// Forgets the stored key, revoking it on the server when `wrenn login` created it.
pub async fn logout(api: &ApiArgs) -> anyhow::Result<i32> {
    let file = ConfigFile::from_process_env()?;
    let Some(stored) = file.load()? else {
        eprintln!("not logged in (no {})", file.path.display());
        return Ok(0);
    };
    if let (Some(id), Ok(url)) = (
        &stored.api_key_id,
        crate::api::config::parse_api_url(&stored.api_url),
    ) {
        let client = ApiClient::new(url, Credential::ApiKey(stored.api_key.clone()));
        if let Err(error) = client.api_key_delete(id).await {
            // The local copy goes regardless; say what is left on the server.
            eprintln!("wrenn: could not revoke API key {id} on the server: {error}");
        }
    }
    file.remove()?;
    match api.format() {
        Format::Json => print_json(&serde_json::json!({ "logged_out": stored.api_url })),
        Format::Human => eprintln!("logged out of {}", stored.api_url),
    }
    Ok(0)
}

fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn prompt(label: &str) -> anyhow::Result<String> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    read_line()
}

/// Reads a line from the terminal with echo off, restoring the terminal afterwards.
fn prompt_hidden(label: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let saved = tcgetattr(stdin.as_fd()).context("read terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(stdin.as_fd(), SetArg::TCSAFLUSH, &quiet).context("turn off echo")?;
    let line = prompt(label);
    let _ = tcsetattr(stdin.as_fd(), SetArg::TCSAFLUSH, &saved);
    line
}
