//! Crash recovery with the real `wrenn-agent` binary: after `kill -9` the next start removes
//! every VMM, namespace, veth and overlay the dead agent left; SIGTERM stops VMs cleanly.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{create_request, host_objects, images_dir, InstanceLease};
use wrenn_agent_api::v1::host_agent_client::HostAgentClient;

struct AgentProcess {
    child: Child,
    port: u16,
}

fn spawn_agent(lease: &InstanceLease, data_dir: &std::path::Path) -> AgentProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_wrenn-agent"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--images-dir")
        .arg(images_dir())
        .arg("--instance")
        .arg(lease.instance())
        .arg("--slot-network")
        .arg(lease.slot_network())
        .arg("--ready-timeout-secs")
        .arg(common::ready_timeout().as_secs().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    AgentProcess { child, port }
}

async fn connect(agent: &AgentProcess) -> common::Client {
    for _ in 0..300 {
        if let Ok(client) =
            HostAgentClient::connect(format!("http://127.0.0.1:{}", agent.port)).await
        {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("agent did not listen on port {}", agent.port);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_after_kill_9_reclaims_everything_and_sigterm_cleans_up() {
    let lease = InstanceLease::acquire();
    let data = tempfile::tempdir().unwrap();
    let instance = lease.instance();

    let mut agent = spawn_agent(&lease, data.path());
    let mut client = connect(&agent).await;
    for _ in 0..2 {
        client.create_sandbox(create_request()).await.unwrap();
    }
    agent.child.kill().unwrap(); // SIGKILL: no chance to clean up.
    agent.child.wait().unwrap();
    let (netns, links, pids) = host_objects(&instance);
    assert_eq!(
        (netns.len(), links.len(), pids.len()),
        (2, 2, 2),
        "the crash left its VMs behind"
    );
    let sandboxes = data.path().join("sandboxes");
    assert_eq!(std::fs::read_dir(&sandboxes).unwrap().count(), 2);

    let mut agent = spawn_agent(&lease, data.path());
    let mut client = connect(&agent).await;
    let (netns, links, pids) = host_objects(&instance);
    assert!(netns.is_empty(), "{netns:?}");
    assert!(links.is_empty(), "{links:?}");
    assert!(pids.is_empty(), "{pids:?}");
    assert_eq!(
        std::fs::read_dir(&sandboxes).unwrap().count(),
        0,
        "overlays left behind"
    );

    // The restarted agent works, and SIGTERM stops its VMs and removes its host objects.
    let sandbox = client
        .create_sandbox(create_request())
        .await
        .unwrap()
        .into_inner();
    assert!(sandbox.sandbox_id.starts_with("sb-"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "agent exited with {status}");
    let (netns, links, pids) = host_objects(&instance);
    assert!(
        netns.is_empty() && links.is_empty() && pids.is_empty(),
        "{netns:?} {links:?} {pids:?}"
    );
    let table = Command::new("nft")
        .args(["list", "table", "inet", &format!("wrenn_{instance}")])
        .output()
        .unwrap();
    assert!(!table.status.success(), "host nft table left behind");
}
