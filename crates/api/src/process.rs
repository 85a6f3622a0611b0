//! Running commands in a sandbox: one-shot exec, background processes, streams and PTYs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program; looked up in PATH when it has no slash.
    pub cmd: String,
    #[serde(default)]
    pub args: Vec<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    /// Guest user; defaults to root.
    pub user: Option<String>,
    /// Kill the process after this long; 0 or absent = no limit (background) or 300 s.
    pub timeout_sec: Option<u64>,
    /// Start and return at once with the pid (HTTP 202).
    #[serde(default)]
    pub background: bool,
    /// Name for a background process, unique among the running ones.
    pub tag: Option<String>,
    /// Keep stdin open for `stdin` frames (exec stream) instead of reading /dev/null.
    /// `POST /exec` does not use it.
    #[serde(default)]
    pub stdin: bool,
}

/// How `stdout` and `stderr` are written: as text, or base64 when not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputEncoding {
    Utf8,
    Base64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    pub pid: u32,
    pub stdout: String,
    pub stderr: String,
    pub encoding: OutputEncoding,
    /// Exit code; -1 when a signal ended the process.
    pub exit_code: i32,
    /// Signal that ended the process, if any.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// Output beyond the collection limit (16 MiB) was dropped.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackgroundProcess {
    pub pid: u32,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessInfo {
    pub pid: u32,
    pub tag: Option<String>,
    pub cmd: String,
    pub args: Vec<String>,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessList {
    pub processes: Vec<ProcessInfo>,
}

/// Messages a client sends on the exec, PTY and process WebSockets (JSON text frames).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamInput {
    /// Bytes for stdin (or the terminal), base64.
    Stdin { data: String },
    /// Close stdin.
    CloseStdin,
    /// Send a signal to the process group.
    Signal { signal: i32 },
    /// Resize the terminal.
    Resize { cols: u32, rows: u32 },
}

/// Messages the server sends on the exec, PTY and process WebSockets (JSON text frames).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamOutput {
    Started {
        pid: u32,
        tag: Option<String>,
    },
    /// Output bytes, base64. PTY output arrives as `stdout`.
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        exit_code: i32,
        signal: Option<i32>,
        timed_out: bool,
        duration_ms: u64,
        error: Option<String>,
    },
    /// A client frame could not be applied (not JSON, stdin not open or already closed, no
    /// terminal to resize, the process already exited). The stream goes on.
    InputError {
        code: String,
        message: String,
    },
    /// The stream failed; the connection closes after this.
    Error {
        code: String,
        message: String,
    },
}
