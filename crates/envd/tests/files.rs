//! Filesystem service against a real envd, inside a temporary directory.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{Envd, WAIT};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tonic::Code;
use wrenn_envd_api::v1::write_file_request::Part;
use wrenn_envd_api::v1::{
    EntryInfo, FileType, FsEvent, FsEventKind, ListDirRequest, MakeDirRequest, MoveRequest,
    ReadFileRequest, RemoveRequest, StatRequest, WatchRequest, WriteFileHeader, WriteFileRequest,
};

fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn header(path: &Path, mode: u32, user: &str) -> WriteFileRequest {
    WriteFileRequest {
        part: Some(Part::Header(WriteFileHeader {
            path: path_str(path),
            mode,
            user: user.to_owned(),
        })),
    }
}

fn data(bytes: &[u8]) -> WriteFileRequest {
    WriteFileRequest {
        part: Some(Part::Data(bytes.to_vec())),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so the test needs no RNG crate.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn write(envd: &Envd, path: &Path, contents: &[u8]) -> EntryInfo {
    let mut messages = vec![header(path, 0, "")];
    messages.extend(contents.chunks(64 * 1024).map(data));
    envd.files()
        .write_file(futures::stream::iter(messages))
        .await
        .expect("write file")
        .into_inner()
}

async fn read(envd: &Envd, path: &Path) -> Vec<u8> {
    let mut stream = envd
        .files()
        .read_file(ReadFileRequest {
            path: path_str(path),
        })
        .await
        .expect("read file")
        .into_inner();
    let mut contents = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.data.len() <= envd::files::READ_CHUNK);
        contents.extend_from_slice(&chunk.data);
    }
    contents
}

#[tokio::test]
async fn writes_and_reads_back_10_mib() {
    let envd = Envd::initialized().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let contents = noise(10 << 20);
    let info = write(&envd, &path, &contents).await;
    assert_eq!(info.size, 10 << 20);
    assert_eq!(info.r#type, FileType::File as i32);
    assert_eq!(info.mode, 0o644);
    assert_eq!(info.path, path_str(&path));
    assert_eq!(info.name, "big.bin");

    let back = read(&envd, &path).await;
    assert_eq!(
        hex::encode(Sha256::digest(&back)),
        hex::encode(Sha256::digest(&contents))
    );
}

#[tokio::test]
async fn write_creates_parents_with_mode_and_owner() {
    let envd = Envd::initialized().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/file.txt");
    let messages = vec![header(&path, 0o600, "nobody"), data(b"hi")];
    let info = envd
        .files()
        .write_file(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.mode, info.owner.as_str()), (0o600, "nobody"));
    assert_eq!(std::fs::read(&path).unwrap(), b"hi");
    let parent = envd
        .files()
        .stat(StatRequest {
            path: path_str(&dir.path().join("a/b")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(parent.r#type, FileType::Directory as i32);
    assert_eq!(parent.owner, "nobody");

    // A header alone makes an empty file.
    let empty = dir.path().join("empty");
    let info = envd
        .files()
        .write_file(futures::stream::iter(vec![header(&empty, 0, "")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.size, 0);
}

#[tokio::test]
async fn write_needs_a_header_first() {
    let envd = Envd::initialized().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    let cases = [
        vec![data(b"no header")],
        vec![],
        vec![header(&path, 0, ""), header(&path, 0, "")],
        vec![header(&path, 0, "no-such-user"), data(b"x")],
    ];
    for messages in cases {
        let status = envd
            .files()
            .write_file(futures::stream::iter(messages))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    }
    assert!(!path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temp files left"
    );
}

#[tokio::test]
async fn aborted_write_leaves_old_content() {
    let envd = Envd::initialized().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.txt");
    write(&envd, &path, b"old content").await;

    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut client = envd.files();
    let upload = tokio::spawn(async move {
        client
            .write_file(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    sender.send(header(&path, 0, "")).await.unwrap();
    sender.send(data(b"new partial content")).await.unwrap();
    // Wait until the temporary file exists, so envd really is mid-upload.
    let temp_exists = || std::fs::read_dir(dir.path()).unwrap().count() == 2;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !temp_exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no temp file appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    upload.abort();
    drop(sender);

    let deadline = tokio::time::Instant::now() + WAIT;
    while temp_exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "temp file not removed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"old content");

    // A completed write replaces it.
    write(&envd, &path, b"new content").await;
    assert_eq!(read(&envd, &path).await, b"new content");
}

#[tokio::test]
async fn makes_lists_stats_moves_and_removes() {
    let envd = Envd::initialized().await;
    let mut files = envd.files();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    let made = files
        .make_dir(MakeDirRequest {
            path: path_str(&root.join("a/b/c")),
            user: String::new(),
            mode: 0o700,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (made.r#type, made.mode),
        (FileType::Directory as i32, 0o700)
    );
    assert_eq!(made.owner, "root");
    // mkdir -p on an existing directory is fine.
    files
        .make_dir(MakeDirRequest {
            path: path_str(&root.join("a/b")),
            ..MakeDirRequest::default()
        })
        .await
        .unwrap();
    std::fs::write(root.join("a/file"), "x").unwrap();
    std::fs::write(root.join("a/b/c/deep"), "y").unwrap();
    std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();

    let list = |depth: u32| {
        let mut files = envd.files();
        let path = path_str(root);
        async move {
            files
                .list_dir(ListDirRequest { path, depth })
                .await
                .unwrap()
                .into_inner()
                .entries
                .into_iter()
                .map(|entry| entry.path.strip_prefix(&path_str(root)).unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let cases: [(u32, &[&str]); 4] = [
        (0, &["/a", "/link"]),
        (1, &["/a", "/link"]),
        (2, &["/a", "/a/b", "/a/file", "/link"]),
        (
            9,
            &["/a", "/a/b", "/a/b/c", "/a/b/c/deep", "/a/file", "/link"],
        ),
    ];
    for (depth, expected) in cases {
        assert_eq!(list(depth).await, expected, "depth {depth}");
    }

    let link = files
        .stat(StatRequest {
            path: path_str(&root.join("link")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(link.r#type, FileType::Symlink as i32);
    assert_eq!(link.symlink_target, path_str(&root.join("a")));
    let file = files
        .stat(StatRequest {
            path: path_str(&root.join("a/file")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((file.size, file.name.as_str()), (1, "file"));
    assert!(file.modified_ms > 0);

    let moved = files
        .r#move(MoveRequest {
            source: path_str(&root.join("a/file")),
            destination: path_str(&root.join("new/place/file2")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.path, path_str(&root.join("new/place/file2")));
    assert!(!root.join("a/file").exists());
    assert_eq!(std::fs::read(root.join("new/place/file2")).unwrap(), b"x");

    files
        .remove(RemoveRequest {
            path: path_str(&root.join("a")),
        })
        .await
        .unwrap();
    assert!(!root.join("a").exists());
    // The dangling symlink is removed itself.
    files
        .remove(RemoveRequest {
            path: path_str(&root.join("link")),
        })
        .await
        .unwrap();
    assert!(std::fs::symlink_metadata(root.join("link")).is_err());
}

#[tokio::test]
async fn maps_errors_to_codes() {
    let envd = Envd::initialized().await;
    let mut files = envd.files();
    let dir = tempfile::tempdir().unwrap();
    let missing = path_str(&dir.path().join("missing"));
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let file = path_str(&file);

    let codes = [
        (
            "stat missing",
            files
                .stat(StatRequest {
                    path: missing.clone(),
                })
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            "list missing",
            files
                .list_dir(ListDirRequest {
                    path: missing.clone(),
                    depth: 1,
                })
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            "list a file",
            files
                .list_dir(ListDirRequest {
                    path: file.clone(),
                    depth: 1,
                })
                .await
                .map(drop),
            Code::InvalidArgument,
        ),
        (
            "remove missing",
            files
                .remove(RemoveRequest {
                    path: missing.clone(),
                })
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            "move missing",
            files
                .r#move(MoveRequest {
                    source: missing.clone(),
                    destination: format!("{missing}2"),
                })
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            "read missing",
            files
                .read_file(ReadFileRequest {
                    path: missing.clone(),
                })
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            "read a directory",
            files
                .read_file(ReadFileRequest {
                    path: path_str(dir.path()),
                })
                .await
                .map(drop),
            Code::InvalidArgument,
        ),
        (
            "mkdir over a file",
            files
                .make_dir(MakeDirRequest {
                    path: file.clone(),
                    ..MakeDirRequest::default()
                })
                .await
                .map(drop),
            Code::AlreadyExists,
        ),
        (
            "mkdir as unknown user",
            files
                .make_dir(MakeDirRequest {
                    path: format!("{missing}/x"),
                    user: "no-such-user".to_owned(),
                    mode: 0,
                })
                .await
                .map(drop),
            Code::InvalidArgument,
        ),
        (
            "empty path",
            files
                .stat(StatRequest {
                    path: String::new(),
                })
                .await
                .map(drop),
            Code::InvalidArgument,
        ),
        (
            "watch missing",
            files
                .watch(WatchRequest {
                    path: missing.clone(),
                    recursive: false,
                })
                .await
                .map(drop),
            Code::NotFound,
        ),
    ];
    for (what, result, code) in codes {
        let status = result.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status}");
    }
}

/// Open inotify instances of a process.
fn inotify_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("inotify"))
        .count()
}

#[tokio::test]
async fn watch_reports_changes_and_stops_when_dropped() {
    let envd = Envd::initialized().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("sub")).unwrap();
    let mut stream = envd
        .files()
        .watch(WatchRequest {
            path: path_str(&root),
            recursive: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inotify_fds(envd.pid()), 1);

    let file = root.join("sub/file.txt");
    let renamed = root.join("sub/renamed.txt");
    std::fs::write(&file, "hello").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&file, &renamed).unwrap();
    std::fs::remove_file(&renamed).unwrap();

    let expected = [
        (FsEventKind::Create, path_str(&file), String::new()),
        (FsEventKind::Write, path_str(&file), String::new()),
        (FsEventKind::Chmod, path_str(&file), String::new()),
        (FsEventKind::Rename, path_str(&renamed), path_str(&file)),
        (FsEventKind::Remove, path_str(&renamed), String::new()),
    ];
    let mut seen: Vec<FsEvent> = Vec::new();
    let waiting = async {
        while let Some(event) = stream.next().await {
            seen.push(event.unwrap());
            let has = |(kind, path, from): &(FsEventKind, String, String)| {
                seen.iter().any(|event| {
                    event.kind == *kind as i32 && event.path == *path && event.from_path == *from
                })
            };
            if expected.iter().all(has) {
                return;
            }
        }
    };
    if tokio::time::timeout(WAIT, waiting).await.is_err() {
        panic!("missing events; saw {seen:#?}");
    }
    // Exactly one rename event for one rename.
    let renames = seen
        .iter()
        .filter(|event| event.kind == FsEventKind::Rename as i32)
        .count();
    assert_eq!(renames, 1, "{seen:#?}");

    drop(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    while inotify_fds(envd.pid()) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watcher not dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
