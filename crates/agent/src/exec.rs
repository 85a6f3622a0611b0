//! Unary exec: runs a process to completion in a guest and collects its output, with a cap so a
//! chatty process cannot exhaust the agent's memory.

use futures::StreamExt;
use tonic::Status;
use wrenn_agent_api::envd;
use wrenn_agent_api::v1::ExecResponse;

use crate::envd_client::EnvdClient;

/// Output kept per stream; the rest is counted as truncated.
pub const MAX_COLLECTED_BYTES: usize = 16 << 20;

/// Kills the guest process if the caller goes away before it exits.
struct KillOnDrop {
    envd: Option<EnvdClient>,
    pid: u32,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(envd) = self.envd.take() {
            let selector = envd::ProcessSelector {
                selector: Some(envd::process_selector::Selector::Pid(self.pid)),
            };
            tokio::spawn(async move {
                let request = envd::SendSignalRequest {
                    process: Some(selector),
                    signal: libc::SIGKILL,
                };
                let _ = envd.process().send_signal(request).await;
            });
        }
    }
}

pub async fn exec_collect(
    envd: &EnvdClient,
    spec: envd::ProcessSpec,
) -> Result<ExecResponse, Status> {
    let mut stream = envd
        .process()
        .start(envd::StartRequest {
            process: Some(spec),
        })
        .await?
        .into_inner();
    let mut response = ExecResponse::default();
    let mut guard = KillOnDrop { envd: None, pid: 0 };
    while let Some(event) = stream.next().await {
        use envd::process_event::Event;
        match event?.event {
            Some(Event::Started(started)) => {
                response.pid = started.pid;
                guard.pid = started.pid;
                guard.envd = Some(envd.clone());
            }
            Some(Event::Stdout(data)) | Some(Event::Pty(data)) => {
                response.truncated |= append_capped(&mut response.stdout, &data);
            }
            Some(Event::Stderr(data)) => {
                response.truncated |= append_capped(&mut response.stderr, &data)
            }
            Some(Event::Exited(exited)) => {
                guard.envd = None;
                response.exit = Some(exited);
                return Ok(response);
            }
            None => {}
        }
    }
    guard.envd = None;
    Err(Status::unavailable(
        "the guest ended the process stream before the process exited",
    ))
}

/// Appends up to the cap; returns whether anything was dropped.
fn append_capped(buffer: &mut Vec<u8>, data: &[u8]) -> bool {
    let room = MAX_COLLECTED_BYTES.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
    data.len() > room
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_and_truncation_reported() {
        let mut buffer = vec![0u8; MAX_COLLECTED_BYTES - 2];
        assert!(!append_capped(&mut buffer, b"ab"));
        assert!(append_capped(&mut buffer, b"c"));
        assert_eq!(buffer.len(), MAX_COLLECTED_BYTES);
    }
}
