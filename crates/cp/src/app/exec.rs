//! One-shot commands: run to completion and return the output, or start in the background.

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use tokio_stream::StreamExt;
use wrenn_agent_api::envd;
use wrenn_agent_api::v1 as pb;
use wrenn_api::{BackgroundProcess, ExecRequest, ExecResult, OutputEncoding};

use crate::app::audit::{self, Target};
use crate::app::caller::Caller;
use crate::app::sandbox::sandbox_running;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Limit for a foreground command when the caller gives none.
pub const DEFAULT_TIMEOUT_SEC: u64 = 300;
const MAX_TIMEOUT_SEC: u64 = 24 * 3600;
const MAX_ARGS_BYTES: usize = 1 << 20;

pub enum ExecOutcome {
    Finished(ExecResult),
    Started(BackgroundProcess),
}

/// Checks an exec request and turns it into the guest's process spec.
pub fn process_spec(
    request: &ExecRequest,
    default_timeout_sec: u64,
) -> ApiResult<envd::ProcessSpec> {
    if request.cmd.is_empty() {
        return Err(ApiError::invalid("cmd: must not be empty"));
    }
    let arg_bytes: usize = request.args.iter().map(String::len).sum::<usize>() + request.cmd.len();
    if arg_bytes > MAX_ARGS_BYTES {
        return Err(ApiError::invalid("cmd and args: at most 1 MiB in all"));
    }
    if request
        .args
        .iter()
        .chain([&request.cmd])
        .any(|a| a.contains('\0'))
    {
        return Err(ApiError::invalid("cmd and args: NUL bytes are not allowed"));
    }
    let timeout_sec = request.timeout_sec.unwrap_or(default_timeout_sec);
    if timeout_sec > MAX_TIMEOUT_SEC {
        return Err(ApiError::invalid(format!(
            "timeout_sec: at most {MAX_TIMEOUT_SEC}"
        )));
    }
    if let Some(tag) = &request.tag {
        if tag.is_empty() || tag.len() > 64 || tag.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "tag: 1 to 64 bytes without control characters",
            ));
        }
    }
    Ok(envd::ProcessSpec {
        cmd: request.cmd.clone(),
        args: request.args.clone(),
        env: request
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        cwd: request.cwd.clone().unwrap_or_default(),
        user: request.user.clone().unwrap_or_default(),
        timeout_ms: timeout_sec.saturating_mul(1000),
        tag: request.tag.clone().unwrap_or_default(),
        pty: None,
        stdin: false,
    })
}

/// Text when both streams are UTF-8, else base64 for both.
pub fn encode_output(stdout: &[u8], stderr: &[u8]) -> (String, String, OutputEncoding) {
    match (std::str::from_utf8(stdout), std::str::from_utf8(stderr)) {
        (Ok(out), Ok(err)) => (out.to_owned(), err.to_owned(), OutputEncoding::Utf8),
        _ => {
            let b64 = base64::engine::general_purpose::STANDARD;
            (
                b64.encode(stdout),
                b64.encode(stderr),
                OutputEncoding::Base64,
            )
        }
    }
}

pub async fn sandbox_exec(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request: ExecRequest,
) -> ApiResult<ExecOutcome> {
    let metadata =
        json!({"cmd": request.cmd, "background": request.background, "tag": request.tag});
    let outcome = exec(state, caller, id, request).await;
    audit::record(
        &state.pool,
        caller,
        Target::new("sandbox", Some(id), "exec"),
        metadata,
        outcome,
    )
    .await
}

async fn exec(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request: ExecRequest,
) -> ApiResult<ExecOutcome> {
    if request.stdin {
        return Err(ApiError::invalid(
            "stdin: a one-shot exec has no input; use the exec stream WebSocket (GET .../exec/stream)",
        ));
    }
    let (_, host) = sandbox_running(state, caller, id, "exec in").await?;
    let mut client = host.client.clone();
    if request.background {
        let spec = process_spec(&request, 0)?;
        let mut events = client
            .start_process(pb::StartProcessRequest {
                sandbox_id: id.to_owned(),
                process: Some(spec),
            })
            .await?
            .into_inner();
        // The first event says whether it started; dropping the stream leaves it running.
        return match events.next().await {
            Some(Ok(envd::ProcessEvent {
                event: Some(envd::process_event::Event::Started(started)),
            })) => Ok(ExecOutcome::Started(BackgroundProcess {
                pid: started.pid,
                tag: (!started.tag.is_empty()).then_some(started.tag),
            })),
            Some(Ok(envd::ProcessEvent {
                event: Some(envd::process_event::Event::Exited(exit)),
            })) if !exit.error.is_empty() => Err(ApiError::invalid(exit.error)),
            Some(Err(status)) => Err(status.into()),
            _ => Err(ApiError::Internal(
                "the process stream ended before it started".into(),
            )),
        };
    }
    let spec = process_spec(&request, DEFAULT_TIMEOUT_SEC)?;
    let limit = Duration::from_millis(spec.timeout_ms) + Duration::from_secs(30);
    let response = tokio::time::timeout(
        limit,
        client.exec(pb::ExecRequest {
            sandbox_id: id.to_owned(),
            process: Some(spec),
        }),
    )
    .await
    .map_err(|_| ApiError::Unavailable("the host did not finish the command in time".into()))?
    .map_err(|status| match status.code() {
        // The sandbox exists (checked above): what is missing is the program, user or cwd.
        tonic::Code::NotFound => ApiError::invalid(status.message()),
        _ => status.into(),
    })?
    .into_inner();
    let exit = response.exit.unwrap_or_default();
    if !exit.error.is_empty() {
        // Could not run at all (missing binary, unknown user, bad cwd): the caller's mistake.
        return Err(ApiError::invalid(exit.error));
    }
    let (stdout, stderr, encoding) = encode_output(&response.stdout, &response.stderr);
    Ok(ExecOutcome::Finished(ExecResult {
        pid: response.pid,
        stdout,
        stderr,
        encoding,
        exit_code: exit.exit_code,
        signal: (exit.signal != 0).then_some(exit.signal),
        timed_out: exit.timed_out,
        duration_ms: exit.duration_ms,
        truncated: response.truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_text_unless_either_stream_is_binary() {
        let (out, err, enc) = encode_output(b"hi\n", b"");
        assert_eq!(
            (out.as_str(), err.as_str(), enc),
            ("hi\n", "", OutputEncoding::Utf8)
        );
        let (out, err, enc) = encode_output(b"ok", &[0xff, 0xfe]);
        assert_eq!(enc, OutputEncoding::Base64);
        assert_eq!(out, "b2s=");
        assert_eq!(err, "//4=");
    }

    #[test]
    fn exec_requests_are_checked() {
        let ok = ExecRequest {
            cmd: "true".into(),
            ..Default::default()
        };
        assert_eq!(process_spec(&ok, 300).unwrap().timeout_ms, 300_000);
        let empty = ExecRequest::default();
        assert!(process_spec(&empty, 300).is_err());
        let nul = ExecRequest {
            cmd: "a\0b".into(),
            ..Default::default()
        };
        assert!(process_spec(&nul, 300).is_err());
        let long = ExecRequest {
            cmd: "x".into(),
            timeout_sec: Some(10 * 24 * 3600),
            ..Default::default()
        };
        assert!(process_spec(&long, 300).is_err());
    }
}
