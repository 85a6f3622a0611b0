//! The administrator `wrenn up` creates on the first run, and the welcome message. The admin's
//! password and API key are kept in `<data-dir>/admin.json` (mode 0600, root only) so later runs
//! can print them again; the database itself only stores their hashes.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::Settings;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Admin {
    pub email: String,
    pub password: String,
    pub api_key: String,
}

/// Reads the saved admin, or signs one up and creates their API key.
pub async fn ensure_admin(settings: &Settings) -> anyhow::Result<Admin> {
    let path = settings.credentials_file();
    let client = reqwest::Client::new();
    let api = settings.local_api_url();
    if let Ok(text) = std::fs::read_to_string(&path) {
        let admin: Admin =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let check = client
            .get(format!("{api}/v1/templates"))
            .header("X-API-Key", &admin.api_key)
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        if check.status().is_success() {
            return Ok(admin);
        }
        eprintln!(
            "wrenn up: the saved API key in {} no longer works ({}); creating a new one",
            path.display(),
            check.status()
        );
        return new_key_for(&client, &api, admin, &path).await;
    }
    let password = random_password();
    let response = client
        .post(format!("{api}/v1/auth/signup"))
        .json(&json!({"email": settings.admin_email, "password": password, "name": "Admin"}))
        .send()
        .await?;
    if response.status() == reqwest::StatusCode::CONFLICT {
        bail!(
            "an account {} already exists but {} is missing; log in with `wrenn login` or pass --admin-email",
            settings.admin_email,
            path.display()
        );
    }
    let session: serde_json::Value = checked_json(response, "sign up the administrator").await?;
    let token = session["token"]
        .as_str()
        .context("signup returned no token")?;
    let key = create_key(&client, &api, token).await?;
    let admin = Admin {
        email: settings.admin_email.clone(),
        password,
        api_key: key,
    };
    save(&path, &admin)?;
    Ok(admin)
}

async fn new_key_for(
    client: &reqwest::Client,
    api: &str,
    admin: Admin,
    path: &std::path::Path,
) -> anyhow::Result<Admin> {
    let response = client
        .post(format!("{api}/v1/auth/login"))
        .json(&json!({"email": admin.email, "password": admin.password}))
        .send()
        .await?;
    let session: serde_json::Value = checked_json(response, "log in as the administrator").await?;
    let token = session["token"]
        .as_str()
        .context("login returned no token")?;
    let admin = Admin {
        api_key: create_key(client, api, token).await?,
        ..admin
    };
    save(path, &admin)?;
    Ok(admin)
}

async fn create_key(client: &reqwest::Client, api: &str, token: &str) -> anyhow::Result<String> {
    let response = client
        .post(format!("{api}/v1/api-keys"))
        .bearer_auth(token)
        .json(&json!({"name": "wrenn up"}))
        .send()
        .await?;
    let created: serde_json::Value = checked_json(response, "create the admin's API key").await?;
    Ok(created["key"]
        .as_str()
        .context("no key in the response")?
        .to_owned())
}

async fn checked_json(
    response: reqwest::Response,
    doing: &str,
) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "{doing}: {status}: {}",
            body["error"]["message"].as_str().unwrap_or("no message")
        );
    }
    Ok(body)
}

fn save(path: &std::path::Path, admin: &Admin) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(serde_json::to_string_pretty(admin)?.as_bytes())?;
    Ok(())
}

fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Stores the admin's key as this user's CLI login, unless they already have one, so plain
/// `wrenn run` works on this machine right away.
pub fn remember_login(settings: &Settings, admin: &Admin) {
    use crate::api::config::{ConfigFile, StoredLogin};
    let Ok(file) = ConfigFile::from_process_env() else {
        return;
    };
    if matches!(file.load(), Ok(Some(_))) {
        return;
    }
    let login = StoredLogin {
        api_url: settings.local_api_url(),
        api_key: admin.api_key.clone(),
        api_key_id: None,
    };
    if let Err(error) = file.save(&login) {
        eprintln!("wrenn up: could not store the CLI login: {error}");
    }
}

pub fn print_welcome(settings: &Settings, admin: &Admin, took: Duration) {
    let url = &settings.public_url;
    let local = settings.local_api_url();
    println!(
        "\nWrenn is up ({:.1}s).\n\n  API + docs:  {url}   ({url}/docs)\n  Admin:       {} / password in {}\n  API key:     {}\n\nTry it:\n\n  curl -s -X POST {local}/v1/sandboxes -H 'X-API-Key: {}' -H 'Content-Type: application/json' -d '{{\"template\":\"minimal\"}}'\n\n  wrenn run -- python3 -c 'print(6*7)'\n\nLogs: {}\nCtrl-C stops everything (sandboxes are paused and come back next time).",
        took.as_secs_f64(),
        admin.email,
        settings.credentials_file().display(),
        admin.api_key,
        admin.api_key,
        settings.logs_dir().display(),
    );
}
