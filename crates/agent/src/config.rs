//! Host agent configuration: where things live on disk, how sandboxes are named on the host,
//! and the limits and defaults for new sandboxes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::accel::{AcceleratorChoice, GuestAslr};

/// Everything the host agent needs to know about its host.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Kernels and templates (see `images`).
    pub images_dir: PathBuf,
    /// Per-sandbox working directories (overlay disk, sockets, logs, memory file).
    pub state_dir: PathBuf,
    /// Short name that prefixes every host object this agent creates (netns, interfaces, nft
    /// tables, VMM process names), so several agents can share one machine and start-up
    /// reclaims only its own leftovers. 1-6 characters from a-z and 0-9.
    pub instance: String,
    /// Host-side addresses of network slots: each slot takes a /30 from this block.
    pub slot_network: SlotNetwork,
    pub accelerator: AcceleratorChoice,
    pub vmm: VmmChoice,
    pub qemu_binary: PathBuf,
    pub firecracker_binary: PathBuf,
    pub qemu_img_binary: PathBuf,
    /// TCG translated-code cache per VM, in MiB (software emulation only).
    pub tcg_cache_mb: u32,
    /// The same for a VM that boots its kernel (a cold boot), until its first pause.
    pub tcg_boot_cache_mb: u32,
    /// Address-space randomization inside guests booted from now on.
    pub guest_aslr: GuestAslr,
    /// Network slots kept set up ahead of demand (0 = none).
    pub spare_slots: usize,
    /// Start sandboxes of a base image from a snapshot of it freshly booted, made by the
    /// first sandbox of each shape (see `sandbox::boot_snapshot`).
    pub boot_snapshots: bool,
    /// Shapes whose boot snapshot is made at start, in the background.
    pub prepared_shapes: Vec<crate::sandbox::boot_snapshot::PreparedShape>,
    /// Most boot snapshots kept; making one more deletes the least recently used free ones.
    pub boot_snapshot_limit: usize,
    /// How long a booting sandbox may take until envd answers.
    pub ready_timeout: Duration,
    /// Most vCPUs one sandbox may have.
    pub max_vcpus: u32,
    pub on_shutdown: ShutdownPolicy,
}

/// Default TCG translation cache per VM. With guest ASLR off (the TCG default) 24 MiB holds
/// the working set of envd, the guest kernel and a Python start-up; 16 MiB doubles Python's
/// start-up time, and every MiB is resident in each VM (see docs/snapshots.md).
pub const DEFAULT_TCG_CACHE_MB: u32 = 24;

/// Default TCG translation cache of a VM that boots its kernel. A boot to a listening envd
/// translates ~29 MiB of code, so 24 MiB is flushed once mid-boot (a cold boot took ~90 ms
/// longer, measured). Cold boots are rare (the first of a shape, or asked for); the cache
/// goes back to `DEFAULT_TCG_CACHE_MB` at the VM's first pause.
pub const DEFAULT_TCG_BOOT_CACHE_MB: u32 = 48;

/// Which VMM runs the guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmmChoice {
    /// Firecracker where it can run (hardware KVM and the binary present), QEMU elsewhere.
    #[default]
    Auto,
    Qemu,
    Firecracker,
}

impl std::str::FromStr for VmmChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "qemu" => Ok(Self::Qemu),
            "firecracker" => Ok(Self::Firecracker),
            other => Err(format!(
                "unknown VMM {other:?}: use auto, qemu or firecracker"
            )),
        }
    }
}

/// What the agent does with its sandboxes when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPolicy {
    /// Pause running sandboxes (and keep paused ones) so the next start adopts them: an agent
    /// restart or upgrade costs users nothing.
    PauseSandboxes,
    /// Destroy everything (`wrenn run`, tests).
    DestroySandboxes,
}

/// An IPv4 block carved into /30 slot networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotNetwork {
    pub base: Ipv4Addr,
    pub prefix_len: u8,
}

impl SlotNetwork {
    /// How many /30 slots fit.
    pub fn capacity(&self) -> u32 {
        1u32 << (30 - u32::from(self.prefix_len.min(30)))
    }
}

impl std::str::FromStr for SlotNetwork {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            format!("slot network {s:?} must be in CIDR form, e.g. 10.200.0.0/16")
        })?;
        let base: Ipv4Addr = addr
            .parse()
            .map_err(|e| format!("slot network address {addr:?}: {e}"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|e| format!("slot network prefix {len:?}: {e}"))?;
        if !(8..=28).contains(&prefix_len) {
            return Err(format!(
                "slot network prefix /{prefix_len} must be between /8 and /28"
            ));
        }
        let mask = u32::MAX << (32 - prefix_len);
        if u32::from(base) & !mask != 0 {
            return Err(format!("slot network {s} has host bits set"));
        }
        Ok(Self { base, prefix_len })
    }
}

/// An instance name that is empty, too long or not lowercase alphanumeric.
#[derive(Debug, thiserror::Error)]
#[error("invalid agent instance name {0:?}: use 1-6 characters from a-z and 0-9, starting with a letter")]
pub struct InvalidInstance(pub String);

impl AgentConfig {
    /// Defaults for a production host, rooted at `/var/lib/wrenn`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            images_dir: data_dir.join("images"),
            state_dir: data_dir.join("sandboxes"),
            instance: "wrenn".into(),
            slot_network: SlotNetwork {
                base: Ipv4Addr::new(10, 200, 0, 0),
                prefix_len: 16,
            },
            accelerator: AcceleratorChoice::Auto,
            vmm: VmmChoice::Auto,
            qemu_binary: "qemu-system-x86_64".into(),
            firecracker_binary: "firecracker".into(),
            qemu_img_binary: "qemu-img".into(),
            tcg_cache_mb: DEFAULT_TCG_CACHE_MB,
            tcg_boot_cache_mb: DEFAULT_TCG_BOOT_CACHE_MB,
            guest_aslr: GuestAslr::Auto,
            spare_slots: 2,
            boot_snapshots: true,
            prepared_shapes: Vec::new(),
            boot_snapshot_limit: 16,
            ready_timeout: Duration::from_secs(60),
            max_vcpus: 8,
            on_shutdown: ShutdownPolicy::PauseSandboxes,
        }
    }

    pub fn validate(&self) -> Result<(), InvalidInstance> {
        let name = &self.instance;
        let valid = (1..=6).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid {
            Ok(())
        } else {
            Err(InvalidInstance(name.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_network_parses_and_counts() {
        let net: SlotNetwork = "10.200.0.0/16".parse().unwrap();
        assert_eq!(net.capacity(), 16384);
        let net: SlotNetwork = "10.250.4.0/22".parse().unwrap();
        assert_eq!(net.capacity(), 256);
        assert!("10.200.0.1/16".parse::<SlotNetwork>().is_err());
        assert!("10.200.0.0".parse::<SlotNetwork>().is_err());
        assert!("10.0.0.0/4".parse::<SlotNetwork>().is_err());
    }

    #[test]
    fn vmm_choices_parse() {
        assert_eq!("auto".parse(), Ok(VmmChoice::Auto));
        assert_eq!("firecracker".parse(), Ok(VmmChoice::Firecracker));
        assert!("xen"
            .parse::<VmmChoice>()
            .unwrap_err()
            .contains("auto, qemu or firecracker"));
    }

    #[test]
    fn instance_names_are_checked() {
        let mut config = AgentConfig::new("/tmp/x");
        assert!(config.validate().is_ok());
        for bad in ["", "toolong", "9ab", "a-b", "AB"] {
            config.instance = bad.into();
            assert!(config.validate().is_err(), "{bad:?}");
        }
    }
}
