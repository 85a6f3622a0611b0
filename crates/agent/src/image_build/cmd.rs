//! Runs a build tool as a child process, streaming its output line by line to the progress sink.
//!
//! The tool modules (`kbuild`, `debootstrap`, `ext4`, …) build the `Command`; this module only
//! runs it, so every child is spawned, streamed and reported the same way.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;

use super::progress::BuildProgress;

/// How many trailing output lines a failed command carries in its error.
pub const TAIL_LINES: usize = 50;

/// Errors running a child process.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wait for `{command}`")]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); last output:\n{tail}")]
    Failed {
        command: String,
        status: ExitStatus,
        tail: OutputTail,
    },
}

/// The last lines a child wrote to stdout and stderr, interleaved in arrival order.
#[derive(Debug, Clone, Default)]
pub struct OutputTail {
    lines: VecDeque<String>,
}

impl OutputTail {
    fn push(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }
}

impl fmt::Display for OutputTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines.is_empty() {
            return f.write_str("  (no output)");
        }
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  | {line}")?;
        }
        Ok(())
    }
}

/// The command line as a person would type it, for messages and logs.
pub fn display(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` to completion, sending every output line to `progress`.
///
/// Fails with the last [`TAIL_LINES`] lines of output when the command exits unsuccessfully.
pub fn run(cmd: &mut Command, progress: &mut dyn BuildProgress) -> Result<(), CommandError> {
    let command = display(cmd);
    tracing::debug!(%command, "run command");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;

    // One reader thread per pipe so neither can fill up and block the child; lines arrive
    // here in the order they were read and are handed to `progress` on this thread.
    let (tx, rx) = mpsc::channel();
    let readers = [
        child.stdout.take().map(|out| spawn_reader(out, tx.clone())),
        child.stderr.take().map(|err| spawn_reader(err, tx.clone())),
    ];
    drop(tx);

    let mut tail = OutputTail::default();
    for line in rx {
        progress.line(&line);
        tail.push(line);
    }
    for reader in readers.into_iter().flatten() {
        // A reader only ends when its pipe closes; it cannot panic on malformed output.
        let _ = reader.join();
    }

    let status = child.wait().map_err(|source| CommandError::Wait {
        command: command.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(CommandError::Failed {
            command,
            status,
            tail,
        })
    }
}

/// Runs `cmd` and returns its stdout; stderr is kept for the error.
pub fn output(cmd: &mut Command) -> Result<String, CommandError> {
    let command = display(cmd);
    tracing::debug!(%command, "run command");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut tail = OutputTail::default();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        tail.push(line.to_owned());
    }
    Err(CommandError::Failed {
        command,
        status: out.status,
        tail,
    })
}

fn spawn_reader(
    pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Split on '\n' ourselves: tools may print bytes that are not UTF-8, and progress
        // bars end in '\r', which is shown as separate updates.
        for chunk in BufReader::new(pipe).split(b'\n') {
            let Ok(chunk) = chunk else { break };
            for piece in chunk
                .split(|&b| b == b'\r')
                .filter(|piece| !piece.is_empty())
            {
                if tx
                    .send(String::from_utf8_lossy(piece).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_build::progress::fakes::RecordingProgress;

    #[test]
    fn streams_both_pipes_and_keeps_the_last_lines_on_failure() {
        let mut progress = RecordingProgress::default();
        let mut cmd = Command::new("sh");
        // The two pipes are read concurrently, so only the order within each one is defined.
        cmd.args([
            "-c",
            "echo out; for i in $(seq 1 60); do echo err$i >&2; done; exit 3",
        ]);
        let err = run(&mut cmd, &mut progress).unwrap_err();
        let CommandError::Failed { status, tail, .. } = err else {
            panic!("expected Failed, got {err:?}");
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(progress.lines.len(), 61);
        assert!(progress.lines.iter().any(|line| line == "out"));
        let tail: Vec<_> = tail.lines().collect();
        assert_eq!(tail.len(), TAIL_LINES);
        assert!(tail.contains(&"err60"));
        assert!(!tail.contains(&"err1"));
    }

    #[test]
    fn success_and_missing_program() {
        let mut progress = RecordingProgress::default();
        run(Command::new("true").arg("x"), &mut progress).unwrap();
        let err = run(&mut Command::new("/nonexistent/tool"), &mut progress).unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }), "{err:?}");
        assert_eq!(output(Command::new("echo").arg("hi")).unwrap(), "hi\n");
    }
}
