//! Network slots: one network namespace per sandbox with a TAP for the guest and a veth pair
//! to the host. Every guest sees the same address and MAC, so a snapshot restores into any slot;
//! the host tells slots apart by their veth /30.
//!
//! ```text
//!  host ns                       slot ns "<inst>-<n>"                 guest
//!  <inst>-<n> 10.x.y.(4n+1) ──── veth0 10.x.y.(4n+2)   tap0 172.16.0.1 ──── eth0 172.16.0.2
//!                               DNAT veth0 addr -> guest; masquerade guest -> veth0
//! ```

pub mod links;
pub mod netlink;
pub mod netns;
pub mod nft;
mod pool;
pub mod scrub;
pub mod tap;

pub use pool::{PoolSettings, SlotPool};

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::command::{CommandError, Namespace};
use crate::config::SlotNetwork;

/// The guest's address, the same in every sandbox.
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
/// The TAP's address inside each slot namespace: the guest's gateway.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
/// The guest NIC's MAC, the same in every sandbox.
pub const GUEST_MAC: &str = "02:00:ac:10:00:02";
/// The TAP's MAC, also the same in every slot: a resumed or cloned guest's ARP entry for its
/// gateway stays valid in whichever slot it wakes up.
pub const GATEWAY_MAC: &str = "02:00:ac:10:00:01";
pub const TAP_NAME: &str = "tap0";

/// Whether a sandbox may open connections to the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternetAccess {
    Allowed,
    Blocked,
}

/// The two ends of a slot's veth /30.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotAddresses {
    pub host_ip: Ipv4Addr,
    /// Inside the namespace; traffic to it is forwarded to the guest.
    pub ns_ip: Ipv4Addr,
}

impl SlotAddresses {
    pub fn for_index(network: SlotNetwork, index: u32) -> Self {
        let base = u32::from(network.base) + index * 4;
        Self {
            host_ip: Ipv4Addr::from(base + 1),
            ns_ip: Ipv4Addr::from(base + 2),
        }
    }
}

/// A configured slot, owned by one sandbox until released.
#[derive(Debug, Clone)]
pub struct NetworkSlot {
    pub index: u32,
    pub netns: String,
    pub host_veth: String,
    pub addrs: SlotAddresses,
    pub internet: InternetAccess,
}

impl NetworkSlot {
    pub fn netns_path(&self) -> PathBuf {
        netns::netns_path(&self.netns)
    }
}

/// Network failures.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("all {capacity} network slots are in use")]
    Exhausted { capacity: u32 },
    #[error("set up network slot {netns}")]
    Setup {
        netns: String,
        #[source]
        source: SetupError,
    },
    #[error("set up host firewall table")]
    HostTable(#[source] CommandError),
    #[error("enable IPv4 forwarding")]
    Forwarding(#[source] std::io::Error),
}

/// What failed while a slot was being made or changed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("create the network namespace")]
    Netns(#[source] std::io::Error),
    #[error(transparent)]
    Links(#[from] links::LinkError),
    #[error("enable IPv4 forwarding in the namespace")]
    Forwarding(#[source] std::io::Error),
    #[error(transparent)]
    Firewall(#[from] CommandError),
}

/// Hands out slots and creates/destroys their host objects.
#[derive(Debug)]
pub struct NetworkManager {
    instance: String,
    network: SlotNetwork,
    in_use: Mutex<BTreeSet<u32>>,
}

impl NetworkManager {
    pub fn new(instance: &str, network: SlotNetwork) -> Self {
        Self {
            instance: instance.to_owned(),
            network,
            in_use: Mutex::new(BTreeSet::new()),
        }
    }

    fn name(&self, index: u32) -> String {
        format!("{}-{index}", self.instance)
    }

    fn owns(&self, name: &str) -> bool {
        name.strip_prefix(&self.instance)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Removes every slot this instance left behind (after a crash) and installs a fresh host
    /// table. Idempotent.
    pub async fn reclaim_and_init(&self) -> Result<Reclaimed, NetworkError> {
        let mut reclaimed = Reclaimed::default();
        for netns in netns::list_netns().unwrap_or_default() {
            if self.owns(&netns) {
                match netns::delete_netns(&netns) {
                    Ok(()) => reclaimed.netns.push(netns),
                    Err(e) => tracing::warn!(netns, error = %e, "reclaim leftover netns"),
                }
            }
        }
        for link in netns::list_links().unwrap_or_default() {
            if self.owns(&link) {
                match netlink::delete_link(&link) {
                    Ok(()) => reclaimed.links.push(link),
                    Err(e) => tracing::warn!(link, error = %e, "reclaim leftover veth"),
                }
            }
        }
        // Connections a crashed run's sandboxes left on the host: every slot's mark lies in
        // this agent's slot network.
        if let Err(e) = scrub::flush_host_conntrack_marked(
            u32::from(self.network.base),
            u32::MAX << (32 - u32::from(self.network.prefix_len)),
        ) {
            tracing::warn!(error = %e, "flush leftover host connections");
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(NetworkError::Forwarding)?;
        nft::apply(
            &nft::host_ruleset(&self.instance, self.network),
            Namespace::Host,
        )
        .await
        .map_err(NetworkError::HostTable)?;
        Ok(reclaimed)
    }

    /// Removes the host table (on clean shutdown).
    pub async fn remove_host_table(&self) {
        if let Err(e) = nft::delete_host_table(&self.instance).await {
            tracing::warn!(error = %e, "remove host firewall table");
        }
    }

    fn allocate_index(&self) -> Result<u32, NetworkError> {
        let mut in_use = self.in_use.lock().unwrap();
        let capacity = self.network.capacity();
        let index = (0..capacity)
            .find(|i| !in_use.contains(i))
            .ok_or(NetworkError::Exhausted { capacity })?;
        in_use.insert(index);
        Ok(index)
    }

    /// Creates a slot: namespace, veth pair, TAP, NAT rules and firewall membership.
    pub async fn acquire(&self, internet: InternetAccess) -> Result<NetworkSlot, NetworkError> {
        let index = self.allocate_index()?;
        let name = self.name(index);
        let slot = NetworkSlot {
            index,
            netns: name.clone(),
            host_veth: name.clone(),
            addrs: SlotAddresses::for_index(self.network, index),
            internet,
        };
        if let Err(source) = self.create(&slot).await {
            self.release(&slot).await;
            return Err(NetworkError::Setup {
                netns: name,
                source,
            });
        }
        Ok(slot)
    }

    async fn create(&self, slot: &NetworkSlot) -> Result<(), SetupError> {
        // A crash may have left this very name behind; with nothing there both fail at once.
        let _ = netlink::delete_link(&slot.host_veth);
        let _ = netns::delete_netns(&slot.netns);
        netns::create_netns(&slot.netns).map_err(SetupError::Netns)?;
        let netns_path = slot.netns_path();
        links::set_up_slot(&netns_path, &slot.host_veth, &slot.addrs).await?;
        scrub::enable_forwarding(&netns_path).map_err(SetupError::Forwarding)?;
        nft::apply(
            &nft::netns_ruleset(&slot.addrs),
            Namespace::Net(&netns_path),
        )
        .await?;
        if slot.internet == InternetAccess::Allowed {
            nft::allow_internet(&self.instance, &slot.host_veth).await?;
        }
        Ok(())
    }

    /// Lets a slot reach the internet or cuts it off (an element of the host table's set).
    pub async fn set_internet(
        &self,
        slot: &mut NetworkSlot,
        internet: InternetAccess,
    ) -> Result<(), NetworkError> {
        if slot.internet == internet {
            return Ok(());
        }
        let changed = match internet {
            InternetAccess::Allowed => nft::allow_internet(&self.instance, &slot.host_veth).await,
            InternetAccess::Blocked => nft::revoke_internet(&self.instance, &slot.host_veth).await,
        };
        changed.map_err(|source| NetworkError::Setup {
            netns: slot.netns.clone(),
            source: source.into(),
        })?;
        slot.internet = internet;
        Ok(())
    }

    /// Readies a released slot for its next sandbox (see `scrub`). Fails, and the slot must
    /// then be torn down, when its TAP is still held or its state cannot be cleared.
    pub fn scrub(&self, slot: &NetworkSlot) -> std::io::Result<()> {
        if !std::path::Path::new("/sys/class/net")
            .join(&slot.host_veth)
            .exists()
        {
            return Err(std::io::Error::other(
                "the host end of the veth pair is gone",
            ));
        }
        scrub::scrub(&slot.netns_path())?;
        scrub::flush_host_conntrack_marked(nft::slot_mark(&slot.addrs), u32::MAX)
    }

    /// Tears a slot down and returns its index to the pool. Never fails: leftovers are logged
    /// and reclaimed at the next start.
    pub async fn release(&self, slot: &NetworkSlot) {
        if slot.internet == InternetAccess::Allowed {
            // The element vanishes with the interface anyway; ignore "not found".
            let _ = nft::revoke_internet(&self.instance, &slot.host_veth).await;
        }
        // Delete the veth pair explicitly: a deleted namespace takes its interfaces down
        // asynchronously, and the next user of this slot index needs the name free at once.
        if let Err(e) = netlink::delete_link(&slot.host_veth) {
            tracing::debug!(link = slot.host_veth, error = %e, "delete host veth");
        }
        if netns::netns_path(&slot.netns).exists() {
            if let Err(e) = netns::delete_netns(&slot.netns) {
                tracing::warn!(netns = slot.netns, error = %e, "delete network namespace");
            }
        }
        // The index is free for another sandbox: forget this one's connections on the host.
        if let Err(e) = scrub::flush_host_conntrack_marked(nft::slot_mark(&slot.addrs), u32::MAX) {
            tracing::warn!(netns = slot.netns, error = %e, "flush the slot's host connections");
        }
        self.in_use.lock().unwrap().remove(&slot.index);
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }
}

/// What start-up found and removed.
#[derive(Debug, Default, Clone)]
pub struct Reclaimed {
    pub netns: Vec<String>,
    pub links: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_addresses_are_consecutive_slash_30s() {
        let net: SlotNetwork = "10.200.0.0/16".parse().unwrap();
        assert_eq!(
            SlotAddresses::for_index(net, 0),
            SlotAddresses {
                host_ip: Ipv4Addr::new(10, 200, 0, 1),
                ns_ip: Ipv4Addr::new(10, 200, 0, 2)
            }
        );
        assert_eq!(
            SlotAddresses::for_index(net, 64).host_ip,
            Ipv4Addr::new(10, 200, 1, 1)
        );
    }

    #[test]
    fn only_this_instances_names_are_owned() {
        let manager = NetworkManager::new("t1", "10.250.0.0/22".parse().unwrap());
        assert!(manager.owns("t1-0"));
        assert!(manager.owns("t1-123"));
        assert!(!manager.owns("t12-3"));
        assert!(!manager.owns("t1-"));
        assert!(!manager.owns("t1-3h"));
        assert!(!manager.owns("eth0"));
    }

    #[test]
    fn indexes_are_reused_after_release_and_capacity_is_enforced() {
        let manager = NetworkManager::new("t1", "10.250.0.0/28".parse().unwrap());
        assert_eq!(manager.allocate_index().unwrap(), 0);
        assert_eq!(manager.allocate_index().unwrap(), 1);
        assert_eq!(manager.allocate_index().unwrap(), 2);
        assert_eq!(manager.allocate_index().unwrap(), 3);
        assert!(matches!(
            manager.allocate_index(),
            Err(NetworkError::Exhausted { capacity: 4 })
        ));
        manager.in_use.lock().unwrap().remove(&1);
        assert_eq!(manager.allocate_index().unwrap(), 1);
    }
}
