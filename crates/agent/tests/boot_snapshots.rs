//! Boot snapshots: the first sandbox of a shape freezes the freshly booted image; later ones
//! start from it. Real VMs under TCG.
//!
//! The image directory is shared with every other test process, and so are boot snapshots of
//! the common shapes. Each test here uses a memory size of its own (offset by its lease) and
//! deletes that shape's boot snapshot before and after, so it sees the first sandbox of a shape.

mod common;

use std::path::PathBuf;

use common::{create_request, images_dir, TestHost};
use tonic::Code;
use wrenn_agent_api::v1 as pb;

/// Boot snapshot directories of one memory size.
fn boot_snapshots_of(memory_mb: u32) -> Vec<PathBuf> {
    let templates = images_dir().join("templates");
    std::fs::read_dir(&templates)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("_boot-"))
        .map(|entry| entry.path())
        .filter(|dir| {
            std::fs::read(dir.join("template.json"))
                .ok()
                .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
                .is_some_and(|manifest| manifest["snapshot"]["memory_mb"] == memory_mb)
        })
        .collect()
}

fn forget_boot_snapshots_of(memory_mb: u32) {
    for dir in boot_snapshots_of(memory_mb) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn request_of(memory_mb: u32) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        memory_mb,
        ..create_request()
    }
}

fn start_of(sandbox: &pb::Sandbox) -> pb::StartMethod {
    pb::StartMethod::try_from(sandbox.start).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn later_sandboxes_start_from_a_boot_snapshot_holding_nothing_of_the_first() {
    let mut host = TestHost::start().await;
    let memory_mb = 300 + host.lease.0.index;
    forget_boot_snapshots_of(memory_mb);

    // The first sandbox of the shape boots and is frozen before it gets its environment.
    let secret = format!("first-user-secret-{}", rand::random::<u64>());
    let first = host
        .create_with(pb::CreateSandboxRequest {
            env: [("SECRET".to_string(), secret.clone())].into(),
            ..request_of(memory_mb)
        })
        .await;
    assert_eq!(start_of(&first), pb::StartMethod::ColdBoot);
    assert_eq!(
        host.sh(&first.sandbox_id, "printf %s \"$SECRET\"").await,
        secret
    );
    let made = boot_snapshots_of(memory_mb);
    assert_eq!(made.len(), 1, "one boot snapshot for the shape: {made:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(made[0].join("template.json")).unwrap()).unwrap();
    assert_eq!(manifest["snapshot"]["env"], serde_json::json!({}));
    // grep: fast over hundreds of MiB where a debug-built byte search is not.
    let found = std::process::Command::new("grep")
        .args(["-a", "-q", "-F", "--", &secret])
        .arg(made[0].join("memory"))
        .status()
        .unwrap();
    assert_eq!(
        found.code(),
        Some(1),
        "the first user's environment is in the frozen guest's memory"
    );
    let listed = host
        .client
        .list_templates(pb::ListTemplatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .templates;
    assert!(
        listed.iter().all(|t| !t.name.starts_with("_boot-")),
        "boot snapshots are not offered as templates: {listed:?}"
    );

    // The next one is a clone: none of the first's environment, its own files and RNG.
    let second = host.create_with(request_of(memory_mb)).await;
    assert_eq!(start_of(&second), pb::StartMethod::BootSnapshot);
    assert_eq!(second.template, "minimal");
    // Pins keep the snapshot from agents sharing the image directory while sandboxes use it.
    for sandbox in [&first, &second] {
        let pin = format!("{}.{}", host.instance(), sandbox.sandbox_id);
        assert!(
            made[0].join(".pins").join(&pin).exists(),
            "{} does not pin the boot snapshot it stands on",
            sandbox.sandbox_id
        );
    }
    let env = host.exec(&second.sandbox_id, "printenv", &["SECRET"]).await;
    assert_eq!(env.exit.unwrap().exit_code, 1, "SECRET leaked into a clone");
    host.sh(&first.sandbox_id, "echo one > /root/who").await;
    assert_eq!(
        host.sh(
            &second.sandbox_id,
            "cat /root/who 2>/dev/null || echo absent"
        )
        .await,
        "absent\n"
    );
    let random = "head -c 16 /dev/urandom | od -An -tx1";
    assert_ne!(
        host.sh(&first.sandbox_id, random).await,
        host.sh(&second.sandbox_id, random).await
    );
    let guest_secs: f64 = host
        .sh(&second.sandbox_id, "date +%s.%N")
        .await
        .trim()
        .parse()
        .unwrap();
    let host_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (host_secs - guest_secs).abs() < 2.0,
        "clone clock is off by {} s",
        host_secs - guest_secs
    );

    // Its first pause writes its RAM into a memory file of its own (the snapshot's data plus
    // the pages it changed) and keeps only device state in the saved state; RAM it changed
    // (a tmpfs file, a live process) is all there after the resume.
    let dir = host.state.path().join("sandboxes").join(&second.sandbox_id);
    let sum = "sha256sum /dev/shm/blob | cut -c1-64";
    host.sh(
        &second.sandbox_id,
        "head -c 8388608 /dev/urandom > /dev/shm/blob",
    )
    .await;
    let before = host.sh(&second.sandbox_id, sum).await;
    host.start_counter(&second.sandbox_id).await;
    host.client
        .pause_sandbox(pb::PauseSandboxRequest {
            sandbox_id: second.sandbox_id.clone(),
        })
        .await
        .unwrap();
    let state_bytes = std::fs::metadata(dir.join("vmstate")).unwrap().len();
    assert!(
        state_bytes < 1 << 20,
        "vmstate holds RAM: {state_bytes} bytes"
    );
    assert_eq!(
        std::fs::metadata(dir.join("memory")).unwrap().len(),
        u64::from(memory_mb) << 20
    );
    host.client
        .resume_sandbox(pb::ResumeSandboxRequest {
            sandbox_id: second.sandbox_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(host.sh(&second.sandbox_id, sum).await, before);
    assert_eq!(host.sh(&second.sandbox_id, common::NEXT).await.trim(), "2");

    // Asked for, a cold boot is a cold boot.
    let cold = host
        .create_with(pb::CreateSandboxRequest {
            cold_boot: true,
            ..request_of(memory_mb)
        })
        .await;
    assert_eq!(start_of(&cold), pb::StartMethod::ColdBoot);

    // The snapshot is the agent's: users cannot take its names, nor delete it while in use.
    let name = made[0].file_name().unwrap().to_string_lossy().into_owned();
    let taken = host
        .client
        .snapshot_sandbox(pb::SnapshotSandboxRequest {
            sandbox_id: first.sandbox_id.clone(),
            template_name: "_boot-mine".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::InvalidArgument, "{taken:?}");
    let in_use = host
        .client
        .delete_template(pb::DeleteTemplateRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition, "{in_use:?}");

    for sandbox in [&first, &second, &cold] {
        host.destroy(&sandbox.sandbox_id).await;
    }
    host.client
        .delete_template(pb::DeleteTemplateRequest { name })
        .await
        .unwrap();
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_boot_snapshot_is_discarded_and_the_sandbox_boots_cold() {
    let mut host = TestHost::start().await;
    let memory_mb = 400 + host.lease.0.index;
    forget_boot_snapshots_of(memory_mb);
    let first = host.create_with(request_of(memory_mb)).await;
    host.destroy(&first.sandbox_id).await;
    let made = boot_snapshots_of(memory_mb);
    assert_eq!(made.len(), 1, "{made:?}");
    // Device state the VMM cannot load, as after an incompatible upgrade gone unnoticed.
    let state = made[0].join("vmstate");
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&state, b"not a saved VM").unwrap();

    let sandbox = host.create_with(request_of(memory_mb)).await;
    assert_eq!(start_of(&sandbox), pb::StartMethod::ColdBoot);
    assert_eq!(host.sh(&sandbox.sandbox_id, "echo ok").await, "ok\n");
    assert!(
        boot_snapshots_of(memory_mb).is_empty(),
        "the broken snapshot is gone"
    );
    host.destroy(&sandbox.sandbox_id).await;
    forget_boot_snapshots_of(memory_mb);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_boot_snapshots_off_every_sandbox_boots_cold() {
    let mut host = TestHost::start_with(|config| config.boot_snapshots = false).await;
    let memory_mb = 500 + host.lease.0.index;
    forget_boot_snapshots_of(memory_mb);
    for _ in 0..2 {
        let sandbox = host.create_with(request_of(memory_mb)).await;
        assert_eq!(start_of(&sandbox), pb::StartMethod::ColdBoot);
        host.destroy(&sandbox.sandbox_id).await;
    }
    assert!(boot_snapshots_of(memory_mb).is_empty());
    host.stop().await;
}

/// No VM: a boot snapshot of an image that has since been rebuilt is deleted at start-up.
#[tokio::test(flavor = "multi_thread")]
async fn a_boot_snapshot_of_a_rebuilt_image_is_deleted_at_start() {
    let name = "_boot-stale-test".to_string();
    let dir = images_dir().join("templates").join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = serde_json::json!({
        "name": name,
        "kernel": "vmlinux-old",
        "rootfs": "disk.qcow2",
        "rootfs_bytes": 1u64 << 30,
        "inputs_key": "boot/v1 base=minimal@an-old-build/1 kernel=vmlinux-old vmm=qemu/x vcpus=1",
        "created_at_ms": 1,
        "snapshot": {
            "memory": "memory", "device_state": "vmstate", "vcpus": 1, "memory_mb": 64,
            "disk_mb": 1024, "envd_token": "t", "env": {}, "parent": "minimal",
            "source_sandbox": "sb-x", "vmm": "qemu"
        }
    });
    std::fs::write(
        dir.join("template.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let host = TestHost::start().await;
    assert!(
        !dir.exists(),
        "stale boot snapshot {name} survived start-up"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shapes_named_at_start_get_their_boot_snapshot_before_any_request() {
    // The memory size is only known once the lease is; the lease comes with the host. So the
    // host is started twice: once to learn it (no VM), then with the shape to prepare.
    let probe = TestHost::start().await;
    let memory_mb = 600 + probe.lease.0.index;
    probe.stop().await;
    forget_boot_snapshots_of(memory_mb);
    let shape: wrenn_agent::sandbox::boot_snapshot::PreparedShape =
        format!("minimal:1x{memory_mb}").parse().unwrap();
    let mut host = TestHost::start_with(|config| config.prepared_shapes = vec![shape]).await;
    let deadline = std::time::Instant::now() + common::ready_timeout();
    loop {
        let idle = host
            .client
            .list_sandboxes(pb::ListSandboxesRequest {})
            .await
            .unwrap()
            .into_inner()
            .sandboxes
            .is_empty();
        if boot_snapshots_of(memory_mb).len() == 1 && idle {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no boot snapshot prepared for {memory_mb} MiB"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let sandbox = host.create_with(request_of(memory_mb)).await;
    assert_eq!(start_of(&sandbox), pb::StartMethod::BootSnapshot);
    host.destroy(&sandbox.sandbox_id).await;
    forget_boot_snapshots_of(memory_mb);
    host.stop().await;
}

/// A create that fails because its sandbox was destroyed meanwhile is not retried with a cold
/// boot (as a failed start from a boot snapshot is): the caller meant the sandbox to be gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_destroyed_while_it_starts_is_not_started_again() {
    let mut host = TestHost::start().await;
    let id = format!("sb-racer{}", host.lease.0.index);
    let request = pb::CreateSandboxRequest {
        sandbox_id: id.clone(),
        ..create_request()
    };
    let mut client = host.client.clone();
    let create = tokio::spawn(async move { client.create_sandbox(request).await });
    // NotFound until the create has registered the sandbox, a few milliseconds in; the start
    // itself takes over 100 ms even from a boot snapshot.
    loop {
        match host
            .client
            .destroy_sandbox(pb::DestroySandboxRequest {
                sandbox_id: id.clone(),
            })
            .await
        {
            Ok(_) => break,
            Err(status) if status.code() == Code::NotFound => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await
            }
            Err(status) => panic!("destroy: {status}"),
        }
    }
    let status = create
        .await
        .unwrap()
        .expect_err("the sandbox finished starting before its destroy");
    assert_eq!(status.code(), Code::Aborted, "{status}");
    let listed = host
        .client
        .list_sandboxes(pb::ListSandboxesRequest {})
        .await
        .unwrap()
        .into_inner()
        .sandboxes;
    assert!(listed.is_empty(), "{listed:?}");
    let (netns, links, pids) = common::host_objects(&host.instance()).await;
    assert!(
        netns.is_empty() && links.is_empty() && pids.is_empty(),
        "{netns:?} {links:?} {pids:?}"
    );
    host.stop().await;
}

/// A small ext4 filesystem on a loop device, mounted for the life of the value: a disk that
/// really fills up. (Not a tmpfs: reading a hole of a tmpfs file allocates a page.)
struct SmallDisk {
    _image: tempfile::TempDir,
    mount: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size_mb: u32) -> Self {
        let image = tempfile::tempdir().unwrap();
        let file = image.path().join("disk.ext4");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(u64::from(size_mb) << 20)
            .unwrap();
        let run = |command: &mut std::process::Command| {
            let status = command.status().unwrap();
            assert!(status.success(), "{command:?}");
        };
        run(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&file));
        let mount = tempfile::tempdir().unwrap();
        run(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(mount.path()));
        Self {
            _image: image,
            mount,
        }
    }

    fn path(&self) -> &std::path::Path {
        self.mount.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.mount.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_lost_while_making_the_boot_snapshot_boots_cold_again() {
    // Sandboxes live on a 32 MiB disk: enough to boot (guest RAM is a sparse file mapped
    // copy-on-write until the first pause), too small for the ~50 MB of RAM that freezing
    // the freshly booted sandbox writes, so that pause fails and the sandbox is lost.
    let disk = SmallDisk::mount(32);
    let state_dir = disk.path().to_owned();
    let mut host = TestHost::start_with(|config| config.state_dir = state_dir).await;
    let memory_mb = 700 + host.lease.0.index;
    forget_boot_snapshots_of(memory_mb);

    let sandbox = host.create_with(request_of(memory_mb)).await;
    assert_eq!(start_of(&sandbox), pb::StartMethod::ColdBoot);
    assert_eq!(host.sh(&sandbox.sandbox_id, "echo ok").await, "ok\n");
    assert!(
        boot_snapshots_of(memory_mb).is_empty(),
        "a boot snapshot was made on a full disk"
    );
    // One sandbox directory: the lost one was removed.
    let dirs: Vec<_> = std::fs::read_dir(disk.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|name| name != "lost+found")
        .collect();
    assert_eq!(dirs, [std::ffi::OsString::from(&sandbox.sandbox_id)]);
    host.destroy(&sandbox.sandbox_id).await;
    host.stop().await;
    forget_boot_snapshots_of(memory_mb);
}
