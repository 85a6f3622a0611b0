//! Start-up reclaim: after a crash (even `kill -9`) the agent removes what its previous run left
//! on the host — VMM processes, network slots, sandbox directories — before serving again.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::AgentConfig;
use crate::network::{NetworkError, NetworkManager};
use crate::sandbox::record::PausedRecord;
use crate::sandbox::vmm_name_prefix;

/// What reclaim found and removed.
#[derive(Debug, Default, Clone)]
pub struct ReclaimReport {
    pub processes: Vec<u32>,
    pub netns: Vec<String>,
    pub links: Vec<String>,
    pub sandbox_dirs: Vec<String>,
    /// Pins on template images held for sandboxes that no longer exist.
    pub pins: Vec<String>,
}

impl ReclaimReport {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.netns.is_empty()
            && self.links.is_empty()
            && self.sandbox_dirs.is_empty()
            && self.pins.is_empty()
    }
}

pub async fn reclaim(
    config: &AgentConfig,
    network: &NetworkManager,
) -> Result<ReclaimReport, NetworkError> {
    let mut report = ReclaimReport {
        processes: kill_stray_vmms(&vmm_name_prefix(&config.instance)).await,
        ..Default::default()
    };
    let net = network.reclaim_and_init().await?;
    report.netns = net.netns;
    report.links = net.links;
    report.sandbox_dirs = remove_sandbox_dirs(&config.state_dir);
    report.pins = crate::pins::remove_stale(&config.images_dir, &config.instance, |id| {
        config.state_dir.join(id).is_dir()
    });
    if !report.is_empty() {
        tracing::warn!(?report, "reclaimed leftovers of a previous run");
    }
    Ok(report)
}

/// PIDs of our VMM processes whose names start with `prefix` (QEMU and Firecracker markers).
pub fn find_vmm_processes(prefix: &str) -> Vec<u32> {
    let qemu_marker = format!("guest={prefix}");
    let firecracker_id = crate::vmm::firecracker::instance_id(prefix);
    let is_ours = |cmdline: &[u8]| {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        // QEMU: `-name guest=<name>`; Firecracker: `--id <name with dots as dashes>`.
        args.iter()
            .any(|arg| arg.starts_with(qemu_marker.as_bytes()))
            || args
                .windows(2)
                .any(|pair| pair[0] == b"--id" && pair[1].starts_with(firecracker_id.as_bytes()))
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| is_ours(&cmdline))
        })
        .collect()
}

async fn kill_stray_vmms(prefix: &str) -> Vec<u32> {
    let pids = find_vmm_processes(prefix);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    // They are not our children (their parent died), so wait for init to reap them.
    for _ in 0..200 {
        if pids
            .iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pids
}

fn remove_sandbox_dirs(state_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("sb-"))
        // Paused sandboxes are not leftovers: the manager adopts them.
        .filter(|entry| PausedRecord::read(&entry.path()).is_none())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => Some(name),
                Err(e) => {
                    tracing::warn!(dir = name, error = %e, "remove leftover sandbox directory");
                    None
                }
            }
        })
        .collect()
}
