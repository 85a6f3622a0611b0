//! The slot pool with real namespaces, veths, TAPs, nftables and conntrack (no VMs): released
//! slots are scrubbed and reused with their internet access, slots whose TAP is still held are
//! torn down, and spares beyond the target are trimmed after a quiet spell.

mod common;

use std::time::{Duration, Instant};

use common::{host_objects, internet_set, InstanceLease};
use wrenn_agent::network::{
    nft, scrub, tap, InternetAccess, NetworkManager, NetworkSlot, PoolSettings, SlotPool, TAP_NAME,
};

async fn started_manager(lease: &InstanceLease) -> NetworkManager {
    let manager = NetworkManager::new(&lease.instance(), lease.slot_network().parse().unwrap());
    manager.reclaim_and_init().await.expect("host table");
    manager
}

fn in_internet_set(instance: &str, slot: &NetworkSlot) -> bool {
    internet_set(instance).contains(&format!("\"{}\"", slot.host_veth))
}

fn conntrack_entries(slot: &NetworkSlot) -> u64 {
    scrub::in_netns(&slot.netns_path(), || {
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
    })
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// Opens the slot's TAP as a VMM would and keeps it open while the file lives.
fn hold_tap(slot: &NetworkSlot) -> std::fs::File {
    scrub::in_netns(&slot.netns_path(), || tap::attach(TAP_NAME)).expect("attach to the TAP")
}

/// Slots on the host once background work settles: (netns, links) counts.
async fn settled_slot_counts(instance: &str) -> (usize, usize) {
    let (netns, links, _) = host_objects(instance).await;
    (netns.len(), links.len())
}

/// Slots on the host, while none is being made or torn down.
async fn slot_count(instance: &str) -> usize {
    let (netns, links) = settled_slot_counts(instance).await;
    assert_eq!(netns, links, "{netns} namespaces but {links} host veths");
    netns
}

/// A TCP connection attempt from the host to the slot's guest address (no guest answers):
/// connection-tracking state in the slot's namespace and on the host.
fn knock(slot: &NetworkSlot) -> std::io::Result<std::net::TcpStream> {
    std::net::TcpStream::connect_timeout(
        &(slot.addrs.ns_ip, 5000).into(),
        Duration::from_millis(300),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn released_slots_are_scrubbed_and_reused_with_their_internet_access() {
    let lease = InstanceLease::acquire();
    let instance = lease.instance();
    let pool = SlotPool::start(
        started_manager(&lease).await,
        PoolSettings {
            target: 0,
            keep: 2,
            trim_after: Duration::from_secs(3600),
        },
    );
    let a = pool.acquire(InternetAccess::Allowed).await.unwrap();
    let b = pool.acquire(InternetAccess::Blocked).await.unwrap();
    assert!(in_internet_set(&instance, &a));
    assert!(!in_internet_set(&instance, &b));

    // Connection state inside a's namespace: the host tries the guest, nobody answers.
    let attempt = knock(&a);
    assert!(attempt.is_err(), "no guest should answer");
    assert!(
        conntrack_entries(&a) >= 1,
        "the attempt left no conntrack entry"
    );
    // On the host the attempt is tracked too, marked as the slot's.
    let host_marked =
        |slot: &NetworkSlot| scrub::count_conntrack_marked(nft::slot_mark(&slot.addrs)).unwrap();
    assert!(
        host_marked(&a) >= 1,
        "the host did not mark the slot's connection"
    );
    let _ = knock(&b);
    assert!(host_marked(&b) >= 1);
    // b's TAP is still held, as by a VMM that did not exit.
    let held = hold_tap(&b);

    pool.release(a.clone()).await;
    pool.release(b.clone()).await;
    let spares = pool.spares();
    assert_eq!(
        spares.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![a.index],
        "only the free slot is kept"
    );
    assert_eq!(spares[0].internet, InternetAccess::Allowed);
    assert_eq!(
        conntrack_entries(&a),
        0,
        "the kept slot still tracks connections"
    );
    assert_eq!(
        host_marked(&a),
        0,
        "the host still tracks the kept slot's connections"
    );
    assert_eq!(
        host_marked(&b),
        0,
        "the host still tracks a removed slot's connections"
    );
    assert!(a.netns_path().exists());
    assert!(!b.netns_path().exists(), "a slot with a held TAP was kept");
    drop(held);
    assert_eq!(slot_count(&instance).await, 1);

    // Reused for a sandbox without internet: its element leaves the host table.
    let reused = pool.acquire(InternetAccess::Blocked).await.unwrap();
    assert_eq!(reused.index, a.index);
    assert_eq!(reused.internet, InternetAccess::Blocked);
    assert!(!in_internet_set(&instance, &reused));
    assert_eq!(slot_count(&instance).await, 1, "reuse made a new slot");
    pool.release(reused).await;
    // ...and for one with internet again.
    let reused = pool.acquire(InternetAccess::Allowed).await.unwrap();
    assert_eq!(reused.index, a.index);
    assert!(in_internet_set(&instance, &reused));

    // At most `keep` spares: the third released slot is torn down.
    let more = [
        pool.acquire(InternetAccess::Blocked).await.unwrap(),
        pool.acquire(InternetAccess::Blocked).await.unwrap(),
    ];
    assert_eq!(slot_count(&instance).await, 3);
    pool.release(reused).await;
    for slot in more {
        pool.release(slot).await;
    }
    assert_eq!(pool.spares().len(), 2);
    assert_eq!(slot_count(&instance).await, 2);

    pool.close().await;
    assert_eq!(slot_count(&instance).await, 0);
    assert!(!internet_set(&instance).contains(&format!("\"{instance}-")));
    pool.manager().remove_host_table().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spares_beyond_the_target_are_trimmed_after_quiet() {
    let lease = InstanceLease::acquire();
    let instance = lease.instance();
    let pool = SlotPool::start(
        started_manager(&lease).await,
        PoolSettings {
            target: 1,
            keep: 3,
            trim_after: Duration::from_secs(1),
        },
    );
    let wait_for = |expected: usize| {
        let instance = instance.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let counts = settled_slot_counts(&instance).await;
                if counts == (expected, expected) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "(netns, links) {counts:?}, expected {expected} slots"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(1).await; // the spare
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(pool.acquire(InternetAccess::Blocked).await.unwrap());
    }
    let last_demand = Instant::now();
    wait_for(4).await; // three in use, one refilled spare
    for slot in taken {
        pool.release(slot).await;
    }
    assert_eq!(pool.spares().len(), 3, "released slots were not kept");
    wait_for(1).await; // trimmed back to the target
    assert!(
        last_demand.elapsed() >= Duration::from_secs(1),
        "trimmed before a quiet second"
    );
    pool.close().await;
    assert_eq!(slot_count(&instance).await, 0);
    pool.manager().remove_host_table().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_flushes_the_host_connections_its_crashed_run_left() {
    let lease = InstanceLease::acquire();
    let manager = started_manager(&lease).await;
    let slot = manager.acquire(InternetAccess::Blocked).await.unwrap();
    let _ = knock(&slot);
    let mark = nft::slot_mark(&slot.addrs);
    assert!(scrub::count_conntrack_marked(mark).unwrap() >= 1);
    // The agent dies without releasing anything; the next start reclaims.
    drop(manager);
    let manager = started_manager(&lease).await;
    assert_eq!(scrub::count_conntrack_marked(mark).unwrap(), 0);
    assert!(!slot.netns_path().exists());
    manager.remove_host_table().await;
}

/// `ip -j` output of a command run inside the slot's namespace (iproute2 reads what our
/// netlink set-up wrote; it is only the observer here).
fn ip_json_in(slot: &NetworkSlot, args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new("ip")
        .args(["-n", &slot.netns, "-j"])
        .args(args)
        .output()
        .expect("run ip");
    assert!(output.status.success(), "ip {args:?}: {output:?}");
    serde_json::from_slice(&output.stdout).expect("ip -j prints JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_slot_is_wired_as_every_guest_expects() {
    let lease = InstanceLease::acquire();
    let manager = started_manager(&lease).await;
    let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let fds_before = open_fds();
    let slot = manager.acquire(InternetAccess::Blocked).await.unwrap();

    let links = ip_json_in(&slot, &["addr", "show"]);
    let link = |name: &str| {
        links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == name)
            .unwrap_or_else(|| panic!("no {name} in {links}"))
            .clone()
    };
    let address = |link: &serde_json::Value| {
        let info = &link["addr_info"][0];
        format!("{}/{}", info["local"].as_str().unwrap(), info["prefixlen"])
    };
    let veth = link("veth0");
    assert_eq!(address(&veth), format!("{}/30", slot.addrs.ns_ip));
    assert!(veth["flags"].as_array().unwrap().contains(&"UP".into()));
    let tap = link(TAP_NAME);
    assert_eq!(tap["address"], wrenn_agent::network::GATEWAY_MAC);
    assert_eq!(address(&tap), "172.16.0.1/24");
    assert!(tap["flags"].as_array().unwrap().contains(&"UP".into()));
    assert!(link("lo")["flags"]
        .as_array()
        .unwrap()
        .contains(&"UP".into()));

    let neighbours = ip_json_in(&slot, &["neigh", "show", "dev", TAP_NAME]);
    let guest = &neighbours[0];
    assert_eq!(guest["dst"], "172.16.0.2");
    assert_eq!(guest["lladdr"], wrenn_agent::network::GUEST_MAC);
    assert_eq!(guest["state"][0], "PERMANENT");

    let routes = ip_json_in(&slot, &["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], slot.addrs.host_ip.to_string());
    assert_eq!(routes[0]["dev"], "veth0");

    // The host end: addressed, up, and in the host namespace under the slot's name.
    let host = std::process::Command::new("ip")
        .args(["-j", "addr", "show", "dev", &slot.host_veth])
        .output()
        .unwrap();
    let host: serde_json::Value = serde_json::from_slice(&host.stdout).unwrap();
    assert_eq!(address(&host[0]), format!("{}/30", slot.addrs.host_ip));

    manager.release(&slot).await;
    assert_eq!(slot_count(&lease.instance()).await, 0);
    // The netlink connections end with their handles and close their sockets.
    let deadline = Instant::now() + Duration::from_secs(2);
    while open_fds() > fds_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open_fds(), fds_before, "descriptors leaked by slot set-up");
}
