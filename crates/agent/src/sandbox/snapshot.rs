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
use super::suspend::{PauseCause, MEMORY_FILE, STATE_FILE};
use super::{now_ms, SandboxState};
use crate::disk::{self, BaseFormat, RootDisk};
use crate::error::ApiError;
use crate::images::{
    validate_template_name, write_manifest_in, ImageStore, ResolvedTemplate, SnapshotManifest,
    TemplateManifest,
};

/// The frozen disk, by the shape the VMM takes: a qcow2 layer or a raw image.
fn frozen_disk(kind: RootDisk) -> &'static str {
    match kind {
        RootDisk::Qcow2Overlay => "disk.qcow2",
        RootDisk::Raw => "disk.raw",
    }
}
const FROZEN_MEMORY: &str = "memory";

/// What a frozen guest holds that its clones inherit, and what the template was made from.
pub(super) struct FrozenGuest {
    /// envd's token in the frozen guest: the first Init of each clone presents it.
    pub envd_token: String,
    pub env: std::collections::BTreeMap<String, String>,
    pub inputs_key: String,
}
const FROZEN_STATE: &str = "vmstate";

impl SandboxActor {
    pub(super) async fn snapshot(&mut self, name: &str) -> Result<TemplateManifest, ApiError> {
        validate_template_name(name).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let guest = FrozenGuest {
            envd_token: self.init.access_token.clone(),
            env: self.init.env.clone().into_iter().collect(),
            inputs_key: format!("snapshot:{}", self.info.borrow().id),
        };
        self.snapshot_as(name, guest).await
    }

    /// Snapshots into template `name`, recording `guest` as what the frozen guest holds.
    pub(super) async fn snapshot_as(
        &mut self,
        name: &str,
        guest: FrozenGuest,
    ) -> Result<TemplateManifest, ApiError> {
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
            self.pause(PauseCause::Request).await?;
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
        let frozen = self.freeze(&store, name, &spec, guest).await;
        let manifest = match frozen {
            Ok(manifest) => manifest,
            Err(e) => {
                // The sandbox itself is untouched unless its disk was already moved.
                let disk_file = self.ctx.vmm.root_disk().file_name();
                if was_running && self.dir.join(disk_file).exists() {
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
        guest: FrozenGuest,
    ) -> Result<TemplateManifest, ApiError> {
        let internal = |what: &str, e: std::io::Error| ApiError::Internal(format!("{what}: {e}"));
        let final_dir = store.template_dir(name);
        let staging = store.templates_dir().join(format!(
            ".{name}.{:08x}.partial",
            rand::thread_rng().gen::<u32>()
        ));
        let base = self.base_template(store)?;
        let disk_template = self.info.borrow().disk_template.clone();
        std::fs::create_dir_all(&staging).map_err(|e| internal("create template directory", e))?;
        let root_disk = self.ctx.vmm.root_disk();
        let (disk_file, frozen_file) = (root_disk.file_name(), frozen_disk(root_disk));
        let result = async {
            disk::copy_sparse(&self.dir.join(MEMORY_FILE), &staging.join(FROZEN_MEMORY))
                .map_err(|e| internal("copy guest memory", e))?;
            disk::copy_sparse(&self.dir.join(STATE_FILE), &staging.join(FROZEN_STATE))
                .map_err(|e| internal("copy device state", e))?;
            move_file(&self.dir.join(disk_file), &staging.join(frozen_file))
                .map_err(|e| internal("freeze disk", e))?;
            let parent = match root_disk {
                RootDisk::Qcow2Overlay => {
                    self.bound_disk_chain(store, &disk_template, &base, &staging.join(frozen_file))
                        .await?
                }
                // A raw disk is whole: no chain to bound; the base stays its nominal parent.
                RootDisk::Raw => base.manifest.name.clone(),
            };
            let info = self.info.borrow().clone();
            let manifest = TemplateManifest {
                name: name.to_owned(),
                kernel: spec
                    .kernel
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                rootfs: frozen_file.into(),
                rootfs_bytes: u64::from(info.disk_mb) << 20,
                inputs_key: guest.inputs_key,
                created_at_ms: now_ms(),
                snapshot: Some(SnapshotManifest {
                    memory: FROZEN_MEMORY.into(),
                    device_state: FROZEN_STATE.into(),
                    vcpus: info.vcpus,
                    memory_mb: info.memory_mb,
                    disk_mb: info.disk_mb,
                    envd_token: guest.envd_token,
                    env: guest.env,
                    parent,
                    source_sandbox: info.id.to_string(),
                    vmm: self.ctx.vmm.kind().into(),
                }),
            };
            write_manifest_in(&staging, &manifest)
                .map_err(|e| internal("write template manifest", e))?;
            for file in [FROZEN_MEMORY, FROZEN_STATE, frozen_file] {
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
                let moved = staging.join(frozen_file);
                if moved.exists() && !self.dir.join(disk_file).exists() {
                    let _ = move_file(&moved, &self.dir.join(disk_file));
                }
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let disk_mb = u64::from(self.info.borrow().disk_mb);
        super::actor::create_root_disk(
            root_disk,
            &final_dir.join(frozen_file),
            true,
            &self.dir.join(disk_file),
            disk_mb,
        )
        .map_err(|e| ApiError::internal(&e))?;
        // The sandbox now stands on the new template, and its RAM is its own. Recorded before
        // its VMM opens the new overlay, so a flattening finishing later only over-counts.
        let depends_on = store.lineage(name);
        self.update(|info| {
            info.disk_template = name.to_owned();
            info.depends_on = depends_on;
        });
        if super::flatten::needs_flattening(store, name) {
            self.ctx.flattener.schedule(name);
        }
        Ok(manifest)
    }
}

impl SandboxActor {
    /// Keeps overlay chains short and returns the frozen disk's parent template. The frozen
    /// disk stands on the sandbox's disk template. When that is a base, or a snapshot already
    /// flattened onto its base, nothing is done here: a snapshot parent is flattened later, in
    /// the background (`flatten.rs`). When the disk template itself still stands on another
    /// snapshot (snapshots taken faster than flattening keeps up), the frozen disk is rebased
    /// onto the base now, while the VM is paused and no VMM has it open, so no template is ever
    /// more than two layers above its base.
    async fn bound_disk_chain(
        &self,
        store: &ImageStore,
        disk_template: &str,
        base: &ResolvedTemplate,
        frozen: &Path,
    ) -> Result<String, ApiError> {
        if disk_template == base.manifest.name
            || !super::flatten::needs_flattening(store, disk_template)
        {
            return Ok(disk_template.to_owned());
        }
        tracing::info!(
            disk_template,
            "flattening the frozen disk now: its parent is not flat yet"
        );
        let qemu_img = &self.ctx.config.qemu_img_binary;
        let base_image = disk::chain_bottom(frozen).map_err(|e| ApiError::internal(&e))?;
        disk::rebase(qemu_img, frozen, &base_image, BaseFormat::Raw)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        Ok(base.manifest.name.clone())
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

    /// The base template at the bottom of the sandbox's disk chain.
    fn base_template(&self, store: &ImageStore) -> Result<ResolvedTemplate, ApiError> {
        let mut name = self.info.borrow().disk_template.clone();
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
