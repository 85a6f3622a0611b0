//! The task that owns one sandbox's VM: its VMM process, network slot and disk. Everything that
//! changes the VM's lifecycle arrives here over a channel, so no two callers race on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rand::RngCore;
use tokio::sync::{mpsc, oneshot, watch};
use wrenn_envd_api::v1::InitRequest;

use super::activity::Activity;
use super::boot_snapshot::BuildClaim;
use super::manager::HostContext;
use super::metrics::{self, MetricsStore, Sampler};
use super::request::ValidCreate;
use super::suspend::{PauseCause, MEMORY_FILE};
use super::{SandboxEvent, SandboxInfo, SandboxState};
use crate::disk::{self, BaseFormat, RootDisk};
use crate::envd_client::EnvdClient;
use crate::error::{error_chain, ApiError};
use crate::images::{ResolvedTemplate, GUEST_INIT_PATH};
use crate::network::{NetworkSlot, GATEWAY_IP, GUEST_IP, GUEST_MAC, TAP_NAME};
use crate::vmm::{
    AfterRestore, MemorySharing, SavedRam, SavedState, VmInstance, VmNetwork, VmSpec,
};

/// Requests a sandbox's owner task serves.
#[derive(Debug)]
pub(crate) enum Command {
    Destroy {
        reply: oneshot::Sender<()>,
    },
    Pause {
        reply: oneshot::Sender<Result<SandboxInfo, ApiError>>,
    },
    Resume {
        reply: oneshot::Sender<Result<SandboxInfo, ApiError>>,
    },
    Snapshot {
        template: String,
        reply: oneshot::Sender<Result<crate::images::TemplateManifest, ApiError>>,
    },
}

/// The envd connection of a running sandbox, shared with its handle; empty while it is not
/// running (a resumed sandbox gets a new one, through its new slot).
pub(crate) type SharedEnvd = Arc<RwLock<Option<EnvdClient>>>;

/// What an owner task shares with its sandbox's handle: callers read or touch these without
/// waiting on the VM.
pub(crate) struct Shared {
    pub envd: SharedEnvd,
    pub activity: Arc<Activity>,
    pub metrics: Arc<std::sync::Mutex<MetricsStore>>,
}

/// What the owner task needs to boot its sandbox.
pub(crate) struct BootPlan {
    pub request: ValidCreate,
    pub template: ResolvedTemplate,
    pub disk_mb: u32,
    /// Set when this sandbox is to make its shape's boot snapshot: it boots with an empty
    /// environment, is frozen, and only then gets the request's environment.
    pub boot_snapshot: Option<BuildClaim>,
    /// Files to pin while the sandbox exists (`pins`): a base image it stands on, and the
    /// frozen disk of a boot snapshot. A user template's chain is kept by its reference count.
    pub pins: Vec<PathBuf>,
}

/// The owner task's view of its sandbox. Fields are filled as boot acquires resources, so a
/// failure at any step releases exactly what was taken.
pub(crate) struct SandboxActor {
    pub(super) ctx: Arc<HostContext>,
    pub(super) info: watch::Sender<SandboxInfo>,
    pub(super) dir: PathBuf,
    pub(super) slot: Option<NetworkSlot>,
    pub(super) vm: Option<Box<dyn VmInstance>>,
    /// The devices the VM was booted with; a resume must recreate exactly these.
    pub(super) spec: Option<VmSpec>,
    pub(super) envd: SharedEnvd,
    pub(super) activity: Arc<Activity>,
    pub(super) metrics: Arc<std::sync::Mutex<MetricsStore>>,
    /// Reads the running VMM's CPU and memory; replaced at every (re)start.
    pub(super) sampler: Option<Sampler>,
    last_sample: Option<Instant>,
    /// envd's access token and the sandbox environment, handed over again after a resume.
    pub(super) init: InitRequest,
}

impl SandboxActor {
    pub fn new(ctx: Arc<HostContext>, info: watch::Sender<SandboxInfo>, shared: Shared) -> Self {
        let dir = ctx.config.state_dir.join(info.borrow().id.as_str());
        Self {
            ctx,
            info,
            dir,
            slot: None,
            vm: None,
            spec: None,
            envd: shared.envd,
            activity: shared.activity,
            metrics: shared.metrics,
            sampler: None,
            last_sample: None,
            init: InitRequest::default(),
        }
    }

    /// Boots, reports readiness through `ready`, then serves commands until destroyed or until
    /// the VMM dies.
    pub async fn run(
        mut self,
        plan: BootPlan,
        mut commands: mpsc::Receiver<Command>,
        ready: oneshot::Sender<Result<SandboxInfo, ApiError>>,
    ) {
        let started = Instant::now();
        let mut booted = match self.boot(&plan).await {
            Ok(()) => self.wait_ready(&plan, &mut commands).await,
            Err(e) => Err(e),
        };
        if let (Ok(envd), Some(claim)) = (&booted, &plan.boot_snapshot) {
            *self.envd.write().unwrap() = Some(envd.clone());
            self.update(|info| info.state = SandboxState::Running);
            booted = self
                .make_boot_snapshot(claim, &plan.request.env)
                .await
                .inspect_err(|_| claim.mark_lost_sandbox())
                .map(|()| {
                    self.envd
                        .read()
                        .unwrap()
                        .clone()
                        .expect("a running sandbox has an envd client")
                })
                .map_err(BootOutcome::Failed);
        }
        match booted {
            Ok(envd) => {
                *self.envd.write().unwrap() = Some(envd);
                // Idle time counts from when the sandbox is usable, not from the request.
                self.activity.touch();
                self.update(|info| {
                    info.state = SandboxState::Running;
                    info.boot_ms = started.elapsed().as_millis() as u64;
                });
                tracing::info!(boot_ms = self.info.borrow().boot_ms, "sandbox running");
                let _ = ready.send(Ok(self.info.borrow().clone()));
            }
            Err(BootOutcome::Failed(error)) => {
                tracing::warn!(error = %error, "sandbox failed to boot");
                self.teardown(SandboxState::Error, Some(error.to_string()))
                    .await;
                let _ = ready.send(Err(error));
                return;
            }
            Err(BootOutcome::Destroyed(reply)) => {
                self.teardown(SandboxState::Stopped, None).await;
                let _ = ready.send(Err(ApiError::Aborted(
                    "sandbox was destroyed while it was starting".into(),
                )));
                let _ = reply.send(());
                return;
            }
        }
        self.serve(commands).await;
    }

    /// Takes over a sandbox a previous agent run left paused on disk.
    pub fn adopt(
        ctx: Arc<HostContext>,
        info: watch::Sender<SandboxInfo>,
        shared: Shared,
        record: &super::record::PausedRecord,
    ) -> Self {
        let mut actor = Self::new(ctx, info, shared);
        actor.spec = Some(record.spec(&actor.dir, actor.ctx.accelerator));
        actor.init = InitRequest {
            access_token: record.envd_token.clone(),
            env: record.env.clone().into_iter().collect(),
            ..InitRequest::default()
        };
        actor
    }

    /// Serves commands until the sandbox is destroyed or its VMM dies.
    pub(super) async fn serve(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let event = match self.vm.take() {
                Some(mut vm) => {
                    let tick = tokio::time::sleep(Activity::CHECK_EVERY);
                    let event = tokio::select! {
                        command = commands.recv() => Event::Command(command),
                        exit = vm.wait_exit() => Event::VmmExited(exit),
                        () = tick => Event::Tick,
                    };
                    self.vm = Some(vm);
                    event
                }
                // Paused: nothing runs, only commands can happen.
                None => Event::Command(commands.recv().await),
            };
            match event {
                // The manager is gone (the agent is stopping). A paused sandbox stays on disk
                // for the next start to adopt; anything else is stopped.
                Event::Command(None) => {
                    if self.info.borrow().state != SandboxState::Paused {
                        self.teardown(SandboxState::Stopped, None).await;
                    }
                    return;
                }
                Event::Command(Some(Command::Destroy { reply })) => {
                    self.teardown(SandboxState::Stopped, None).await;
                    let _ = reply.send(());
                    return;
                }
                Event::Command(Some(Command::Pause { reply })) => {
                    let result = self.pause(PauseCause::Request).await;
                    let failed = self.info.borrow().state == SandboxState::Error;
                    let _ = reply.send(result.map(|()| self.info.borrow().clone()));
                    if failed {
                        return;
                    }
                }
                Event::Command(Some(Command::Resume { reply })) => {
                    let result = self.resume().await;
                    let failed = self.info.borrow().state == SandboxState::Error;
                    let _ = reply.send(result.map(|()| self.info.borrow().clone()));
                    if failed {
                        return;
                    }
                }
                Event::Command(Some(Command::Snapshot { template, reply })) => {
                    let result = self.snapshot(&template).await;
                    let failed = self.info.borrow().state == SandboxState::Error;
                    let _ = reply.send(result);
                    if failed {
                        return;
                    }
                }
                Event::Tick => {
                    self.sample_metrics();
                    if self.activity.expired() && self.info.borrow().state == SandboxState::Running
                    {
                        tracing::info!(timeout_sec = self.activity.timeout_sec(), "idle: pausing");
                        // pause() has already released everything and reported the error.
                        if let Err(e) = self.pause(PauseCause::Idle).await {
                            tracing::error!(error = %e, "automatic pause failed; sandbox destroyed");
                            return;
                        }
                    }
                }
                Event::VmmExited(exit) => {
                    let message = format!("VMM exited unexpectedly (code {:?})", exit.code);
                    tracing::error!(code = ?exit.code, log_tail = %exit.log_tail, "VMM died");
                    self.teardown(SandboxState::Error, Some(message)).await;
                    return;
                }
            }
        }
    }

    async fn boot(&mut self, plan: &BootPlan) -> Result<(), BootOutcome> {
        let internal = |context: &str, e: &(dyn std::error::Error + 'static)| {
            BootOutcome::Failed(ApiError::Internal(format!("{context}: {}", error_chain(e))))
        };
        let started = Instant::now();
        std::fs::create_dir_all(&self.dir).map_err(|e| internal("create sandbox directory", &e))?;
        let snapshot = plan.template.snapshot.as_ref();
        let root_disk = self.ctx.vmm.root_disk();
        let disk_path = self.dir.join(root_disk.file_name());
        // A template's RAM is its memory file, mapped copy-on-write by each clone; a cold boot
        // keeps RAM as its VMM boots: in its own file, or in memory until the first pause.
        let (memory_sharing, memory_file) = match snapshot {
            Some(snapshot) => (MemorySharing::Private, snapshot.memory_path.clone()),
            None => (self.ctx.vmm.boot_memory(), self.dir.join(MEMORY_FILE)),
        };
        // Writing an overlay takes well under a millisecond, a raw copy longer unless the
        // filesystem reflinks; a slot not taken from the spares needs its set-up.
        let disk = create_root_disk(
            root_disk,
            &plan.template.rootfs_path,
            snapshot.is_some(),
            &disk_path,
            u64::from(plan.disk_mb),
        )
        .map_err(|e| internal("create root disk", &e))
        .and_then(|()| {
            plan.pins.iter().try_for_each(|file| {
                crate::pins::pin(
                    file,
                    &self.ctx.config.instance,
                    self.info.borrow().id.as_str(),
                )
                .map_err(|e| internal("pin the template image", &e))
            })
        });
        let slot = self.ctx.network.acquire(plan.request.internet).await;
        let slot = slot.map_err(|e| match e {
            crate::network::NetworkError::Exhausted { .. } => {
                BootOutcome::Failed(ApiError::ResourceExhausted(e.to_string()))
            }
            other => internal("set up network", &other),
        });
        let slot = match (disk, slot) {
            (Ok(()), Ok(slot)) => slot,
            (Err(outcome), slot) => {
                if let Ok(slot) = slot {
                    self.ctx.network.release(slot).await;
                }
                return Err(outcome);
            }
            (Ok(()), Err(outcome)) => return Err(outcome),
        };
        let spec = VmSpec {
            name: vmm_name(&self.ctx.config.instance, self.info.borrow().id.as_str()),
            vcpus: plan.request.vcpus,
            memory_mb: plan.request.memory_mb,
            kernel: plan.template.kernel_path.clone(),
            kernel_args: kernel_args(self.ctx.config.guest_aslr.enabled(self.ctx.accelerator)),
            root_disk: disk_path,
            network: VmNetwork {
                netns: slot.netns_path(),
                tap: TAP_NAME.into(),
                mac: GUEST_MAC.into(),
            },
            run_dir: self.dir.clone(),
            memory_file,
            memory_sharing,
            accelerator: self.ctx.accelerator,
        };
        self.slot = Some(slot);
        let disk_and_slot_ms = started.elapsed().as_millis() as u64;
        let vm = match snapshot {
            None => self.ctx.vmm.start(&spec).await,
            Some(snapshot) => {
                let saved = SavedState {
                    file: &snapshot.device_state_path,
                    ram: SavedRam::InMemoryFile,
                };
                self.ctx.vmm.restore(&spec, saved, AfterRestore::Run).await
            }
        }
        .map_err(|e| internal("start VMM", &e))?;
        self.spec = Some(spec);
        self.watch_vmm(vm.pid());
        tracing::debug!(
            disk_and_slot_ms,
            vmm_ms = started.elapsed().as_millis() as u64 - disk_and_slot_ms,
            "VMM started"
        );
        let pid = vm.pid();
        self.vm = Some(vm);
        self.update(|info| info.vmm_pid = pid);
        Ok(())
    }

    async fn wait_ready(
        &mut self,
        plan: &BootPlan,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<EnvdClient, BootOutcome> {
        let slot = self.slot.as_ref().expect("boot acquired a slot");
        let addr = std::net::SocketAddr::from((slot.addrs.ns_ip, wrenn_envd_api::ENVD_PORT));
        let mut entropy = vec![0u8; 64];
        rand::thread_rng().fill_bytes(&mut entropy);
        let snapshot = plan.template.snapshot.as_ref().map(|s| &s.manifest);
        // A clone starts from the environment frozen in its template, then the request's. A
        // guest about to become a boot snapshot gets the request's only after it is frozen.
        let mut env = snapshot.map(|s| s.env.clone()).unwrap_or_default();
        if plan.boot_snapshot.is_none() {
            env.extend(plan.request.env.clone());
        }
        let init = InitRequest {
            access_token: new_token(),
            unix_time_nanos: 0,
            entropy,
            env: env.into_iter().collect(),
            hostname: String::new(),
        };
        self.init = InitRequest {
            entropy: Vec::new(),
            ..init.clone()
        };
        let timeout = self.ctx.config.ready_timeout;
        let vm = self.vm.as_mut().expect("boot started a VM");
        let current_token = snapshot.map(|s| s.envd_token.as_str());
        let ready = EnvdClient::connect_and_init(addr, init, current_token, timeout);
        tokio::pin!(ready);
        loop {
            tokio::select! {
                ready = &mut ready => return ready.map_err(|e| {
                    let console = crate::vmm::tail_of_file(&self.dir.join("console.log"), 15);
                    BootOutcome::Failed(ApiError::Unavailable(format!(
                        "{}; guest console:\n{console}",
                        error_chain(&e)
                    )))
                }),
                exit = vm.wait_exit() => return Err(BootOutcome::Failed(ApiError::Internal(format!(
                    "VMM exited during boot (code {:?}):\n{}", exit.code, exit.log_tail
                )))),
                Some(command) = commands.recv() => match command {
                    Command::Destroy { reply } => return Err(BootOutcome::Destroyed(reply)),
                        Command::Pause { reply } | Command::Resume { reply } => {
                        let _ = reply.send(Err(still_starting()));
                    }
                    Command::Snapshot { reply, .. } => {
                        let _ = reply.send(Err(still_starting()));
                    }
                },
            }
        }
    }

    /// Releases VM, slot and disk (in that order) and records the final state.
    pub(super) async fn teardown(&mut self, state: SandboxState, error: Option<String>) {
        self.update(|info| info.state = SandboxState::Stopping);
        *self.envd.write().unwrap() = None;
        if let Some(mut vm) = self.vm.take() {
            if let Err(e) = vm.kill().await {
                tracing::warn!(error = %error_chain(&e), "stop VMM");
            }
        }
        if let Some(slot) = self.slot.take() {
            self.ctx.network.release(slot).await;
        }
        crate::pins::unpin(
            &self.ctx.config.images_dir,
            &self.ctx.config.instance,
            self.info.borrow().id.as_str(),
        );
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "remove sandbox directory");
            }
        }
        self.update(|info| {
            info.state = state;
            info.error = error;
            info.vmm_pid = None;
        });
    }

    pub(super) fn update(&self, change: impl FnOnce(&mut SandboxInfo)) {
        self.info.send_modify(change);
        let info = self.info.borrow().clone();
        // Metrics leave with the sandbox's last running moments, for the control plane to keep.
        let flushed_metrics = match info.state {
            SandboxState::Paused | SandboxState::Stopped | SandboxState::Error => {
                self.metrics.lock().unwrap().take_unflushed()
            }
            _ => Vec::new(),
        };
        let _ = self.ctx.events.send(SandboxEvent {
            info,
            flushed_metrics,
        });
    }

    /// Takes a metrics sample when one is due.
    fn sample_metrics(&mut self) {
        let due = self
            .last_sample
            .is_none_or(|at| at.elapsed() >= metrics::SAMPLE_EVERY);
        if let (true, Some(sampler)) = (due, self.sampler.as_mut()) {
            if let Some(sample) = sampler.sample() {
                self.metrics.lock().unwrap().push(sample);
            }
            self.last_sample = Some(Instant::now());
        }
    }

    /// Starts sampling a freshly started VMM.
    pub(super) fn watch_vmm(&mut self, pid: Option<u32>) {
        self.sampler =
            pid.map(|pid| Sampler::new(pid, &self.dir.join(self.ctx.vmm.root_disk().file_name())));
        self.last_sample = None;
    }
}

enum BootOutcome {
    Failed(ApiError),
    Destroyed(oneshot::Sender<()>),
}

fn still_starting() -> ApiError {
    ApiError::FailedPrecondition("sandbox is still starting".into())
}

enum Event {
    Command(Option<Command>),
    /// Time to sample metrics and check for idleness.
    Tick,
    VmmExited(crate::vmm::VmExit),
}

/// Makes a sandbox's root disk from its template's image: a qcow2 overlay on it (QEMU) or a
/// raw copy of it (Firecracker; the copy method is logged once, see disks.md).
pub(crate) fn create_root_disk(
    kind: RootDisk,
    image: &Path,
    image_is_snapshot: bool,
    disk: &Path,
    size_mb: u64,
) -> Result<(), disk::DiskError> {
    match kind {
        RootDisk::Qcow2Overlay => disk::create_overlay(
            image,
            if image_is_snapshot {
                BaseFormat::Qcow2
            } else {
                BaseFormat::Raw
            },
            disk,
            size_mb,
        ),
        RootDisk::Raw => {
            let method =
                disk::copy_raw(image, disk, size_mb).map_err(|source| disk::DiskError::Create {
                    path: disk.to_owned(),
                    base: image.to_owned(),
                    source,
                })?;
            static LOGGED: std::sync::Once = std::sync::Once::new();
            LOGGED.call_once(|| tracing::info!(?method, "raw root disks are copied this way"));
            Ok(())
        }
    }
}

/// The marker in a VMM's command line: start-up reclaim kills processes carrying its
/// instance's prefix.
pub(crate) fn vmm_name(instance: &str, sandbox_id: &str) -> String {
    format!("{}{sandbox_id}", vmm_name_prefix(instance))
}

pub(crate) fn vmm_name_prefix(instance: &str) -> String {
    format!("wrenn.{instance}.")
}

/// The guest kernel command line: envd as PID 1, and the guest's address, which envd
/// configures (`wrenn.ip`, `wrenn.gw`; the kernel's own `ip=` sleeps at boot).
pub(crate) fn kernel_args(aslr: bool) -> String {
    format!(
        "console=ttyS0 quiet panic=-1 root=/dev/vda rw rootfstype=ext4 init={GUEST_INIT_PATH} \
         wrenn.ip={GUEST_IP}/24 wrenn.gw={GATEWAY_IP}{}",
        if aslr { "" } else { " norandmaps" }
    )
}

pub(super) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
