//! The sandbox WebSockets and process routes through the REST API, on a real host agent
//! booting a real VM (QEMU/TCG): exec streams with stdin, terminals, background processes
//! (list, re-attach, kill), file watches and metrics. One sandbox serves every check.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{read_json, Auth, TestCp};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for one frame: the guest runs under TCG on shared cores.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(frame: &Value) -> String {
    let data = base64::engine::general_purpose::STANDARD
        .decode(frame["data"].as_str().unwrap())
        .unwrap();
    String::from_utf8_lossy(&data).into_owned()
}

/// A client WebSocket speaking JSON text frames.
struct Ws(WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Ws {
    /// Opens `path` with the API key; a refused upgrade returns its status and JSON body.
    async fn connect(
        cp: &TestCp,
        path: &str,
        key: Option<&str>,
    ) -> Result<Ws, (StatusCode, Value)> {
        let url = format!("{}{path}", cp.base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        if let Some(key) = key {
            request
                .headers_mut()
                .insert("X-API-Key", key.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => Ok(Ws(stream)),
            Err(tungstenite::Error::Http(response)) => {
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned());
                assert_eq!(
                    content_type.as_deref(),
                    Some("application/json"),
                    "{path}: {status}"
                );
                let body =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                common::assert_error_shape(&body, path);
                Err((status, body))
            }
            Err(error) => panic!("connect {path}: {error}"),
        }
    }

    async fn open(cp: &TestCp, path: &str, key: &str) -> Ws {
        match Ws::connect(cp, path, Some(key)).await {
            Ok(ws) => ws,
            Err((status, body)) => panic!("open {path}: {status} {body}"),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.0.send(Message::text(frame.to_string())).await.unwrap();
    }

    /// The next JSON frame; `None` once the server closed.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.0.next())
                .await
                .expect("a frame within the timeout");
            match message {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Frames until the server closes.
    async fn rest(&mut self) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            frames.push(frame);
        }
        frames
    }

    /// Reads `stdout` frames until their text contains `needle`; returns all text read.
    async fn stdout_until(&mut self, needle: &str) -> String {
        let mut text = String::new();
        while !text.contains(needle) {
            let frame = self
                .next()
                .await
                .unwrap_or_else(|| panic!("closed before {needle:?}; got {text:?}"));
            match frame["type"].as_str().unwrap() {
                "stdout" => text.push_str(&unb64(&frame)),
                "stderr" => {}
                other => panic!(
                    "unexpected {other} frame while waiting for {needle:?}: {frame}; got {text:?}"
                ),
            }
        }
        text
    }

    async fn close(mut self) {
        let _ = self.0.close(None).await;
    }
}

/// Joined stdout, joined stderr and the exit frame of a finished stream.
fn outputs(frames: &[Value]) -> (String, String, Value) {
    let joined = |kind: &str| {
        frames
            .iter()
            .filter(|f| f["type"] == kind)
            .map(unb64)
            .collect::<String>()
    };
    let exit = frames
        .iter()
        .find(|f| f["type"] == "exit")
        .cloned()
        .unwrap_or(Value::Null);
    (joined("stdout"), joined("stderr"), exit)
}

async fn processes(cp: &TestCp, auth: &Auth, id: &str) -> Vec<Value> {
    let (status, list) = cp.get(&format!("/v1/sandboxes/{id}/processes"), auth).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["processes"].as_array().unwrap().clone()
}

/// Waits until the process tagged `tag` is listed with `running`.
async fn wait_running(cp: &TestCp, auth: &Auth, id: &str, tag: &str, running: bool) -> Value {
    let path = format!("/v1/sandboxes/{id}/processes");
    let list = cp
        .wait_for(&path, auth, FRAME_TIMEOUT, |list| {
            list["processes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["tag"] == tag && p["running"] == running)
        })
        .await;
    list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tag"] == tag && p["running"] == running)
        .unwrap()
        .clone()
}

/// A control plane with an agent, a signed-up user, their raw API key, and a sandbox of theirs.
async fn with_sandbox() -> (TestCp, common::Person, String, String) {
    with_sandbox_on(TestCp::start_with_agent().await).await
}

async fn with_sandbox_on(cp: TestCp) -> (TestCp, common::Person, String, String) {
    let ann = cp.signup("ann@example.com").await;
    let raw_key = cp.api_key(&ann).await;
    let (status, sandbox) = cp
        .post(
            "/v1/sandboxes",
            &Auth::Key(raw_key.clone()),
            json!({"template": "minimal"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sandbox}");
    let id = sandbox["id"].as_str().unwrap().to_owned();
    (cp, ann, raw_key, id)
}

#[tokio::test]
async fn exec_streams_terminals_processes_watches_and_metrics() {
    let (cp, ann, raw_key, id) = with_sandbox().await;
    let key = Auth::Key(raw_key.clone());
    let exec_stream = format!("/v1/sandboxes/{id}/exec/stream");

    // Exec stream: started, stdout and stderr, exit, then close.
    let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
    ws.send(json!({"cmd": "sh", "args": ["-c", "echo out; echo err >&2; exit 3"]}))
        .await;
    let started = ws.next().await.unwrap();
    assert_eq!(started["type"], "started", "{started}");
    assert!(started["pid"].as_u64().unwrap() > 0);
    let frames = ws.rest().await;
    let (stdout, stderr, exit) = outputs(&frames);
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("out\n", "err\n"),
        "{frames:?}"
    );
    assert_eq!(exit["exit_code"], 3, "{frames:?}");
    assert_eq!(
        frames.last().unwrap()["type"],
        "exit",
        "exit is the last frame"
    );

    // stdin: cat echoes what it is sent and exits when stdin closes.
    let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
    ws.send(json!({"cmd": "cat", "stdin": true})).await;
    assert_eq!(ws.next().await.unwrap()["type"], "started");
    ws.send(json!({"type": "stdin", "data": b64(b"hello wrenn\n")}))
        .await;
    assert_eq!(ws.stdout_until("hello wrenn\n").await, "hello wrenn\n");
    ws.send(json!({"type": "close_stdin"})).await;
    let (_, _, exit) = outputs(&ws.rest().await);
    assert_eq!(exit["exit_code"], 0, "cat ends with its input");

    // Frames that cannot be applied are answered and the stream goes on.
    let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
    ws.send(json!({"cmd": "sh", "args": ["-c", "sleep 2; echo done"]}))
        .await;
    assert_eq!(ws.next().await.unwrap()["type"], "started");
    ws.send(json!({"type": "stdin", "data": b64(b"x")})).await;
    let rejected = ws.next().await.unwrap();
    assert_eq!(
        (rejected["type"].as_str(), rejected["code"].as_str()),
        (Some("input_error"), Some("conflict")),
        "stdin is not open: {rejected}"
    );
    ws.send(json!({"type": "dance"})).await;
    let rejected = ws.next().await.unwrap();
    assert_eq!(
        (rejected["type"].as_str(), rejected["code"].as_str()),
        (Some("input_error"), Some("invalid_request")),
        "{rejected}"
    );
    let (stdout, _, exit) = outputs(&ws.rest().await);
    assert_eq!(
        (stdout.as_str(), exit["exit_code"].as_i64()),
        ("done\n", Some(0))
    );

    // A bad first frame is one error frame, then close.
    for (request, code) in [
        (json!({"cmd": ""}), "invalid_request"),
        (json!({"cmd": "true", "colour": "red"}), "invalid_request"),
        (json!({"cmd": "/no/such/binary"}), "invalid_request"),
    ] {
        let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
        ws.send(request.clone()).await;
        let frames = ws.rest().await;
        assert_eq!(frames.len(), 1, "{request}: {frames:?}");
        assert_eq!(
            (frames[0]["type"].as_str(), frames[0]["code"].as_str()),
            (Some("error"), Some(code)),
            "{request}: {frames:?}"
        );
    }
    let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
    ws.0.send(Message::text("{not json")).await.unwrap();
    let frames = ws.rest().await;
    assert_eq!(frames[0]["code"], "bad_request", "{frames:?}");

    // Terminal: a login shell on a PTY that runs what is typed, resizes, and exits.
    let mut pty = Ws::open(
        &cp,
        &format!("/v1/sandboxes/{id}/pty?cols=100&rows=30"),
        &raw_key,
    )
    .await;
    assert_eq!(pty.next().await.unwrap()["type"], "started");
    pty.send(json!({"type": "resize", "cols": 120, "rows": 40}))
        .await;
    pty.send(json!({"type": "stdin", "data": b64(b"echo hi-$((6*7)); stty size\n")}))
        .await;
    let text = pty.stdout_until("40 120").await;
    assert!(
        text.contains("hi-42"),
        "the terminal ran the command: {text:?}"
    );
    pty.send(json!({"type": "stdin", "data": b64(b"exit\n")}))
        .await;
    let frames = pty.rest().await;
    assert!(
        frames.iter().all(|f| f["type"] != "input_error"),
        "resize was accepted: {frames:?}"
    );
    assert_eq!(outputs(&frames).2["exit_code"], 0, "{frames:?}");

    // Background process: listed, re-attached (replay, then live), killed.
    let (status, started) = cp
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            &key,
            json!({"cmd": "sh", "args": ["-c", "echo started-bg; while true; do sleep 1; done"], "background": true, "tag": "sleeper"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let pid = started["pid"].as_u64().unwrap();
    let listed = wait_running(&cp, &key, &id, "sleeper", true).await;
    assert_eq!(
        (listed["pid"].as_u64(), listed["cmd"].as_str()),
        (Some(pid), Some("sh")),
        "{listed}"
    );
    let mut attached = Ws::open(
        &cp,
        &format!("/v1/sandboxes/{id}/processes/sleeper/stream"),
        &raw_key,
    )
    .await;
    let first = attached.next().await.unwrap();
    assert_eq!(
        (first["type"].as_str(), first["pid"].as_u64()),
        (Some("started"), Some(pid)),
        "{first}"
    );
    attached.stdout_until("started-bg\n").await;
    attached.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_running(&cp, &key, &id, "sleeper", true).await;
    let mut attached = Ws::open(
        &cp,
        &format!("/v1/sandboxes/{id}/processes/{pid}/stream"),
        &raw_key,
    )
    .await;
    assert_eq!(attached.next().await.unwrap()["type"], "started");
    let (status, body) = cp
        .delete(
            &format!("/v1/sandboxes/{id}/processes/sleeper?signal=SIGTERM"),
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (stdout, _, exit) = outputs(&attached.rest().await);
    assert_eq!(stdout, "started-bg\n");
    assert_eq!(
        exit["signal"], 15,
        "the attached stream sees the kill: {exit}"
    );
    wait_running(&cp, &key, &id, "sleeper", false).await;
    for (path, expected) in [
        (
            format!("/v1/sandboxes/{id}/processes/sleeper"),
            StatusCode::CONFLICT,
        ),
        (
            format!("/v1/sandboxes/{id}/processes/999999"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/sandboxes/{id}/processes/nobody"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/sandboxes/{id}/processes/{pid}?signal=BOGUS"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/v1/sandboxes/{id}/processes/{pid}?sig=9"),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = cp.delete(&path, &key).await;
        assert_eq!(status, expected, "DELETE {path}: {body}");
    }
    let (status, body) = Ws::connect(
        &cp,
        &format!("/v1/sandboxes/{id}/processes/nobody/stream"),
        Some(&raw_key),
    )
    .await
    .err()
    .expect("no such process");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Closing an exec stream kills a foreground process and leaves a background one running.
    let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
    ws.send(json!({"cmd": "sleep", "args": ["600"], "tag": "foreground"}))
        .await;
    assert_eq!(ws.next().await.unwrap()["type"], "started");
    ws.close().await;
    wait_running(&cp, &key, &id, "foreground", false).await;
    let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
    ws.send(json!({"cmd": "sleep", "args": ["600"], "tag": "kept", "background": true}))
        .await;
    assert_eq!(ws.next().await.unwrap()["type"], "started");
    ws.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        processes(&cp, &key, &id)
            .await
            .iter()
            .any(|p| p["tag"] == "kept" && p["running"] == true),
        "a background process outlives its stream"
    );
    let (status, body) = cp
        .delete(&format!("/v1/sandboxes/{id}/processes/kept?signal=9"), &key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // File watch: a new file in the directory is reported.
    let (status, body) = cp
        .post(
            &format!("/v1/sandboxes/{id}/files/mkdir"),
            &key,
            json!({"path": "/tmp/watched"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut watch = Ws::open(
        &cp,
        &format!("/v1/sandboxes/{id}/files/watch?path=/tmp/watched"),
        &raw_key,
    )
    .await;
    let (status, body) = cp
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            &key,
            json!({"cmd": "touch", "args": ["/tmp/watched/new.txt"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let event = watch.next().await.expect("a watch event");
    assert_eq!(
        (event["kind"].as_str(), event["path"].as_str()),
        (Some("create"), Some("/tmp/watched/new.txt")),
        "{event}"
    );
    watch.close().await;
    let (status, body) = Ws::connect(
        &cp,
        &format!("/v1/sandboxes/{id}/files/watch?path=/no/such/dir"),
        Some(&raw_key),
    )
    .await
    .err()
    .expect("a missing directory is refused");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Metrics: live samples while running; the range is one of a fixed set.
    let metrics = cp
        .wait_for(
            &format!("/v1/sandboxes/{id}/metrics"),
            &key,
            FRAME_TIMEOUT,
            |m| !m["samples"].as_array().unwrap().is_empty(),
        )
        .await;
    assert_eq!(
        (metrics["source"].as_str(), metrics["sandbox_id"].as_str()),
        (Some("live"), Some(id.as_str()))
    );
    assert!(
        metrics["samples"][0]["rss_bytes"].as_u64().unwrap() > 0,
        "{metrics}"
    );
    let (status, metrics) = cp
        .get(&format!("/v1/sandboxes/{id}/metrics?range=1h"), &key)
        .await;
    assert_eq!(
        (status, metrics["source"].as_str()),
        (StatusCode::OK, Some("live")),
        "{metrics}"
    );
    let (status, body) = cp
        .get(&format!("/v1/sandboxes/{id}/metrics?range=2h"), &key)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Refusals before the upgrade are JSON HTTP errors.
    let bob = cp.signup("bob@example.com").await;
    let bob_key = cp.api_key(&bob).await;
    for (path, key, expected) in [
        (
            exec_stream.clone(),
            Some(bob_key.as_str()),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/sandboxes/{id}/pty"),
            Some(bob_key.as_str()),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/sandboxes/{id}/processes/1/stream"),
            Some(bob_key.as_str()),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/sandboxes/{id}/files/watch?path=/tmp"),
            Some(bob_key.as_str()),
            StatusCode::NOT_FOUND,
        ),
        (exec_stream.clone(), None, StatusCode::UNAUTHORIZED),
        (
            format!("/v1/sandboxes/{id}/pty?cols=0"),
            Some(raw_key.as_str()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/v1/sandboxes/{id}/pty?cols=wide"),
            Some(raw_key.as_str()),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/v1/sandboxes/{id}/pty?shell=zsh"),
            Some(raw_key.as_str()),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/v1/sandboxes/{id}/files/watch?path=../x"),
            Some(raw_key.as_str()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, body) = Ws::connect(&cp, &path, key)
            .await
            .err()
            .unwrap_or_else(|| panic!("{path} upgraded"));
        assert_eq!(status, expected, "{path}: {body}");
    }
    let response = cp
        .request(Method::GET, &exec_stream, &key)
        .send()
        .await
        .unwrap();
    let (status, body) = read_json(response, "exec stream without an upgrade").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A paused sandbox: streams and files are refused, metrics come from storage.
    let (status, body) = cp
        .post(&format!("/v1/sandboxes/{id}/pause"), &key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = Ws::connect(&cp, &exec_stream, Some(&raw_key))
        .await
        .err()
        .expect("refused while paused");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = cp.get(&format!("/v1/sandboxes/{id}/processes"), &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = cp
        .get(&format!("/v1/sandboxes/{id}/files/stat?path=/tmp"), &key)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, metrics) = cp.get(&format!("/v1/sandboxes/{id}/metrics"), &key).await;
    assert_eq!(
        (status, metrics["source"].as_str()),
        (StatusCode::OK, Some("stored")),
        "{metrics}"
    );

    // Starts and kills are audited.
    let (_, log) = cp
        .get(
            &format!("/v1/audit-logs?resource_id={id}&action=process_kill,exec&limit=200"),
            &ann.auth(),
        )
        .await;
    let actions: Vec<&str> = log["audit_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"process_kill") && actions.contains(&"exec"),
        "{actions:?}"
    );

    let (status, body) = cp.delete(&format!("/v1/sandboxes/{id}"), &key).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    cp.shutdown().await;
}

/// A process that exits while its client is still sending input: the exit frame arrives every
/// time. The server reads the client's frames to the end of the close handshake; dropping a
/// socket with unread data in it resets the connection, which can cost the client the frames
/// still on their way, the exit among them.
#[tokio::test]
async fn the_exit_frame_survives_input_racing_the_exit() {
    let (cp, _ann, raw_key, id) = with_sandbox().await;
    let exec_stream = format!("/v1/sandboxes/{id}/exec/stream");
    let chunk = b64(&[b'x'; 4096]);
    for round in 0..8 {
        let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
        ws.send(json!({"cmd": "sh", "args": ["-c", "exit 7"], "stdin": true}))
            .await;
        assert_eq!(ws.next().await.unwrap()["type"], "started");
        // Input the process never reads, still arriving as it exits.
        for _ in 0..64 {
            ws.send(json!({"type": "stdin", "data": chunk})).await;
        }
        let frames = ws.rest().await;
        let exit = frames
            .iter()
            .find(|frame| frame["type"] == "exit")
            .unwrap_or_else(|| panic!("round {round}: no exit frame in {frames:?}"));
        assert_eq!(exit["exit_code"], 7, "round {round}: {exit}");
    }
}

/// An idle stream is pinged (so proxies keep it open) and the client's automatic pongs keep it
/// alive; a client that stops answering, as one that vanished without closing, counts as gone
/// after three intervals, and its foreground process is killed.
#[tokio::test]
async fn idle_streams_are_pinged_and_a_silent_client_counts_as_gone() {
    let cp = TestCp::start_with_agent_config(|config| {
        config.ws_ping_interval = Duration::from_millis(300);
    })
    .await;
    let (cp, _ann, raw_key, id) = with_sandbox_on(cp).await;
    let key = Auth::Key(raw_key.clone());
    let exec_stream = format!("/v1/sandboxes/{id}/exec/stream");

    // Silent for 2 s, then one line: pings arrive meanwhile and the stream lives on.
    let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
    ws.send(json!({"cmd": "sh", "args": ["-c", "sleep 2; echo done"]}))
        .await;
    let (mut pings, mut frames) = (0, Vec::new());
    loop {
        let message = tokio::time::timeout(FRAME_TIMEOUT, ws.0.next())
            .await
            .expect("a frame within the timeout");
        match message {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
            _ => break,
        }
    }
    let (stdout, _, exit) = outputs(&frames);
    assert_eq!(stdout, "done\n");
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert!(pings >= 3, "{pings} pings in 2 s at a 300 ms interval");

    // A client that stops reading answers no ping.
    let mut ws = Ws::open(&cp, &exec_stream, &raw_key).await;
    ws.send(json!({"cmd": "sleep", "args": ["600"], "tag": "silent-client"}))
        .await;
    assert_eq!(ws.next().await.unwrap()["type"], "started");
    wait_running(&cp, &key, &id, "silent-client", true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_running(&cp, &key, &id, "silent-client", false).await;
    drop(ws);
}
