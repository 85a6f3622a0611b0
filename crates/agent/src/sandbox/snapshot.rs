//! Snapshot a sandbox into a template: its RAM, device state and disk are frozen in a new
//! template directory, and the sandbox goes on with a fresh overlay stacked on the frozen disk.
//!
//! ```text
//! before:  sandbox/rootfs.qcow2 ──▶ base/rootfs-<key>.ext4
//! after:   sandbox/rootfs.qcow2 ──▶ templates/<name>/disk.qcow2 (frozen) ──▶ base/rootfs-<key>.ext4
//!          templates/<name>/{memory, vmstate, template.json}
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use rand::Rng;

use super::actor::SandboxActor;
use super::suspend::{MEMORY_FILE, STATE_FILE};
use super::{now_ms, SandboxState};
use crate::disk::{self, BaseFormat, OVERLAY_FILE};
use crate::error::ApiError;
use crate::images::{
    validate_template_name, ImageStore, ResolvedTemplate, SnapshotManifest, TemplateManifest,
};

const FROZEN_DISK: &str = "disk.qcow2";
const FROZEN_MEMORY: &str = "memory";
const FROZEN_STATE: &str = "vmstate";

impl SandboxActor {
    pub(super) async fn snapshot(&mut self, name: &str) -> Result<TemplateManifest, ApiError> {
        validate_template_name(name).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let store = ImageStore::new(&self.ctx.config.images_dir);
        if store.template_dir(name).exists() {
            return Err(ApiError::AlreadyExists(format!(
                "template {name:?} already exists"
            )));
        }
        let state = self.info.borrow().state;
        if !matches!(state, SandboxState::Running | SandboxState::Paused) {
            return Err(ApiError::FailedPrecondition(format!(
                "sandbox is {}; only a running or paused sandbox can be snapshotted",
                state.as_str()
            )));
        }
        let started = Instant::now();
        let was_running = state == SandboxState::Running;
        if was_running {
            self.warm_up_before_freezing().await;
            self.pause().await?;
        }
        // A clone maps its template's RAM privately; the template needs a file of its own.
        if let Err(e) = self.take_own_memory().await {
            if was_running {
                let _ = self.resume().await;
            }
            return Err(e);
        }
        let spec = self
            .spec
            .clone()
            .expect("a running or paused sandbox has a VM spec");
        let frozen = self.freeze(&store, name, &spec).await;
        let manifest = match frozen {
            Ok(manifest) => manifest,
            Err(e) => {
                // The sandbox itself is untouched unless its disk was already moved.
                if was_running && self.dir.join(OVERLAY_FILE).exists() {
                    let _ = self.resume().await;
                }
                return Err(e);
            }
        };
        if was_running {
            self.resume().await?;
        }
        tracing::info!(
            template = name,
            snapshot_ms = started.elapsed().as_millis() as u64,
            "sandbox snapshotted"
        );
        Ok(manifest)
    }

    /// Copies RAM and device state into a hidden directory, moves the disk there, publishes the
    /// directory under the template's name and gives the sandbox a new overlay on top of it.
    async fn freeze(
        &mut self,
        store: &ImageStore,
        name: &str,
        spec: &crate::vmm::VmSpec,
    ) -> Result<TemplateManifest, ApiError> {
        let internal = |what: &str, e: std::io::Error| ApiError::Internal(format!("{what}: {e}"));
        let final_dir = store.template_dir(name);
        let staging = store.templates_dir().join(format!(
            ".{name}.{:08x}.partial",
            rand::thread_rng().gen::<u32>()
        ));
        let base = self.base_template(store)?;
        std::fs::create_dir_all(&staging).map_err(|e| internal("create template directory", e))?;
        let result = async {
            disk::copy_sparse(&self.dir.join(MEMORY_FILE), &staging.join(FROZEN_MEMORY))
                .map_err(|e| internal("copy guest memory", e))?;
            disk::copy_sparse(&self.dir.join(STATE_FILE), &staging.join(FROZEN_STATE))
                .map_err(|e| internal("copy device state", e))?;
            move_file(&self.dir.join(OVERLAY_FILE), &staging.join(FROZEN_DISK))
                .map_err(|e| internal("freeze disk", e))?;
            self.bound_disk_chain(&base, &staging.join(FROZEN_DISK))
                .await?;
            let info = self.info.borrow().clone();
            let manifest = TemplateManifest {
                name: name.to_owned(),
                kernel: spec
                    .kernel
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                rootfs: FROZEN_DISK.into(),
                rootfs_bytes: u64::from(info.disk_mb) << 20,
                inputs_key: format!("snapshot:{}", info.id),
                created_at_ms: now_ms(),
                snapshot: Some(SnapshotManifest {
                    memory: FROZEN_MEMORY.into(),
                    device_state: FROZEN_STATE.into(),
                    vcpus: info.vcpus,
                    memory_mb: info.memory_mb,
                    disk_mb: info.disk_mb,
                    envd_token: self.init.access_token.clone(),
                    env: self.init.env.clone().into_iter().collect(),
                    // Its disk stands on the base alone, and its RAM is its own.
                    parent: base.manifest.name.clone(),
                    source_sandbox: info.id.to_string(),
                }),
            };
            write_manifest_in(&staging, &manifest)
                .map_err(|e| internal("write template manifest", e))?;
            for file in [FROZEN_MEMORY, FROZEN_STATE, FROZEN_DISK] {
                std::fs::set_permissions(
                    staging.join(file),
                    std::fs::Permissions::from_mode(0o444),
                )
                .map_err(|e| internal("protect template file", e))?;
            }
            std::fs::File::open(&staging)
                .and_then(|d| d.sync_all())
                .map_err(|e| internal("flush template", e))?;
            std::fs::rename(&staging, &final_dir).map_err(|e| internal("publish template", e))?;
            Ok(manifest)
        }
        .await;
        let manifest = match result {
            Ok(manifest) => manifest,
            Err(e) => {
                // Put the disk back if it was moved, then drop the half-made template.
                let moved = staging.join(FROZEN_DISK);
                if moved.exists() && !self.dir.join(OVERLAY_FILE).exists() {
                    let _ = move_file(&moved, &self.dir.join(OVERLAY_FILE));
                }
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let disk_mb = u64::from(self.info.borrow().disk_mb);
        disk::create_overlay(
            &self.ctx.config.qemu_img_binary,
            &final_dir.join(FROZEN_DISK),
            BaseFormat::Qcow2,
            &self.dir.join(OVERLAY_FILE),
            disk_mb,
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
        // The frozen disk stands on the base template alone now (see bound_disk_chain), and
        // the sandbox's RAM is its own: any template it was cloned from is no longer needed.
        self.update(|info| {
            info.depends_on = [base.manifest.name.clone(), name.to_owned()].into();
        });
        Ok(manifest)
    }
}

impl SandboxActor {
    /// Keeps overlay chains short: a sandbox snapshotted again and again would otherwise stack
    /// overlay → T(n) → … → T(1) → base. Before a frozen disk is published it is rebased onto
    /// the base image whenever it stands on an earlier snapshot, so every template disk is one
    /// layer over its base and every sandbox at most two. The VM is paused here, so no VMM has
    /// the disk open.
    async fn bound_disk_chain(
        &self,
        base: &ResolvedTemplate,
        frozen: &Path,
    ) -> Result<(), ApiError> {
        let qemu_img = &self.ctx.config.qemu_img_binary;
        let backing = disk::backing_file(qemu_img, frozen)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        if backing.as_deref() != Some(base.rootfs_path.as_path()) {
            tracing::info!(from = ?backing, "flattening the frozen disk onto its base image");
            disk::rebase(qemu_img, frozen, &base.rootfs_path, BaseFormat::Raw)
                .await
                .map_err(|e| ApiError::internal(&e))?;
        }
        Ok(())
    }
}

impl SandboxActor {
    /// Runs `/bin/true` in the guest before it is frozen. A guest that never started a
    /// process still owes one-time work (the kernel reading the dynamic loader and libc from
    /// disk, envd's first spawn); frozen cold, every clone would pay it on its first command.
    /// Measured on TCG: a clone's first exec took 240 ms from a cold template, 40 ms from a
    /// warmed one. Best effort: a failure only means clones start colder.
    async fn warm_up_before_freezing(&mut self) {
        let Some(envd) = self.envd.read().unwrap().clone() else {
            return;
        };
        let spec = wrenn_agent_api::envd::ProcessSpec {
            cmd: "/bin/true".into(),
            timeout_ms: 10_000,
            ..Default::default()
        };
        let ran = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            crate::exec::exec_collect(&envd, spec),
        );
        // A dead VMM never answers; the pause that follows reports it.
        let vmm_exited = async {
            match self.vm.as_mut() {
                Some(vm) => drop(vm.wait_exit().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ran = ran => if !matches!(ran, Ok(Ok(_))) {
                tracing::warn!(outcome = ?ran.map(|r| r.map(|_| ())), "warm-up before snapshot failed");
            },
            () = vmm_exited => tracing::warn!("VMM exited during the warm-up before snapshot"),
        }
    }

    /// The base template under the sandbox's disk chain: its own template, or the base of
    /// the snapshot template it was cloned from (every snapshot names its base as parent).
    fn base_template(&self, store: &ImageStore) -> Result<ResolvedTemplate, ApiError> {
        let mut name = self.info.borrow().template.clone();
        // Bounded: a snapshot's parent is a base, but a hand-edited store must not loop us.
        for _ in 0..8 {
            let template = store.resolve(&name).map_err(|e| ApiError::internal(&e))?;
            match &template.snapshot {
                None => return Ok(template),
                Some(snapshot) => name = snapshot.manifest.parent.clone(),
            }
        }
        Err(ApiError::Internal(format!(
            "template {name:?}: no base template within 8 parents"
        )))
    }
}

/// Renames, or copies when the template store is on another filesystem.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            disk::copy_sparse(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// The manifest of a snapshot template holds envd's token: readable by root only.
fn write_manifest_in(dir: &Path, manifest: &TemplateManifest) -> std::io::Result<()> {
    let path = dir.join("template.json");
    let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    std::fs::write(&path, json)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::fs::File::open(&path)?.sync_all()
}
