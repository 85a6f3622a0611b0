//! The guest kernel step: build `vmlinux` from Debian's `linux-source-6.1` and our config fragment.
//!
//! ```text
//! <cache>/kernel-src/<pkg version>/linux-source-6.1/   unpacked tree, built in place (make is incremental)
//! <cache>/kernel-src/<pkg version>/wrenn-guest-<key>.config
//! <images>/kernels/vmlinux-<key>                        the output
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cmd::{self, CommandError};
use super::dpkg::{self, DpkgError};
use super::inputs_key::KeyHasher;
use super::kbuild::{self, Jobs};
use super::path_io::{io_err, PathIoError};
use super::progress::BuildProgress;
use super::scratch::{self, ScratchError};

/// The config fragment merged over `make tinyconfig`; embedded so an installed `wrenn` needs no repo.
pub const KERNEL_FRAGMENT: &str = include_str!("../../../../images/kernel/wrenn-guest.config");

/// Debian package that ships the kernel source tarball.
pub const LINUX_SOURCE_PACKAGE: &str = "linux-source-6.1";

/// Where [`LINUX_SOURCE_PACKAGE`] puts the tarball.
pub const LINUX_SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// Top-level directory inside the tarball.
const TREE_DIR: &str = "linux-source-6.1";

/// Bumped when the build recipe (targets, steps) changes in a way that changes the output.
const KERNEL_RECIPE_VERSION: &str = "1";

/// How often to look again while someone else's `make` runs in our tree.
const MAKE_POLL: Duration = Duration::from_secs(5);

/// Errors building the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("look up the kernel source package")]
    Package(#[source] DpkgError),
    #[error("{path} is missing: apt-get install {LINUX_SOURCE_PACKAGE} flex bison bc libelf-dev")]
    TarballMissing { path: PathBuf },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("unpack the kernel source")]
    Extract(#[source] CommandError),
    #[error("configure the kernel")]
    Configure(#[source] CommandError),
    #[error("compile the kernel")]
    Compile(#[source] CommandError),
    #[error("clear a half-unpacked kernel tree")]
    Scratch(#[source] ScratchError),
}

/// What the kernel step would produce, known before anything is built.
#[derive(Debug, Clone)]
pub struct KernelPlan {
    pub key: String,
    pub package_version: String,
    /// `<images>/kernels/vmlinux-<key>`.
    pub output: PathBuf,
}

impl KernelPlan {
    pub fn file_name(&self) -> String {
        kernel_file_name(&self.key)
    }
}

pub fn kernel_file_name(key: &str) -> String {
    format!("vmlinux-{key}")
}

/// The cache key of a kernel: the fragment, the source package version and the recipe version.
pub fn kernel_key(fragment: &str, package_version: &str) -> String {
    KeyHasher::new("wrenn-kernel")
        .field("recipe", KERNEL_RECIPE_VERSION.as_bytes())
        .field("fragment", fragment.as_bytes())
        .field("linux-source", package_version.as_bytes())
        .finish()
}

/// Works out the key and output path of the kernel for the installed source package.
pub fn plan(kernels_dir: &Path) -> Result<KernelPlan, KernelError> {
    let package_version =
        dpkg::installed_version(LINUX_SOURCE_PACKAGE).map_err(KernelError::Package)?;
    let key = kernel_key(KERNEL_FRAGMENT, &package_version);
    let output = kernels_dir.join(kernel_file_name(&key));
    Ok(KernelPlan {
        key,
        package_version,
        output,
    })
}

/// Fragment options that did not end up in the final `.config` as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMismatch {
    pub option: String,
    pub wanted: String,
    /// `None` when the option is absent or "is not set".
    pub got: Option<String>,
}

impl std::fmt::Display for ConfigMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let got = self.got.as_deref().unwrap_or("not set");
        write!(f, "{}={} (got {got})", self.option, self.wanted)
    }
}

/// Builds the kernel for `plan` in the cache and installs it atomically.
///
/// Returns the fragment options Kconfig dropped (usually unmet dependencies).
pub fn build(
    plan: &KernelPlan,
    cache_dir: &Path,
    progress: &mut dyn BuildProgress,
) -> Result<Vec<ConfigMismatch>, KernelError> {
    let version_dir = cache_dir.join("kernel-src").join(&plan.package_version);
    let tree = version_dir.join(TREE_DIR);
    ensure_tree(&version_dir, &tree, progress)?;
    wait_for_other_make(&tree, progress);

    let fragment = version_dir.join(format!("wrenn-guest-{}.config", plan.key));
    std::fs::write(&fragment, KERNEL_FRAGMENT)
        .map_err(io_err("write kernel config fragment", &fragment))?;

    progress.line("configuring: tinyconfig + fragment + olddefconfig");
    cmd::run(
        &mut kbuild::make_command(&tree, Jobs::Serial, &["tinyconfig"]),
        progress,
    )
    .map_err(KernelError::Configure)?;
    cmd::run(
        &mut kbuild::merge_config_command(&tree, &fragment),
        progress,
    )
    .map_err(KernelError::Configure)?;
    cmd::run(
        &mut kbuild::make_command(&tree, Jobs::Serial, &["olddefconfig"]),
        progress,
    )
    .map_err(KernelError::Configure)?;
    cmd::run(
        &mut kbuild::make_command(&tree, Jobs::per_cpu(), &["vmlinux"]),
        progress,
    )
    .map_err(KernelError::Compile)?;

    let config_path = tree.join(".config");
    let config = std::fs::read_to_string(&config_path)
        .map_err(io_err("read kernel config", &config_path))?;
    let mismatches = config_mismatches(KERNEL_FRAGMENT, &config);
    for mismatch in &mismatches {
        tracing::warn!(%mismatch, "kernel config fragment option did not take effect");
    }

    install(&tree.join("vmlinux"), &plan.output)?;
    Ok(mismatches)
}

/// Unpacks the source tarball unless a tree is already there (possibly partly or fully built).
fn ensure_tree(
    version_dir: &Path,
    tree: &Path,
    progress: &mut dyn BuildProgress,
) -> Result<(), KernelError> {
    // The tarball is unpacked elsewhere and renamed into place, so an existing Makefile means
    // a complete tree (or one unpacked by hand, which is fine too).
    if tree.join("Makefile").exists() {
        progress.line(&format!("reusing kernel tree {}", tree.display()));
        return Ok(());
    }
    let tarball = Path::new(LINUX_SOURCE_TARBALL);
    if !tarball.exists() {
        return Err(KernelError::TarballMissing {
            path: tarball.to_owned(),
        });
    }
    let unpack = version_dir.join(".unpack");
    scratch::remove_tree(&unpack).map_err(KernelError::Scratch)?;
    scratch::remove_tree(tree).map_err(KernelError::Scratch)?;
    std::fs::create_dir_all(&unpack).map_err(io_err("create directory", &unpack))?;
    progress.line(&format!(
        "unpacking {} into {}",
        tarball.display(),
        version_dir.display()
    ));
    cmd::run(&mut kbuild::extract_command(tarball, &unpack), progress)
        .map_err(KernelError::Extract)?;
    let unpacked = unpack.join(TREE_DIR);
    std::fs::rename(&unpacked, tree).map_err(io_err("move unpacked kernel tree", &unpacked))?;
    scratch::remove_tree(&unpack).map_err(KernelError::Scratch)
}

/// Waits until no other `make` runs in `tree`, so two builds never write the same objects.
fn wait_for_other_make(tree: &Path, progress: &mut dyn BuildProgress) {
    let mut last_seen = Vec::new();
    loop {
        let running: Vec<u32> = kbuild::running_makes_in(tree)
            .iter()
            .map(|m| m.pid)
            .collect();
        if running.is_empty() {
            return;
        }
        if running != last_seen {
            let pids = running
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            progress.line(&format!(
                "waiting for make already running in the kernel tree (pid {pids})"
            ));
            tracing::info!(pids, tree = %tree.display(), "wait for make already running in kernel tree");
            last_seen = running;
        }
        std::thread::sleep(MAKE_POLL);
    }
}

/// Copies the built kernel next to its destination, then renames it into place.
fn install(built: &Path, output: &Path) -> Result<(), KernelError> {
    let dir = output
        .parent()
        .expect("kernel output has a parent directory");
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let name = output
        .file_name()
        .expect("kernel output has a file name")
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(built, &tmp).map_err(io_err("copy built vmlinux to", &tmp))?;
    // Read-only like template images: VMs of every template share one kernel file.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
        .map_err(io_err("chmod", &tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("flush", &tmp))?;
    Ok(std::fs::rename(&tmp, output).map_err(io_err("install kernel", output))?)
}

/// Compares each `CONFIG_X=value` line of the fragment with the final `.config`.
pub fn config_mismatches(fragment: &str, config: &str) -> Vec<ConfigMismatch> {
    let actual: std::collections::HashMap<&str, &str> =
        config.lines().filter_map(parse_config_line).collect();
    fragment
        .lines()
        .filter_map(parse_config_line)
        .filter_map(|(option, wanted)| {
            let got = actual.get(option).copied().filter(|v| *v != "n");
            let ok = match wanted {
                "n" => got.is_none(),
                _ => got == Some(wanted),
            };
            (!ok).then(|| ConfigMismatch {
                option: option.to_owned(),
                wanted: wanted.to_owned(),
                got: got.map(str::to_owned),
            })
        })
        .collect()
}

/// `CONFIG_X=v` gives `("CONFIG_X", "v")`; `# CONFIG_X is not set` gives `("CONFIG_X", "n")`.
fn parse_config_line(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# ") {
        let option = rest.strip_suffix(" is not set")?;
        return option.starts_with("CONFIG_").then_some((option, "n"));
    }
    let (option, value) = line.split_once('=')?;
    option.starts_with("CONFIG_").then_some((option, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_each_input() {
        let base = kernel_key("CONFIG_A=y\n", "6.1.192-2");
        assert_eq!(base, kernel_key("CONFIG_A=y\n", "6.1.192-2"));
        assert_ne!(base, kernel_key("CONFIG_A=y\nCONFIG_B=y\n", "6.1.192-2"));
        assert_ne!(base, kernel_key("CONFIG_A=y\n", "6.1.193-1"));
        assert_eq!(base.len(), 16);
    }

    #[test]
    fn embedded_fragment_is_the_repo_file() {
        assert!(KERNEL_FRAGMENT.contains("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y"));
        assert!(
            KERNEL_FRAGMENT
                .lines()
                .filter_map(parse_config_line)
                .count()
                > 50
        );
    }

    #[test]
    fn mismatches_report_dropped_and_wrong_options() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_C=n\nCONFIG_D=n\nCONFIG_N=8\nCONFIG_S=\"x\"\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_N=64\nCONFIG_S=\"x\"\n";
        let got = config_mismatches(fragment, config);
        assert_eq!(
            got,
            vec![
                ConfigMismatch {
                    option: "CONFIG_B".into(),
                    wanted: "y".into(),
                    got: None
                },
                ConfigMismatch {
                    option: "CONFIG_C".into(),
                    wanted: "n".into(),
                    got: Some("y".into())
                },
                ConfigMismatch {
                    option: "CONFIG_N".into(),
                    wanted: "8".into(),
                    got: Some("64".into())
                },
            ]
        );
        assert_eq!(got[0].to_string(), "CONFIG_B=y (got not set)");
    }
}
