//! nftables rules: per-slot NAT inside each sandbox namespace, and the host table that
//! isolates sandboxes from each other and from the host, with per-sandbox internet egress.

use super::{SlotAddresses, GUEST_IP};
use crate::command::{self, CommandError, Namespace};
use crate::config::SlotNetwork;

/// Destinations a sandbox never reaches even with internet on: the host's networks, link-local
/// metadata services, and other reserved ranges.
const BLOCKED_DESTINATIONS: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, \
     169.254.0.0/16, 172.16.0.0/12, 192.0.0.0/24, 192.0.2.0/24, 192.168.0.0/16, 198.18.0.0/15, \
     224.0.0.0/4, 240.0.0.0/4";

/// Inside a slot's namespace: traffic to the namespace's veth address goes to the guest
/// (the host reaches envd and exposed ports this way), and guest traffic leaving through the
/// veth is masqueraded behind that address.
pub fn netns_ruleset(addrs: &SlotAddresses) -> String {
    format!(
        "table ip wrenn {{\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tip daddr {ns} dnat to {GUEST_IP}\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"veth0\" ip saddr 172.16.0.0/24 masquerade\n\
         \t}}\n\
         }}\n",
        ns = addrs.ns_ip
    )
}

/// Name of this agent's table in the host namespace.
pub fn host_table_name(instance: &str) -> String {
    format!("wrenn_{instance}")
}

/// The connection-tracking mark of a slot's connections in the host namespace: its namespace
/// address, unique on the host because agents' slot networks never overlap.
pub fn slot_mark(addrs: &SlotAddresses) -> u32 {
    u32::from(addrs.ns_ip)
}

/// The host table: drop sandbox -> host and sandbox -> sandbox traffic, allow egress only for
/// veths in the `internet` set, masquerade egress, and mark every connection through a slot's
/// veth with [`slot_mark`] so it can be flushed when the slot changes hands. Replaces any
/// previous copy atomically.
pub fn host_ruleset(instance: &str, network: SlotNetwork) -> String {
    let table = host_table_name(instance);
    let veths = format!("\"{instance}-*\"");
    let marks = (0..network.capacity())
        .map(|index| {
            let mark = slot_mark(&SlotAddresses::for_index(network, index));
            format!("\"{instance}-{index}\" : {mark:#x}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \tset internet {{ type ifname; }}\n\
         \tmap slot_marks {{ type ifname : mark; elements = {{ {marks} }}; }}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t\toifname {veths} ct state new ct mark set oifname map @slot_marks\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname {veths} ct state established,related accept\n\
         \t\tiifname {veths} drop\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname {veths} ct state new ct mark set iifname map @slot_marks\n\
         \t\tiifname {veths} oifname {veths} drop\n\
         \t\toifname {veths} ct state established,related accept\n\
         \t\toifname {veths} drop\n\
         \t\tiifname {veths} ip daddr {{ {BLOCKED_DESTINATIONS} }} drop\n\
         \t\tiifname @internet accept\n\
         \t\tiifname {veths} drop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tiifname {veths} oifname != {veths} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

pub async fn apply(ruleset: &str, namespace: Namespace<'_>) -> Result<(), CommandError> {
    command::run("nft", ["-f", "-"], Some(ruleset), namespace)
        .await
        .map(drop)
}

pub async fn delete_host_table(instance: &str) -> Result<(), CommandError> {
    let table = host_table_name(instance);
    command::run(
        "nft",
        ["delete", "table", "inet", &table],
        None,
        Namespace::Host,
    )
    .await
    .map(drop)
}

pub async fn allow_internet(instance: &str, host_veth: &str) -> Result<(), CommandError> {
    let rule = format!(
        "add element inet {} internet {{ \"{host_veth}\" }}\n",
        host_table_name(instance)
    );
    apply(&rule, Namespace::Host).await
}

pub async fn revoke_internet(instance: &str, host_veth: &str) -> Result<(), CommandError> {
    let rule = format!(
        "delete element inet {} internet {{ \"{host_veth}\" }}\n",
        host_table_name(instance)
    );
    apply(&rule, Namespace::Host).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_rules_forward_the_slot_address_to_the_guest() {
        let addrs = SlotAddresses::for_index("10.250.0.0/22".parse().unwrap(), 0);
        let rules = netns_ruleset(&addrs);
        assert!(rules.contains("ip daddr 10.250.0.2 dnat to 172.16.0.2"));
        assert!(rules.contains("masquerade"));
    }

    #[test]
    fn host_rules_are_scoped_to_this_instance() {
        let rules = host_ruleset("t7", "10.250.0.0/28".parse().unwrap());
        assert!(rules.contains("table inet wrenn_t7 {"));
        // One mark per slot: its namespace address.
        assert!(rules.contains(
            "elements = { \"t7-0\" : 0xafa0002, \"t7-1\" : 0xafa0006, \"t7-2\" : 0xafa000a, \"t7-3\" : 0xafa000e }"
        ));
        assert!(rules.contains("oifname \"t7-*\" ct state new ct mark set oifname map @slot_marks"));
        assert!(rules.contains("iifname \"t7-*\" ct state new ct mark set iifname map @slot_marks"));
        assert!(rules.contains("iifname \"t7-*\" oifname \"t7-*\" drop"));
        assert!(rules.contains("iifname @internet accept"));
        // Recreated from scratch on every start: declare, delete, define.
        assert!(rules.starts_with("table inet wrenn_t7\ndelete table inet wrenn_t7\n"));
    }
}
