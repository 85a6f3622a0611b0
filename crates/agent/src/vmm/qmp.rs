//! A minimal QEMU Machine Protocol client: newline-delimited JSON over a unix socket.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// QMP failures, with the command that failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connect to QMP socket {path} within {timeout:?}")]
    Connect {
        path: PathBuf,
        timeout: Duration,
        #[source]
        source: std::io::Error,
    },
    #[error("talk to QEMU over QMP ({command})")]
    Io {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU closed the QMP connection during {command}")]
    Closed { command: String },
    #[error("QEMU sent invalid QMP JSON during {command}")]
    Json {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("QEMU rejected {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// An established QMP session (capabilities negotiated).
#[derive(Debug)]
pub struct QmpClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl QmpClient {
    /// Connects, retrying while QEMU has not created the socket yet.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(source) if tokio::time::Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.to_owned(),
                        timeout,
                        source,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let (read, writer) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer,
        };
        client.read_message("greeting").await?;
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// Runs one command and returns its `return` value. Asynchronous events that arrive in
    /// between are skipped.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let line = command_line(command, arguments);
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|source| QmpError::Io {
                command: command.to_owned(),
                source,
            })?;
        self.read_reply(command).await
    }

    /// Like `execute`, with `fd` passed along (SCM_RIGHTS), as `getfd` and `add-fd` expect.
    pub async fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, QmpError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let line = command_line(command, arguments);
        let io_error = |source| QmpError::Io {
            command: command.to_owned(),
            source,
        };
        let socket: &UnixStream = self.writer.as_ref();
        let mut sent = 0;
        while sent < line.len() {
            socket.writable().await.map_err(io_error)?;
            let fds = [fd.as_raw_fd()];
            // The descriptor rides on the first byte only.
            let rights = [ControlMessage::ScmRights(&fds)];
            let control: &[ControlMessage] = if sent == 0 { &rights } else { &[] };
            let chunk = [std::io::IoSlice::new(&line.as_bytes()[sent..])];
            match socket.try_io(tokio::io::Interest::WRITABLE, || {
                sendmsg::<()>(socket.as_raw_fd(), &chunk, control, MsgFlags::empty(), None)
                    .map_err(std::io::Error::from)
            }) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(io_error(e)),
            }
        }
        self.read_reply(command).await
    }

    async fn read_reply(&mut self, command: &str) -> Result<Value, QmpError> {
        loop {
            let reply = self.read_message(command).await?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: error["class"].as_str().unwrap_or("unknown").to_owned(),
                    desc: error["desc"].as_str().unwrap_or("").to_owned(),
                });
            }
            // An event ({"event": ...}); keep waiting for our reply.
        }
    }

    async fn read_message(&mut self, command: &str) -> Result<Value, QmpError> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|source| QmpError::Io {
                command: command.to_owned(),
                source,
            })?;
        if read == 0 {
            return Err(QmpError::Closed {
                command: command.to_owned(),
            });
        }
        serde_json::from_str(&line).map_err(|source| QmpError::Json {
            command: command.to_owned(),
            source,
        })
    }
}

/// One command as QMP's newline-terminated JSON.
fn command_line(command: &str, arguments: Option<Value>) -> String {
    let mut message = json!({ "execute": command });
    if let Some(arguments) = arguments {
        message["arguments"] = arguments;
    }
    let mut line = message.to_string();
    line.push('\n');
    line
}
