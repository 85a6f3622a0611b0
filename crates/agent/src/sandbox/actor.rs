//! The task that owns one sandbox's VM: its VMM process, network slot and disk. Everything that
//! changes the VM's lifecycle arrives here over a channel, so no two callers race on it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rand::RngCore;
use tokio::sync::{mpsc, oneshot, watch};
use wrenn_envd_api::v1::InitRequest;

use super::manager::HostContext;
use super::request::ValidCreate;
use super::{SandboxInfo, SandboxState};
use crate::disk;
use crate::envd_client::EnvdClient;
use crate::error::{error_chain, ApiError};
use crate::images::{ResolvedTemplate, GUEST_INIT_PATH};
use crate::network::{NetworkSlot, GATEWAY_IP, GUEST_IP, GUEST_MAC, TAP_NAME};
use crate::vmm::{VmInstance, VmNetwork, VmSpec};

/// Requests a sandbox's owner task serves.
#[derive(Debug)]
pub(crate) enum Command {
    Destroy { reply: oneshot::Sender<()> },
}

/// What the owner task needs to boot its sandbox.
pub(crate) struct BootPlan {
    pub request: ValidCreate,
    pub template: ResolvedTemplate,
    pub disk_mb: u32,
}

/// The owner task's view of its sandbox. Fields are filled as boot acquires resources, so a
/// failure at any step releases exactly what was taken.
pub(crate) struct SandboxActor {
    ctx: Arc<HostContext>,
    info: watch::Sender<SandboxInfo>,
    dir: PathBuf,
    slot: Option<NetworkSlot>,
    vm: Option<Box<dyn VmInstance>>,
}

impl SandboxActor {
    pub fn new(ctx: Arc<HostContext>, info: watch::Sender<SandboxInfo>) -> Self {
        let dir = ctx.config.state_dir.join(info.borrow().id.as_str());
        Self {
            ctx,
            info,
            dir,
            slot: None,
            vm: None,
        }
    }

    /// Boots, reports readiness through `ready`, then serves commands until destroyed or until
    /// the VMM dies.
    pub async fn run(
        mut self,
        plan: BootPlan,
        mut commands: mpsc::Receiver<Command>,
        ready: oneshot::Sender<Result<SandboxInfo, ApiError>>,
        envd_cell: Arc<OnceLock<EnvdClient>>,
    ) {
        let started = Instant::now();
        let booted = match self.boot(&plan).await {
            Ok(()) => self.wait_ready(&plan, &mut commands).await,
            Err(e) => Err(e),
        };
        match booted {
            Ok(envd) => {
                let _ = envd_cell.set(envd);
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
                let _ = ready.send(Err(ApiError::Unavailable(
                    "sandbox was destroyed while it was starting".into(),
                )));
                let _ = reply.send(());
                return;
            }
        }
        self.serve(commands).await;
    }

    async fn serve(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut vm = self.vm.take().expect("a running sandbox has a VM");
        let event = tokio::select! {
            command = commands.recv() => Ok(command),
            exit = vm.wait_exit() => Err(exit),
        };
        self.vm = Some(vm);
        match event {
            Ok(command) => {
                self.teardown(SandboxState::Stopped, None).await;
                if let Some(Command::Destroy { reply }) = command {
                    let _ = reply.send(());
                }
            }
            Err(exit) => {
                let message = format!("VMM exited unexpectedly (code {:?})", exit.code);
                tracing::error!(code = ?exit.code, log_tail = %exit.log_tail, "VMM died");
                self.teardown(SandboxState::Error, Some(message)).await;
            }
        }
    }

    async fn boot(&mut self, plan: &BootPlan) -> Result<(), BootOutcome> {
        let internal = |context: &str, e: &(dyn std::error::Error + 'static)| {
            BootOutcome::Failed(ApiError::Internal(format!("{context}: {}", error_chain(e))))
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| internal("create sandbox directory", &e))?;
        let overlay = self.dir.join(disk::OVERLAY_FILE);
        disk::create_overlay(
            &self.ctx.config.qemu_img_binary,
            &plan.template.rootfs_path,
            &overlay,
            u64::from(plan.disk_mb),
        )
        .await
        .map_err(|e| internal("create root disk", &e))?;
        let slot = self
            .ctx
            .network
            .acquire(plan.request.internet)
            .await
            .map_err(|e| match e {
                crate::network::NetworkError::Exhausted { .. } => {
                    BootOutcome::Failed(ApiError::ResourceExhausted(e.to_string()))
                }
                other => internal("set up network", &other),
            })?;
        let spec = VmSpec {
            name: vmm_name(&self.ctx.config.instance, self.info.borrow().id.as_str()),
            vcpus: plan.request.vcpus,
            memory_mb: plan.request.memory_mb,
            kernel: plan.template.kernel_path.clone(),
            kernel_args: kernel_args(),
            root_disk: overlay,
            network: VmNetwork {
                netns: slot.netns_path(),
                tap: TAP_NAME.into(),
                mac: GUEST_MAC.into(),
            },
            run_dir: self.dir.clone(),
            accelerator: self.ctx.accelerator,
        };
        self.slot = Some(slot);
        let vm = self
            .ctx
            .vmm
            .start(&spec)
            .await
            .map_err(|e| internal("start VMM", &e))?;
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
        let init = InitRequest {
            access_token: new_token(),
            unix_time_nanos: 0,
            entropy,
            env: plan.request.env.clone().into_iter().collect(),
            hostname: String::new(),
        };
        let timeout = self.ctx.config.ready_timeout;
        let vm = self.vm.as_mut().expect("boot started a VM");
        tokio::select! {
            ready = EnvdClient::connect_and_init(addr, init, timeout) => ready.map_err(|e| {
                let console = crate::vmm::tail_of_file(&self.dir.join("console.log"), 15);
                BootOutcome::Failed(ApiError::Unavailable(format!("{}; guest console:\n{console}", error_chain(&e))))
            }),
            exit = vm.wait_exit() => Err(BootOutcome::Failed(ApiError::Internal(format!(
                "VMM exited during boot (code {:?}):\n{}", exit.code, exit.log_tail
            )))),
            Some(Command::Destroy { reply }) = commands.recv() => Err(BootOutcome::Destroyed(reply)),
        }
    }

    /// Releases VM, slot and disk (in that order) and records the final state.
    async fn teardown(&mut self, state: SandboxState, error: Option<String>) {
        self.update(|info| info.state = SandboxState::Stopping);
        if let Some(mut vm) = self.vm.take() {
            if let Err(e) = vm.kill().await {
                tracing::warn!(error = %error_chain(&e), "stop VMM");
            }
        }
        if let Some(slot) = self.slot.take() {
            self.ctx.network.release(&slot).await;
        }
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

    fn update(&self, change: impl FnOnce(&mut SandboxInfo)) {
        self.info.send_modify(change);
        let _ = self.ctx.events.send(self.info.borrow().clone());
    }
}

enum BootOutcome {
    Failed(ApiError),
    Destroyed(oneshot::Sender<()>),
}

/// The marker in a VMM's command line: start-up reclaim kills processes carrying its
/// instance's prefix.
pub(crate) fn vmm_name(instance: &str, sandbox_id: &str) -> String {
    format!("{}{sandbox_id}", vmm_name_prefix(instance))
}

pub(crate) fn vmm_name_prefix(instance: &str) -> String {
    format!("wrenn.{instance}.")
}

/// The guest kernel command line: envd as PID 1, static guest networking.
fn kernel_args() -> String {
    format!(
        "console=ttyS0 quiet panic=-1 root=/dev/vda rw rootfstype=ext4 init={GUEST_INIT_PATH} \
         ip={GUEST_IP}::{GATEWAY_IP}:255.255.255.0:sandbox:eth0:off"
    )
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
