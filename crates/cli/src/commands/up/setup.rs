//! Preparing the machine: packages, PostgreSQL, the binaries to run, guest images. The shell
//! steps are the repo's own scripts, embedded so an installed `wrenn` carries them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tokio::process::Command;

use super::config::Settings;

const INSTALL_DEPS: &str = include_str!("../../../../../scripts/install-deps");
const ENSURE_POSTGRES: &str = include_str!("../../../../../scripts/ensure-postgres");

async fn run_script(name: &str, script: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(name)
        .args(args)
        .status()
        .await
        .with_context(|| format!("run {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

/// QEMU, nftables, image-build tools… (a no-op when all are present).
pub async fn install_packages() -> anyhow::Result<()> {
    step("packages");
    run_script("install-deps", INSTALL_DEPS, &[]).await
}

/// A running local PostgreSQL with a `root` role and the database.
pub async fn ensure_postgres(database: &str) -> anyhow::Result<()> {
    step("PostgreSQL");
    run_script("ensure-postgres", ENSURE_POSTGRES, &[database]).await
}

/// The programs `wrenn up` starts.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub wrenn: PathBuf,
    pub agent: PathBuf,
    pub control_plane: PathBuf,
    pub envd: Option<PathBuf>,
}

impl Binaries {
    /// Looks next to this executable first (an install or a build directory), then in PATH.
    pub fn find(settings: &Settings) -> anyhow::Result<Self> {
        let wrenn = std::env::current_exe().context("locate the wrenn executable")?;
        let dir = wrenn.parent().map(Path::to_path_buf).unwrap_or_default();
        let locate = |name: &str| -> Option<PathBuf> {
            let sibling = dir.join(name);
            if sibling.is_file() {
                return Some(sibling);
            }
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        };
        let agent = locate("wrenn-agent").context(
            "wrenn-agent not found next to wrenn or in PATH (./scripts/up builds and installs it)",
        )?;
        let control_plane = locate("wrenn-cp").context(
            "wrenn-cp not found next to wrenn or in PATH (./scripts/up builds and installs it)",
        )?;
        // A development build has a dynamic envd next to `wrenn`; guests need the static one.
        let envd = settings.envd.clone().or_else(|| {
            [locate("envd"), Some(PathBuf::from("/usr/local/bin/envd"))]
                .into_iter()
                .flatten()
                .find(|path| is_static(path))
        });
        Ok(Self {
            wrenn,
            agent,
            control_plane,
            envd,
        })
    }
}

fn is_static(path: &Path) -> bool {
    matches!(
        wrenn_agent::image_build::elf::linkage(path),
        Ok(wrenn_agent::image_build::elf::Linkage::Static)
    )
}

/// Builds the kernel and the `minimal` template unless they are current (cached by inputs).
pub async fn build_images(settings: &Settings, binaries: &Binaries) -> anyhow::Result<()> {
    step("guest images");
    let mut command = Command::new(&binaries.wrenn);
    command
        .args(["image", "build", "--images-dir"])
        .arg(&settings.images_dir);
    if let Some(envd) = &binaries.envd {
        command.arg("--envd").arg(envd);
    }
    let status = command.status().await.context("run wrenn image build")?;
    if !status.success() {
        bail!("building the guest images failed ({status})");
    }
    Ok(())
}

pub fn step(what: &str) {
    eprintln!("==> {what}");
}
