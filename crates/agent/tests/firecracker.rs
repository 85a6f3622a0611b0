//! End to end on Firecracker: boot, exec, files, pause and resume, snapshot into a template
//! and clones from it, with real guests. Firecracker needs hardware KVM and its binary
//! (`WRENN_FIRECRACKER`, default `firecracker` on PATH); where either is missing, as on our
//! development and CI machines, each test prints why it did not run. The driver's own tests
//! (src/vmm/firecracker/tests.rs) run everywhere against an API test double.
//!
//! To run every agent suite on Firecracker instead of QEMU: `WRENN_TEST_VMM=firecracker`.

mod common;

use std::path::PathBuf;

use common::{TestHost, NEXT};
use wrenn_agent::config::VmmChoice;
use wrenn_agent::vmm::firecracker::FirecrackerVmm;
use wrenn_agent_api::v1 as pb;

fn firecracker_binary() -> PathBuf {
    std::env::var_os("WRENN_FIRECRACKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| "firecracker".into())
}

/// An agent on Firecracker, or `None` after printing why this host cannot run it.
async fn firecracker_host(test: &str) -> Option<TestHost> {
    let accelerator = wrenn_agent::accel::AcceleratorChoice::Auto.resolve();
    if let Some(reason) = FirecrackerVmm::unavailable_reason(&firecracker_binary(), accelerator) {
        eprintln!("SKIPPED {test}: {reason}");
        return None;
    }
    Some(
        TestHost::start_with(|config| {
            config.vmm = VmmChoice::Firecracker;
            config.firecracker_binary = firecracker_binary();
        })
        .await,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn boots_runs_commands_and_moves_files() {
    let Some(mut host) = firecracker_host("boots_runs_commands_and_moves_files").await else {
        return;
    };
    let id = host.create().await.sandbox_id;
    assert_eq!(host.sh(&id, "python3 -c 'print(6*7)'").await.trim(), "42");
    host.sh(
        &id,
        "head -c 1048576 /dev/urandom > /root/blob && sha256sum /root/blob > /root/sum",
    )
    .await;
    assert_eq!(
        host.sh(&id, "sha256sum -c /root/sum >/dev/null && echo ok")
            .await
            .trim(),
        "ok"
    );
    host.destroy(&id).await;
    let (netns, links, pids) = common::host_objects(&host.instance()).await;
    assert!(netns.is_empty() && links.is_empty() && pids.is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_and_clones_keep_memory_and_files() {
    let Some(mut host) = firecracker_host("pause_resume_and_clones_keep_memory_and_files").await
    else {
        return;
    };
    let id = host.create().await.sandbox_id;
    host.start_counter(&id).await;
    for cycle in 1..=3 {
        host.sh(&id, &format!("echo {cycle} >> /root/cycles")).await;
        host.client
            .pause_sandbox(pb::PauseSandboxRequest {
                sandbox_id: id.clone(),
            })
            .await
            .expect("pause");
        host.client
            .resume_sandbox(pb::ResumeSandboxRequest {
                sandbox_id: id.clone(),
            })
            .await
            .expect("resume");
        assert_eq!(host.sh(&id, NEXT).await.trim(), (cycle + 1).to_string());
    }
    assert_eq!(host.sh(&id, "cat /root/cycles").await, "1\n2\n3\n");

    let name = format!("fc-tpl-{}", host.lease.0.index);
    let _ = std::fs::remove_dir_all(common::images_dir().join("templates").join(&name));
    host.client
        .snapshot_sandbox(pb::SnapshotSandboxRequest {
            sandbox_id: id.clone(),
            template_name: name.clone(),
        })
        .await
        .expect("snapshot");
    let clone = host
        .create_with(pb::CreateSandboxRequest {
            template: name.clone(),
            internet: pb::InternetAccess::Blocked as i32,
            ..Default::default()
        })
        .await
        .sandbox_id;
    // The clone goes on from the frozen counter and files, and its writes are its own.
    assert_eq!(host.sh(&clone, NEXT).await.trim(), "5");
    host.sh(&clone, "echo clone > /root/cycles").await;
    assert_eq!(host.sh(&id, "cat /root/cycles").await, "1\n2\n3\n");
    host.destroy(&clone).await;
    host.destroy(&id).await;
    host.client
        .delete_template(pb::DeleteTemplateRequest { name })
        .await
        .expect("delete template");
    host.stop().await;
}
