//! Background flattening of snapshot template disks.
//!
//! A snapshot's frozen disk stands on the disk of the template its sandbox stood on, so
//! snapshotting a clone, or a sandbox snapshotted before, publishes a chain
//! `T(n) → T(n-1) → base`. Flattening makes `T(n)` stand on the base alone, off the
//! snapshot's critical path and without touching any file a VMM has open:
//!
//! 1. copy `T(n)/disk.qcow2` (sparse) to a hidden file beside it and rebase the copy onto the
//!    base image (`qemu-img rebase` copies the clusters that differ), fsync;
//! 2. rename the copy over `disk.qcow2`: VMMs that opened the old file keep its inode, and
//!    with it the old chain; every later open gets the flat one. What a guest reads is the
//!    same either way;
//! 3. rewrite the manifest with the base as parent.
//!
//! Sandboxes record the templates their disk needed when their VMM opened it
//! (`SandboxInfo::depends_on`), so `T(n-1)` stays undeletable until they restart on the flat
//! file. A crash between 2 and 3 only repeats the job at the next start.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::disk::{self, BaseFormat};
use crate::images::{write_manifest_in, ImageStore};

/// Hidden name of the flattened copy while it is built.
const FLAT_PARTIAL: &str = ".disk.flat.partial";
/// Held (flock) while a template is flattened: agents of several instances may share one
/// images directory, and each takes up unflattened templates when it starts.
const FLATTEN_LOCK: &str = ".flatten.lock";

/// Queue of templates to flatten, one at a time (the work is disk-bound).
#[derive(Debug, Clone)]
pub struct Flattener {
    queue: mpsc::UnboundedSender<String>,
}

impl Flattener {
    /// Starts the worker and queues every template a previous run left unflattened.
    pub fn start(images: ImageStore, qemu_img: PathBuf) -> Self {
        let (queue, mut jobs) = mpsc::unbounded_channel::<String>();
        let flattener = Self { queue };
        for manifest in images.list() {
            if needs_flattening(&images, &manifest.name) {
                flattener.schedule(&manifest.name);
            }
        }
        tokio::spawn(async move {
            while let Some(name) = jobs.recv().await {
                let started = std::time::Instant::now();
                match flatten(&images, &qemu_img, &name).await {
                    Ok(true) => tracing::info!(
                        template = name,
                        ms = started.elapsed().as_millis() as u64,
                        "flattened template disk onto its base image"
                    ),
                    Ok(false) => {}
                    Err(error) => tracing::warn!(
                        template = name,
                        error = %crate::error::error_chain(error.as_ref()),
                        "flatten template disk"
                    ),
                }
            }
        });
        flattener
    }

    /// Queues `template` for flattening; a template already flat is skipped when its turn comes.
    pub fn schedule(&self, template: &str) {
        // The worker only stops with the runtime.
        let _ = self.queue.send(template.to_owned());
    }
}

/// Whether `name` is a snapshot whose disk stands on another snapshot.
pub fn needs_flattening(images: &ImageStore, name: &str) -> bool {
    images
        .read_manifest(name)
        .ok()
        .flatten()
        .and_then(|m| m.snapshot)
        .and_then(|s| images.read_manifest(&s.parent).ok().flatten())
        .is_some_and(|parent| parent.snapshot.is_some())
}

/// Flattens one template; `Ok(false)` when there was nothing to do (already flat, or gone).
async fn flatten(
    images: &ImageStore,
    qemu_img: &std::path::Path,
    name: &str,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    if !needs_flattening(images, name) {
        return Ok(false);
    }
    let Some(_lock) = try_lock(&images.template_dir(name))? else {
        return Ok(false); // another agent is flattening it
    };
    // Read under the lock: whoever held it before may have finished the job.
    if !needs_flattening(images, name) {
        return Ok(false);
    }
    let Some(mut manifest) = images.read_manifest(name)? else {
        return Ok(false);
    };
    let base_name = images
        .lineage(name)
        .into_iter()
        .find(|t| {
            images
                .read_manifest(t)
                .ok()
                .flatten()
                .is_some_and(|m| m.snapshot.is_none())
        })
        .ok_or("no base template under this snapshot")?;
    let dir = images.template_dir(name);
    let disk_path = dir.join(&manifest.rootfs);
    // The raw image the chain really ends in: after a rebuild of the base template that is an
    // older image than the one its manifest names now.
    let base_image = disk::chain_bottom(&disk_path)?;
    let partial = dir.join(FLAT_PARTIAL);
    let result = async {
        let _ = std::fs::remove_file(&partial);
        disk::copy_sparse(&disk_path, &partial)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o644))?;
        disk::rebase(qemu_img, &partial, &base_image, BaseFormat::Raw).await?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o444))?;
        std::fs::File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, &disk_path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    if let Err(error) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    if let Some(snapshot) = manifest.snapshot.as_mut() {
        snapshot.parent = base_name;
    }
    write_manifest_in(&dir, &manifest)?;
    Ok(true)
}

/// The template's flatten lock, or `None` when someone else holds it. Released on drop.
fn try_lock(dir: &std::path::Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(FLATTEN_LOCK))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(Some(file))
    } else {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::images::{SnapshotManifest, TemplateManifest};

    fn run(program: &str, args: &[&str]) {
        let out = Command::new(program).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
    }

    fn qemu_io_write(image: &Path, pattern: u8, offset: &str) {
        let command = format!("write -P {pattern} {offset} 64k");
        run(
            "qemu-io",
            &["-f", "qcow2", "-c", &command, image.to_str().unwrap()],
        );
    }

    fn read_back(image: &Path, pattern: u8, offset: &str) -> bool {
        let command = format!("read -P {pattern} {offset} 64k");
        let out = Command::new("qemu-io")
            .args(["-r", "-f", "qcow2", "-c", &command, image.to_str().unwrap()])
            .output()
            .unwrap();
        out.status.success()
            && !String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed")
    }

    fn manifest(name: &str, rootfs: &str, parent: Option<&str>) -> TemplateManifest {
        TemplateManifest {
            name: name.into(),
            kernel: "vmlinux".into(),
            rootfs: rootfs.into(),
            rootfs_bytes: 16 << 20,
            inputs_key: "test".into(),
            created_at_ms: 0,
            snapshot: parent.map(|parent| SnapshotManifest {
                memory: "memory".into(),
                device_state: "vmstate".into(),
                vcpus: 1,
                memory_mb: 256,
                disk_mb: 16,
                envd_token: "t".into(),
                env: BTreeMap::new(),
                parent: parent.into(),
                source_sandbox: "sb-x".into(),
                vmm: "qemu".into(),
            }),
        }
    }

    /// base (raw) ← a/disk.qcow2 ← b/disk.qcow2, each snapshot layer holding its own data.
    fn chain(images: &ImageStore) {
        for name in ["base", "a", "b"] {
            std::fs::create_dir_all(images.template_dir(name)).unwrap();
        }
        let base = images.template_dir("base").join("rootfs.ext4");
        std::fs::File::create(&base)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let a = images.template_dir("a").join("disk.qcow2");
        let b = images.template_dir("b").join("disk.qcow2");
        let (base_s, a_s, b_s) = (
            base.to_str().unwrap(),
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        );
        run(
            "qemu-img",
            &[
                "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base_s, a_s,
            ],
        );
        qemu_io_write(&a, 0x61, "0");
        run(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", a_s, b_s],
        );
        qemu_io_write(&b, 0x62, "1M");
        write_manifest_in(
            &images.template_dir("base"),
            &manifest("base", "rootfs.ext4", None),
        )
        .unwrap();
        write_manifest_in(
            &images.template_dir("a"),
            &manifest("a", "disk.qcow2", Some("base")),
        )
        .unwrap();
        write_manifest_in(
            &images.template_dir("b"),
            &manifest("b", "disk.qcow2", Some("a")),
        )
        .unwrap();
    }

    #[test]
    fn lineage_follows_unflattened_parents() {
        let dir = tempfile::tempdir().unwrap();
        let images = ImageStore::new(dir.path());
        chain(&images);
        assert_eq!(
            images.lineage("b"),
            ["a", "b", "base"].map(String::from).into()
        );
        assert!(needs_flattening(&images, "b"));
        assert!(!needs_flattening(&images, "a"), "a stands on the base");
        assert!(!needs_flattening(&images, "base"));
    }

    #[tokio::test]
    async fn a_template_another_agent_is_flattening_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let images = ImageStore::new(dir.path());
        chain(&images);
        let held = try_lock(&images.template_dir("b")).unwrap();
        assert!(held.is_some());
        let done = flatten(&images, Path::new("qemu-img"), "b").await.unwrap();
        assert!(!done, "flattened under another agent's lock");
        assert!(needs_flattening(&images, "b"));
        drop(held);
        assert!(flatten(&images, Path::new("qemu-img"), "b").await.unwrap());
        assert!(!needs_flattening(&images, "b"));
    }

    #[tokio::test]
    async fn a_restarted_agent_flattens_what_is_left_and_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let images = ImageStore::new(dir.path());
        chain(&images);
        let b = images.template_dir("b").join("disk.qcow2");
        // Opened before flattening, like a running VMM: it keeps the old file.
        let held = std::fs::File::open(&b).unwrap();
        let held_inode = std::os::unix::fs::MetadataExt::ino(&held.metadata().unwrap());

        let _flattener = Flattener::start(images.clone(), "qemu-img".into());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while needs_flattening(&images, "b") {
            assert!(
                std::time::Instant::now() < deadline,
                "not flattened in time"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        assert_eq!(images.lineage("b"), ["b", "base"].map(String::from).into());
        let backing = crate::disk::qcow2::backing_file(&b).unwrap();
        assert_eq!(
            backing.unwrap(),
            images.template_dir("base").join("rootfs.ext4")
        );
        assert!(read_back(&b, 0x61, "0"), "data of the first layer lost");
        assert!(read_back(&b, 0x62, "1M"), "data of the second layer lost");
        let new_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&b).unwrap());
        assert_ne!(
            held_inode, new_inode,
            "the open file must not be rewritten in place"
        );
        assert!(!images.template_dir("b").join(FLAT_PARTIAL).exists());
    }
}
