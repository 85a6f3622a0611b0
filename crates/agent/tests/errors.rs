//! Bad input to the agent gets a clear gRPC status, never a panic or a leak.

mod common;

use common::{create_request, host_objects, TestHost};
use tonic::Code;
use wrenn_agent_api::v1 as pb;

#[tokio::test(flavor = "multi_thread")]
async fn bad_create_requests_are_rejected_before_touching_the_host() {
    let mut host = TestHost::start().await;
    let cases: Vec<(pb::CreateSandboxRequest, Code, &str)> = vec![
        (
            pb::CreateSandboxRequest {
                template: "../etc".into(),
                ..create_request()
            },
            Code::InvalidArgument,
            "template",
        ),
        (
            pb::CreateSandboxRequest {
                template: "a/b".into(),
                ..create_request()
            },
            Code::InvalidArgument,
            "template",
        ),
        (
            pb::CreateSandboxRequest {
                template: "/abs".into(),
                ..create_request()
            },
            Code::InvalidArgument,
            "template",
        ),
        (
            pb::CreateSandboxRequest {
                template: "nope".into(),
                ..create_request()
            },
            Code::NotFound,
            "nope",
        ),
        (
            pb::CreateSandboxRequest {
                memory_mb: 0,
                ..create_request()
            },
            Code::InvalidArgument,
            "memory_mb",
        ),
        (
            pb::CreateSandboxRequest {
                memory_mb: 10_000_000,
                ..create_request()
            },
            Code::InvalidArgument,
            "memory_mb",
        ),
        (
            pb::CreateSandboxRequest {
                vcpus: 0,
                ..create_request()
            },
            Code::InvalidArgument,
            "vcpus",
        ),
        (
            pb::CreateSandboxRequest {
                vcpus: 1000,
                ..create_request()
            },
            Code::InvalidArgument,
            "vcpus",
        ),
        (
            pb::CreateSandboxRequest {
                disk_mb: 1,
                ..create_request()
            },
            Code::InvalidArgument,
            "disk_mb",
        ),
        (
            pb::CreateSandboxRequest {
                sandbox_id: "sb-../../x".into(),
                ..create_request()
            },
            Code::InvalidArgument,
            "sandbox id",
        ),
    ];
    for (request, code, needle) in cases {
        let status = host
            .client
            .create_sandbox(request.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {status}");
        assert!(
            status.message().contains(needle),
            "{status} should mention {needle}"
        );
    }
    let (netns, links, pids) = host_objects(&host.instance()).await;
    assert!(netns.is_empty() && links.is_empty() && pids.is_empty());

    // Unknown sandboxes and malformed ids: NotFound everywhere.
    for id in ["sb-unknown", "not-an-id", "", "sb-../x"] {
        let status = host
            .client
            .get_sandbox(pb::GetSandboxRequest {
                sandbox_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id:?}");
        let status = host
            .client
            .destroy_sandbox(pb::DestroySandboxRequest {
                sandbox_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id:?}");
    }

    // A duplicate id is refused while the first one lives.
    let request = pb::CreateSandboxRequest {
        sandbox_id: "sb-duplicate1".into(),
        ..create_request()
    };
    host.create_with(request.clone()).await;
    let status = host.client.create_sandbox(request).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_does_not_answer_in_time_fails_create_clearly_and_leaves_nothing() {
    let mut host =
        TestHost::start_with(|config| config.ready_timeout = std::time::Duration::from_millis(300))
            .await;
    // A cold boot: from a boot snapshot the guest may well answer within 300 ms.
    let status = host
        .client
        .create_sandbox(pb::CreateSandboxRequest {
            cold_boot: true,
            ..create_request()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        status.message().contains("did not answer within"),
        "{status}"
    );
    let (netns, links, pids) = host_objects(&host.instance()).await;
    assert!(
        netns.is_empty() && links.is_empty() && pids.is_empty(),
        "{netns:?} {links:?} {pids:?}"
    );
    let listed = host
        .client
        .list_sandboxes(pb::ListSandboxesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.sandboxes.is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_saved_by_another_vmm_is_refused_by_name() {
    use wrenn_agent::images::{write_manifest_in, SnapshotManifest, TemplateManifest};
    let mut host = TestHost::start().await;
    // Only the manifest: the refusal must come before any file of it is opened.
    let name = format!("fc-saved-{}", host.lease.0.index);
    let dir = common::images_dir().join("templates").join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = TemplateManifest {
        name: name.clone(),
        kernel: "vmlinux".into(),
        rootfs: "disk.raw".into(),
        rootfs_bytes: 1 << 30,
        inputs_key: "test".into(),
        created_at_ms: 0,
        snapshot: Some(SnapshotManifest {
            memory: "memory".into(),
            device_state: "vmstate".into(),
            vcpus: 1,
            memory_mb: 256,
            disk_mb: 1024,
            envd_token: "t".into(),
            env: Default::default(),
            parent: "minimal".into(),
            source_sandbox: "sb-elsewhere".into(),
            vmm: "firecracker".into(),
        }),
    };
    write_manifest_in(&dir, &manifest).unwrap();
    let status = host
        .client
        .create_sandbox(pb::CreateSandboxRequest {
            template: name,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    assert!(
        status.message().contains("snapshotted by firecracker"),
        "{status}"
    );
    let (netns, links, pids) = host_objects(&host.instance()).await;
    assert!(netns.is_empty() && links.is_empty() && pids.is_empty());
    host.stop().await;
}
