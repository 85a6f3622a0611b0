//! Boot snapshots: a sandbox of a base image starts from a snapshot of that image freshly
//! booted, not from a cold kernel boot.
//!
//! The first sandbox of a shape (image, vCPUs, memory, disk, kernel command line, VMM build,
//! accelerator) boots cold with an empty environment, is frozen into a hidden snapshot
//! template named after a hash of that shape, and only then gets its own environment and a
//! new envd token. Every later sandbox of the shape is a clone of it. Nothing of a user is in
//! the frozen guest: it never ran a user's command nor saw a user's environment.
//!
//! A changed image, kernel, QEMU or Firecracker binary changes the shape's key, so a stale
//! snapshot is never used; start-up deletes stale ones nobody uses. See docs/snapshots.md.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use rand::RngCore;

use super::actor::{new_token, SandboxActor};
use super::snapshot::FrozenGuest;
use super::SandboxState;
use crate::accel::Accelerator;
use crate::envd_client::EnvdClient;
use crate::error::{error_chain, ApiError};
use crate::images::TemplateManifest;

/// Hidden templates made for boot snapshots start with this; `list_templates` leaves them out.
pub const PREFIX: &str = "_boot-";

pub fn is_boot_snapshot(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Everything a saved guest depends on: a sandbox may start from a boot snapshot only when
/// all of it is equal.
#[derive(Debug, Clone)]
pub struct Shape<'a> {
    pub base: &'a TemplateManifest,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub kernel_args: &'a str,
    pub vmm: &'a str,
    pub vmm_build: &'a str,
    pub accelerator: Accelerator,
}

impl Shape<'_> {
    /// The base image and VMM build this shape was made from: stale once either changes.
    fn origin(&self) -> String {
        origin(self.base, self.vmm, self.vmm_build)
    }

    /// Recorded as the boot snapshot's `inputs_key`: readable, and hashed into its name.
    pub fn key(&self) -> String {
        format!(
            "{} vcpus={} memory_mb={} disk_mb={} accel={} args={}",
            self.origin(),
            self.vcpus,
            self.memory_mb,
            self.disk_mb,
            self.accelerator.as_str(),
            self.kernel_args
        )
    }

    pub fn template_name(&self) -> String {
        let digest = Sha256::digest(self.key().as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{PREFIX}{hex}")
    }
}

fn origin(base: &TemplateManifest, vmm: &str, vmm_build: &str) -> String {
    format!(
        "boot/v1 base={}@{}/{} kernel={} vmm={vmm}/{vmm_build}",
        base.name, base.inputs_key, base.created_at_ms, base.kernel
    )
}

/// Whether a boot snapshot was made from something that has changed since: its base image
/// rebuilt or gone, or another VMM build. Such a snapshot can never be used again.
pub fn is_stale(
    snapshot: &TemplateManifest,
    base: Option<&TemplateManifest>,
    vmm: &str,
    vmm_build: &str,
) -> bool {
    match base {
        Some(base) => !snapshot
            .inputs_key
            .starts_with(&format!("{} ", origin(base, vmm, vmm_build))),
        None => true,
    }
}

/// Identifies the VMM binary a saved state came from: its resolved path, size and change
/// time. Saved device state is only guaranteed to load into the same build.
pub fn vmm_build(binary: &Path) -> String {
    let resolved = resolve_in_path(binary).unwrap_or_else(|| binary.to_path_buf());
    match std::fs::metadata(&resolved) {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            format!(
                "{}:{}:{}",
                resolved.display(),
                meta.size(),
                meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
            )
        }
        Err(_) => resolved.display().to_string(),
    }
}

fn resolve_in_path(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return std::fs::canonicalize(binary).ok();
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(binary))
        .find(|candidate| candidate.is_file())
        .and_then(|found| std::fs::canonicalize(found).ok())
}

/// Marker file in a boot snapshot's directory whose change time is its last use.
const LAST_USED: &str = ".last-used";

/// Records that a sandbox starts from boot snapshot `dir` now (for `enforce_limit`).
pub fn mark_used(dir: &Path) {
    let marker = dir.join(LAST_USED);
    let touched = std::fs::File::create(&marker)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(path = %marker.display(), error = %e, "mark boot snapshot used");
    }
}

/// Keeps at most `limit` boot snapshots: deletes the least recently used beyond that, except
/// `keep` and those a sandbox (pins) or a template (parent) still stands on. Returns the names
/// deleted.
pub fn enforce_limit(store: &crate::images::ImageStore, limit: usize, keep: &str) -> Vec<String> {
    let templates = store.list();
    let mut candidates: Vec<(std::time::SystemTime, &TemplateManifest)> = templates
        .iter()
        .filter(|t| is_boot_snapshot(&t.name))
        .map(|t| {
            let dir = store.template_dir(&t.name);
            let created = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(t.created_at_ms.max(0) as u64);
            let used = std::fs::metadata(dir.join(LAST_USED))
                .and_then(|m| m.modified())
                .unwrap_or(created);
            (used, t)
        })
        .collect();
    let mut excess = candidates.len().saturating_sub(limit);
    candidates.sort_by_key(|(used, _)| *used);
    let mut deleted = Vec::new();
    for (_, snapshot) in candidates {
        if excess == 0 {
            break;
        }
        let dir = store.template_dir(&snapshot.name);
        let pinned =
            std::fs::metadata(dir.join(&snapshot.rootfs)).is_ok_and(|m| crate::pins::is_pinned(&m));
        let parent_of_another = templates.iter().any(|t| {
            t.snapshot
                .as_ref()
                .is_some_and(|s| s.parent == snapshot.name)
        });
        if snapshot.name == keep || pinned || parent_of_another {
            continue;
        }
        let trash = store
            .templates_dir()
            .join(format!(".{}.deleted", snapshot.name));
        match std::fs::rename(&dir, &trash).and_then(|()| std::fs::remove_dir_all(&trash)) {
            Ok(()) => {
                excess -= 1;
                deleted.push(snapshot.name.clone());
            }
            Err(e) => tracing::warn!(template = snapshot.name, error = %e, "delete boot snapshot"),
        }
    }
    deleted
}

/// A shape whose boot snapshot the agent makes at start, so that even the first sandbox of
/// it starts fast: `<template>:<vcpus>x<memory_mb>`, e.g. `minimal:1x256` (the control
/// plane's default size). The disk is the template's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedShape {
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
}

impl std::str::FromStr for PreparedShape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!("invalid shape {s:?}: use <template>:<vcpus>x<memory_mb>, e.g. minimal:1x256")
        };
        let (template, size) = s.split_once(':').ok_or_else(invalid)?;
        let (vcpus, memory_mb) = size.split_once('x').ok_or_else(invalid)?;
        crate::images::validate_template_name(template).map_err(|e| e.to_string())?;
        Ok(Self {
            template: template.to_owned(),
            vcpus: vcpus.parse().map_err(|_| invalid())?,
            memory_mb: memory_mb.parse().map_err(|_| invalid())?,
        })
    }
}

/// Makes sure each shape has its boot snapshot, one after another, in the background: a
/// sandbox of the shape is created (making the snapshot if there is none) and destroyed. It
/// carries the metadata `wrenn.purpose=boot-snapshot`; a control plane ignores it.
pub async fn prepare(manager: Arc<super::SandboxManager>, shapes: Vec<PreparedShape>) {
    for shape in shapes {
        let started = std::time::Instant::now();
        let request = super::CreateSandbox {
            id: None,
            template: shape.template.clone(),
            vcpus: shape.vcpus,
            memory_mb: shape.memory_mb,
            disk_mb: 0,
            env: BTreeMap::new(),
            metadata: [("wrenn.purpose".to_owned(), "boot-snapshot".to_owned())].into(),
            internet: crate::network::InternetAccess::Blocked,
            timeout_sec: 0,
            cold_boot: false,
        };
        match manager.create(request).await {
            Ok(info) => {
                let _ = manager.destroy(info.id.as_str()).await;
                tracing::info!(
                    template = shape.template,
                    vcpus = shape.vcpus,
                    memory_mb = shape.memory_mb,
                    made = info.start == super::StartMethod::ColdBoot,
                    ms = started.elapsed().as_millis() as u64,
                    "boot snapshot ready"
                );
            }
            Err(e) => tracing::warn!(
                template = shape.template,
                error = %e,
                "boot snapshot not prepared; the first sandbox of this shape will make it"
            ),
        }
    }
}

/// Shapes whose boot snapshot a sandbox of this agent is making right now: one at a time per
/// shape; other sandboxes of the shape boot cold meanwhile.
#[derive(Debug, Default)]
pub struct Builds {
    in_progress: Arc<Mutex<HashSet<String>>>,
}

/// The right to make one boot snapshot, released when dropped.
#[derive(Debug)]
pub struct BuildClaim {
    pub template: String,
    pub key: String,
    in_progress: Arc<Mutex<HashSet<String>>>,
}

impl Builds {
    pub fn claim(&self, template: &str, key: String) -> Option<BuildClaim> {
        let fresh = self.in_progress.lock().unwrap().insert(template.to_owned());
        fresh.then(|| BuildClaim {
            template: template.to_owned(),
            key,
            in_progress: self.in_progress.clone(),
        })
    }
}

impl Drop for BuildClaim {
    fn drop(&mut self) {
        self.in_progress.lock().unwrap().remove(&self.template);
    }
}

impl SandboxActor {
    /// Freezes this freshly booted sandbox as its shape's boot snapshot, then hands the guest
    /// the request's environment and a token the snapshot does not hold. Failing to make the
    /// snapshot is logged, not fatal: the sandbox is fine and the next one of its shape tries
    /// again. An error means the sandbox itself was lost.
    pub(super) async fn make_boot_snapshot(
        &mut self,
        claim: &BuildClaim,
        env: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let guest = FrozenGuest {
            envd_token: self.init.access_token.clone(),
            env: BTreeMap::new(),
            inputs_key: claim.key.clone(),
        };
        let started = std::time::Instant::now();
        let made = self.snapshot_as(&claim.template, guest).await;
        if self.info.borrow().state != SandboxState::Running {
            return Err(made.err().unwrap_or_else(|| {
                ApiError::Internal("the sandbox stopped while its boot snapshot was made".into())
            }));
        }
        match made {
            Ok(manifest) => {
                tracing::info!(
                    template = claim.template,
                    snapshot_ms = started.elapsed().as_millis() as u64,
                    "boot snapshot made"
                );
                // The sandbox now stands on the snapshot's frozen disk, like its clones.
                let store = crate::images::ImageStore::new(&self.ctx.config.images_dir);
                let frozen_disk = store.template_dir(&claim.template).join(&manifest.rootfs);
                let id = self.info.borrow().id.to_string();
                if let Err(e) = crate::pins::pin(&frozen_disk, &self.ctx.config.instance, &id) {
                    tracing::warn!(error = %e, "pin the boot snapshot's disk");
                }
                mark_used(&store.template_dir(&claim.template));
                let limit = self.ctx.config.boot_snapshot_limit;
                for name in enforce_limit(&store, limit, &claim.template) {
                    tracing::info!(
                        template = name,
                        limit,
                        "least recently used boot snapshot deleted"
                    );
                }
            }
            // Another agent sharing the image directory may have made it first.
            Err(e) => {
                tracing::warn!(template = claim.template, error = %e, "boot snapshot not made")
            }
        }
        let frozen_token = std::mem::replace(&mut self.init.access_token, new_token());
        self.init.env = env.clone().into_iter().collect();
        self.init_again(&frozen_token).await
    }

    /// Sends envd the actor's current `init` (a new token, the environment) while it still
    /// holds `current_token`.
    async fn init_again(&mut self, current_token: &str) -> Result<(), ApiError> {
        let slot = self.slot.as_ref().expect("a running sandbox has a slot");
        let addr = std::net::SocketAddr::from((slot.addrs.ns_ip, wrenn_envd_api::ENVD_PORT));
        let mut init = self.init.clone();
        init.entropy = vec![0u8; 64];
        rand::thread_rng().fill_bytes(&mut init.entropy);
        let timeout = self.ctx.config.ready_timeout;
        match EnvdClient::connect_and_init(addr, init, Some(current_token), timeout).await {
            Ok(envd) => {
                *self.envd.write().unwrap() = Some(envd);
                Ok(())
            }
            // The caller tears the sandbox down, as for any failed boot.
            Err(e) => Err(ApiError::Unavailable(format!(
                "envd did not take the sandbox's environment: {}",
                error_chain(&e)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(inputs: &str) -> TemplateManifest {
        TemplateManifest {
            name: "minimal".into(),
            kernel: "vmlinux-abc".into(),
            rootfs: "rootfs.ext4".into(),
            rootfs_bytes: 1 << 30,
            inputs_key: inputs.into(),
            created_at_ms: 1,
            snapshot: None,
        }
    }

    fn shape<'a>(base: &'a TemplateManifest, memory_mb: u32, args: &'a str) -> Shape<'a> {
        Shape {
            base,
            vcpus: 1,
            memory_mb,
            disk_mb: 1024,
            kernel_args: args,
            vmm: "qemu",
            vmm_build: "/usr/bin/qemu:1:2",
            accelerator: Accelerator::Tcg,
        }
    }

    #[test]
    fn every_input_of_a_saved_guest_changes_the_name() {
        let (a, b) = (base("k1"), base("k2"));
        let names: HashSet<String> = [
            shape(&a, 256, "x"),
            shape(&a, 512, "x"),
            shape(&a, 256, "y"),
            shape(&b, 256, "x"),
            Shape {
                vmm_build: "/usr/bin/qemu:1:3",
                ..shape(&a, 256, "x")
            },
            Shape {
                accelerator: Accelerator::Kvm,
                ..shape(&a, 256, "x")
            },
        ]
        .iter()
        .map(|s| s.template_name())
        .collect();
        assert_eq!(names.len(), 6);
        let name = shape(&a, 256, "x").template_name();
        assert!(is_boot_snapshot(&name));
        assert!(crate::images::validate_template_name(&name).is_ok());
        assert_eq!(name, shape(&a, 256, "x").template_name());
    }

    #[test]
    fn a_snapshot_of_a_rebuilt_image_or_another_vmm_build_is_stale() {
        let (a, rebuilt) = (base("k1"), base("k2"));
        let snapshot = TemplateManifest {
            inputs_key: shape(&a, 256, "x").key(),
            ..base("ignored")
        };
        assert!(!is_stale(&snapshot, Some(&a), "qemu", "/usr/bin/qemu:1:2"));
        assert!(is_stale(
            &snapshot,
            Some(&rebuilt),
            "qemu",
            "/usr/bin/qemu:1:2"
        ));
        assert!(is_stale(&snapshot, Some(&a), "qemu", "/usr/bin/qemu:9:9"));
        assert!(is_stale(
            &snapshot,
            Some(&a),
            "firecracker",
            "/usr/bin/qemu:1:2"
        ));
        assert!(is_stale(&snapshot, None, "qemu", "/usr/bin/qemu:1:2"));
    }

    /// Four boot snapshots, a limit of two: the least recently used unpinned one without
    /// children goes, and the one just made stays whatever its age.
    #[test]
    fn the_least_recently_used_free_boot_snapshots_go_beyond_the_limit() {
        use crate::images::{write_manifest_in, ImageStore, SnapshotManifest};
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path());
        let make = |name: &str, parent: &str, used_secs_ago: u64| {
            let template_dir = store.template_dir(name);
            std::fs::create_dir_all(&template_dir).unwrap();
            std::fs::write(template_dir.join("disk.qcow2"), b"disk").unwrap();
            let manifest = TemplateManifest {
                name: name.into(),
                rootfs: "disk.qcow2".into(),
                snapshot: Some(SnapshotManifest {
                    memory: "memory".into(),
                    device_state: "vmstate".into(),
                    vcpus: 1,
                    memory_mb: 256,
                    disk_mb: 1024,
                    envd_token: String::new(),
                    env: Default::default(),
                    parent: parent.into(),
                    source_sandbox: "sb-x".into(),
                    vmm: "qemu".into(),
                }),
                ..base("k")
            };
            write_manifest_in(&template_dir, &manifest).unwrap();
            mark_used(&template_dir);
            let used = std::time::SystemTime::now() - std::time::Duration::from_secs(used_secs_ago);
            std::fs::File::options()
                .write(true)
                .open(template_dir.join(LAST_USED))
                .unwrap()
                .set_modified(used)
                .unwrap();
        };
        make("_boot-new", "minimal", 500); // just made, yet marked old: kept
        make("_boot-pinned", "minimal", 400);
        make("_boot-parent", "minimal", 300);
        make("_boot-free-old", "minimal", 200);
        make("_boot-free-recent", "minimal", 10);
        make("user-template", "_boot-parent", 0);
        crate::pins::pin(
            &store.template_dir("_boot-pinned").join("disk.qcow2"),
            "t1",
            "sb-a",
        )
        .unwrap();
        let deleted = enforce_limit(&store, 2, "_boot-new");
        assert_eq!(deleted, ["_boot-free-old", "_boot-free-recent"]);
        let left: Vec<String> = store.list().into_iter().map(|t| t.name).collect();
        assert_eq!(
            left,
            ["_boot-new", "_boot-parent", "_boot-pinned", "user-template"]
        );
    }

    #[test]
    fn prepared_shapes_parse() {
        assert_eq!(
            "minimal:2x512".parse(),
            Ok(PreparedShape {
                template: "minimal".into(),
                vcpus: 2,
                memory_mb: 512
            })
        );
        for bad in [
            "minimal",
            "minimal:2",
            "minimal:ax512",
            "../x:1x256",
            ":1x256",
        ] {
            assert!(bad.parse::<PreparedShape>().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_build_per_shape_at_a_time() {
        let builds = Builds::default();
        let claim = builds.claim("_boot-1", "k".into()).unwrap();
        assert!(builds.claim("_boot-1", "k".into()).is_none());
        assert!(builds.claim("_boot-2", "k".into()).is_some());
        drop(claim);
        assert!(builds.claim("_boot-1", "k".into()).is_some());
    }
}
