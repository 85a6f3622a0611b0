//! Snapshot templates with real VMs: a running sandbox is frozen into a template and goes on;
//! clones resume the frozen VM in parallel, each independent, with fresh RNG and the right
//! clock; the template's files never change; a template in use cannot be deleted.

mod common;

use common::{TestHost, NEXT};
use sha2::{Digest, Sha256};
use tonic::Code;
use wrenn_agent_api::v1 as pb;

fn file_hashes(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut hashes: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                hex::encode(Sha256::digest(std::fs::read(&p).unwrap())),
            )
        })
        .collect();
    hashes.sort();
    hashes
}

/// The file a template's frozen disk is backed by.
fn disk_backing(template: &str) -> String {
    let disk = common::images_dir()
        .join("templates")
        .join(template)
        .join("disk.qcow2");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    info["backing-filename"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits for the background flattening to put `template`'s disk on the base image.
async fn wait_until_flat(template: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !disk_backing(template).ends_with(".ext4") {
        assert!(
            std::time::Instant::now() < deadline,
            "template {template} was not flattened in time; its disk stands on {}",
            disk_backing(template)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Deletes a template through the agent API.
async fn delete_template(client: &common::Client, name: &str) -> Result<(), tonic::Status> {
    client
        .clone()
        .delete_template(pb::DeleteTemplateRequest { name: name.into() })
        .await
        .map(drop)
}

/// Pauses and resumes a sandbox: its VMM reopens the disk chain.
async fn restart(client: &common::Client, id: &str) {
    let mut client = client.clone();
    client
        .pause_sandbox(pb::PauseSandboxRequest {
            sandbox_id: id.into(),
        })
        .await
        .unwrap();
    client
        .resume_sandbox(pb::ResumeSandboxRequest {
            sandbox_id: id.into(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_three_parallel_clones_are_independent_and_leave_the_template_intact() {
    let mut host = TestHost::start().await;
    let source = host.create().await.sandbox_id;
    host.start_counter(&source).await;
    host.sh(&source, "echo frozen > /root/state.txt").await;

    let name = format!("tpl-{}", host.lease.0.index);
    // A crashed earlier run of this test may have left its template behind.
    let _ = std::fs::remove_dir_all(common::images_dir().join("templates").join(&name));
    let template = host
        .client
        .snapshot_sandbox(pb::SnapshotSandboxRequest {
            sandbox_id: source.clone(),
            template_name: name.clone(),
        })
        .await
        .expect("snapshot")
        .into_inner();
    assert!(template.snapshot);
    assert_eq!((template.vcpus, template.memory_mb), (1, 256));
    // The source keeps running, on a new overlay over the frozen disk.
    assert_eq!(host.sh(&source, NEXT).await.trim(), "2");
    host.sh(&source, "echo source-only > /root/mine.txt").await;

    let template_dir = common::images_dir().join("templates").join(&name);
    let before = file_hashes(&template_dir);

    let creates = (0..3).map(|_| {
        let mut client = host.client.clone();
        let name = name.clone();
        async move {
            let started = std::time::Instant::now();
            let sandbox = client
                .create_sandbox(pb::CreateSandboxRequest {
                    template: name,
                    internet: pb::InternetAccess::Blocked as i32,
                    ..Default::default()
                })
                .await
                .expect("clone")
                .into_inner();
            println!("clone ready in {} ms", started.elapsed().as_millis());
            sandbox
        }
    });
    let clones: Vec<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|s| s.sandbox_id)
        .collect();

    let mut randoms = Vec::new();
    for (i, clone) in clones.iter().enumerate() {
        // Same frozen memory: the counter continues from the snapshot, in every clone.
        assert_eq!(host.sh(clone, NEXT).await.trim(), "2", "clone {i}");
        assert_eq!(host.sh(clone, "cat /root/state.txt").await, "frozen\n");
        assert_eq!(
            host.sh(clone, "cat /root/mine.txt 2>/dev/null || echo absent")
                .await,
            "absent\n"
        );
        host.sh(clone, &format!("echo clone-{i} > /root/mine.txt"))
            .await;
        randoms.push(
            host.sh(clone, "head -c 16 /dev/urandom | od -An -tx1")
                .await,
        );
        let guest_ms: i64 = host.sh(clone, "date +%s%3N").await.trim().parse().unwrap();
        let host_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (guest_ms - host_ms).abs() < 1000,
            "clone {i} clock off by {} ms",
            guest_ms - host_ms
        );
    }
    for (i, clone) in clones.iter().enumerate() {
        assert_eq!(
            host.sh(clone, "cat /root/mine.txt").await,
            format!("clone-{i}\n"),
            "writes stay in their clone"
        );
    }
    assert_eq!(
        host.sh(&source, "cat /root/mine.txt").await,
        "source-only\n"
    );
    randoms.sort();
    randoms.dedup();
    assert_eq!(randoms.len(), 3, "clones produced the same random bytes");

    // A clone can pause and resume too (its RAM travels with the device state).
    restart(&host.client, &clones[0]).await;
    assert_eq!(host.sh(&clones[0], NEXT).await.trim(), "3");

    assert_eq!(
        file_hashes(&template_dir),
        before,
        "template files changed while clones ran"
    );

    let status = delete_template(&host.client, &name).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    for clone in &clones {
        host.destroy(clone).await;
    }
    // The source's disk now rests on the template too.
    let status = delete_template(&host.client, &name).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    host.destroy(&source).await;
    delete_template(&host.client, &name)
        .await
        .expect("delete unused template");
    assert!(!template_dir.exists());
    let status = delete_template(&host.client, "minimal").await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "base templates are the builder's"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_copies_a_running_sandbox_and_its_hidden_template_goes_with_the_last_user() {
    let mut host = TestHost::start().await;
    let source = host.create().await.sandbox_id;
    host.start_counter(&source).await;

    let started = std::time::Instant::now();
    let forks = host
        .client
        .fork_sandbox(pb::ForkSandboxRequest {
            sandbox_id: source.clone(),
            count: 3,
            metadata: [("forked-from".to_string(), source.clone())].into(),
        })
        .await
        .expect("fork")
        .into_inner()
        .sandboxes;
    println!("fork into 3 took {} ms", started.elapsed().as_millis());
    assert_eq!(forks.len(), 3);
    for fork in &forks {
        assert_eq!(fork.metadata.get("forked-from"), Some(&source));
        assert_eq!(
            host.sh(&fork.sandbox_id, NEXT).await.trim(),
            "2",
            "fork continues the source's memory"
        );
    }
    assert_eq!(
        host.sh(&source, NEXT).await.trim(),
        "2",
        "the source keeps running on its own"
    );

    let status = host
        .client
        .fork_sandbox(pb::ForkSandboxRequest {
            sandbox_id: source.clone(),
            count: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let templates = || {
        std::fs::read_dir(common::images_dir().join("templates"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("fork-{}", source.trim_start_matches("sb-"))))
            .count()
    };
    assert_eq!(templates(), 1);
    for fork in &forks {
        host.destroy(&fork.sandbox_id).await;
    }
    assert_eq!(
        templates(),
        1,
        "the source still rests on the fork template"
    );
    host.destroy(&source).await;
    assert_eq!(templates(), 0, "fork template outlived its last user");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clones_snapshot_and_fork_like_any_sandbox_and_free_their_template() {
    let mut host = TestHost::start().await;
    let names = [
        format!("gen1-{}", host.lease.0.index),
        format!("gen2-{}", host.lease.0.index),
    ];
    let templates_dir = common::images_dir().join("templates");
    for name in &names {
        let _ = std::fs::remove_dir_all(templates_dir.join(name));
    }
    let snapshot = |client: &common::Client, id: String, name: String| {
        let mut client = client.clone();
        async move {
            client
                .snapshot_sandbox(pb::SnapshotSandboxRequest {
                    sandbox_id: id,
                    template_name: name,
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let source = host.create().await.sandbox_id;
    host.start_counter(&source).await;
    snapshot(&host.client, source.clone(), names[0].clone())
        .await
        .expect("snapshot the source");
    let from = |template: &str| pb::CreateSandboxRequest {
        template: template.to_owned(),
        internet: pb::InternetAccess::Blocked as i32,
        ..Default::default()
    };

    // A running clone: snapshotted, it keeps running, and its template holds what it had.
    let clone = host.create_with(from(&names[0])).await.sandbox_id;
    assert_eq!(host.sh(&clone, NEXT).await.trim(), "2");
    host.sh(&clone, "echo second-generation > /root/gen.txt")
        .await;
    let gen2 = snapshot(&host.client, clone.clone(), names[1].clone())
        .await
        .expect("snapshot a running clone");
    assert!(gen2.snapshot);
    assert_eq!(host.sh(&clone, NEXT).await.trim(), "3", "clone runs on");
    // Its disk stood on the first template's; flattening happens in the background.
    wait_until_flat(&names[1]).await;
    let grandchild = host.create_with(from(&names[1])).await.sandbox_id;
    assert_eq!(
        host.sh(&grandchild, NEXT).await.trim(),
        "3",
        "the second template has the clone's memory"
    );
    assert_eq!(
        host.sh(&grandchild, "cat /root/gen.txt").await,
        "second-generation\n"
    );

    // The second template no longer rests on the first. If the clone's VMM reopened its disk
    // (the snapshot's resume) before flattening finished, it holds the old chain, and the first
    // template is free only once the clone restarted; if flattening won, it is free at once.
    host.destroy(&source).await;
    if let Err(status) = delete_template(&host.client, &names[0]).await {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
        restart(&host.client, &clone).await;
        delete_template(&host.client, &names[0])
            .await
            .expect("the first template is free once nothing stands on it");
    }
    assert_eq!(host.sh(&clone, NEXT).await.trim(), "4");

    // A clone forks like any sandbox; a paused one snapshots too.
    let forks = host
        .client
        .fork_sandbox(pb::ForkSandboxRequest {
            sandbox_id: grandchild.clone(),
            count: 2,
            metadata: Default::default(),
        })
        .await
        .expect("fork a clone")
        .into_inner()
        .sandboxes;
    for fork in &forks {
        assert_eq!(host.sh(&fork.sandbox_id, NEXT).await.trim(), "4");
        host.destroy(&fork.sandbox_id).await;
    }
    let second_clone = host.create_with(from(&names[1])).await.sandbox_id;
    host.client
        .pause_sandbox(pb::PauseSandboxRequest {
            sandbox_id: second_clone.clone(),
        })
        .await
        .unwrap();
    let gen3 = format!("gen3-{}", host.lease.0.index);
    let _ = std::fs::remove_dir_all(templates_dir.join(&gen3));
    snapshot(&host.client, second_clone.clone(), gen3.clone())
        .await
        .expect("snapshot a paused clone");
    host.client
        .resume_sandbox(pb::ResumeSandboxRequest {
            sandbox_id: second_clone.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        host.sh(&second_clone, NEXT).await.trim(),
        "3",
        "a snapshotted paused clone resumes where it was"
    );

    for id in [&clone, &grandchild, &second_clone] {
        host.destroy(id).await;
    }
    // The third template may still stand on the second until flattened: delete it first.
    for name in [&gen3, &names[1]] {
        delete_template(&host.client, name).await.unwrap();
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_snapshots_are_flattened_in_the_background() {
    let mut host = TestHost::start().await;
    let source = host.create().await.sandbox_id;
    let names = [
        format!("chain-a-{}", host.lease.0.index),
        format!("chain-b-{}", host.lease.0.index),
    ];
    for name in &names {
        let _ = std::fs::remove_dir_all(common::images_dir().join("templates").join(name));
    }
    let snapshot = |client: &common::Client, name: String| {
        let mut client = client.clone();
        let source = source.clone();
        async move {
            client
                .snapshot_sandbox(pb::SnapshotSandboxRequest {
                    sandbox_id: source,
                    template_name: name,
                })
                .await
                .expect("snapshot")
        }
    };
    host.sh(&source, "echo first > /root/one.txt && sync").await;
    snapshot(&host.client, names[0].clone()).await;
    host.sh(&source, "echo second > /root/two.txt && sync")
        .await;
    snapshot(&host.client, names[1].clone()).await;

    // The second snapshot's disk stood on the first's; flattening puts it on the base image
    // in the background.
    wait_until_flat(&names[1]).await;
    // Whether the source still needs the first template depends on a race the agent resolves
    // either way: if its VMM reopened the disk before flattening finished, the chain it holds
    // still includes the first template, and deleting it is refused until the source restarts;
    // if flattening won, the first template is free at once.
    match delete_template(&host.client, &names[0]).await {
        Err(status) => {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
            restart(&host.client, &source).await;
            delete_template(&host.client, &names[0]).await.expect(
                "the first snapshot is free once the chain was flattened and the source restarted",
            );
        }
        Ok(()) => println!("flattening finished before the source reopened its disk"),
    }
    // Either way the source's disk reads whole without the first template.
    restart(&host.client, &source).await;
    assert_eq!(
        host.sh(&source, "cat /root/one.txt /root/two.txt").await,
        "first\nsecond\n"
    );
    let clone = host
        .create_with(pb::CreateSandboxRequest {
            template: names[1].clone(),
            internet: pb::InternetAccess::Blocked as i32,
            ..Default::default()
        })
        .await
        .sandbox_id;
    assert_eq!(
        host.sh(&clone, "cat /root/one.txt /root/two.txt").await,
        "first\nsecond\n"
    );
    assert_eq!(
        host.sh(&source, "cat /root/one.txt /root/two.txt").await,
        "first\nsecond\n"
    );
    host.destroy(&clone).await;
    host.destroy(&source).await;
    host.client
        .delete_template(pb::DeleteTemplateRequest {
            name: names[1].clone(),
        })
        .await
        .unwrap();
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vmm_killed_as_a_pause_or_snapshot_starts_leaves_an_error_and_no_template() {
    let mut host = TestHost::start().await;
    let templates_dir = common::images_dir().join("templates");
    let name = format!("crash-{}", host.lease.0.index);
    let _ = std::fs::remove_dir_all(templates_dir.join(&name));
    for operation in ["pause", "snapshot"] {
        let id = host.create().await.sandbox_id;
        let (_, _, pids) = common::host_objects(&host.instance()).await;
        assert_eq!(pids.len(), 1);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pids[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let result = match operation {
            "pause" => host
                .client
                .pause_sandbox(pb::PauseSandboxRequest {
                    sandbox_id: id.clone(),
                })
                .await
                .map(drop),
            _ => host
                .client
                .snapshot_sandbox(pb::SnapshotSandboxRequest {
                    sandbox_id: id.clone(),
                    template_name: name.clone(),
                })
                .await
                .map(drop),
        };
        assert!(
            result.is_err(),
            "{operation} of a sandbox whose VMM was killed succeeded"
        );
        // Whichever came first, the VMM's death or the request, the sandbox ends in error.
        host.wait_for_state(
            &id,
            pb::SandboxState::Error,
            std::time::Duration::from_secs(10),
        )
        .await;
        let (netns, links, pids) = common::host_objects(&host.instance()).await;
        assert!(
            netns.is_empty() && links.is_empty() && pids.is_empty(),
            "{operation}: {netns:?} {links:?} {pids:?}"
        );
        let sandbox_dir = host.state.path().join("sandboxes").join(&id);
        assert!(
            !sandbox_dir.join("sandbox.json").exists(),
            "{operation}: a broken pause must not be adoptable"
        );
        let leftovers: Vec<String> = std::fs::read_dir(&templates_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(&name))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{operation}: half-made template {leftovers:?}"
        );
        host.destroy(&id).await;
    }
    host.stop().await;
}
