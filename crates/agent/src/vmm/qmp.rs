//! A minimal QEMU Machine Protocol client: newline-delimited JSON over a unix socket.

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
        let mut message = json!({ "execute": command });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|source| QmpError::Io {
                command: command.to_owned(),
                source,
            })?;
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
