//! The registry of sandboxes on this host. It validates requests, reserves capacity and hands
//! each sandbox to its owner task; it never waits on a busy VM.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::activity::Activity;
use super::actor::{BootPlan, Command, SandboxActor, Shared, SharedEnvd};
use super::boot_snapshot::{is_boot_snapshot, Shape};
use super::metrics::{MetricsStore, Sample};
use super::record::PausedRecord;
use super::request::{CreateSandbox, Limits};
use super::{now_ms, SandboxEvent, SandboxInfo, SandboxState, StartMethod};
use crate::accel::Accelerator;
use crate::config::{AgentConfig, ShutdownPolicy};
use crate::envd_client::EnvdClient;
use crate::error::{error_chain, ApiError};
use crate::ids::SandboxId;
use crate::images::{ImageStore, SnapshotManifest, TemplateError, TemplateManifest};
use crate::network::{NetworkManager, PoolSettings, SlotPool};
use crate::reclaim::{self, ReclaimReport};
use crate::vmm::Vmm;

/// Commands queued per sandbox before callers get a "busy" error.
const COMMAND_QUEUE: usize = 8;
/// Most copies one fork call makes.
const MAX_FORKS: u32 = 16;
/// Hidden templates made by fork start with this.
const FORK_TEMPLATE_PREFIX: &str = "fork-";
/// Memory kept back for the host itself when admitting sandboxes.
const HOST_RESERVED_MB: u64 = 1024;

/// What every owner task shares: configuration and host-wide services.
pub(crate) struct HostContext {
    pub config: AgentConfig,
    pub accelerator: Accelerator,
    pub vmm: Arc<dyn Vmm>,
    pub network: SlotPool,
    pub events: broadcast::Sender<SandboxEvent>,
    pub flattener: super::flatten::Flattener,
    /// Identifies the VMM binary, for boot snapshots (`boot_snapshot::vmm_build`).
    pub vmm_build: String,
    pub boot_builds: super::boot_snapshot::Builds,
}

impl HostContext {
    /// The kernel command line of guests booted from now on.
    pub fn kernel_args(&self) -> String {
        super::actor::kernel_args(self.config.guest_aslr.enabled(self.accelerator))
    }
}

#[derive(Clone)]
struct SandboxHandle {
    info: watch::Receiver<SandboxInfo>,
    commands: mpsc::Sender<Command>,
    envd: SharedEnvd,
    activity: Arc<Activity>,
    metrics: Arc<Mutex<MetricsStore>>,
}

impl SandboxHandle {
    /// The owner task's view plus the activity callers record directly.
    fn snapshot(&self) -> SandboxInfo {
        let mut info = self.info.borrow().clone();
        info.timeout_sec = self.activity.timeout_sec();
        info.last_activity_ms = self.activity.last_ms();
        info
    }
}

/// Host facts reported to the control plane.
#[derive(Debug, Clone)]
pub struct HostSummary {
    pub accelerator: Accelerator,
    pub vmm: &'static str,
    pub cpus: u32,
    pub memory_mb: u64,
    pub allocated_memory_mb: u64,
    pub running_sandboxes: u32,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::InvalidInstance),
    #[error("create state directory {path}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("prepare host networking")]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    AlreadyRunning(#[from] crate::lease::InstanceLockError),
    #[error("{0}")]
    Vmm(String),
}

/// All sandboxes on this host.
pub struct SandboxManager {
    ctx: Arc<HostContext>,
    images: ImageStore,
    host_memory_mb: u64,
    sandboxes: Mutex<HashMap<SandboxId, SandboxHandle>>,
    _instance_lock: crate::lease::InstanceLock,
}

/// How long a starting agent waits for another process of its instance to let go.
const INSTANCE_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl SandboxManager {
    /// Prepares the host: picks the accelerator, reclaims what a previous run left behind and
    /// installs the firewall table.
    pub async fn start(
        config: AgentConfig,
        vmm: Arc<dyn Vmm>,
    ) -> Result<(Self, ReclaimReport), StartError> {
        config.validate()?;
        // Before reclaim: a second agent of the same instance must not kill the first's VMs.
        // A few seconds' patience lets a restart wait for the previous process to exit.
        let instance_lock =
            crate::lease::InstanceLock::acquire_waiting(&config.instance, INSTANCE_LOCK_PATIENCE)
                .await?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| StartError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let accelerator = config.accelerator.resolve();
        tracing::info!(
            %accelerator,
            vmm = vmm.kind(),
            instance = config.instance,
            guest_aslr = config.guest_aslr.enabled(accelerator),
            "host agent starting"
        );
        let network = NetworkManager::new(&config.instance, config.slot_network);
        let report = reclaim::reclaim(&config, &network).await?;
        let (events, _) = broadcast::channel(1024);
        let vmm_build = super::boot_snapshot::vmm_build(match vmm.kind() {
            "firecracker" => &config.firecracker_binary,
            _ => &config.qemu_binary,
        });
        let manager = Self {
            ctx: Arc::new(HostContext {
                vmm_build,
                boot_builds: Default::default(),
                accelerator,
                vmm,
                network: SlotPool::start(network, PoolSettings::with_target(config.spare_slots)),
                events,
                flattener: super::flatten::Flattener::start(
                    ImageStore::new(&config.images_dir),
                    config.qemu_img_binary.clone(),
                ),
                config: config.clone(),
            }),
            images: ImageStore::new(&config.images_dir),
            host_memory_mb: host_memory_mb(),
            sandboxes: Mutex::new(HashMap::new()),
            _instance_lock: instance_lock,
        };
        manager.adopt_paused();
        manager.delete_stale_boot_snapshots();
        Ok((manager, report))
    }

    /// Registers the paused sandboxes a previous run left on disk.
    fn adopt_paused(&self) {
        let Ok(entries) = std::fs::read_dir(&self.ctx.config.state_dir) else {
            return;
        };
        for dir in entries.filter_map(Result::ok).map(|entry| entry.path()) {
            let Some(record) = PausedRecord::read(&dir) else {
                continue;
            };
            let Some(info) = record.info() else { continue };
            let id = info.id.clone();
            let (info_tx, info_rx) = watch::channel(info);
            let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
            let envd: SharedEnvd = Arc::new(RwLock::new(None));
            let activity = Arc::new(Activity::new(record.timeout_sec));
            let metrics = Arc::new(Mutex::new(MetricsStore::default()));
            let actor = SandboxActor::adopt(
                self.ctx.clone(),
                info_tx,
                Shared {
                    envd: envd.clone(),
                    activity: activity.clone(),
                    metrics: metrics.clone(),
                },
                &record,
            );
            self.sandboxes.lock().unwrap().insert(
                id.clone(),
                SandboxHandle {
                    info: info_rx,
                    commands: commands_tx,
                    envd,
                    activity,
                    metrics,
                },
            );
            tracing::info!(sandbox_id = %id, "adopted paused sandbox");
            let span = tracing::info_span!("sandbox", sandbox_id = %id);
            tokio::spawn(tracing::Instrument::instrument(
                actor.serve(commands_rx),
                span,
            ));
        }
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// Templates sandboxes can be created from; boot snapshots are the agent's own business.
    pub fn templates(&self) -> Vec<TemplateManifest> {
        let mut templates = self.images.list();
        templates.retain(|t| !is_boot_snapshot(&t.name));
        templates
    }

    /// Deletes a boot snapshot no sandbox stands on. Sandboxes of other agents sharing the
    /// image directory count too: they pin its frozen disk.
    fn delete_boot_snapshot(&self, name: &str) -> Result<(), ApiError> {
        let resolved = self
            .images
            .resolve(name)
            .map_err(|e| ApiError::NotFound(e.to_string()))?;
        if std::fs::metadata(&resolved.rootfs_path).is_ok_and(|m| crate::pins::is_pinned(&m)) {
            return Err(ApiError::FailedPrecondition(format!(
                "boot snapshot {name:?} is in use by a sandbox of this host"
            )));
        }
        self.delete_template(name)
    }

    /// Deletes boot snapshots made from an image or VMM build that has changed since, unless a
    /// sandbox of this agent still stands on one.
    fn delete_stale_boot_snapshots(&self) {
        let templates = self.images.list();
        let kind = self.ctx.vmm.kind();
        for snapshot in templates.iter().filter(|t| is_boot_snapshot(&t.name)) {
            let parent = snapshot.snapshot.as_ref().map(|s| s.parent.as_str());
            let base = templates
                .iter()
                .find(|t| Some(t.name.as_str()) == parent && t.snapshot.is_none());
            if super::boot_snapshot::is_stale(snapshot, base, kind, &self.ctx.vmm_build) {
                match self.delete_boot_snapshot(&snapshot.name) {
                    Ok(()) => {
                        tracing::info!(template = snapshot.name, "stale boot snapshot deleted")
                    }
                    Err(e) => {
                        tracing::debug!(template = snapshot.name, error = %e, "stale boot snapshot kept")
                    }
                }
            }
        }
    }

    /// Sandbox state changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<SandboxEvent> {
        self.ctx.events.subscribe()
    }

    /// Starts a sandbox and returns once envd answers (or the start fails). A sandbox of a base
    /// image starts from the image's boot snapshot when there is one; if that fails, the
    /// snapshot is discarded and the sandbox boots cold. If the sandbox booted to make the
    /// snapshot is lost while making it (a pause that fails, say on a full disk), the sandbox
    /// boots cold again without making one.
    pub async fn create(&self, request: CreateSandbox) -> Result<SandboxInfo, ApiError> {
        let mut role = BootSnapshotRole::None;
        match self.start_sandbox(request.clone(), true, &mut role).await {
            Err(error @ (ApiError::Internal(_) | ApiError::Unavailable(_))) => match role {
                BootSnapshotRole::StartedFrom(name) => {
                    tracing::warn!(template = name, error = %error, "starting from a boot snapshot failed; it is discarded and the sandbox boots cold");
                    if let Err(e) = self.delete_boot_snapshot(&name) {
                        tracing::warn!(template = name, error = %e, "discard boot snapshot");
                    }
                    self.start_sandbox(request, false, &mut BootSnapshotRole::None)
                        .await
                }
                BootSnapshotRole::Making(lost) if lost.load(Ordering::Relaxed) => {
                    tracing::warn!(error = %error, "making the boot snapshot lost the sandbox; it boots cold again without making one");
                    self.start_sandbox(request, false, &mut BootSnapshotRole::None)
                        .await
                }
                _ => Err(error),
            },
            other => other,
        }
    }

    /// Starts one sandbox; `role` tells how its shape's boot snapshot took part.
    async fn start_sandbox(
        &self,
        mut request: CreateSandbox,
        use_boot_snapshot: bool,
        role: &mut BootSnapshotRole,
    ) -> Result<SandboxInfo, ApiError> {
        if let Ok(Some(template)) = self.images.read_manifest(&request.template) {
            if let Some(snapshot) = template.snapshot {
                if snapshot.vmm != self.ctx.vmm.kind() {
                    return Err(ApiError::FailedPrecondition(format!(
                        "template {:?} was snapshotted by {}, and this host runs {}: only {} \
                         can load its saved state",
                        request.template,
                        snapshot.vmm,
                        self.ctx.vmm.kind(),
                        snapshot.vmm
                    )));
                }
                fit_to_snapshot(&mut request, &snapshot)?;
            }
        }
        let request = request.validate(Limits {
            max_vcpus: self.ctx.config.max_vcpus,
            host_memory_mb: self.host_memory_mb,
        })?;
        let template = self
            .images
            .resolve(&request.template)
            .map_err(|e| match e {
                TemplateError::NotFound { .. } | TemplateError::InvalidName(_) => {
                    ApiError::NotFound(e.to_string())
                }
                other => ApiError::internal(&other),
            })?;
        let template_mb = template.manifest.rootfs_bytes.div_ceil(1 << 20) as u32;
        let disk_mb: u32 = match request.disk_mb {
            0 => template_mb,
            mb if mb < template_mb => {
                return Err(ApiError::InvalidArgument(format!(
                    "disk_mb {mb} is smaller than template {:?} ({template_mb} MiB)",
                    request.template
                )))
            }
            mb => mb,
        };
        let mut start = match template.snapshot {
            Some(_) => StartMethod::Template,
            None => StartMethod::ColdBoot,
        };
        let mut pins = match start {
            StartMethod::ColdBoot => vec![template.rootfs_path.clone()],
            _ => Vec::new(),
        };
        let (mut template, mut disk_template, mut boot_snapshot) =
            (template, request.template.clone(), None);
        if start == StartMethod::ColdBoot
            && use_boot_snapshot
            && self.ctx.config.boot_snapshots
            && !request.cold_boot
        {
            let kernel_args = self.ctx.kernel_args();
            let shape = Shape {
                base: &template.manifest,
                vcpus: request.vcpus,
                memory_mb: request.memory_mb,
                disk_mb,
                kernel_args: &kernel_args,
                vmm: self.ctx.vmm.kind(),
                vmm_build: &self.ctx.vmm_build,
                accelerator: self.ctx.accelerator,
            };
            let name = shape.template_name();
            match self.images.resolve(&name) {
                Ok(frozen) if frozen.snapshot.is_some() => {
                    super::boot_snapshot::mark_used(&self.images.template_dir(&name));
                    pins.push(frozen.rootfs_path.clone());
                    template = frozen;
                    disk_template = name.clone();
                    start = StartMethod::BootSnapshot;
                    *role = BootSnapshotRole::StartedFrom(name);
                }
                _ => {
                    boot_snapshot = self.ctx.boot_builds.claim(&name, shape.key());
                    if let Some(claim) = &boot_snapshot {
                        *role = BootSnapshotRole::Making(claim.lost_flag());
                    }
                }
            }
        }

        let info = SandboxInfo {
            id: request.id.clone(),
            template: request.template.clone(),
            state: SandboxState::Starting,
            vcpus: request.vcpus,
            memory_mb: request.memory_mb,
            disk_mb,
            metadata: request.metadata.clone(),
            internet: request.internet,
            created_at_ms: now_ms(),
            error: None,
            boot_ms: 0,
            vmm_pid: None,
            // Before the VMM opens the disk: a flattening finishing later only shortens it.
            depends_on: self.images.lineage(&disk_template),
            disk_template,
            timeout_sec: request.timeout_sec,
            last_activity_ms: now_ms(),
            auto_paused: false,
            start,
        };
        let activity = Arc::new(Activity::new(request.timeout_sec));
        let metrics = Arc::new(Mutex::new(MetricsStore::default()));
        let (info_tx, info_rx) = watch::channel(info);
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let envd: SharedEnvd = Arc::new(RwLock::new(None));
        {
            let mut sandboxes = self.sandboxes.lock().unwrap();
            if sandboxes.contains_key(&request.id) {
                return Err(ApiError::AlreadyExists(format!(
                    "sandbox {} already exists",
                    request.id
                )));
            }
            let allocated = allocated_memory_mb(&sandboxes);
            let capacity = self.host_memory_mb.saturating_sub(HOST_RESERVED_MB);
            if allocated + u64::from(request.memory_mb) > capacity {
                return Err(ApiError::ResourceExhausted(format!(
                    "not enough memory on this host: {allocated} of {capacity} MiB promised, {} MiB asked",
                    request.memory_mb
                )));
            }
            sandboxes.insert(
                request.id.clone(),
                SandboxHandle {
                    info: info_rx,
                    commands: commands_tx,
                    envd: envd.clone(),
                    activity: activity.clone(),
                    metrics: metrics.clone(),
                },
            );
        }

        let id = request.id.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        let actor = SandboxActor::new(
            self.ctx.clone(),
            info_tx,
            Shared {
                envd,
                activity,
                metrics,
            },
        );
        let plan = BootPlan {
            request,
            template,
            disk_mb,
            boot_snapshot,
            pins,
        };
        let span = tracing::info_span!("sandbox", sandbox_id = %id);
        tokio::spawn(tracing::Instrument::instrument(
            actor.run(plan, commands_rx, ready_tx),
            span,
        ));
        let result = ready_rx
            .await
            .unwrap_or_else(|_| Err(ApiError::Internal("sandbox task ended during boot".into())));
        if result.is_err() {
            self.sandboxes.lock().unwrap().remove(&id);
        }
        result
    }

    /// Freezes a sandbox into a new snapshot template.
    pub async fn snapshot(&self, id: &str, template: &str) -> Result<TemplateManifest, ApiError> {
        if is_boot_snapshot(template) {
            return Err(ApiError::InvalidArgument(format!(
                "template names starting with {:?} are reserved for the agent's boot snapshots",
                super::boot_snapshot::PREFIX
            )));
        }
        self.lifecycle(id, |reply| Command::Snapshot {
            template: template.to_owned(),
            reply,
        })
        .await
    }

    /// Copies a running sandbox into `count` new ones through a hidden snapshot template, which
    /// is deleted when its last user is destroyed.
    pub async fn fork(
        &self,
        id: &str,
        count: u32,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<SandboxInfo>, ApiError> {
        if !(1..=MAX_FORKS).contains(&count) {
            return Err(ApiError::InvalidArgument(format!(
                "count {count} must be between 1 and {MAX_FORKS}"
            )));
        }
        let source = self.get(id)?;
        let template = format!(
            "{FORK_TEMPLATE_PREFIX}{}-{:08x}",
            source.id.as_str().trim_start_matches("sb-"),
            rand::random::<u32>()
        );
        self.snapshot(id, &template).await?;
        let creates = (0..count).map(|_| {
            self.create(CreateSandbox {
                id: None,
                template: template.clone(),
                vcpus: 0,
                memory_mb: 0,
                disk_mb: 0,
                env: Default::default(),
                metadata: metadata.clone(),
                internet: source.internet,
                timeout_sec: source.timeout_sec,
                cold_boot: false,
            })
        });
        let results = futures::future::join_all(creates).await;
        if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
            let error = ApiError::Unavailable(format!("fork failed: {error}"));
            for info in results.iter().flatten() {
                let _ = self.destroy(info.id.as_str()).await;
            }
            return Err(error);
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Deletes a snapshot template nobody uses.
    pub fn delete_template(&self, name: &str) -> Result<(), ApiError> {
        let manifest = self
            .images
            .read_manifest(name)
            .map_err(|e| ApiError::NotFound(e.to_string()))?
            .ok_or_else(|| ApiError::NotFound(format!("template {name:?} not found")))?;
        if manifest.snapshot.is_none() {
            return Err(ApiError::FailedPrecondition(format!(
                "template {name:?} is a base image; rebuild or remove it with the image builder"
            )));
        }
        // Holding the registry lock keeps a create from starting on it meanwhile.
        let sandboxes = self.sandboxes.lock().unwrap();
        let users: Vec<String> = sandboxes
            .values()
            .map(|handle| handle.info.borrow().clone())
            .filter(|info| info.depends_on.contains(name) && info.state != SandboxState::Stopped)
            .map(|info| info.id.to_string())
            .collect();
        let children: Vec<String> = self
            .images
            .list()
            .into_iter()
            .filter(|t| t.snapshot.as_ref().is_some_and(|s| s.parent == name))
            .map(|t| t.name)
            .collect();
        if !users.is_empty() || !children.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "template {name:?} is in use (sandboxes: {users:?}, templates: {children:?})"
            )));
        }
        self.images
            .remove_template(name)
            .map_err(|e| ApiError::Internal(format!("delete template {name:?}: {e}")))?;
        drop(sandboxes);
        Ok(())
    }

    fn handle(&self, id: &str) -> Result<SandboxHandle, ApiError> {
        let not_found = || ApiError::NotFound(format!("sandbox {id} not found"));
        let id = SandboxId::parse(id).map_err(|_| not_found())?;
        self.sandboxes
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(not_found)
    }

    pub fn get(&self, id: &str) -> Result<SandboxInfo, ApiError> {
        Ok(self.handle(id)?.snapshot())
    }

    /// Resource use over the last `range` (any state: a paused sandbox keeps its history).
    pub fn metrics(&self, id: &str, range: std::time::Duration) -> Result<Vec<Sample>, ApiError> {
        Ok(self.handle(id)?.metrics.lock().unwrap().range(range))
    }

    /// Counts as activity: postpones an idle sandbox's automatic pause.
    pub fn ping(&self, id: &str) -> Result<SandboxInfo, ApiError> {
        let handle = self.handle(id)?;
        handle.activity.touch();
        Ok(handle.snapshot())
    }

    /// Changes the idle timeout (0 = never).
    pub fn set_timeout(&self, id: &str, timeout_sec: u32) -> Result<SandboxInfo, ApiError> {
        let handle = self.handle(id)?;
        handle.activity.set_timeout(timeout_sec);
        Ok(handle.snapshot())
    }

    pub fn list(&self) -> Vec<SandboxInfo> {
        let mut list: Vec<SandboxInfo> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .map(SandboxHandle::snapshot)
            .collect();
        list.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then(a.id.cmp(&b.id)));
        list
    }

    /// envd of a running sandbox.
    pub fn envd(&self, id: &str) -> Result<EnvdClient, ApiError> {
        let handle = self.handle(id)?;
        handle.activity.touch();
        let state = handle.info.borrow().state;
        let envd = handle.envd.read().unwrap().clone();
        match (state, envd) {
            (SandboxState::Running, Some(envd)) => Ok(envd),
            _ => Err(ApiError::FailedPrecondition(format!(
                "sandbox {id} is {}, not running",
                state.as_str()
            ))),
        }
    }

    /// Saves a running sandbox to disk and frees its VMM, CPU and network slot.
    pub async fn pause(&self, id: &str) -> Result<SandboxInfo, ApiError> {
        self.lifecycle(id, |reply| Command::Pause { reply }).await
    }

    /// Brings a paused sandbox back, in a new VMM and network slot.
    pub async fn resume(&self, id: &str) -> Result<SandboxInfo, ApiError> {
        self.lifecycle(id, |reply| Command::Resume { reply }).await
    }

    /// Sends a command to the sandbox's owner task and waits for its answer; a full queue is a
    /// "busy" error rather than a wait.
    async fn lifecycle<T>(
        &self,
        id: &str,
        command: impl FnOnce(oneshot::Sender<Result<T, ApiError>>) -> Command,
    ) -> Result<T, ApiError> {
        let handle = self.handle(id)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let ended = || {
            ApiError::FailedPrecondition(format!(
                "sandbox {id} is {}",
                handle.info.borrow().state.as_str()
            ))
        };
        match handle.commands.try_send(command(reply_tx)) {
            Ok(()) => reply_rx.await.unwrap_or_else(|_| Err(ended())),
            Err(mpsc::error::TrySendError::Full(_)) => Err(ApiError::Unavailable(format!(
                "sandbox {id} is busy; try again"
            ))),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ended()),
        }
    }

    /// Stops the VM and releases everything it held. Returns once it is gone.
    pub async fn destroy(&self, id: &str) -> Result<(), ApiError> {
        let handle = self.handle(id)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        match handle
            .commands
            .try_send(Command::Destroy { reply: reply_tx })
        {
            Ok(()) => {
                // The owner replies after teardown; a closed channel means it already ended.
                let _ = reply_rx.await;
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(ApiError::Unavailable(format!(
                    "sandbox {id} is busy; try again"
                )))
            }
            // The owner task has ended (VMM died or boot failed): nothing left to stop.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
        let parsed = SandboxId::parse(id).expect("handle() validated the id");
        self.sandboxes.lock().unwrap().remove(&parsed);
        // Hidden fork templates go with their last user.
        for template in handle.info.borrow().depends_on.iter() {
            if template.starts_with(FORK_TEMPLATE_PREFIX) && self.delete_template(template).is_ok()
            {
                tracing::info!(template, "deleted fork template after its last user");
            }
        }
        Ok(())
    }

    /// Destroys every sandbox (agent shutdown) and removes the host firewall table.
    pub async fn shutdown(&self) {
        let sandboxes = self.list();
        let stops = sandboxes.iter().map(|info| async move {
            let id = info.id.as_str();
            let keep = self.ctx.config.on_shutdown == ShutdownPolicy::PauseSandboxes;
            match info.state {
                SandboxState::Paused if keep => Ok(()),
                SandboxState::Running if keep => match self.pause(id).await {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        tracing::warn!(sandbox_id = id, error = %error_chain(&e), "pause at shutdown failed; destroying");
                        self.destroy(id).await
                    }
                },
                _ => self.destroy(id).await,
            }
        });
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(error = %error_chain(&e), "stop sandbox at shutdown");
            }
        }
        self.ctx.network.close().await;
        self.ctx.network.manager().remove_host_table().await;
    }

    pub fn host_summary(&self) -> HostSummary {
        let sandboxes = self.sandboxes.lock().unwrap();
        HostSummary {
            accelerator: self.ctx.accelerator,
            vmm: self.ctx.vmm.kind(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_mb: self.host_memory_mb,
            allocated_memory_mb: allocated_memory_mb(&sandboxes),
            running_sandboxes: sandboxes
                .values()
                .filter(|h| h.info.borrow().state == SandboxState::Running)
                .count() as u32,
        }
    }
}

/// A snapshot template decides its sandboxes' sizes: zero takes them, anything else must match.
fn fit_to_snapshot(
    request: &mut CreateSandbox,
    snapshot: &SnapshotManifest,
) -> Result<(), ApiError> {
    for (field, asked, frozen) in [
        ("vcpus", &mut request.vcpus, snapshot.vcpus),
        ("memory_mb", &mut request.memory_mb, snapshot.memory_mb),
        ("disk_mb", &mut request.disk_mb, snapshot.disk_mb),
    ] {
        if *asked == 0 {
            *asked = frozen;
        } else if *asked != frozen {
            return Err(ApiError::InvalidArgument(format!(
                "{field} {asked} differs from template {:?}, which was snapshotted with {frozen}; \
                 leave it at 0",
                request.template
            )));
        }
    }
    Ok(())
}

/// How a start took part in its shape's boot snapshot.
#[derive(Debug)]
enum BootSnapshotRole {
    None,
    /// The sandbox was restored from this boot snapshot.
    StartedFrom(String),
    /// The sandbox booted cold to make the snapshot; the flag is set if that lost it.
    Making(Arc<AtomicBool>),
}

fn allocated_memory_mb(sandboxes: &HashMap<SandboxId, SandboxHandle>) -> u64 {
    sandboxes
        .values()
        .map(|handle| handle.info.borrow().clone())
        .filter(|info| {
            matches!(
                info.state,
                SandboxState::Starting
                    | SandboxState::Running
                    | SandboxState::Pausing
                    | SandboxState::Resuming
                    | SandboxState::Stopping
            )
        })
        .map(|info| u64::from(info.memory_mb))
        .sum()
}

/// MemTotal from /proc/meminfo, in MiB.
fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}
