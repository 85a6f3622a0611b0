//! Processes in a sandbox: streamed starts (exec streams and terminals), re-attaching,
//! steering (input, signals, terminal size), listing and killing. Starts and kills are
//! audited; input and resizes are not (they would flood the log).

use serde_json::json;
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;
use wrenn_api::{ExecRequest, ProcessInfo, ProcessList};

use crate::app::audit::{self, Target};
use crate::app::caller::Caller;
use crate::app::exec::process_spec;
use crate::app::files::host_call;
use crate::app::hosts::AgentClient;
use crate::app::sandbox::{sandbox_running, time_from_ms};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The signal `DELETE …/processes/{selector}` sends unless told otherwise.
pub const SIGKILL: i32 = 9;
/// Terminal size when the caller gives none.
pub const DEFAULT_PTY_COLS: u32 = 80;
pub const DEFAULT_PTY_ROWS: u32 = 24;
const MAX_PTY_SIDE: u32 = 4096;
/// Shell a terminal runs when the caller names no command.
pub const DEFAULT_PTY_CMD: &str = "/bin/bash";

/// Which process: a pid (all digits) or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Pid(u32),
    Tag(String),
}

impl Selector {
    pub fn parse(text: &str) -> ApiResult<Self> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Selector::Pid)
                .map_err(|_| ApiError::BadRequest(format!("process {text}: not a valid pid")));
        }
        if text.is_empty() || text.len() > 64 || text.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(
                "process: a pid or a tag of 1 to 64 bytes without control characters".into(),
            ));
        }
        Ok(Selector::Tag(text.to_owned()))
    }

    fn wire(&self) -> envd::ProcessSelector {
        use envd::process_selector::Selector as Wire;
        envd::ProcessSelector {
            selector: Some(match self {
                Selector::Pid(pid) => Wire::Pid(*pid),
                Selector::Tag(tag) => Wire::Tag(tag.clone()),
            }),
        }
    }

    fn describe(&self) -> String {
        match self {
            Selector::Pid(pid) => pid.to_string(),
            Selector::Tag(tag) => tag.clone(),
        }
    }
}

/// Signal names callers may use instead of numbers (Linux numbering).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
];

/// A signal as a number (`15`) or a name (`TERM`, `SIGTERM`, any case).
pub fn signal_parse(text: &str) -> ApiResult<i32> {
    if let Ok(number) = text.parse::<i32>() {
        if (1..=64).contains(&number) {
            return Ok(number);
        }
        return Err(ApiError::BadRequest(format!(
            "signal: {number} is not a signal number (1 to 64)"
        )));
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, number)| *number)
        .ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|(name, _)| *name).collect();
            ApiError::BadRequest(format!(
                "signal: {text:?} is neither a number nor one of {}",
                names.join(", ")
            ))
        })
}

/// A running sandbox of the caller's team, checked before a stream is accepted.
#[derive(Debug, Clone)]
pub struct StreamTarget {
    sandbox_id: String,
    client: AgentClient,
}

pub async fn stream_target(
    state: &AppState,
    caller: &Caller,
    id: &str,
    doing: &str,
) -> ApiResult<StreamTarget> {
    let (row, host) = sandbox_running(state, caller, id, doing).await?;
    Ok(StreamTarget {
        sandbox_id: row.id,
        client: host.client,
    })
}

/// Steers one process: input, signals, terminal size.
#[derive(Debug, Clone)]
pub struct ProcessControl {
    client: AgentClient,
    sandbox_id: String,
    pid: u32,
}

impl ProcessControl {
    fn selector(&self) -> Option<envd::ProcessSelector> {
        Some(Selector::Pid(self.pid).wire())
    }

    /// Writes to stdin (or the terminal); `close` closes stdin afterwards.
    pub async fn input(&self, data: Vec<u8>, close: bool) -> ApiResult<()> {
        let request = pb::SendProcessInputRequest {
            sandbox_id: self.sandbox_id.clone(),
            input: Some(envd::SendInputRequest {
                process: self.selector(),
                data,
                close,
            }),
        };
        self.client.clone().send_process_input(request).await?;
        Ok(())
    }

    pub async fn signal(&self, signal: i32) -> ApiResult<()> {
        let request = pb::SignalProcessRequest {
            sandbox_id: self.sandbox_id.clone(),
            signal: Some(envd::SendSignalRequest {
                process: self.selector(),
                signal,
            }),
        };
        self.client.clone().signal_process(request).await?;
        Ok(())
    }

    pub async fn resize(&self, cols: u32, rows: u32) -> ApiResult<()> {
        pty_size_check(cols, rows)?;
        let request = pb::ResizePtyRequest {
            sandbox_id: self.sandbox_id.clone(),
            resize: Some(envd::ResizePtyRequest {
                process: self.selector(),
                size: Some(envd::PtySize { cols, rows }),
            }),
        };
        self.client.clone().resize_pty(request).await?;
        Ok(())
    }
}

/// A process's events after `Started`, and the handle to steer it.
pub struct ProcessStream {
    pub pid: u32,
    pub tag: Option<String>,
    pub events: tonic::Streaming<envd::ProcessEvent>,
    pub control: ProcessControl,
}

/// Reads the `Started` event every process stream opens with.
async fn opened(
    target: &StreamTarget,
    mut events: tonic::Streaming<envd::ProcessEvent>,
) -> ApiResult<ProcessStream> {
    use envd::process_event::Event;
    match events.message().await? {
        Some(envd::ProcessEvent {
            event: Some(Event::Started(started)),
        }) => Ok(ProcessStream {
            pid: started.pid,
            tag: (!started.tag.is_empty()).then_some(started.tag),
            events,
            control: ProcessControl {
                client: target.client.clone(),
                sandbox_id: target.sandbox_id.clone(),
                pid: started.pid,
            },
        }),
        // Could not run at all (missing binary, unknown user, bad cwd): the caller's mistake.
        Some(envd::ProcessEvent {
            event: Some(Event::Exited(exit)),
        }) if !exit.error.is_empty() => Err(ApiError::invalid(exit.error)),
        _ => Err(ApiError::Internal(
            "the process stream did not start with Started".into(),
        )),
    }
}

/// The process spec of an exec stream: like `POST /exec`, but with no time limit unless asked
/// (the client holds the stream) and stdin open when asked.
pub fn stream_spec(request: &ExecRequest) -> ApiResult<envd::ProcessSpec> {
    let mut spec = process_spec(request, 0)?;
    spec.stdin = request.stdin;
    Ok(spec)
}

fn pty_size_check(cols: u32, rows: u32) -> ApiResult<()> {
    if (1..=MAX_PTY_SIDE).contains(&cols) && (1..=MAX_PTY_SIDE).contains(&rows) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "terminal size: cols and rows must be 1 to {MAX_PTY_SIDE}, got {cols}x{rows}"
        )))
    }
}

/// A terminal session's parameters.
#[derive(Debug, Clone, Default)]
pub struct PtyRequest {
    pub cols: Option<u32>,
    pub rows: Option<u32>,
    /// Program to run; a login shell when absent.
    pub cmd: Option<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
}

pub fn pty_spec(request: &PtyRequest) -> ApiResult<envd::ProcessSpec> {
    let cols = request.cols.unwrap_or(DEFAULT_PTY_COLS);
    let rows = request.rows.unwrap_or(DEFAULT_PTY_ROWS);
    pty_size_check(cols, rows)?;
    let (cmd, args) = match &request.cmd {
        Some(cmd) => (cmd.clone(), Vec::new()),
        None => (DEFAULT_PTY_CMD.to_owned(), vec!["-l".to_owned()]),
    };
    let exec = ExecRequest {
        cmd,
        args,
        cwd: request.cwd.clone(),
        user: request.user.clone(),
        ..Default::default()
    };
    for (field, value) in [("cwd", &request.cwd), ("user", &request.user)] {
        if value
            .as_deref()
            .is_some_and(|v| v.is_empty() || v.contains('\0'))
        {
            return Err(ApiError::invalid(format!(
                "{field}: must be non-empty without NUL"
            )));
        }
    }
    let mut spec = process_spec(&exec, 0)?;
    spec.pty = Some(envd::PtySize { cols, rows });
    spec.stdin = true;
    Ok(spec)
}

/// Starts a process and returns its stream once it runs. Audited as `exec`.
pub async fn process_start(
    state: &AppState,
    caller: &Caller,
    target: &StreamTarget,
    spec: envd::ProcessSpec,
) -> ApiResult<ProcessStream> {
    let metadata = json!({
        "cmd": spec.cmd,
        "tag": (!spec.tag.is_empty()).then_some(&spec.tag),
        "stream": true,
        "pty": spec.pty.is_some(),
    });
    let outcome = async {
        let mut client = target.client.clone();
        let events = client
            .start_process(pb::StartProcessRequest {
                sandbox_id: target.sandbox_id.clone(),
                process: Some(spec),
            })
            .await
            .map_err(|status| match status.code() {
                // The sandbox exists (checked before): what is missing is the program.
                tonic::Code::NotFound => ApiError::invalid(status.message()),
                _ => status.into(),
            })?
            .into_inner();
        opened(target, events).await
    }
    .await;
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(&target.sandbox_id), "exec"),
        metadata,
        outcome,
    )
    .await
}

/// Re-attaches to a process: its buffered output first, then live events until it exits.
pub async fn process_attach(
    state: &AppState,
    caller: &Caller,
    id: &str,
    selector: &Selector,
) -> ApiResult<ProcessStream> {
    let target = stream_target(state, caller, id, "attach to processes in").await?;
    let mut client = target.client.clone();
    let events = client
        .attach_process(pb::AttachProcessRequest {
            sandbox_id: target.sandbox_id.clone(),
            process: Some(selector.wire()),
        })
        .await?
        .into_inner();
    opened(&target, events).await
}

fn process_view(process: envd::ProcessInfo) -> ProcessInfo {
    let spec = process.spec.unwrap_or_default();
    ProcessInfo {
        pid: process.pid,
        tag: (!process.tag.is_empty()).then_some(process.tag),
        cmd: spec.cmd,
        args: spec.args,
        running: process.running,
        exit_code: process.exit.map(|exit| exit.exit_code),
        started_at: time_from_ms(process.started_at_ms),
    }
}

/// Running processes, then recently exited ones.
pub async fn process_list(state: &AppState, caller: &Caller, id: &str) -> ApiResult<ProcessList> {
    let (_, host) = sandbox_running(state, caller, id, "list processes in").await?;
    let mut client = host.client;
    let request = pb::ListProcessesRequest {
        sandbox_id: id.to_owned(),
    };
    let listed = host_call(state, client.list_processes(request)).await?;
    Ok(ProcessList {
        processes: listed.processes.into_iter().map(process_view).collect(),
    })
}

/// Sends `signal` to the process's group. Audited as `process_kill`.
pub async fn process_kill(
    state: &AppState,
    caller: &Caller,
    id: &str,
    selector: &Selector,
    signal: i32,
) -> ApiResult<()> {
    let outcome = async {
        let (_, host) = sandbox_running(state, caller, id, "signal processes in").await?;
        let mut client = host.client;
        let request = pb::SignalProcessRequest {
            sandbox_id: id.to_owned(),
            signal: Some(envd::SendSignalRequest {
                process: Some(selector.wire()),
                signal,
            }),
        };
        host_call(state, client.signal_process(request))
            .await
            .map(drop)
    }
    .await;
    let metadata = json!({"process": selector.describe(), "signal": signal});
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "process_kill"),
        metadata,
        outcome,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_number_and_name() {
        let cases = [
            ("9", 9),
            ("15", 15),
            ("KILL", 9),
            ("SIGKILL", 9),
            ("term", 15),
            ("SigInt", 2),
            ("HUP", 1),
            ("QUIT", 3),
            ("USR1", 10),
            ("SIGUSR2", 12),
        ];
        for (text, number) in cases {
            assert_eq!(signal_parse(text).unwrap(), number, "{text}");
        }
        for bad in ["", "0", "65", "-9", "SIGFOO", "SIG"] {
            assert!(
                matches!(signal_parse(bad), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn selectors_are_pids_or_tags() {
        assert_eq!(Selector::parse("42").unwrap(), Selector::Pid(42));
        assert_eq!(
            Selector::parse("sleeper").unwrap(),
            Selector::Tag("sleeper".into())
        );
        assert_eq!(
            Selector::parse("web-1").unwrap(),
            Selector::Tag("web-1".into())
        );
        assert!(Selector::parse("99999999999").is_err());
        assert!(Selector::parse("").is_err());
        assert!(Selector::parse("a\nb").is_err());
    }

    #[test]
    fn terminal_specs_default_to_a_login_shell() {
        let spec = pty_spec(&PtyRequest::default()).unwrap();
        assert_eq!(spec.cmd, DEFAULT_PTY_CMD);
        assert_eq!(spec.args, ["-l"]);
        assert!(spec.stdin);
        assert_eq!(spec.pty, Some(envd::PtySize { cols: 80, rows: 24 }));
        let custom = PtyRequest {
            cmd: Some("/bin/sh".into()),
            cols: Some(120),
            rows: Some(40),
            ..Default::default()
        };
        let spec = pty_spec(&custom).unwrap();
        assert!(spec.args.is_empty());
        assert_eq!(
            spec.pty,
            Some(envd::PtySize {
                cols: 120,
                rows: 40
            })
        );
        for bad in [
            PtyRequest {
                cols: Some(0),
                ..Default::default()
            },
            PtyRequest {
                cwd: Some(String::new()),
                ..Default::default()
            },
        ] {
            assert!(pty_spec(&bad).is_err());
        }
    }
}
