//! `wrenn up` settings: flags, then environment, then an optional TOML file, then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

const DEFAULT_CONFIG: &str = "/etc/wrenn/wrenn.toml";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Settings file (TOML; keys as the long flags with '_' for '-'). Default /etc/wrenn/wrenn.toml if it exists.
    #[arg(long, env = "WRENN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where images, sandboxes, logs and the admin's credentials live.
    #[arg(long, env = "WRENN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kernels and templates (default <data-dir>/images).
    #[arg(long, env = "WRENN_IMAGES_DIR")]
    pub images_dir: Option<PathBuf>,
    /// The host agent's instance name (prefix of its netns, veths and firewall table).
    #[arg(long, env = "WRENN_INSTANCE")]
    pub instance: Option<String>,
    /// The host side of the agent's slot networks, e.g. 10.200.0.0/16.
    #[arg(long, env = "WRENN_SLOT_NETWORK")]
    pub slot_network: Option<String>,
    /// Address of the REST API and dashboard.
    #[arg(long, env = "WRENN_CP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// URL people reach the API at (default http://<listen>).
    #[arg(long, env = "WRENN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Address of the host agent's gRPC API.
    #[arg(long, env = "WRENN_AGENT_LISTEN")]
    pub agent_listen: Option<SocketAddr>,
    /// Use this PostgreSQL database instead of a local one `wrenn up` manages.
    #[arg(long, env = "WRENN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Email of the administrator created on the first run.
    #[arg(long, env = "WRENN_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// The static envd binary for guest images (default: next to `wrenn`, or /usr/local/bin/envd).
    #[arg(long, env = "WRENN_ENVD")]
    pub envd: Option<PathBuf>,
    /// Don't install packages (PostgreSQL, QEMU…); fail if something is missing.
    #[arg(long)]
    pub no_install: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    images_dir: Option<PathBuf>,
    instance: Option<String>,
    slot_network: Option<String>,
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    agent_listen: Option<SocketAddr>,
    database_url: Option<String>,
    admin_email: Option<String>,
    envd: Option<PathBuf>,
    no_install: Option<bool>,
}

/// Everything `wrenn up` needs to know, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub images_dir: PathBuf,
    /// Passed to the agent when set (its default otherwise).
    pub instance: Option<String>,
    pub slot_network: Option<String>,
    pub listen: SocketAddr,
    pub public_url: String,
    pub agent_listen: SocketAddr,
    /// Set when the user brings their own database.
    pub external_database_url: Option<String>,
    pub database_name: String,
    pub admin_email: String,
    pub envd: Option<PathBuf>,
    pub install: bool,
}

impl Settings {
    pub fn resolve(args: &UpArgs) -> anyhow::Result<Self> {
        let file = load_file(args.config.as_deref())?;
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:7200".parse().unwrap());
        let data_dir: PathBuf = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| "/var/lib/wrenn".into());
        Ok(Self {
            images_dir: args
                .images_dir
                .clone()
                .or(file.images_dir)
                .unwrap_or_else(|| data_dir.join("images")),
            instance: args.instance.clone().or(file.instance),
            slot_network: args.slot_network.clone().or(file.slot_network),
            data_dir,
            listen,
            public_url: args
                .public_url
                .clone()
                .or(file.public_url)
                .unwrap_or_else(|| format!("http://{listen}"))
                .trim_end_matches('/')
                .to_owned(),
            agent_listen: args
                .agent_listen
                .or(file.agent_listen)
                .unwrap_or_else(|| "127.0.0.1:7250".parse().unwrap()),
            external_database_url: args.database_url.clone().or(file.database_url),
            database_name: "wrenn".into(),
            admin_email: args
                .admin_email
                .clone()
                .or(file.admin_email)
                .unwrap_or_else(|| "admin@wrenn.local".into()),
            envd: args.envd.clone().or(file.envd),
            install: !(args.no_install || file.no_install.unwrap_or(false)),
        })
    }

    pub fn manages_database(&self) -> bool {
        self.external_database_url.is_none()
    }

    pub fn database_url(&self) -> String {
        match &self.external_database_url {
            Some(url) => url.clone(),
            None => format!(
                "postgres:///{}?host=/var/run/postgresql",
                self.database_name
            ),
        }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    pub fn credentials_file(&self) -> PathBuf {
        self.data_dir.join("admin.json")
    }

    /// The URL this machine reaches the API at (the listen address may be 0.0.0.0).
    pub fn local_api_url(&self) -> String {
        let port = self.listen.port();
        if self.listen.ip().is_unspecified() {
            format!("http://127.0.0.1:{port}")
        } else {
            format!("http://{}", self.listen)
        }
    }
}

fn load_file(explicit: Option<&Path>) -> anyhow::Result<FileSettings> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok(FileSettings::default()),
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> UpArgs {
        UpArgs {
            config: None,
            data_dir: None,
            images_dir: None,
            instance: None,
            slot_network: None,
            listen: None,
            public_url: None,
            agent_listen: None,
            database_url: None,
            admin_email: None,
            envd: None,
            no_install: false,
        }
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wrenn.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:8080\"\nadmin_email = \"ops@example.com\"\nno_install = true\n",
        )
        .unwrap();
        let mut args = args();
        args.config = Some(file);
        args.admin_email = Some("me@example.com".into());
        let settings = Settings::resolve(&args).unwrap();
        assert_eq!(settings.listen.port(), 8080);
        assert_eq!(settings.admin_email, "me@example.com");
        assert!(!settings.install);
        assert_eq!(settings.local_api_url(), "http://127.0.0.1:8080");
        assert_eq!(settings.public_url, "http://0.0.0.0:8080");
        assert_eq!(settings.data_dir, PathBuf::from("/var/lib/wrenn"));
        assert!(settings.manages_database());
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wrenn.toml");
        std::fs::write(&file, "lisen = \"0.0.0.0:8080\"\n").unwrap();
        let mut args = args();
        args.config = Some(file);
        let error = Settings::resolve(&args).unwrap_err();
        assert!(format!("{error:#}").contains("lisen"), "{error:#}");
    }
}
