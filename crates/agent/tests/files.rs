//! Files in a real guest through the agent: streamed transfer, metadata operations, watches.

mod common;

use std::time::Duration;

use common::TestHost;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;

fn write_request(sandbox: &str, path: &str, data: Vec<u8>) -> Vec<pb::WriteFileRequest> {
    let mut parts = vec![pb::WriteFileRequest {
        sandbox_id: sandbox.into(),
        part: Some(envd::WriteFileRequest {
            part: Some(envd::write_file_request::Part::Header(
                envd::WriteFileHeader {
                    path: path.into(),
                    mode: 0o600,
                    user: String::new(),
                },
            )),
        }),
    }];
    parts.extend(data.chunks(256 << 10).map(|chunk| pb::WriteFileRequest {
        sandbox_id: String::new(),
        part: Some(envd::WriteFileRequest {
            part: Some(envd::write_file_request::Part::Data(chunk.to_vec())),
        }),
    }));
    parts
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_mib_round_trip_and_metadata_operations() {
    let mut host = TestHost::start().await;
    let id = host.create().await.sandbox_id;

    let data: Vec<u8> = (0..10 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let sent = Sha256::digest(&data);
    let entry = host
        .client
        .write_file(futures::stream::iter(write_request(
            &id,
            "/data/deep/blob.bin",
            data,
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(entry.size, 10 << 20);
    assert_eq!(entry.mode & 0o777, 0o600);

    let mut stream = host
        .client
        .read_file(pb::ReadFileRequest {
            sandbox_id: id.clone(),
            path: "/data/deep/blob.bin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut hasher = Sha256::new();
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.data.len();
        hasher.update(&chunk.data);
    }
    assert_eq!(total, 10 << 20);
    assert_eq!(hasher.finalize(), sent);
    // The guest sees the same bytes.
    let guest_sum = host
        .sh(&id, "sha256sum /data/deep/blob.bin | cut -d' ' -f1")
        .await;
    assert_eq!(guest_sum.trim(), hex::encode(sent));

    // mkdir -p, list with depth, stat, move, remove.
    let made = host
        .client
        .make_dir(pb::MakeDirRequest {
            sandbox_id: id.clone(),
            request: Some(envd::MakeDirRequest {
                path: "/work/a/b".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.r#type, envd::FileType::Directory as i32);
    host.sh(&id, "echo hi > /work/a/b/f.txt && echo top > /work/t.txt")
        .await;
    let list = |depth| pb::ListDirRequest {
        sandbox_id: id.clone(),
        request: Some(envd::ListDirRequest {
            path: "/work".into(),
            depth,
        }),
    };
    let shallow: Vec<String> = host
        .client
        .list_dir(list(1))
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(shallow, ["/work/a", "/work/t.txt"]);
    let deep: Vec<String> = host
        .client
        .list_dir(list(3))
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(
        deep,
        ["/work/a", "/work/a/b", "/work/a/b/f.txt", "/work/t.txt"]
    );

    let stat = host
        .client
        .stat_path(pb::StatPathRequest {
            sandbox_id: id.clone(),
            path: "/work/a/b/f.txt".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stat.size, stat.owner.as_str()), (3, "root"));

    host.client
        .move_path(pb::MovePathRequest {
            sandbox_id: id.clone(),
            request: Some(envd::MoveRequest {
                source: "/work/a/b/f.txt".into(),
                destination: "/work/moved/f.txt".into(),
            }),
        })
        .await
        .unwrap();
    assert_eq!(host.sh(&id, "cat /work/moved/f.txt").await, "hi\n");
    host.client
        .remove_path(pb::RemovePathRequest {
            sandbox_id: id.clone(),
            path: "/work/a".into(),
        })
        .await
        .unwrap();
    assert_eq!(host.sh(&id, "ls /work").await, "moved\nt.txt\n");

    for (path, code) in [
        ("/nope", tonic::Code::NotFound),
        ("/work/nope.txt", tonic::Code::NotFound),
    ] {
        let status = host
            .client
            .stat_path(pb::StatPathRequest {
                sandbox_id: id.clone(),
                path: path.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{path}: {status}");
        let status = host
            .client
            .remove_path(pb::RemovePathRequest {
                sandbox_id: id.clone(),
                path: path.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{path}: {status}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_reports_create_write_rename_and_remove() {
    let mut host = TestHost::start().await;
    let id = host.create().await.sandbox_id;
    host.sh(&id, "mkdir -p /watched/sub").await;
    let mut events = host
        .client
        .watch_dir(pb::WatchDirRequest {
            sandbox_id: id.clone(),
            request: Some(envd::WatchRequest {
                path: "/watched".into(),
                recursive: true,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    host.sh(&id, "echo x > /watched/sub/new.txt; mv /watched/sub/new.txt /watched/sub/renamed.txt; rm /watched/sub/renamed.txt").await;

    let mut seen = Vec::new();
    let wanted = [
        envd::FsEventKind::Create,
        envd::FsEventKind::Write,
        envd::FsEventKind::Rename,
        envd::FsEventKind::Remove,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !wanted
        .iter()
        .all(|kind| seen.iter().any(|(k, _)| k == kind))
    {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("missing events; saw {seen:?}"))
            .unwrap()
            .unwrap();
        seen.push((envd::FsEventKind::try_from(event.kind).unwrap(), event.path));
    }
    assert!(
        seen.iter()
            .all(|(_, path)| path.starts_with("/watched/sub/")),
        "{seen:?}"
    );
    host.stop().await;
}
