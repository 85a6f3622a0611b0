//! Pause and resume. Guest RAM already lives in the sandbox's memory file, so pausing only
//! writes device state (~50 KB) and makes the files durable; resuming starts a VMM with the same
//! devices in a fresh network slot, loads that state and lets the guest run on.

use std::path::Path;
use std::time::Instant;

use rand::RngCore;

use super::actor::SandboxActor;
use super::record::PausedRecord;
use super::SandboxState;
use crate::envd_client::EnvdClient;
use crate::error::{error_chain, ApiError};
use crate::vmm::{ram_beside_state, AfterRestore, MemorySharing, SavedRam, SavedState, VmSpec};

/// Device state of a paused sandbox, inside its directory.
pub const STATE_FILE: &str = "vmstate";
/// Guest RAM of a sandbox booted from a base template (`share=on`), inside its directory.
pub const MEMORY_FILE: &str = "memory";
/// A clone's device state while its RAM moves into a memory file of its own.
const OWN_MEMORY_STATE_FILE: &str = "vmstate.own-memory";

/// Why a sandbox pauses; reported with the pause itself (`auto_paused`), in the same state
/// change, so no watcher sees the one without the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PauseCause {
    Request,
    Idle,
}

impl SandboxActor {
    pub(super) async fn pause(&mut self, cause: PauseCause) -> Result<(), ApiError> {
        let state = self.info.borrow().state;
        if state != SandboxState::Running {
            return Err(ApiError::FailedPrecondition(format!(
                "sandbox is {}; only a running sandbox can be paused",
                state.as_str()
            )));
        }
        let started = Instant::now();
        self.update(|info| info.state = SandboxState::Pausing);
        *self.envd.write().unwrap() = None;
        let state_file = self.dir.join(STATE_FILE);
        let vm = self.vm.as_mut().expect("a running sandbox has a VM");
        let own_memory_file = self.dir.join(MEMORY_FILE);
        let saved = match vm.save_and_exit(&state_file, &own_memory_file).await {
            Ok(ram) => {
                if ram == SavedRam::InOwnMemoryFile {
                    // A clone no longer rests on its template's memory, nor a cold boot on
                    // its VMM's: from now on it pauses with device state alone.
                    let spec = self.spec.as_ref().expect("a running sandbox has a VM spec");
                    self.spec = Some(self.own_memory_spec(spec));
                }
                let own_memory = self.spec.as_ref().map(|spec| spec.memory_sharing)
                    == Some(MemorySharing::Shared);
                make_durable(&self.dir, self.ctx.vmm.root_disk().file_name(), own_memory)
                    .map_err(|e| format!("flush paused sandbox to disk: {e}"))
            }
            Err(e) => Err(format!("save VM state: {}", error_chain(&e))),
        };
        if let Err(message) = saved {
            tracing::error!(error = %message, "pause failed; the sandbox is lost");
            self.teardown(
                SandboxState::Error,
                Some(format!("pause failed: {message}")),
            )
            .await;
            return Err(ApiError::Internal(format!("pause failed: {message}")));
        }
        self.vm = None;
        if let Some(slot) = self.slot.take() {
            self.ctx.network.release(slot).await;
        }
        self.update(|info| {
            info.state = SandboxState::Paused;
            info.vmm_pid = None;
            info.auto_paused = cause == PauseCause::Idle;
        });
        // Last: with the record on disk, a restarted agent finds and lists this sandbox.
        self.write_paused_record();
        tracing::info!(
            pause_ms = started.elapsed().as_millis() as u64,
            "sandbox paused"
        );
        Ok(())
    }

    pub(super) async fn resume(&mut self) -> Result<(), ApiError> {
        let state = self.info.borrow().state;
        if state != SandboxState::Paused {
            return Err(ApiError::FailedPrecondition(format!(
                "sandbox is {}; only a paused sandbox can be resumed",
                state.as_str()
            )));
        }
        let started = Instant::now();
        self.update(|info| info.state = SandboxState::Resuming);
        // Gone before the guest can run again: were the agent to die mid-resume, the saved
        // state would no longer match the memory and disk, and must not be adopted as paused.
        PausedRecord::remove(&self.dir);
        let still_paused = |actor: &Self, error: ApiError| {
            actor.update(|info| info.state = SandboxState::Paused);
            actor.write_paused_record();
            Err(error)
        };
        let internet = self.info.borrow().internet;
        let slot = match self.ctx.network.acquire(internet).await {
            Ok(slot) => slot,
            Err(e @ crate::network::NetworkError::Exhausted { .. }) => {
                return still_paused(self, ApiError::ResourceExhausted(e.to_string()))
            }
            Err(e) => return still_paused(self, ApiError::internal(&e)),
        };
        let slot_ms = started.elapsed().as_millis() as u64;
        let paused_spec = self
            .spec
            .clone()
            .expect("a paused sandbox keeps its VM spec");
        // A clone's RAM is in its saved state: it wakes up in a memory file of its own, so
        // from now on it pauses, snapshots and forks like any sandbox.
        let saved = SavedState {
            file: &self.dir.join(STATE_FILE),
            ram: SavedRam::saved_from(paused_spec.memory_sharing),
        };
        self.drop_fresh_memory_file(&paused_spec);
        let mut spec = self.own_memory_spec(&paused_spec);
        spec.network.netns = slot.netns_path();
        // Before the VMM opens the disk chain: a template flattened since the last start may
        // have dropped an ancestor.
        let depends_on = crate::images::ImageStore::new(&self.ctx.config.images_dir)
            .lineage(&self.info.borrow().disk_template);
        self.update(|info| info.depends_on = depends_on);
        let addr = std::net::SocketAddr::from((slot.addrs.ns_ip, wrenn_envd_api::ENVD_PORT));
        let vm = match self.ctx.vmm.restore(&spec, saved, AfterRestore::Run).await {
            Ok(vm) => vm,
            Err(e) => {
                // The guest never ran, so the saved files are still a consistent pause.
                self.ctx.network.release(slot).await;
                self.drop_fresh_memory_file(&paused_spec);
                let message = format!(
                    "resume failed, the sandbox stays paused: {}",
                    error_chain(&e)
                );
                return still_paused(self, ApiError::Unavailable(message));
            }
        };
        self.slot = Some(slot);
        self.spec = Some(spec);
        let restored_ms = started.elapsed().as_millis() as u64;
        let pid = vm.pid();
        self.watch_vmm(pid);
        self.vm = Some(vm);

        // From here the guest runs: its memory and disk move on from the saved state, so a
        // failure can no longer fall back to "paused".
        let mut init = self.init.clone();
        init.entropy = vec![0u8; 64];
        rand::thread_rng().fill_bytes(&mut init.entropy);
        match EnvdClient::connect_and_init(addr, init, None, self.ctx.config.ready_timeout).await {
            Ok(envd) => {
                *self.envd.write().unwrap() = Some(envd);
                let state_file = self.dir.join(STATE_FILE);
                let _ = std::fs::remove_file(ram_beside_state(&state_file));
                let _ = std::fs::remove_file(state_file);
                self.activity.touch();
                self.update(|info| {
                    info.state = SandboxState::Running;
                    info.vmm_pid = pid;
                    info.auto_paused = false;
                });
                tracing::info!(
                    resume_ms = started.elapsed().as_millis() as u64,
                    slot_ms,
                    restored_ms,
                    "sandbox resumed"
                );
                Ok(())
            }
            Err(e) => {
                let message = format!("resumed guest did not answer: {}", error_chain(&e));
                self.teardown(SandboxState::Error, Some(message.clone()))
                    .await;
                Err(ApiError::Unavailable(message))
            }
        }
    }
}

impl SandboxActor {
    /// Moves a paused clone's RAM out of its saved state into a memory file of its own,
    /// without letting the guest run: the VM is loaded into that file and saved again, device
    /// state only. Afterwards the sandbox is paused like one booted from a base template,
    /// which snapshots need. A failure leaves the clone paused as it was.
    pub(super) async fn take_own_memory(&mut self) -> Result<(), ApiError> {
        let paused_spec = self
            .spec
            .clone()
            .expect("a paused sandbox keeps its VM spec");
        if paused_spec.memory_sharing == MemorySharing::Shared {
            return Ok(());
        }
        let started = Instant::now();
        let internet = self.info.borrow().internet;
        // QEMU needs the same devices to load the state, a TAP included.
        let slot = self
            .ctx
            .network
            .acquire(internet)
            .await
            .map_err(|e| match e {
                e @ crate::network::NetworkError::Exhausted { .. } => {
                    ApiError::ResourceExhausted(e.to_string())
                }
                e => ApiError::internal(&e),
            })?;
        let mut spec = self.own_memory_spec(&paused_spec);
        spec.network.netns = slot.netns_path();
        let state_file = self.dir.join(STATE_FILE);
        let new_state = self.dir.join(OWN_MEMORY_STATE_FILE);
        self.drop_fresh_memory_file(&paused_spec);
        let saved = SavedState {
            file: &state_file,
            ram: SavedRam::InStateFile,
        };
        let moved = async {
            let mut vm = self
                .ctx
                .vmm
                .restore(&spec, saved, AfterRestore::StayStopped)
                .await?;
            vm.save_and_exit(&new_state, &self.dir.join(MEMORY_FILE))
                .await
                .map(drop)
        }
        .await
        .map_err(|e| {
            format!(
                "load the clone's RAM into its own file: {}",
                error_chain(&e)
            )
        })
        .and_then(|()| {
            make_durable_files(&self.dir, &[MEMORY_FILE, OWN_MEMORY_STATE_FILE])
                .map_err(|e| format!("flush the clone's memory: {e}"))
        });
        self.ctx.network.release(slot).await;
        if let Err(message) = moved {
            let _ = std::fs::remove_file(&new_state);
            self.drop_fresh_memory_file(&paused_spec);
            return Err(ApiError::Internal(message));
        }
        // Between these two steps the record still describes the old shape; the record is
        // removed first so a crash there loses the sandbox instead of adopting it wrongly.
        PausedRecord::remove(&self.dir);
        if let Err(e) = std::fs::rename(&new_state, &state_file) {
            self.write_paused_record();
            let _ = std::fs::remove_file(&new_state);
            self.drop_fresh_memory_file(&paused_spec);
            return Err(ApiError::Internal(format!("replace saved state: {e}")));
        }
        // A Firecracker clone's RAM saved beside the old state is in the memory file now.
        let _ = std::fs::remove_file(ram_beside_state(&state_file));
        self.spec = Some(spec);
        self.write_paused_record();
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "clone's RAM moved into its own memory file"
        );
        Ok(())
    }

    /// `spec` with RAM in the sandbox's own memory file, written through (`share=on`).
    fn own_memory_spec(&self, spec: &VmSpec) -> VmSpec {
        VmSpec {
            memory_file: self.dir.join(MEMORY_FILE),
            memory_sharing: MemorySharing::Shared,
            ..spec.clone()
        }
    }

    /// Removes a clone's own memory file: a stale one before a restore fills it, or one a
    /// failed restore created.
    fn drop_fresh_memory_file(&self, paused_spec: &VmSpec) {
        if paused_spec.memory_sharing == MemorySharing::Private {
            let _ = std::fs::remove_file(self.dir.join(MEMORY_FILE));
        }
    }

    pub(super) fn write_paused_record(&self) {
        let record = PausedRecord::new(
            &self.info.borrow(),
            self.spec
                .as_ref()
                .expect("a paused sandbox keeps its VM spec"),
            &self.init.access_token,
            self.init.env.clone().into_iter().collect(),
        );
        if let Err(e) = record.write(&self.dir) {
            tracing::warn!(error = %e, "write paused-sandbox record; it will not survive an agent restart");
        }
    }
}

/// fsyncs everything a paused sandbox is made of, in parallel (concurrent fsyncs share journal
/// commits). A clone's RAM is in the state file, or beside it under Firecracker (its memory
/// file is the template's, never written). The directory itself is synced once, by the record
/// written after this.
fn make_durable(dir: &Path, disk_file: &str, own_memory_file: bool) -> std::io::Result<()> {
    let mut files = vec![STATE_FILE.to_owned(), disk_file.to_owned()];
    if own_memory_file {
        files.push(MEMORY_FILE.to_owned());
    }
    let beside = ram_beside_state(&dir.join(STATE_FILE));
    if !own_memory_file && beside.exists() {
        files.push(beside.to_string_lossy().into_owned());
    }
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    make_durable_files(dir, &files)
}

fn make_durable_files(dir: &Path, files: &[&str]) -> std::io::Result<()> {
    std::thread::scope(|scope| {
        let syncs: Vec<_> = files
            .iter()
            .map(|file| scope.spawn(move || std::fs::File::open(dir.join(file))?.sync_all()))
            .collect();
        syncs.into_iter().try_for_each(|sync| {
            sync.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("fsync thread panicked")))
        })
    })
}
