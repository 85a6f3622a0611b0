//! Connects this terminal to a process in a sandbox over a process stream: its output to our
//! stdout and stderr, optionally our stdin and terminal size to it, and its exit code back.

use std::io::{Read, Write};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use wrenn_api::{StreamInput, StreamOutput};

use crate::api::ws::decode_data;
use crate::api::{ApiError, ProcessStream};
use crate::tty::RawMode;

/// What Ctrl-C (SIGINT) does while attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Stop at once; the caller cleans up (`wrenn run` destroys its sandbox).
    Detach,
    /// Send SIGINT to the remote process; a second Ctrl-C detaches (`wrenn sandbox exec`).
    Forward,
}

/// Whether our stdin reaches the process (which must have been started with stdin open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// Not read; the process reads /dev/null.
    Closed,
    /// Copied until EOF, then closed.
    Forwarded,
}

/// Whether the process runs on a terminal (a PTY stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    None,
    /// Our terminal goes raw and its size follows ours.
    Raw,
}

#[derive(Debug, Clone, Copy)]
pub struct Attach {
    pub stdin: Stdin,
    pub terminal: Terminal,
    pub on_interrupt: OnInterrupt,
}

/// How the attachment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The process exited; the code to exit with (128 + signal for signals).
    Exited(i32),
    /// We were interrupted (SIGINT, SIGTERM or SIGHUP) before it exited.
    Interrupted,
}

/// The conventional exit status after an interrupt.
pub const INTERRUPTED_CODE: i32 = 130;

/// Which interrupt arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// SIGINT: Ctrl-C.
    CtrlC,
    /// SIGTERM or SIGHUP: we are asked to go.
    Terminate,
}

/// SIGINT, SIGTERM and SIGHUP, caught from creation on: one watcher spans a whole command,
/// so a signal between two of its steps is not lost (nor kills us before we clean up).
#[derive(Debug)]
pub struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Interrupts {
    pub fn watch() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next interrupt. Cancel safe.
    pub async fn next(&mut self) -> Interrupt {
        tokio::select! {
            _ = self.interrupt.recv() => Interrupt::CtrlC,
            _ = self.terminate.recv() => Interrupt::Terminate,
            _ = self.hangup.recv() => Interrupt::Terminate,
        }
    }
}

/// Pumps the stream until the process exits, the stream fails or we are interrupted.
pub async fn attach(
    stream: &mut ProcessStream,
    how: Attach,
    interrupts: &mut Interrupts,
) -> Result<Ended, ApiError> {
    let mut resized = signal(SignalKind::window_change()).map_err(|source| {
        ApiError::Protocol(format!("cannot watch for terminal size changes: {source}"))
    })?;
    let raw = match how.terminal {
        Terminal::Raw => RawMode::enable(),
        Terminal::None => None,
    };
    let mut input: Option<mpsc::Receiver<Vec<u8>>> = None;
    let mut started = false;
    let mut ctrl_c_count = 0;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame? else {
                    return Err(ApiError::Protocol(
                        "the server closed the stream before the command exited".into(),
                    ));
                };
                match frame {
                    StreamOutput::Started { .. } if !started => {
                        started = true;
                        if how.stdin == Stdin::Forwarded {
                            input = Some(read_stdin());
                        }
                    }
                    StreamOutput::Started { .. } => {}
                    StreamOutput::Stdout { data } => write_out(&mut std::io::stdout(), &decode_data(&data)?),
                    StreamOutput::Stderr { data } => write_out(&mut std::io::stderr(), &decode_data(&data)?),
                    StreamOutput::Exit { exit_code, signal, timed_out, error, .. } => {
                        drop(raw);
                        if let Some(error) = &error {
                            eprintln!("wrenn: {error}");
                        }
                        if timed_out {
                            eprintln!("wrenn: the command timed out and was killed");
                        }
                        return Ok(Ended::Exited(exit_status(exit_code, signal, error.is_some())));
                    }
                    // A frame of ours that could not be applied, e.g. input after the process
                    // closed its stdin: not worth interrupting the output for.
                    StreamOutput::InputError { code, message } => {
                        tracing::debug!(%code, %message, "input not applied");
                    }
                    StreamOutput::Error { code, message } => {
                        return Err(ApiError::Stream { code, message });
                    }
                }
            }
            chunk = recv(&mut input) => match chunk {
                Some(data) => stream.stdin(&data).await?,
                None => {
                    stream.send(&StreamInput::CloseStdin).await?;
                    input = None;
                }
            },
            _ = resized.recv(), if how.terminal == Terminal::Raw => {
                let (cols, rows) = crate::tty::size();
                stream.send(&StreamInput::Resize { cols, rows }).await?;
            }
            interrupt = interrupts.next() => {
                ctrl_c_count += 1;
                let forward = interrupt == Interrupt::CtrlC
                    && how.on_interrupt == OnInterrupt::Forward
                    && ctrl_c_count == 1
                    && started;
                if !forward {
                    return Ok(Ended::Interrupted);
                }
                stream.send(&StreamInput::Signal { signal: libc::SIGINT }).await?;
            }
        }
    }
}

/// The code a shell would report: the exit code, 128 + signal, or 127 when the command could
/// not run at all.
pub fn exit_status(exit_code: i32, signal: Option<i32>, failed_to_start: bool) -> i32 {
    match signal {
        Some(signal) if signal > 0 => 128 + signal,
        _ if failed_to_start && exit_code <= 0 => 127,
        _ => exit_code,
    }
}

/// Waits on the stdin channel, or forever when there is none.
async fn recv(input: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match input {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads our stdin on a thread of its own (a blocking read must never hold up the runtime
/// or its shutdown); the channel closes at EOF.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = vec![0u8; 16 << 10];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    receiver
}

/// Output that can't be written (a closed pipe) is dropped; the process still runs to its end.
fn write_out(out: &mut impl Write, data: &[u8]) {
    let _ = out.write_all(data).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_follow_shell_conventions() {
        assert_eq!(exit_status(0, None, false), 0);
        assert_eq!(exit_status(3, None, false), 3);
        assert_eq!(exit_status(-1, Some(9), false), 137);
        assert_eq!(exit_status(-1, None, true), 127);
        assert_eq!(exit_status(2, None, true), 2);
    }
}
