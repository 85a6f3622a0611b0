//! Crash recovery with the real `wrenn-agent` binary: after `kill -9` the next start removes
//! every VMM, namespace, veth and overlay the dead agent left; SIGTERM stops VMs cleanly.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{create_request, host_objects, images_dir, InstanceLease};
use wrenn_agent_api::v1 as pb;
use wrenn_agent_api::v1::host_agent_client::HostAgentClient;

/// A `wrenn-agent` child process, killed if the test ends early (a panicking test must not
/// leave an agent running under its instance name).
struct AgentProcess {
    child: Child,
    port: u16,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
        // Exact counts of what a crash leaves; spares are tested in sandbox.rs, boot
        // snapshots made at start in boot_snapshots.rs.
        .arg("--spare-slots")
        .arg("0")
        .arg("--boot-snapshot-shapes=")
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

fn state_of(sandboxes: &[pb::Sandbox], id: &str) -> Option<i32> {
    sandboxes
        .iter()
        .find(|s| s.sandbox_id == id)
        .map(|s| s.state)
}

async fn list(client: &mut common::Client) -> Vec<pb::Sandbox> {
    client
        .list_sandboxes(pb::ListSandboxesRequest {})
        .await
        .unwrap()
        .into_inner()
        .sandboxes
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_after_kill_9_reclaims_running_vms_and_adopts_paused_ones() {
    let lease = InstanceLease::acquire();
    let data = tempfile::tempdir().unwrap();
    let instance = lease.instance();

    let mut agent = spawn_agent(&lease, data.path());
    let mut client = connect(&agent).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            client
                .create_sandbox(create_request())
                .await
                .unwrap()
                .into_inner()
                .sandbox_id,
        );
    }
    let exec = |id: &str| pb::ExecRequest {
        sandbox_id: id.into(),
        process: Some(common::spec("sh", &["-c", "echo kept > /root/kept.txt"])),
    };
    client.exec(exec(&ids[2])).await.unwrap();
    client
        .pause_sandbox(pb::PauseSandboxRequest {
            sandbox_id: ids[2].clone(),
        })
        .await
        .unwrap();
    agent.child.kill().unwrap(); // SIGKILL: no chance to clean up.
    agent.child.wait().unwrap();
    let (netns, links, pids) = host_objects(&instance).await;
    assert_eq!(
        (netns.len(), links.len(), pids.len()),
        (2, 2, 2),
        "the crash left its VMs behind"
    );
    let sandboxes = data.path().join("sandboxes");
    assert_eq!(std::fs::read_dir(&sandboxes).unwrap().count(), 3);
    let pin = |id: &str| {
        common::images_dir()
            .join("templates/minimal/.pins")
            .join(format!("{instance}.{id}"))
    };
    assert!(
        ids.iter().all(|id| pin(id).exists()),
        "every sandbox pins its base image"
    );

    let mut agent = spawn_agent(&lease, data.path());
    let mut client = connect(&agent).await;
    let (netns, links, pids) = host_objects(&instance).await;
    assert!(netns.is_empty(), "{netns:?}");
    assert!(links.is_empty(), "{links:?}");
    assert!(pids.is_empty(), "{pids:?}");
    assert_eq!(
        std::fs::read_dir(&sandboxes).unwrap().count(),
        1,
        "only the paused sandbox stays"
    );
    assert!(
        !pin(&ids[0]).exists() && !pin(&ids[1]).exists(),
        "stale pins kept"
    );
    assert!(pin(&ids[2]).exists(), "the paused sandbox lost its pin");
    let listed = list(&mut client).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        state_of(&listed, &ids[2]),
        Some(pb::SandboxState::Paused as i32)
    );

    // The adopted sandbox resumes with its files.
    client
        .resume_sandbox(pb::ResumeSandboxRequest {
            sandbox_id: ids[2].clone(),
        })
        .await
        .expect("resume adopted sandbox");
    let out = client
        .exec(pb::ExecRequest {
            sandbox_id: ids[2].clone(),
            process: Some(common::spec("cat", &["/root/kept.txt"])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.stdout, b"kept\n");

    // SIGTERM pauses running sandboxes and removes every host object; the next start lists them.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "agent exited with {status}");
    let (netns, links, pids) = host_objects(&instance).await;
    assert!(
        netns.is_empty() && links.is_empty() && pids.is_empty(),
        "{netns:?} {links:?} {pids:?}"
    );
    let table = Command::new("nft")
        .args(["list", "table", "inet", &format!("wrenn_{instance}")])
        .output()
        .unwrap();
    assert!(!table.status.success(), "host nft table left behind");

    let mut agent = spawn_agent(&lease, data.path());
    let mut client = connect(&agent).await;
    let listed = list(&mut client).await;
    assert_eq!(
        state_of(&listed, &ids[2]),
        Some(pb::SandboxState::Paused as i32)
    );
    client
        .destroy_sandbox(pb::DestroySandboxRequest {
            sandbox_id: ids[2].clone(),
        })
        .await
        .unwrap();
    assert_eq!(std::fs::read_dir(&sandboxes).unwrap().count(), 0);
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
}
