//! Processes started through the Process service: spawning, output fan-out, input, signals.
//!
//! [`Processes`] is the entry point; the service layer only converts wire types to the domain
//! types defined here and back.

mod fd;
mod launch;
mod manager;
mod output;
mod pty;
mod registry;
mod spawn;
mod supervise;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use manager::{Attached, Processes};
pub use output::Subscription;

use crate::users::UserError;

/// What to run and how; the domain form of the wire `ProcessSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub cmd: String,
    pub args: Vec<String>,
    pub env: HashMap<String, String>,
    /// Working directory; `None` means the user's home.
    pub cwd: Option<PathBuf>,
    /// User name; `None` means root.
    pub user: Option<String>,
    pub timeout: Option<Duration>,
    pub tag: Option<String>,
    pub pty: Option<PtySize>,
    pub stdin: StdinMode,
}

/// Whether a process gets a stdin pipe envd can write to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StdinMode {
    /// stdin is /dev/null.
    #[default]
    Null,
    /// stdin is a pipe fed by SendInput until closed.
    Pipe,
}

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

impl PtySize {
    pub fn new(cols: u32, rows: u32) -> Result<Self, ProcessError> {
        let cell = |n: u32| u16::try_from(n).ok().filter(|n| *n > 0);
        match (cell(cols), cell(rows)) {
            (Some(cols), Some(rows)) => Ok(Self { cols, rows }),
            _ => Err(ProcessError::InvalidPtySize { cols, rows }),
        }
    }
}

/// Picks one process by pid or by tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Pid(u32),
    Tag(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Pid(pid) => write!(f, "pid {pid}"),
            Selector::Tag(tag) => write!(f, "tag {tag:?}"),
        }
    }
}

/// One item of a process's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started { pid: u32, tag: Option<String> },
    Stdout(Bytes),
    Stderr(Bytes),
    Pty(Bytes),
    Exited(ExitInfo),
}

impl Event {
    /// Output bytes this event carries (0 for lifecycle events).
    pub fn output_len(&self) -> usize {
        match self {
            Event::Stdout(data) | Event::Stderr(data) | Event::Pty(data) => data.len(),
            Event::Started { .. } | Event::Exited(_) => 0,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, or -1 when a signal ended the process.
    pub exit_code: i32,
    /// Signal that ended the process, 0 if none.
    pub signal: i32,
    pub timed_out: bool,
    /// Why the process could not be followed to its end, if that happened.
    pub error: Option<String>,
    pub duration: Duration,
}

/// A process as List reports it.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub pid: u32,
    pub tag: Option<String>,
    pub spec: Spec,
    pub exit: Option<ExitInfo>,
    pub started_at: SystemTime,
}

/// What to do with stdin after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterInput {
    KeepOpen,
    Close,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cmd must not be empty")]
    EmptyCommand,
    #[error(transparent)]
    UnknownUser(#[from] UserError),
    #[error("working directory does not exist: {}", path.display())]
    MissingCwd { path: PathBuf },
    #[error("working directory is not a directory: {}", path.display())]
    CwdNotDirectory { path: PathBuf },
    #[error("executable not found: {cmd}")]
    ExecutableNotFound { cmd: String },
    #[error("a running process already has tag {tag:?}")]
    TagInUse { tag: String },
    #[error("invalid pty size {cols}x{rows}")]
    InvalidPtySize { cols: u32, rows: u32 },
    #[error("invalid signal number {signal}")]
    InvalidSignal { signal: i32 },
    #[error("no process with {selector}")]
    NotFound { selector: Selector },
    #[error("process {pid} has exited")]
    NotRunning { pid: u32 },
    #[error("process {pid} was started without stdin")]
    NoStdin { pid: u32 },
    #[error("stdin of process {pid} is closed")]
    StdinClosed { pid: u32 },
    #[error("process {pid} has no pty")]
    NoPty { pid: u32 },
    #[error("open pseudo-terminal")]
    OpenPty(#[source] std::io::Error),
    #[error("spawn {cmd}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write input to process {pid}")]
    WriteInput {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("signal process {pid}")]
    Signal {
        pid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("resize pty of process {pid}")]
    Resize {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}
