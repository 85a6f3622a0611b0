//! wrenn-agent: the host agent daemon. Parses flags, then hands over to `wrenn_agent::server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use wrenn_agent::accel::{AcceleratorChoice, GuestAslr};
use wrenn_agent::config::{
    AgentConfig, ShutdownPolicy, SlotNetwork, DEFAULT_TCG_BOOT_CACHE_MB, DEFAULT_TCG_CACHE_MB,
};
use wrenn_agent::server::Agent;

/// The Wrenn host agent: owns the microVMs on this machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address the control plane connects to.
    #[arg(long, env = "WRENN_AGENT_LISTEN", default_value = "127.0.0.1:7250")]
    listen: SocketAddr,
    /// Root for images and sandbox state.
    #[arg(long, env = "WRENN_DATA_DIR", default_value = "/var/lib/wrenn")]
    data_dir: PathBuf,
    /// Kernels and templates (default: <data-dir>/images).
    #[arg(long, env = "WRENN_IMAGES_DIR")]
    images_dir: Option<PathBuf>,
    /// Prefix of every host object this agent creates (netns, veth, nft table).
    #[arg(long, env = "WRENN_INSTANCE", default_value = "wrenn")]
    instance: String,
    /// Block the host side of network slots is carved from (/30 per sandbox).
    #[arg(long, env = "WRENN_SLOT_NETWORK", default_value = "10.200.0.0/16")]
    slot_network: SlotNetwork,
    /// auto, kvm or tcg.
    #[arg(long, env = "WRENN_ACCELERATOR", default_value = "auto")]
    accelerator: AcceleratorChoice,
    /// auto, qemu or firecracker. auto picks Firecracker where it can run (hardware KVM and
    /// its binary), QEMU elsewhere.
    #[arg(long, env = "WRENN_VMM", default_value = "auto")]
    vmm: wrenn_agent::config::VmmChoice,
    /// The Firecracker binary.
    #[arg(long, env = "WRENN_FIRECRACKER", default_value = "firecracker")]
    firecracker_binary: PathBuf,
    /// What to do with sandboxes when the agent stops: `pause` keeps them for the next start,
    /// `destroy` removes them.
    #[arg(long, env = "WRENN_ON_SHUTDOWN", default_value = "pause", value_parser = ["pause", "destroy"])]
    on_shutdown: String,
    /// TCG translated-code cache per VM in MiB (software emulation only): smaller saves memory,
    /// larger saves retranslation in CPU-heavy guests.
    #[arg(long, env = "WRENN_TCG_CACHE_MB", default_value_t = DEFAULT_TCG_CACHE_MB)]
    tcg_cache_mb: u32,
    /// TCG translated-code cache in MiB of a VM that boots its kernel (a cold boot), until its
    /// first pause: a boot translates more code than a restored VM runs.
    #[arg(long, env = "WRENN_TCG_BOOT_CACHE_MB", default_value_t = DEFAULT_TCG_BOOT_CACHE_MB)]
    tcg_boot_cache_mb: u32,
    /// Address-space randomization inside guests: auto (off under TCG, where it makes every
    /// process start translate its libraries afresh; on under KVM), on or off.
    #[arg(long, env = "WRENN_GUEST_ASLR", default_value = "auto")]
    guest_aslr: GuestAslr,
    /// Network slots kept set up ahead of demand, so boots and resumes skip that step.
    #[arg(long, env = "WRENN_SPARE_SLOTS", default_value_t = 2)]
    spare_slots: usize,
    /// Start sandboxes of a base image from a snapshot of that image freshly booted (made by
    /// the first sandbox of each size) instead of booting a kernel each time.
    #[arg(long, env = "WRENN_BOOT_SNAPSHOTS", default_value_t = true, action = clap::ArgAction::Set)]
    boot_snapshots: bool,
    /// Shapes whose boot snapshot is made at start, so even their first sandbox starts fast:
    /// comma-separated <template>:<vcpus>x<memory_mb> (default: the control plane's default
    /// size); empty for none.
    #[arg(
        long,
        env = "WRENN_BOOT_SNAPSHOT_SHAPES",
        default_value = "minimal:1x256",
        value_delimiter = ','
    )]
    boot_snapshot_shapes: Vec<String>,
    /// Most boot snapshots kept on this host (each holds the RAM its boot touched, tens of
    /// MiB): making one more deletes the least recently used that nothing stands on.
    #[arg(long, env = "WRENN_BOOT_SNAPSHOT_LIMIT", default_value_t = 16)]
    boot_snapshot_limit: usize,
    /// Seconds a sandbox may take to boot until envd answers.
    #[arg(long, env = "WRENN_READY_TIMEOUT_SECS", default_value_t = 60)]
    ready_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = AgentConfig::new(&args.data_dir);
    if let Some(images_dir) = args.images_dir {
        config.images_dir = images_dir;
    }
    config.instance = args.instance;
    config.slot_network = args.slot_network;
    config.accelerator = args.accelerator;
    config.vmm = args.vmm;
    config.firecracker_binary = args.firecracker_binary;
    config.ready_timeout = Duration::from_secs(args.ready_timeout_secs);
    config.tcg_cache_mb = args.tcg_cache_mb;
    config.tcg_boot_cache_mb = args.tcg_boot_cache_mb;
    config.guest_aslr = args.guest_aslr;
    config.spare_slots = args.spare_slots;
    config.boot_snapshots = args.boot_snapshots;
    config.boot_snapshot_limit = args.boot_snapshot_limit;
    config.prepared_shapes = args
        .boot_snapshot_shapes
        .iter()
        .filter(|shape| !shape.is_empty())
        .map(|shape| shape.parse())
        .collect::<Result<_, String>>()
        .map_err(anyhow::Error::msg)?;
    config.on_shutdown = match args.on_shutdown.as_str() {
        "destroy" => ShutdownPolicy::DestroySandboxes,
        _ => ShutdownPolicy::PauseSandboxes,
    };

    let agent = Agent::start(config).await.context("start host agent")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "host agent listening");
    agent
        .serve(listener, shutdown_signal())
        .await
        .context("serve host agent API")?;
    tracing::info!("host agent stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping every sandbox"),
        _ = int.recv() => tracing::info!("SIGINT: stopping every sandbox"),
    }
}
