//! The sandbox WebSockets: exec streams, terminals, re-attaching to processes and file
//! watches. Every frame is JSON text. Authentication, the sandbox check and parameter checks
//! happen before the upgrade, so those failures are ordinary JSON HTTP errors. The server
//! pings every socket (`keepalive.rs`).

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use base64::Engine;
use futures::stream::SplitStream;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wrenn_agent_api::envd;
use wrenn_api::{ErrorBody, ExecRequest, FileEvent, StreamInput, StreamOutput};

use crate::app::caller::Caller;
use crate::app::files;
use crate::app::process::{
    self, ProcessControl, ProcessStream, PtyRequest, Selector, StreamTarget, SIGKILL,
};
use crate::error::{ApiError, ApiResult};
use crate::http::extract::{ApiPath, QueryPairs};
use crate::http::keepalive::{Beat, Heard, Keepalive};
use crate::state::AppState;

/// Largest frame a client may send (stdin chunks included).
const MAX_FRAME_BYTES: usize = 1 << 20;
/// How long an exec stream waits for its `ExecRequest`.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing a socket whose client left may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sandbox_exec_stream))
        .routes(routes!(sandbox_pty))
        .routes(routes!(process_stream))
        .routes(routes!(file_watch))
}

fn upgrade(ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> ApiResult<WebSocketUpgrade> {
    ws.map(|ws| ws.max_message_size(MAX_FRAME_BYTES))
        .map_err(|rejection| {
            ApiError::BadRequest(format!(
                "this route takes a WebSocket upgrade: {}",
                rejection.body_text()
            ))
        })
}

/// Sends one JSON text frame.
async fn send_json<S>(sink: &mut S, frame: &impl Serialize) -> Result<(), axum::Error>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let text = serde_json::to_string(frame).expect("stream frames always serialize");
    sink.send(Message::Text(text.into())).await
}

async fn close<S>(sink: &mut S, code: u16, reason: &str)
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}

/// Sends an `error` frame, then closes.
async fn fail<S>(sink: &mut S, error: ApiError)
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    if let ApiError::Internal(detail) = &error {
        tracing::error!(error = %detail, "stream failed");
    }
    let frame = StreamOutput::Error {
        code: error.code().into(),
        message: error.public_message(),
    };
    let _ = send_json(sink, &frame).await;
    let code = match error {
        ApiError::Internal(_) | ApiError::Unavailable(_) => close_code::ERROR,
        _ => close_code::POLICY,
    };
    close(sink, code, "").await;
}

/// What becomes of a process whose client goes away before it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDisconnect {
    /// Foreground: the process belongs to the connection.
    Kill,
    /// Background: it keeps running and can be re-attached.
    Leave,
}

/// What the client side of a process stream reports to the pump.
enum Notice {
    /// A frame could not be applied; the stream goes on.
    Rejected(ApiError),
    /// The client closed the connection or it broke.
    Gone,
}

/// Aborts the task when dropped, so a pump never leaves its reader behind.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn output_frame(event: envd::ProcessEvent) -> Option<StreamOutput> {
    use envd::process_event::Event;
    let b64 = base64::engine::general_purpose::STANDARD;
    Some(match event.event? {
        Event::Started(_) => return None,
        Event::Stdout(data) | Event::Pty(data) => StreamOutput::Stdout {
            data: b64.encode(data),
        },
        Event::Stderr(data) => StreamOutput::Stderr {
            data: b64.encode(data),
        },
        Event::Exited(exit) => StreamOutput::Exit {
            exit_code: exit.exit_code,
            signal: (exit.signal != 0).then_some(exit.signal),
            timed_out: exit.timed_out,
            duration_ms: exit.duration_ms,
            error: (!exit.error.is_empty()).then_some(exit.error),
        },
    })
}

async fn input_apply(control: &ProcessControl, input: StreamInput) -> ApiResult<()> {
    match input {
        StreamInput::Stdin { data } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| ApiError::invalid("stdin: data must be base64"))?;
            control.input(bytes, false).await
        }
        StreamInput::CloseStdin => control.input(Vec::new(), true).await,
        StreamInput::Signal { signal } => control.signal(signal).await,
        StreamInput::Resize { cols, rows } => control.resize(cols, rows).await,
    }
}

/// Applies the client's frames in order. Runs apart from the output so that a process blocked
/// on a full stdout never stalls behind its own input.
async fn input_read(
    mut frames: SplitStream<WebSocket>,
    control: ProcessControl,
    notices: mpsc::Sender<Notice>,
    heard: Heard,
) {
    while let Some(Ok(frame)) = frames.next().await {
        heard.now();
        let applied = match frame {
            Message::Text(text) => match serde_json::from_str::<StreamInput>(&text) {
                Ok(input) => input_apply(&control, input).await,
                Err(error) => Err(ApiError::invalid(format!(
                    "not a StreamInput frame: {error}"
                ))),
            },
            Message::Binary(_) => Err(ApiError::BadRequest(
                "send StreamInput frames as JSON text".into(),
            )),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if let Err(error) = applied {
            if notices.send(Notice::Rejected(error)).await.is_err() {
                return;
            }
        }
    }
    let _ = notices.send(Notice::Gone).await;
}

/// Lets the client's last frames and its answer to our Close be read before the socket goes.
/// Closing a TCP socket with unread data in it makes the kernel reset the connection, and a
/// reset can cost the client frames still on their way to it: the exit code among them (seen
/// as "Connection reset by peer" in a CLI test whose input raced the process's exit).
async fn finish_close(reader: &mut AbortOnDrop) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut reader.0).await;
}

/// How a process stream ended.
enum Ending {
    Exited,
    ClientGone,
    Failed(ApiError),
}

/// Forwards a process's events to the socket and the client's frames to the process until the
/// process exits, the stream fails or the client leaves.
async fn pump(
    socket: WebSocket,
    mut process: ProcessStream,
    on_disconnect: OnDisconnect,
    mut keepalive: Keepalive,
) {
    let (mut sink, frames) = socket.split();
    let (notify, mut notices) = mpsc::channel(16);
    let mut reader = AbortOnDrop(tokio::spawn(input_read(
        frames,
        process.control.clone(),
        notify,
        keepalive.heard(),
    )));
    let started = StreamOutput::Started {
        pid: process.pid,
        tag: process.tag.clone(),
    };
    let ending = if send_json(&mut sink, &started).await.is_err() {
        Ending::ClientGone
    } else {
        loop {
            tokio::select! {
                event = process.events.message() => match event {
                    Ok(Some(event)) => {
                        let Some(frame) = output_frame(event) else { continue };
                        let exited = matches!(frame, StreamOutput::Exit { .. });
                        if send_json(&mut sink, &frame).await.is_err() {
                            break Ending::ClientGone;
                        }
                        if exited {
                            break Ending::Exited;
                        }
                    }
                    Ok(None) => {
                        break Ending::Failed(ApiError::Unavailable(
                            "the process stream ended before the process exited".into(),
                        ))
                    }
                    Err(status) => break Ending::Failed(status.into()),
                },
                notice = notices.recv() => match notice {
                    Some(Notice::Rejected(error)) => {
                        let frame = StreamOutput::InputError {
                            code: error.code().into(),
                            message: error.public_message(),
                        };
                        if send_json(&mut sink, &frame).await.is_err() {
                            break Ending::ClientGone;
                        }
                    }
                    Some(Notice::Gone) | None => break Ending::ClientGone,
                },
                beat = keepalive.tick() => {
                    if !keep_alive(&mut sink, beat).await {
                        break Ending::ClientGone;
                    }
                }
            }
        }
    };
    // Stop forwarding: dropping the agent stream leaves the process to envd.
    drop(process.events);
    match ending {
        Ending::Exited => {
            close(&mut sink, close_code::NORMAL, "the process exited").await;
            finish_close(&mut reader).await;
            return;
        }
        Ending::Failed(error) => {
            fail(&mut sink, error).await;
            finish_close(&mut reader).await;
        }
        Ending::ClientGone => {
            // Completes the close handshake if the client started one; a dead peer gets no wait.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        }
    }
    if on_disconnect == OnDisconnect::Kill {
        if let Err(error) = process.control.signal(SIGKILL).await {
            tracing::debug!(pid = process.pid, error = %error, "kill the process of a closed stream");
        }
    }
}

/// Waits for the exec stream's first frame. `None`: the client left first.
async fn exec_request(socket: &mut WebSocket) -> ApiResult<Option<ExecRequest>> {
    let deadline = tokio::time::Instant::now() + FIRST_FRAME_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| {
                ApiError::BadRequest(format!(
                    "send an ExecRequest as the first frame within {} s",
                    FIRST_FRAME_TIMEOUT.as_secs()
                ))
            })?;
        match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map(Some).map_err(|error| {
                    let message = format!("the first frame must be an ExecRequest: {error}");
                    if error.is_data() {
                        ApiError::Invalid(message)
                    } else {
                        ApiError::BadRequest(message)
                    }
                })
            }
            Some(Ok(Message::Binary(_))) => {
                return Err(ApiError::BadRequest(
                    "send the ExecRequest as a JSON text frame".into(),
                ))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        }
    }
}

async fn exec_session(
    mut socket: WebSocket,
    state: AppState,
    caller: Caller,
    target: StreamTarget,
) {
    let request = match exec_request(&mut socket).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(error) => return fail(&mut socket, error).await,
    };
    let on_disconnect = if request.background {
        OnDisconnect::Leave
    } else {
        OnDisconnect::Kill
    };
    let started = match process::stream_spec(&request) {
        Ok(spec) => process::process_start(&state, &caller, &target, spec).await,
        Err(error) => Err(error),
    };
    match started {
        Ok(process) => pump(socket, process, on_disconnect, keepalive(&state)).await,
        Err(error) => fail(&mut socket, error).await,
    }
}

fn keepalive(state: &AppState) -> Keepalive {
    Keepalive::new(state.config.ws_ping_interval)
}

/// Acts on a keepalive beat: pings, or reports the client gone (`false`), as when a ping
/// cannot be sent.
async fn keep_alive<S>(sink: &mut S, beat: Beat) -> bool
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    match beat {
        Beat::Ping => sink.send(Message::Ping(Default::default())).await.is_ok(),
        Beat::Silent => false,
    }
}

/// Runs a command with its output streamed (WebSocket).
///
/// Protocol (JSON text frames):
/// 1. The client sends one `ExecRequest` (as for `POST /exec`; `stdin: true` keeps stdin open,
///    `timeout_sec` defaults to no limit, `background` and `tag` are allowed).
/// 2. The server sends `{"type":"started","pid":…,"tag":…}`, then `stdout` / `stderr` frames
///    (`data` is base64) as output arrives, and finally
///    `{"type":"exit","exit_code":…,"signal":…,"timed_out":…,"duration_ms":…,"error":…}`,
///    then closes (1000).
/// 3. Meanwhile the client may send `StreamInput` frames: `{"type":"stdin","data":"<base64>"}`,
///    `{"type":"close_stdin"}`, `{"type":"signal","signal":15}`,
///    `{"type":"resize","cols":…,"rows":…}`. A frame that cannot be applied (bad JSON, stdin not
///    open, process gone) is answered with `{"type":"input_error","code":…,"message":…}`; the
///    stream goes on.
///
/// A failure (bad request, the process could not start, the host stream broke) is one
/// `{"type":"error","code":…,"message":…}` frame, then close. Closing the socket stops the
/// forwarding; a foreground process is then killed (SIGKILL to its group), a `background` one
/// keeps running and can be re-attached at `/processes/{selector}/stream`. Client frames may
/// be up to 1 MiB. The server pings every 20 s (`--ws-ping-secs`), which WebSocket clients
/// answer by themselves; a client silent for three intervals counts as gone.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/exec/stream", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 101, body = StreamOutput, description = "Switched to WebSocket; the server sends StreamOutput frames"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket request"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The sandbox is not running")))]
async fn sandbox_exec_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    query.only(&[])?;
    let ws = upgrade(ws)?;
    let target = process::stream_target(&state, &caller, &id, "exec in").await?;
    Ok(ws.on_upgrade(move |socket| exec_session(socket, state, caller, target)))
}

/// A query parameter that must fit a u32.
fn dimension(query: &QueryPairs, name: &str) -> ApiResult<Option<u32>> {
    query
        .int(name)?
        .map(|value| {
            u32::try_from(value)
                .map_err(|_| ApiError::invalid(format!("{name}: must be positive, got {value}")))
        })
        .transpose()
}

/// Opens a terminal (WebSocket): `cmd` (a login shell, `/bin/bash -l`, by default) on a
/// pseudo-terminal of `cols`×`rows` (80×24 by default).
///
/// Protocol (JSON text frames): the server sends `{"type":"started","pid":…}`, then the
/// terminal's output as `{"type":"stdout","data":"<base64>"}` frames, and
/// `{"type":"exit",…}` when the program ends, then closes (1000). The client sends keystrokes
/// as `{"type":"stdin","data":"<base64>"}`, window changes as
/// `{"type":"resize","cols":…,"rows":…}`, and may send `{"type":"signal","signal":2}` or
/// `{"type":"close_stdin"}`. Frames that cannot be applied are answered with `input_error`
/// frames; failures with one `error` frame, then close. Closing the socket kills the program
/// (SIGKILL to its process group).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/pty", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("cols" = Option<u32>, Query, description = "Terminal width, 1 to 4096 (default 80)"),
        ("rows" = Option<u32>, Query, description = "Terminal height, 1 to 4096 (default 24)"),
        ("cmd" = Option<String>, Query, description = "Program to run (no arguments); default `/bin/bash -l`"),
        ("cwd" = Option<String>, Query, description = "Working directory; default the user's home"),
        ("user" = Option<String>, Query, description = "Guest user; default root")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 101, body = StreamOutput, description = "Switched to WebSocket; the server sends StreamOutput frames"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The sandbox is not running"), (status = 422, body = ErrorBody)))]
async fn sandbox_pty(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    query.only(&["cols", "rows", "cmd", "cwd", "user"])?;
    let ws = upgrade(ws)?;
    let request = PtyRequest {
        cols: dimension(&query, "cols")?,
        rows: dimension(&query, "rows")?,
        cmd: query.one("cmd").map(str::to_owned),
        cwd: query.one("cwd").map(str::to_owned),
        user: query.one("user").map(str::to_owned),
    };
    let spec = process::pty_spec(&request)?;
    let target = process::stream_target(&state, &caller, &id, "open a terminal in").await?;
    Ok(ws.on_upgrade(move |mut socket| async move {
        match process::process_start(&state, &caller, &target, spec).await {
            Ok(process) => pump(socket, process, OnDisconnect::Kill, keepalive(&state)).await,
            Err(error) => fail(&mut socket, error).await,
        }
    }))
}

/// Re-attaches to a process (WebSocket): replays its buffered output (up to 1 MiB), then
/// streams live output until it exits.
///
/// Protocol: as the exec stream after its first frame. The server sends `started`, `stdout` /
/// `stderr` (base64), and `exit`, then closes (1000); a process that already exited replays
/// what is buffered and its `exit`. The client may send `StreamInput` frames (`stdin`,
/// `close_stdin`, `signal`, `resize`); ones that cannot be applied get `input_error` frames.
/// Closing the socket leaves the process running.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{selector}/stream", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("selector" = String, Path, description = "A pid (all digits) or a tag")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 101, body = StreamOutput, description = "Switched to WebSocket; the server sends StreamOutput frames"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "No such sandbox or process"),
        (status = 409, body = ErrorBody, description = "The sandbox is not running")))]
async fn process_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, selector)): ApiPath<(String, String)>,
    query: QueryPairs,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    query.only(&[])?;
    let ws = upgrade(ws)?;
    let selector = Selector::parse(&selector)?;
    let process = process::process_attach(&state, &caller, &id, &selector).await?;
    let keepalive = keepalive(&state);
    Ok(ws.on_upgrade(move |socket| pump(socket, process, OnDisconnect::Leave, keepalive)))
}

fn flag(query: &QueryPairs, name: &str) -> ApiResult<bool> {
    match query.one(name) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{name}: expected true or false, got {other:?}"
        ))),
    }
}

/// Forwards watch events until the watch ends or the client leaves. Client frames are ignored.
async fn watch_pump<E>(socket: WebSocket, mut events: E, mut keepalive: Keepalive)
where
    E: Stream<Item = ApiResult<FileEvent>> + Unpin,
{
    let (mut sink, mut frames) = socket.split();
    let heard = keepalive.heard();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => {
                    if send_json(&mut sink, &event).await.is_err() {
                        return;
                    }
                }
                Some(Err(error)) => return fail(&mut sink, error).await,
                None => return close(&mut sink, close_code::NORMAL, "the watch ended").await,
            },
            frame = frames.next() => match frame {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => heard.now(),
            },
            beat = keepalive.tick() => {
                if !keep_alive(&mut sink, beat).await {
                    return;
                }
            }
        }
    }
}

/// Watches a directory (WebSocket): the server sends one `FileEvent` frame per change,
/// `{"kind":"create"|"write"|"remove"|"rename"|"chmod","path":…,"from_path":…}`, until the
/// client closes. A failure is one `{"type":"error","code":…,"message":…}` frame, then close.
/// The client sends nothing (frames are ignored). A missing directory is a 404 before the
/// upgrade.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/watch", tag = "files",
    params(("id" = String, Path, description = "Sandbox id (`sb-…`)"),
        ("path" = String, Query, description = "Directory to watch"),
        ("recursive" = Option<bool>, Query, description = "Include subdirectories (default false)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 101, body = FileEvent, description = "Switched to WebSocket; the server sends FileEvent frames"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The sandbox is not running"), (status = 422, body = ErrorBody)))]
async fn file_watch(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    query: QueryPairs,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    query.only(&["path", "recursive"])?;
    let ws = upgrade(ws)?;
    let path = query
        .one("path")
        .ok_or_else(|| ApiError::BadRequest("path: query parameter required".into()))?;
    let recursive = flag(&query, "recursive")?;
    let events = files::file_watch(&state, &caller, &id, path, recursive).await?;
    let keepalive = keepalive(&state);
    Ok(ws.on_upgrade(move |socket| watch_pump(socket, events, keepalive)))
}
