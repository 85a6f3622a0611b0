//! Network isolation with real VMs: sandboxes cannot reach each other nor the host's own
//! services, and several run side by side.

mod common;

use common::TestHost;

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_cannot_reach_each_other_or_host_services_and_four_run_at_once() {
    let mut host = TestHost::start().await;
    let mut ids = Vec::new();
    // Four sandboxes booted concurrently.
    let creates = (0..4).map(|_| {
        let mut client = host.client.clone();
        async move {
            client
                .create_sandbox(common::create_request())
                .await
                .unwrap()
                .into_inner()
        }
    });
    for sandbox in futures::future::join_all(creates).await {
        ids.push(sandbox.sandbox_id);
    }
    for id in &ids {
        assert_eq!(
            host.exec(id, "python3", &["-c", "print(6*7)"]).await.stdout,
            b"42\n"
        );
    }

    // A TCP server on the host, bound to all addresses, stands in for the host's services.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    let network: wrenn_agent::config::SlotNetwork = host.lease.slot_network().parse().unwrap();

    // Sandbox 1 serves on port 8000; the host reaches it through its slot.
    host.sh(
        &ids[1],
        "nohup python3 -m http.server 8000 >/dev/null 2>&1 & sleep 1.5",
    )
    .await;
    let targets: Vec<(String, bool)> = (0..4u32)
        .flat_map(|slot| {
            let addrs = wrenn_agent::network::SlotAddresses::for_index(network, slot);
            [
                (format!("{}:8000", addrs.ns_ip), false),
                (format!("{}:{host_port}", addrs.host_ip), false),
            ]
        })
        .collect();
    let probe = |target: &str| {
        format!(
            "python3 -c \"import socket,sys\ns=socket.socket(); s.settimeout(2)\n\
             try:\n  s.connect(('{}', {})); print('open')\nexcept Exception as e:\n  print('closed', type(e).__name__)\"",
            target.split(':').next().unwrap(),
            target.split(':').nth(1).unwrap()
        )
    };
    for (target, expected_open) in &targets {
        let out = host.sh(&ids[0], &probe(target)).await;
        assert_eq!(
            out.starts_with("open"),
            *expected_open,
            "sandbox 0 -> {target}: {out}"
        );
    }
    // The guest gateway (the TAP in its own namespace) is not the host either.
    let out = host
        .sh(&ids[0], &probe(&format!("172.16.0.1:{host_port}")))
        .await;
    assert!(out.starts_with("closed"), "{out}");

    // The host itself reaches sandbox 1's server through sandbox 1's slot.
    let slot_of_1 = (0..4u32)
        .map(|slot| wrenn_agent::network::SlotAddresses::for_index(network, slot))
        .find(|addrs| {
            std::net::TcpStream::connect_timeout(
                &(addrs.ns_ip, 8000).into(),
                std::time::Duration::from_secs(2),
            )
            .is_ok()
        });
    assert!(
        slot_of_1.is_some(),
        "the host could not reach the guest server"
    );
    drop(host_service);
    host.stop().await;
}
