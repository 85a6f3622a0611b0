//! Runs the host agent: prepares the host, serves gRPC until told to stop, then destroys every
//! sandbox it owns. `main` and the tests both start the agent through here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use wrenn_agent_api::v1::host_agent_server::HostAgentServer;

use crate::accel::Accelerator;
use crate::config::{AgentConfig, VmmChoice};
use crate::envd_client::{HTTP2_CONNECTION_WINDOW, HTTP2_STREAM_WINDOW, MAX_MESSAGE_BYTES};
use crate::reclaim::ReclaimReport;
use crate::sandbox::manager::StartError;
use crate::sandbox::SandboxManager;
use crate::service::AgentService;
use crate::vmm::firecracker::FirecrackerVmm;
use crate::vmm::qemu::QemuVmm;
use crate::vmm::Vmm;

/// The VMM driver: QEMU or Firecracker as configured; with `auto`, Firecracker where it can
/// run (hardware KVM and its binary), QEMU otherwise. Asking for Firecracker where it cannot
/// run is an error that says why.
pub fn choose_vmm(
    config: &AgentConfig,
    accelerator: Accelerator,
) -> Result<Arc<dyn Vmm>, StartError> {
    let qemu = || -> Arc<dyn Vmm> {
        Arc::new(
            QemuVmm::new(config.qemu_binary.clone(), config.tcg_cache_mb)
                .with_boot_cache_mb(config.tcg_boot_cache_mb),
        )
    };
    let firecracker =
        || -> Arc<dyn Vmm> { Arc::new(FirecrackerVmm::new(config.firecracker_binary.clone())) };
    let unavailable =
        || FirecrackerVmm::unavailable_reason(&config.firecracker_binary, accelerator);
    match config.vmm {
        VmmChoice::Qemu => Ok(qemu()),
        VmmChoice::Firecracker => match unavailable() {
            None => Ok(firecracker()),
            Some(reason) => Err(StartError::Vmm(reason)),
        },
        VmmChoice::Auto => match unavailable() {
            None => Ok(firecracker()),
            Some(reason) => {
                tracing::info!(%reason, "using QEMU: Firecracker cannot run here");
                Ok(qemu())
            }
        },
    }
}

/// How long open client streams may stay after shutdown began.
const CLIENT_GRACE: Duration = Duration::from_secs(3);

/// A prepared host, ready to serve.
pub struct Agent {
    pub manager: Arc<SandboxManager>,
    pub reclaimed: ReclaimReport,
}

impl Agent {
    /// Prepares the host with the VMM the configuration picks (see [`choose_vmm`]).
    pub async fn start(config: AgentConfig) -> Result<Self, StartError> {
        let vmm = choose_vmm(&config, config.accelerator.resolve())?;
        let shapes = match config.boot_snapshots {
            true => config.prepared_shapes.clone(),
            false => Vec::new(),
        };
        let (manager, reclaimed) = SandboxManager::start(config, vmm).await?;
        let manager = Arc::new(manager);
        if !shapes.is_empty() {
            tokio::spawn(crate::sandbox::boot_snapshot::prepare(
                manager.clone(),
                shapes,
            ));
        }
        Ok(Self { manager, reclaimed })
    }

    /// Serves the HostAgent API on `listener` until `shutdown` resolves, then destroys every
    /// sandbox, removes the host's firewall table and gives clients a moment to hang up.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let service = HostAgentServer::new(AgentService::new(self.manager.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (stop_server, server_stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = server_stopped.await;
            });
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => {
                self.manager.shutdown().await;
                return result;
            }
            () = shutdown => {}
        }
        // Sandboxes first: their guest streams end with them, so clients see errors rather
        // than hang, and graceful shutdown has little left to wait for.
        self.manager.shutdown().await;
        let _ = stop_server.send(());
        match tokio::time::timeout(CLIENT_GRACE, server).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(grace = ?CLIENT_GRACE, "clients still connected; closing anyway");
                Ok(())
            }
        }
    }
}

/// An agent served on a loopback port of this process: `wrenn run --agent local`, the tests
/// and the benchmarks use it. Stopping it shuts the agent down as SIGTERM would.
#[derive(Debug)]
pub struct LocalAgent {
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl LocalAgent {
    /// Serves `agent` on 127.0.0.1 and a free port.
    pub async fn serve(agent: Agent) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(agent.serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts the agent down and waits (at most `limit`) for it to finish.
    pub async fn stop(mut self, limit: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(limit, server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => {
                    tracing::warn!(error = %error, "local agent stopped with an error")
                }
                Ok(Err(error)) => tracing::warn!(error = %error, "local agent task"),
                Err(_) => tracing::warn!(?limit, "local agent did not stop in time"),
            }
        }
    }
}
