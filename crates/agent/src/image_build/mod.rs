//! Builds guest images — the kernel and a template's root filesystem — into an [`ImageStore`],
//! skipping every step whose output for the same inputs already exists.
//!
//! Steps, each keyed by a hash of its inputs (see `docs/images.md`):
//! 1. kernel: Debian's `linux-source-6.1` + `images/kernel/wrenn-guest.config` → `vmlinux-<key>`;
//! 2. debootstrap: the template recipe → a pristine tree in the cache;
//! 3. template: a staged copy of that tree + envd + user and `/etc` files → `rootfs.ext4` and
//!    `template.json`.
//!
//! Every external tool is spawned from its own module (`kbuild`, `debootstrap`, `cp`, `ext4`,
//! `dpkg`) through [`cmd`], which streams output lines to a [`BuildProgress`].

mod cmd;
mod cp;
mod debootstrap;
mod disk_usage;
mod dpkg;
pub mod elf;
mod ext4;
mod guest_files;
mod inputs_key;
mod kbuild;
mod kernel;
mod path_io;
mod preflight;
mod progress;
mod recipe;
mod rootfs;
mod scratch;
mod trim;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use cmd::{CommandError, OutputTail};
pub use kernel::{ConfigMismatch, KernelError, KERNEL_FRAGMENT};
pub use preflight::PreflightError;
pub use progress::{BuildProgress, LogProgress};
pub use rootfs::RootfsError;

use crate::images::{ImageStore, TemplateManifest};

/// Default `--images-dir`.
pub const DEFAULT_IMAGES_DIR: &str = "/var/lib/wrenn/images";
/// Default `--cache-dir`.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/wrenn";

const LOCK_FILE: &str = "image-build.lock";

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub images_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// The static guest agent installed as the guest's init.
    pub envd: PathBuf,
    pub template: String,
    pub rebuild: Rebuild,
}

/// Whether outputs that already exist for the same inputs are rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// Reuse the kernel and template when their inputs are unchanged.
    IfInputsChanged,
    /// Rebuild the kernel (incrementally) and the template image. Cached trees — the kernel
    /// source and the debootstrap tree — are still reused.
    Always,
}

/// Whether a step did work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Built,
    Reused,
}

/// What one step produced and how long it took.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: String,
    pub outcome: Outcome,
    pub path: PathBuf,
    pub elapsed: Duration,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub kernel: StepReport,
    /// `None` when the template was reused and its tree was not needed.
    pub debootstrap: Option<StepReport>,
    pub template: StepReport,
    pub manifest: TemplateManifest,
    /// Fragment options the kernel config dropped; empty when the kernel was reused.
    pub config_mismatches: Vec<ConfigMismatch>,
    pub elapsed: Duration,
}

/// Errors building images.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown template {name:?}; this builder makes: {known}")]
    UnknownTemplate { name: String, known: String },
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another image build holds {path}; wait for it to finish")]
    Busy { path: PathBuf },
    #[error("hash envd binary {path}")]
    HashEnvd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("build the guest kernel")]
    Kernel(#[source] KernelError),
    #[error("bootstrap the Debian tree for template {template}")]
    Debootstrap {
        template: String,
        #[source]
        source: debootstrap::DebootstrapError,
    },
    #[error("build template {template}")]
    Template {
        template: String,
        #[source]
        source: RootfsError,
    },
}

/// Builds (or reuses) the kernel and the template named in `options`.
pub fn build(
    options: &BuildOptions,
    progress: &mut dyn BuildProgress,
) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let recipe = recipe::find(&options.template).ok_or_else(|| BuildError::UnknownTemplate {
        name: options.template.clone(),
        known: recipe::names().join(", "),
    })?;
    let span = tracing::info_span!("image_build", template = recipe.name);
    let _enter = span.enter();

    preflight::require_root()?;
    preflight::require_static_envd(&options.envd)?;
    let store = ImageStore::new(&options.images_dir);
    for dir in [&options.cache_dir, &store.kernels_dir()] {
        std::fs::create_dir_all(dir).map_err(|source| BuildError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let _lock = lock(&options.cache_dir.join(LOCK_FILE))?;

    // Work out every key first, so missing tools fail the build before minutes of work.
    let kernel_plan = kernel::plan(&store.kernels_dir()).map_err(BuildError::Kernel)?;
    let envd_sha256 =
        inputs_key::file_sha256(&options.envd).map_err(|source| BuildError::HashEnvd {
            path: options.envd.clone(),
            source,
        })?;
    let tree_key = debootstrap::tree_key(recipe);
    let kernel_file = kernel_plan.file_name();
    let inputs = rootfs::TemplateInputs {
        recipe,
        tree_key: &tree_key,
        envd_sha256: &envd_sha256,
        kernel_key: &kernel_plan.key,
        kernel_file: &kernel_file,
    };
    let template_key = rootfs::inputs_key(&inputs);
    let always = options.rebuild == Rebuild::Always;
    let kernel_needed = always || !kernel_plan.output.is_file();
    let reusable = if always {
        None
    } else {
        rootfs::current(&store, recipe.name, &template_key)
    };
    if kernel_needed {
        preflight::require_tools(preflight::KERNEL_TOOLS)?;
        preflight::require_headers(preflight::KERNEL_HEADERS)?;
    }
    if reusable.is_none() {
        preflight::require_tools(preflight::ROOTFS_TOOLS)?;
    }

    // 1. Kernel.
    progress.step("kernel");
    let step_started = Instant::now();
    let (kernel_outcome, config_mismatches) = if kernel_needed {
        let mismatches = kernel::build(&kernel_plan, &options.cache_dir, progress)
            .map_err(BuildError::Kernel)?;
        (Outcome::Built, mismatches)
    } else {
        (Outcome::Reused, Vec::new())
    };
    let kernel = finish_step(
        progress,
        "kernel",
        kernel_outcome,
        &kernel_plan.output,
        step_started,
    );

    // 2 and 3. Debootstrap tree and template image.
    let template_step = format!("template {}", recipe.name);
    let (debootstrap, template, manifest) = match reusable {
        Some(manifest) => {
            progress.step(&template_step);
            let rootfs = store.template_dir(recipe.name).join(&manifest.rootfs);
            let report = finish_step(
                progress,
                &template_step,
                Outcome::Reused,
                &rootfs,
                Instant::now(),
            );
            (None, report, manifest)
        }
        None => {
            progress.step("debootstrap");
            let step_started = Instant::now();
            let tree = debootstrap::ensure_tree(&options.cache_dir, recipe, progress).map_err(
                |source| BuildError::Debootstrap {
                    template: recipe.name.to_owned(),
                    source,
                },
            )?;
            let tree_report = finish_step(
                progress,
                "debootstrap",
                tree.outcome,
                &tree.path,
                step_started,
            );

            progress.step(&template_step);
            let step_started = Instant::now();
            let built = rootfs::build(
                &store,
                &options.cache_dir,
                &tree.path,
                &options.envd,
                &inputs,
                progress,
            )
            .map_err(|source| BuildError::Template {
                template: recipe.name.to_owned(),
                source,
            })?;
            progress.line(&format!(
                "{} MiB of files, image {} MiB with {} MiB and {} inodes free",
                built.used_bytes >> 20,
                built.manifest.rootfs_bytes >> 20,
                built.superblock.free_bytes() >> 20,
                built.superblock.free_inodes,
            ));
            let report = finish_step(
                progress,
                &template_step,
                Outcome::Built,
                &built.rootfs_path,
                step_started,
            );
            (Some(tree_report), report, built.manifest)
        }
    };

    Ok(BuildReport {
        kernel,
        debootstrap,
        template,
        manifest,
        config_mismatches,
        elapsed: started.elapsed(),
    })
}

fn finish_step(
    progress: &mut dyn BuildProgress,
    step: &str,
    outcome: Outcome,
    path: &Path,
    started: Instant,
) -> StepReport {
    let report = StepReport {
        step: step.to_owned(),
        outcome,
        path: path.to_owned(),
        elapsed: started.elapsed(),
    };
    progress.done(&report.to_string());
    report
}

impl std::fmt::Display for StepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.outcome {
            Outcome::Built => {
                write!(
                    f,
                    "{}: built {} in {}",
                    self.step,
                    self.path.display(),
                    format_duration(self.elapsed)
                )
            }
            Outcome::Reused => write!(f, "{}: reused {}", self.step, self.path.display()),
        }
    }
}

/// `4m31s`, `37.2s`, `0.4s`.
pub fn format_duration(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", elapsed.as_secs_f64())
    }
}

/// Holds an exclusive lock on the cache for the whole build; released when dropped.
fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, BuildError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| BuildError::Lock {
            path: path.to_owned(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                BuildError::Busy {
                    path: path.to_owned(),
                }
            } else {
                BuildError::Lock {
                    path: path.to_owned(),
                    source: errno.into(),
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(format_duration(Duration::from_millis(37_240)), "37.2s");
        assert_eq!(format_duration(Duration::from_secs(271)), "4m31s");
    }

    #[test]
    fn a_second_build_on_the_same_cache_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let held = lock(&path).unwrap();
        assert!(matches!(lock(&path), Err(BuildError::Busy { .. })));
        drop(held);
        lock(&path).unwrap();
    }

    #[test]
    fn unknown_template_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let options = BuildOptions {
            images_dir: dir.path().join("images"),
            cache_dir: dir.path().join("cache"),
            envd: dir.path().join("envd"),
            template: "huge".into(),
            rebuild: Rebuild::IfInputsChanged,
        };
        let err = build(&options, &mut progress::fakes::RecordingProgress::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown template \"huge\"; this builder makes: minimal"
        );
        assert!(!dir.path().join("cache").exists());
    }
}
