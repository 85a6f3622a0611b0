//! Slot host objects: the `ip` tool (iproute2) creates a slot's netns, veth pair and TAP in
//! batches (`ip -batch -`: two process spawns, not fifteen); removing and listing them needs no
//! process (a netlink request, a mount call, directory listings). Moving creation to netlink is
//! planned in docs/design/0004.

use std::path::Path;

use super::{SlotAddresses, GATEWAY_IP, GATEWAY_MAC, GUEST_IP, GUEST_MAC, TAP_NAME};
use crate::command::{self, CommandError, Namespace};

/// Name the sandbox-side end of the veth pair gets inside the namespace.
pub const NS_VETH: &str = "veth0";

/// Host-side commands: the namespace and the veth pair whose peer lands inside it.
pub fn host_setup_batch(netns: &str, host_veth: &str, addrs: &SlotAddresses) -> String {
    format!(
        "netns add {netns}\n\
         link add {host_veth} type veth peer name {NS_VETH} netns {netns}\n\
         addr add {host}/30 dev {host_veth}\n\
         link set {host_veth} up\n",
        host = addrs.host_ip,
    )
}

/// Commands run inside the namespace: the veth end, the guest's TAP and the default route.
pub fn netns_setup_batch(addrs: &SlotAddresses) -> String {
    format!(
        "link set lo up\n\
         addr add {ns}/30 dev {NS_VETH}\n\
         link set {NS_VETH} up\n\
         tuntap add dev {TAP_NAME} mode tap\n\
         link set {TAP_NAME} address {GATEWAY_MAC}\n\
         addr add {GATEWAY_IP}/24 dev {TAP_NAME}\n\
         link set {TAP_NAME} up\n\
         neigh replace {GUEST_IP} lladdr {GUEST_MAC} dev {TAP_NAME} nud permanent\n\
         route add default via {host}\n",
        ns = addrs.ns_ip,
        host = addrs.host_ip,
    )
}

pub async fn batch(commands: &str, namespace: Namespace<'_>) -> Result<(), CommandError> {
    command::run("ip", ["-batch", "-"], Some(commands), namespace)
        .await
        .map(drop)
}

/// Deletes a named namespace: unmounts its bind mount (detached, as `ip netns delete` does)
/// and removes the file. Its veth end and TAP go with the namespace once nothing holds it.
pub fn delete_netns(netns: &str) -> std::io::Result<()> {
    let path = netns_path(netns);
    match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a file left half made); remove it all the same.
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(errno) => return Err(errno.into()),
    }
    std::fs::remove_file(&path)
}

/// Names of all named network namespaces on the host.
pub fn list_netns() -> std::io::Result<Vec<String>> {
    names_in(Path::new("/run/netns"))
}

/// Names of all links in the host namespace (as the host's sysfs shows them).
pub fn list_links() -> std::io::Result<Vec<String>> {
    names_in(Path::new("/sys/class/net"))
}

fn names_in(dir: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Deletes a host link (the host end of a slot's veth pair takes its peer with it).
pub fn delete_link(name: &str) -> std::io::Result<()> {
    super::netlink::delete_link(name)
}

/// Path of a named namespace's bind mount.
pub fn netns_path(netns: &str) -> std::path::PathBuf {
    Path::new("/run/netns").join(netns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_use_the_slot_addresses() {
        let addrs = SlotAddresses::for_index("10.250.0.0/22".parse().unwrap(), 3);
        let host = host_setup_batch("t1-3", "t1-3", &addrs);
        assert!(host.contains("addr add 10.250.0.13/30 dev t1-3"));
        assert!(host.contains("peer name veth0 netns t1-3"));
        let ns = netns_setup_batch(&addrs);
        assert!(ns.contains("addr add 10.250.0.14/30 dev veth0"));
        assert!(ns.contains("route add default via 10.250.0.13"));
        assert!(ns.contains("addr add 172.16.0.1/24 dev tap0"));
        assert!(ns.contains("link set tap0 address 02:00:ac:10:00:01"));
        // The guest's MAC is known, so the first packet to it never waits on ARP.
        assert!(
            ns.contains("neigh replace 172.16.0.2 lladdr 02:00:ac:10:00:02 dev tap0 nud permanent")
        );
    }
}
