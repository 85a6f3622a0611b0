//! The template step: stage a copy of the cached Debian tree, customize it, pack it as ext4 and
//! install it with its manifest.
//!
//! ```text
//! <cache>/staging/<template>/                 scratch copy, removed after packing
//! <images>/templates/<template>/rootfs-<key>.ext4   read-only (0444) output, never replaced:
//!                                                   overlays of running sandboxes point at it
//! <images>/templates/<template>/template.json manifest, written last
//! ```

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::cmd::{self, CommandError};
use super::disk_usage::{self, UsageError};
use super::ext4::{self, Ext4Error, Superblock};
use super::guest_files::{self, GuestFilesError, SANDBOX_USER};
use super::inputs_key::KeyHasher;
use super::path_io::{io_err, PathIoError};
use super::progress::BuildProgress;
use super::recipe::TemplateRecipe;
use super::scratch::{self, ScratchError};
use super::trim::{self, TrimError};
use crate::images::{ImageStore, TemplateManifest};

/// Bumped when staging or the file system's layout changes (trim list, user, identity files,
/// mkfs options), so templates are rebuilt.
const TEMPLATE_BUILDER_VERSION: &str = "2";

/// File name of the root filesystem inside the template directory. The inputs key is part of
/// it, so a rebuild writes a new file instead of changing one that overlays are backed by.
pub fn rootfs_file(inputs_key: &str) -> String {
    format!("rootfs-{inputs_key}.ext4")
}

/// Errors building a template image.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("clear staging directory {path}")]
    Scratch {
        path: PathBuf,
        #[source]
        source: ScratchError,
    },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("copy the cached tree to staging")]
    Copy(#[source] CommandError),
    #[error("trim the staged tree")]
    Trim(#[source] TrimError),
    #[error("customize the staged tree")]
    Customize(#[source] GuestFilesError),
    #[error("measure the staged tree")]
    Measure(#[source] UsageError),
    #[error("pack the staged tree into {path}")]
    Pack {
        path: PathBuf,
        #[source]
        source: Ext4Error,
    },
}

/// Everything that decides a template's contents.
#[derive(Debug, Clone)]
pub struct TemplateInputs<'a> {
    pub recipe: &'a TemplateRecipe,
    pub tree_key: &'a str,
    pub envd_sha256: &'a str,
    pub kernel_key: &'a str,
    /// Kernel file name under `<images>/kernels/`.
    pub kernel_file: &'a str,
}

/// The manifest's `inputs_key`: tree key, envd hash, kernel key and the staging version.
pub fn inputs_key(inputs: &TemplateInputs<'_>) -> String {
    KeyHasher::new("wrenn-template")
        .field("builder", TEMPLATE_BUILDER_VERSION.as_bytes())
        .field("name", inputs.recipe.name.as_bytes())
        .field("tree", inputs.tree_key.as_bytes())
        .field("envd", inputs.envd_sha256.as_bytes())
        .field("kernel", inputs.kernel_key.as_bytes())
        .finish()
}

/// The installed template if it was built from exactly these inputs and its image exists.
///
/// The kernel file is not checked: the key covers the kernel's key, and the kernel step runs
/// first, so a deleted kernel is rebuilt without rebuilding the template.
pub fn current(store: &ImageStore, name: &str, inputs_key: &str) -> Option<TemplateManifest> {
    let resolved = store.resolve(name).ok()?;
    (resolved.manifest.inputs_key == inputs_key && resolved.rootfs_path.is_file())
        .then_some(resolved.manifest)
}

/// A template that was just built.
#[derive(Debug, Clone)]
pub struct BuiltTemplate {
    pub manifest: TemplateManifest,
    pub rootfs_path: PathBuf,
    pub used_bytes: u64,
    pub superblock: Superblock,
}

/// Builds the template from the cached tree at `tree` and installs image and manifest.
pub fn build(
    store: &ImageStore,
    cache_dir: &Path,
    tree: &Path,
    envd: &Path,
    inputs: &TemplateInputs<'_>,
    progress: &mut dyn BuildProgress,
) -> Result<BuiltTemplate, RootfsError> {
    let name = inputs.recipe.name;
    let staging = cache_dir.join("staging").join(name);
    let clear = |path: &Path| {
        scratch::remove_tree(path).map_err(|source| RootfsError::Scratch {
            path: path.to_owned(),
            source,
        })
    };
    clear(&staging)?;
    let staging_parent = staging.parent().expect("staging has a parent");
    std::fs::create_dir_all(staging_parent).map_err(io_err("create directory", staging_parent))?;

    progress.line(&format!(
        "copying {} to {}",
        tree.display(),
        staging.display()
    ));
    cmd::run(&mut super::cp::copy_tree_command(tree, &staging), progress)
        .map_err(RootfsError::Copy)?;
    progress.line("trimming docs, man pages, translations and apt caches");
    trim::trim(&staging).map_err(RootfsError::Trim)?;
    progress.line("installing envd, adding user, writing /etc identity files");
    guest_files::install_envd(&staging, envd).map_err(RootfsError::Customize)?;
    guest_files::add_user(&staging, &SANDBOX_USER, days_since_epoch())
        .map_err(RootfsError::Customize)?;
    guest_files::write_identity(&staging).map_err(RootfsError::Customize)?;
    let usage = disk_usage::measure(&staging).map_err(RootfsError::Measure)?;

    let template_dir = store.template_dir(name);
    std::fs::create_dir_all(&template_dir).map_err(io_err("create directory", &template_dir))?;
    let key = inputs_key(inputs);
    let rootfs_file = rootfs_file(&key);
    let tmp = template_dir.join(format!(".{rootfs_file}.tmp"));
    let superblock = ext4::make_image(&staging, &tmp, usage.bytes, progress).map_err(|source| {
        RootfsError::Pack {
            path: tmp.clone(),
            source,
        }
    })?;
    // Read-only: running sandboxes use it as a shared base and must never write to it.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
        .map_err(io_err("chmod", &tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("flush", &tmp))?;
    let rootfs_path = template_dir.join(&rootfs_file);
    std::fs::rename(&tmp, &rootfs_path).map_err(io_err("install image", &rootfs_path))?;
    let rootfs_bytes = std::fs::metadata(&rootfs_path)
        .map_err(io_err("stat", &rootfs_path))?
        .len();

    let manifest = TemplateManifest {
        name: name.to_owned(),
        kernel: inputs.kernel_file.to_owned(),
        rootfs: rootfs_file,
        rootfs_bytes,
        inputs_key: key,
        created_at_ms: now_ms(),
        snapshot: None,
    };
    let manifest_path = store.manifest_path(name);
    store
        .write_manifest(&manifest)
        .map_err(io_err("write manifest", &manifest_path))?;
    clear(&staging)?;
    prune_old_images(
        &template_dir,
        &manifest.rootfs,
        &store.files_under_snapshots(),
    );
    Ok(BuiltTemplate {
        manifest,
        rootfs_path,
        used_bytes: usage.bytes,
        superblock,
    })
}

/// Older images a template directory keeps besides the current one: sandboxes created before a
/// rebuild (running or paused) still stand on them.
const KEPT_OLD_IMAGES: usize = 2;

/// Deletes root filesystem images older than the newest [`KEPT_OLD_IMAGES`] previous ones, so
/// repeated rebuilds (every envd change in development) do not fill the disk. Images a snapshot
/// template's disk stands on (`protected`, as device and inode) and images pinned by a sandbox
/// (pins.rs) are kept whatever their age.
fn prune_old_images(template_dir: &Path, current: &str, protected: &HashSet<(u64, u64)>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(template_dir) else {
        return;
    };
    let mut old: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name != current && name.starts_with("rootfs") && name.ends_with(".ext4")
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .collect();
    old.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in old.into_iter().skip(KEPT_OLD_IMAGES) {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if protected.contains(&(meta.dev(), meta.ino())) {
            tracing::info!(image = %path.display(), "keeping an old template image a snapshot stands on");
            continue;
        }
        if crate::pins::is_pinned(&meta) {
            tracing::info!(image = %path.display(), "keeping an old template image a sandbox stands on");
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(image = %path.display(), "removed an old template image"),
            Err(e) => {
                tracing::warn!(image = %path.display(), error = %e, "remove old template image")
            }
        }
    }
}

fn days_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_build::recipe::MINIMAL;

    #[test]
    fn inputs_key_changes_with_each_input() {
        let base = TemplateInputs {
            recipe: &MINIMAL,
            tree_key: "tree",
            envd_sha256: "envd",
            kernel_key: "kernel",
            kernel_file: "vmlinux-kernel",
        };
        let key = inputs_key(&base);
        assert_eq!(key, inputs_key(&base.clone()));
        for changed in [
            TemplateInputs {
                tree_key: "tree2",
                ..base.clone()
            },
            TemplateInputs {
                envd_sha256: "envd2",
                ..base.clone()
            },
            TemplateInputs {
                kernel_key: "kernel2",
                ..base.clone()
            },
        ] {
            assert_ne!(inputs_key(&changed), key, "{changed:?}");
        }
    }

    #[test]
    fn pruning_keeps_the_current_two_previous_snapshot_backed_and_pinned_images() {
        let images = tempfile::tempdir().unwrap();
        let dir = images.path().join("templates/minimal");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, name) in [
            "rootfs.ext4",
            "rootfs-a.ext4",
            "rootfs-b.ext4",
            "rootfs-c.ext4",
            "rootfs-d.ext4",
        ]
        .iter()
        .enumerate()
        {
            let path = dir.join(name);
            std::fs::write(&path, "x").unwrap();
            let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
        std::fs::write(dir.join("template.json"), "{}").unwrap();
        // A snapshot's disk stands on the oldest image: that one stays too.
        let overlay = dir.join("snapshot-disk.qcow2");
        let status = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(dir.join("rootfs-a.ext4"))
            .arg(&overlay)
            .arg("1M")
            .status()
            .unwrap();
        assert!(status.success());
        let backing = crate::disk::qcow2::backing_file(&overlay).unwrap().unwrap();
        assert_eq!(backing, dir.join("rootfs-a.ext4"));
        let protected = {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&backing).unwrap();
            HashSet::from([(meta.dev(), meta.ino())])
        };
        // A sandbox booted long ago stands on the very first image.
        crate::pins::pin(&dir.join("rootfs.ext4"), "wt1", "sb-old").unwrap();
        prune_old_images(&dir, "rootfs-d.ext4", &protected);
        std::fs::remove_file(&overlay).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".pins",
                "rootfs-a.ext4",
                "rootfs-b.ext4",
                "rootfs-c.ext4",
                "rootfs-d.ext4",
                "rootfs.ext4",
                "template.json"
            ]
        );
        // Once the sandbox is gone, the next rebuild prunes it.
        crate::pins::unpin(images.path(), "wt1", "sb-old");
        prune_old_images(&dir, "rootfs-d.ext4", &protected);
        assert!(!dir.join("rootfs.ext4").exists());
    }

    #[test]
    fn current_needs_a_matching_key_and_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path());
        assert!(current(&store, "minimal", "k").is_none());
        let manifest = TemplateManifest {
            name: "minimal".into(),
            kernel: "vmlinux-x".into(),
            rootfs: rootfs_file("k"),
            rootfs_bytes: 1,
            inputs_key: "k".into(),
            created_at_ms: 0,
            snapshot: None,
        };
        store.write_manifest(&manifest).unwrap();
        assert!(current(&store, "minimal", "k").is_none(), "image missing");
        std::fs::write(store.template_dir("minimal").join(rootfs_file("k")), "r").unwrap();
        assert_eq!(current(&store, "minimal", "k"), Some(manifest));
        assert!(current(&store, "minimal", "other").is_none());
    }
}
