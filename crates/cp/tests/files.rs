//! Files in a sandbox through the REST API, on a real host agent booting a real VM (QEMU/TCG):
//! streamed uploads and downloads, multipart uploads, metadata operations, the upload limit,
//! path checks and team isolation. One sandbox serves every check.

mod common;

use std::time::Duration;

use common::{assert_error_shape, read_json, Auth, TestCp};
use rand::RngCore;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Upload limit of the control plane under test: above the 5 MiB round trip, low enough that
/// refusing a bigger upload is quick.
const UPLOAD_LIMIT: u64 = 6 << 20;

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

/// Percent-encodes a query value (every byte that is not unreserved).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn put_file(
    cp: &TestCp,
    auth: &Auth,
    id: &str,
    query: &str,
    body: reqwest::Body,
) -> (StatusCode, Value) {
    let path = format!("/v1/sandboxes/{id}/files?{query}");
    let response = cp
        .request(Method::PUT, &path, auth)
        .body(body)
        .send()
        .await
        .unwrap();
    read_json(response, &format!("PUT {path}")).await
}

/// Downloads a file: its bytes on success, else the JSON error.
async fn download(
    cp: &TestCp,
    auth: &Auth,
    id: &str,
    path: &str,
) -> Result<Vec<u8>, (StatusCode, Value)> {
    let url = format!("/v1/sandboxes/{id}/files?path={}", encode(path));
    let response = cp.request(Method::GET, &url, auth).send().await.unwrap();
    if response.status() == StatusCode::OK {
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(content_type, "application/octet-stream");
        return Ok(response.bytes().await.unwrap().to_vec());
    }
    Err(read_json(response, &format!("GET {url}")).await)
}

/// A `multipart/form-data` body of (filename, content) parts.
fn multipart(boundary: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

async fn upload(
    cp: &TestCp,
    auth: &Auth,
    id: &str,
    dir: &str,
    files: &[(&str, &[u8])],
) -> (StatusCode, Value) {
    let boundary = "wrenn-test-boundary-7d1f";
    let path = format!("/v1/sandboxes/{id}/files?path={}", encode(dir));
    let response = cp
        .request(Method::POST, &path, auth)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart(boundary, files))
        .send()
        .await
        .unwrap();
    read_json(response, &format!("POST {path}")).await
}

#[tokio::test]
async fn files_round_trip_limits_paths_and_isolation() {
    let cp = TestCp::start_with_agent_config(|config| config.upload_limit = UPLOAD_LIMIT).await;
    let ann = cp.signup("ann@example.com").await;
    let key = Auth::Key(cp.api_key(&ann).await);
    let (status, sandbox) = cp
        .post("/v1/sandboxes", &key, json!({"template": "minimal"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sandbox}");
    let id = sandbox["id"].as_str().unwrap().to_owned();
    let files = format!("/v1/sandboxes/{id}/files");

    // A 5 MiB random file goes up streamed (parents created) and comes back identical.
    let data = random_bytes(5 << 20);
    let (status, entry) = put_file(
        &cp,
        &key,
        &id,
        "path=/root/data/blob.bin",
        data.clone().into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_eq!(entry["path"], "/root/data/blob.bin");
    assert_eq!(entry["type"], "file");
    assert_eq!(entry["size"], 5 << 20);
    let back = download(&cp, &key, &id, "/root/data/blob.bin")
        .await
        .expect("download the upload");
    assert_eq!(back.len(), data.len());
    assert_eq!(
        Sha256::digest(&back),
        Sha256::digest(&data),
        "the file comes back unchanged"
    );

    // Mode and a relative path (from /root); an empty file downloads as empty.
    let (status, entry) = put_file(
        &cp,
        &key,
        &id,
        "path=run.sh&mode=755",
        "#!/bin/sh\necho ran\n".into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_eq!(
        (entry["path"].as_str(), entry["mode"].as_u64()),
        (Some("/root/run.sh"), Some(0o755))
    );
    let (status, entry) = put_file(&cp, &key, &id, "path=/tmp/empty", Vec::new().into()).await;
    assert_eq!(
        (status, entry["size"].as_u64()),
        (StatusCode::OK, Some(0)),
        "{entry}"
    );
    assert_eq!(download(&cp, &key, &id, "/tmp/empty").await.unwrap(), b"");

    // Multipart: two files into one directory, one of them past the JSON body limit.
    let second = random_bytes(2 << 20);
    let (status, result) = upload(
        &cp,
        &key,
        &id,
        "/tmp/up",
        &[("a.txt", b"alpha\n"), ("b.bin", &second)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let paths: Vec<&str> = result["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/tmp/up/a.txt", "/tmp/up/b.bin"]);
    assert_eq!(
        download(&cp, &key, &id, "/tmp/up/a.txt").await.unwrap(),
        b"alpha\n"
    );
    assert_eq!(
        download(&cp, &key, &id, "/tmp/up/b.bin").await.unwrap(),
        second
    );
    for bad in ["../evil", "..", "a/b"] {
        let (status, body) = upload(&cp, &key, &id, "/tmp/up", &[(bad, b"x")]).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "file name {bad}: {body}"
        );
    }
    let (status, body) = upload(&cp, &key, &id, "/tmp/up", &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no files: {body}");
    let response = cp
        .request(Method::POST, &format!("{files}?path=/tmp"), &key)
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, body) = read_json(response, "upload without multipart").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");

    // stat, list, mkdir, move, remove.
    let (status, entry) = cp
        .get(&format!("{files}/stat?path=/tmp/up/a.txt"), &key)
        .await;
    assert_eq!(
        (status, entry["size"].as_u64()),
        (StatusCode::OK, Some(6)),
        "{entry}"
    );
    let (status, entry) = cp
        .post(
            &format!("{files}/mkdir"),
            &key,
            json!({"path": "/tmp/tree/sub/leaf"}),
        )
        .await;
    assert_eq!(
        (status, entry["type"].as_str()),
        (StatusCode::CREATED, Some("dir")),
        "{entry}"
    );
    let (status, list) = cp.get(&format!("{files}/list?path=/tmp/tree"), &key).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names = |list: &Value| -> Vec<String> {
        list["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&list), ["/tmp/tree/sub"]);
    let (_, deep) = cp
        .get(&format!("{files}/list?path=/tmp/tree&depth=2"), &key)
        .await;
    assert_eq!(names(&deep), ["/tmp/tree/sub", "/tmp/tree/sub/leaf"]);
    let (status, moved) = cp
        .post(
            &format!("{files}/move"),
            &key,
            json!({"source": "/tmp/up/a.txt", "destination": "/tmp/tree/a.txt"}),
        )
        .await;
    assert_eq!(
        (status, moved["path"].as_str()),
        (StatusCode::OK, Some("/tmp/tree/a.txt")),
        "{moved}"
    );
    let (status, _) = cp
        .get(&format!("{files}/stat?path=/tmp/up/a.txt"), &key)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the source is gone after a move"
    );
    let (status, body) = cp.delete(&format!("{files}?path=/tmp/tree"), &key).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = cp
        .get(&format!("{files}/stat?path=/tmp/tree/a.txt"), &key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = cp.delete(&format!("{files}?path=/tmp/tree"), &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "removing twice: {body}");

    // Missing files are JSON 404s, also for downloads.
    let (status, body) = download(&cp, &key, &id, "/no/such/file").await.unwrap_err();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    // Bad paths and parameters are 4xx JSON errors, never 5xx.
    let long = "a".repeat(5000);
    let cases: Vec<(Method, String, StatusCode)> = vec![
        (
            Method::GET,
            format!("{files}?path=../../etc/passwd"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            format!("{files}?path=/tmp/%00x"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            format!("{files}?path="),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            format!("{files}?path={long}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            format!("{files}/stat?path=/root/../../etc/shadow"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            format!("{files}/list?path=..%2F.."),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::DELETE,
            format!("{files}?path=/tmp/%00"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            format!("{files}?path=../../etc/passwd"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (Method::GET, files.clone(), StatusCode::BAD_REQUEST),
        (
            Method::GET,
            format!("{files}/stat?path=/tmp&color=red"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("{files}/list?path=/tmp&depth=0"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            format!("{files}/list?path=/tmp&depth=deep"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            format!("{files}?path=/tmp/m&mode=999"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("{files}/list?path=/tmp/empty"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (method, path, expected) in cases {
        let response = cp
            .request(method.clone(), &path, &key)
            .body("x")
            .send()
            .await
            .unwrap();
        let (status, body) = read_json(response, &format!("{method} {path}")).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_error_shape(&body, &path);
    }
    let (status, body) = download(&cp, &key, &id, "/tmp").await.unwrap_err();
    assert!(
        status.is_client_error(),
        "downloading a directory: {status} {body}"
    );
    for (what, request) in [
        ("mkdir", json!({"path": "/tmp/x/../y"})),
        ("mkdir", json!({"path": "/tmp/x", "colour": "red"})),
        (
            "move",
            json!({"source": "/tmp/empty", "destination": "../../etc/x"}),
        ),
    ] {
        let (status, body) = cp.post(&format!("{files}/{what}"), &key, request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
    }

    // The upload limit: refused up front by Content-Length, and midway when streamed.
    let big = random_bytes(UPLOAD_LIMIT as usize + (1 << 20));
    let (status, body) = put_file(&cp, &key, &id, "path=/tmp/big", big.clone().into()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(256 << 10).map(|c| Ok(c.to_vec())).collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, body) = put_file(&cp, &key, &id, "path=/tmp/big", streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, body) = cp.get(&format!("{files}/stat?path=/tmp/big"), &key).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused upload leaves no file: {body}"
    );

    // Another team sees none of it.
    let bob = cp.signup("bob@example.com").await;
    let bob_key = Auth::Key(cp.api_key(&bob).await);
    for (method, path) in [
        (Method::GET, format!("{files}?path=/root/run.sh")),
        (Method::PUT, format!("{files}?path=/tmp/bob")),
        (Method::DELETE, format!("{files}?path=/root/run.sh")),
        (Method::GET, format!("{files}/stat?path=/root/run.sh")),
        (Method::GET, format!("{files}/list?path=/root")),
        (Method::GET, format!("/v1/sandboxes/{id}/processes")),
        (Method::DELETE, format!("/v1/sandboxes/{id}/processes/1")),
        (Method::GET, format!("/v1/sandboxes/{id}/metrics")),
    ] {
        let response = cp
            .request(method.clone(), &path, &bob_key)
            .body("x")
            .send()
            .await
            .unwrap();
        let (status, body) = read_json(response, &format!("{method} {path}")).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "bob: {method} {path}: {body}"
        );
    }
    let (status, body) = cp
        .post(
            &format!("{files}/mkdir"),
            &bob_key,
            json!({"path": "/tmp/bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = cp.get(&format!("{files}/stat?path=/tmp/bob"), &key).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "bob's writes never reached the sandbox"
    );

    // Writes are audited, reads are not.
    let actions = common::audit_actions(&cp, &ann.auth(), &id).await;
    for expected in [
        "file_write",
        "file_upload",
        "file_mkdir",
        "file_move",
        "file_remove",
    ] {
        assert!(
            actions.contains(&(expected.into(), "success".into())),
            "{expected} in {actions:?}"
        );
    }
    assert!(
        actions.contains(&("file_write".into(), "failure".into())),
        "refused uploads are logged: {actions:?}"
    );
    assert!(!actions.iter().any(|(action, _)| action.contains("stat")
        || action.contains("read")
        || action.contains("list")));

    tokio::time::timeout(
        Duration::from_secs(120),
        cp.delete(&format!("/v1/sandboxes/{id}"), &key),
    )
    .await
    .expect("destroy the sandbox");
    cp.shutdown().await;
}
