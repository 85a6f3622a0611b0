//! The task that follows one process from spawn to its `Exited` event: it pumps output into
//! the process's [`OutputLog`](super::output::OutputLog), enforces the timeout and reports the
//! exit once the output is drained.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};

use super::fd::NonBlockingFd;
use super::registry::{Input, ProcessEntry, Registry};
use super::{Event, ExitInfo};
use crate::reaper::ExitStatus;

/// Bytes read from an output fd at a time.
const READ_CHUNK: usize = 32 * 1024;
/// How long output may keep flowing after exit. A background grandchild can hold the pipes
/// open forever; the exit is reported anyway once they have been quiet this long.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Which event an output fd produces.
#[derive(Debug, Clone, Copy)]
pub enum OutputKind {
    Stdout,
    Stderr,
    Pty,
}

impl OutputKind {
    fn event(self, data: Bytes) -> Event {
        match self {
            OutputKind::Stdout => Event::Stdout(data),
            OutputKind::Stderr => Event::Stderr(data),
            OutputKind::Pty => Event::Pty(data),
        }
    }
}

#[derive(Debug)]
pub struct OutputSource {
    pub fd: Arc<NonBlockingFd>,
    pub kind: OutputKind,
}

/// Everything the supervisor task owns.
#[derive(Debug)]
pub struct Supervision {
    pub entry: Arc<ProcessEntry>,
    pub registry: Arc<Registry>,
    pub exit: oneshot::Receiver<ExitStatus>,
    pub outputs: Vec<OutputSource>,
    pub timeout: Option<Duration>,
    pub started: Instant,
}

pub async fn supervise(supervision: Supervision) {
    let Supervision {
        entry,
        registry,
        mut exit,
        outputs,
        timeout,
        started,
    } = supervision;
    let pid = entry.pid;

    let (stop_readers, stop_signal) = watch::channel(false);
    let readers: Vec<_> = outputs
        .into_iter()
        .map(|source| tokio::spawn(pump_output(source, Arc::clone(&entry), stop_signal.clone())))
        .collect();

    let mut timed_out = false;
    let status = match timeout {
        Some(limit) => tokio::select! {
            status = &mut exit => status,
            () = tokio::time::sleep(limit) => {
                timed_out = true;
                tracing::info!(pid, timeout_ms = limit.as_millis() as u64, "process timed out");
                kill_group(pid, Signal::SIGKILL);
                exit.await
            }
        },
        None => exit.await,
    };
    let duration = started.elapsed();
    entry.mark_reaped();
    close_stdin(&entry);

    let readers = futures::future::join_all(readers);
    tokio::pin!(readers);
    if tokio::time::timeout(OUTPUT_GRACE, &mut readers)
        .await
        .is_err()
    {
        let _ = stop_readers.send(true);
        readers.await;
    }

    let info = exit_info(status, timed_out, duration);
    tracing::debug!(
        pid,
        exit_code = info.exit_code,
        signal = info.signal,
        timed_out,
        duration_ms = duration.as_millis() as u64,
        "process exited"
    );
    entry.set_exit(info.clone());
    // Retired first: a subscriber that stops reading must not keep the tag reserved.
    registry.finish(&entry);
    entry.output.finish(Event::Exited(info)).await;
}

/// Copies one fd's output into the log until end of file, or until told to stop once it has
/// nothing buffered.
async fn pump_output(
    source: OutputSource,
    entry: Arc<ProcessEntry>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match source.fd.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let event = source.kind.event(Bytes::copy_from_slice(&buf[..n]));
                entry.output.publish(event).await;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => return,
                    ready = source.fd.readable() => {
                        if let Err(error) = ready {
                            tracing::warn!(pid = entry.pid, %error, "wait for process output");
                            return;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(pid = entry.pid, %error, "read process output");
                return;
            }
        }
    }
}

fn exit_info(
    status: Result<ExitStatus, oneshot::error::RecvError>,
    timed_out: bool,
    duration: Duration,
) -> ExitInfo {
    let (exit_code, signal, error) = match status {
        Ok(ExitStatus::Code(code)) => (code, 0, None),
        Ok(ExitStatus::Signal(signal)) => (-1, signal, None),
        Err(_) => (
            -1,
            0,
            Some("lost track of the process's exit status".to_owned()),
        ),
    };
    ExitInfo {
        exit_code,
        signal,
        timed_out,
        error,
        duration,
    }
}

/// Drops envd's end of the stdin pipe so grandchildren still reading it see end of file.
fn close_stdin(entry: &ProcessEntry) {
    if let Input::Pipe(pipe) = &entry.input {
        // A writer blocked on a full pipe holds the lock; it fails with EPIPE soon enough.
        if let Ok(mut pipe) = pipe.try_lock() {
            pipe.take();
        }
    }
}

/// Signals the process group led by `pid`; a group that is already gone is fine.
pub fn kill_group(pid: u32, signal: Signal) {
    if let Err(error) = killpg(Pid::from_raw(pid as i32), signal) {
        if error != nix::errno::Errno::ESRCH {
            tracing::warn!(pid, %error, ?signal, "signal process group");
        }
    }
}
