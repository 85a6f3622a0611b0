//! Sandbox lifecycle against real VMs: boot, run, list, destroy, and nothing left behind.

mod common;

use common::{host_objects, TestHost};
use wrenn_agent_api::v1 as pb;

#[tokio::test(flavor = "multi_thread")]
async fn boots_runs_python_and_destroys_without_leftovers() {
    let mut host = TestHost::start().await;
    let sandbox = host.create().await;
    assert_eq!(sandbox.state, pb::SandboxState::Running as i32);
    assert!(sandbox.sandbox_id.starts_with("sb-"));
    println!("boot took {} ms", sandbox.boot_ms);

    let out = host
        .exec(&sandbox.sandbox_id, "python3", &["-c", "print(6*7)"])
        .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
    assert_eq!(out.exit.unwrap().exit_code, 0);

    // Guest ASLR follows the accelerator (`--guest-aslr auto`): off under TCG, on under KVM.
    let aslr = host
        .sh(
            &sandbox.sandbox_id,
            "cat /proc/sys/kernel/randomize_va_space",
        )
        .await;
    let tcg = wrenn_agent::accel::AcceleratorChoice::Auto.resolve()
        == wrenn_agent::accel::Accelerator::Tcg;
    assert_eq!(aslr.trim() == "0", tcg, "randomize_va_space {aslr:?}");

    let listed = host
        .client
        .list_sandboxes(pb::ListSandboxesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sandboxes.len(), 1);
    assert_eq!(listed.sandboxes[0].sandbox_id, sandbox.sandbox_id);
    let got = host
        .client
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: sandbox.sandbox_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.memory_mb, 256);

    let (netns, links, pids) = host_objects(&host.instance()).await;
    assert_eq!(
        (netns.len(), links.len(), pids.len()),
        (1, 1, 1),
        "one slot and one VMM while running"
    );
    let sandbox_dir = host
        .state
        .path()
        .join("sandboxes")
        .join(&sandbox.sandbox_id);
    assert!(sandbox_dir.join("rootfs.qcow2").exists());
    // The base image is pinned against pruning while the sandbox stands on it.
    let pin = common::images_dir()
        .join("templates/minimal/.pins")
        .join(format!("{}.{}", host.instance(), sandbox.sandbox_id));
    assert!(pin.exists(), "no pin at {}", pin.display());

    host.destroy(&sandbox.sandbox_id).await;
    assert!(!pin.exists(), "pin left behind");
    let (netns, links, pids) = host_objects(&host.instance()).await;
    assert!(netns.is_empty(), "netns left behind: {netns:?}");
    assert!(links.is_empty(), "veth left behind: {links:?}");
    assert!(pids.is_empty(), "VMM left behind: {pids:?}");
    assert!(
        !sandbox_dir.exists(),
        "sandbox directory (overlay) left behind"
    );
    let listed = host
        .client
        .list_sandboxes(pb::ListSandboxesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.sandboxes.is_empty());

    let status = host
        .client
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: sandbox.sandbox_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_size_env_and_metadata_reach_the_guest() {
    let mut host = TestHost::start().await;
    let mut request = common::create_request();
    request.disk_mb = 2048;
    request.env = [("GREETING".to_string(), "hello wrenn".to_string())].into();
    request.metadata = [("owner".to_string(), "tests".to_string())].into();
    let sandbox = host.create_with(request).await;
    assert_eq!(
        sandbox.metadata.get("owner").map(String::as_str),
        Some("tests")
    );
    let id = sandbox.sandbox_id;

    assert_eq!(host.sh(&id, "echo $GREETING").await, "hello wrenn\n");
    // envd grows the root filesystem to the disk size at boot.
    let size_kb: u64 = host
        .sh(&id, "df -k / | awk 'NR==2 {print $2}'")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(
        size_kb > 1_800_000,
        "root filesystem is {size_kb} KiB, expected about 2 GiB"
    );
    // The guest clock was set from the host's.
    let guest: i64 = host.sh(&id, "date +%s").await.trim().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest - now).abs() <= 2,
        "guest clock off by {} s",
        guest - now
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vmm_that_dies_marks_the_sandbox_error_and_releases_it() {
    let mut host = TestHost::start().await;
    let sandbox = host.create().await;
    let mut events = host
        .client
        .watch_sandboxes(pb::WatchSandboxesRequest {})
        .await
        .unwrap()
        .into_inner();
    let (_, _, pids) = host_objects(&host.instance()).await;
    assert_eq!(pids.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut events))
            .await
            .expect("an error event within 20 s")
            .unwrap()
            .unwrap();
        let reported = event.sandbox.unwrap();
        if reported.sandbox_id == sandbox.sandbox_id
            && reported.state == pb::SandboxState::Error as i32
        {
            assert!(reported.error.contains("VMM exited"), "{}", reported.error);
            break;
        }
    }
    let got = host
        .client
        .get_sandbox(pb::GetSandboxRequest {
            sandbox_id: sandbox.sandbox_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, pb::SandboxState::Error as i32);
    let (netns, links, _) = host_objects(&host.instance()).await;
    assert!(
        netns.is_empty() && links.is_empty(),
        "slot not released: {netns:?} {links:?}"
    );
    let status = host
        .client
        .exec(pb::ExecRequest {
            sandbox_id: sandbox.sandbox_id.clone(),
            process: Some(common::spec("true", &[])),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    host.destroy(&sandbox.sandbox_id).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spare_network_slots_serve_boots_are_recycled_and_removed_at_shutdown() {
    let mut host = TestHost::start_with(|config| config.spare_slots = 2).await;
    let instance = host.instance();
    let netns_count = |expected: usize| {
        let instance = instance.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let (netns, links, _) = host_objects(&instance).await;
                if netns.len() == expected && links.len() == expected {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "expected {expected} slots, found netns {netns:?} and links {links:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    netns_count(2).await; // the spares, made at start
    let sandbox = host
        .create_with(pb::CreateSandboxRequest {
            internet: pb::InternetAccess::Allowed as i32,
            ..common::create_request()
        })
        .await;
    // A spare handed out with internet access is let out by the host table.
    let set = common::internet_set(&instance);
    assert!(
        set.contains(&format!("\"{instance}-")),
        "no slot of ours in the internet set: {set}"
    );
    netns_count(3).await; // one in use, two spares again

    // A destroyed sandbox's slot is scrubbed and kept as a third spare...
    host.destroy(&sandbox.sandbox_id).await;
    netns_count(3).await;
    // ...and the next sandbox boots, pauses and resumes on spares: no slot is made or removed.
    let sandbox = host.create().await;
    netns_count(3).await;
    host.client
        .pause_sandbox(pb::PauseSandboxRequest {
            sandbox_id: sandbox.sandbox_id.clone(),
        })
        .await
        .expect("pause");
    netns_count(3).await;
    host.client
        .resume_sandbox(pb::ResumeSandboxRequest {
            sandbox_id: sandbox.sandbox_id.clone(),
        })
        .await
        .expect("resume");
    assert_eq!(
        host.exec(&sandbox.sandbox_id, "python3", &["-c", "print(6*7)"])
            .await
            .stdout,
        b"42\n"
    );
    netns_count(3).await;
    host.destroy(&sandbox.sandbox_id).await;
    host.stop().await;
    netns_count(0).await;
}
