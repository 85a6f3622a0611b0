//! Runs host tools (ip, nft, qemu-img) to completion and turns failures into errors that name
//! the command and carry its stderr.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// A host tool that could not be run or reported failure.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("open network namespace {path}")]
    Netns {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a command runs.
#[derive(Debug, Clone, Copy)]
pub enum Namespace<'a> {
    Host,
    /// Inside the network namespace bound at this path (e.g. /run/netns/x).
    Net(&'a Path),
}

/// Makes the command's child enter the network namespace `netns` (an open /run/netns/<name>)
/// just before exec, so only the child is in it — never a thread of the agent.
pub fn join_netns_at_exec(command: &mut Command, netns: File) {
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which
    // is async-signal-safe; `netns` was opened before the fork and lives in the closure.
    unsafe {
        command.pre_exec(move || {
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
}

/// Hands `file` to the command's process as descriptor `target` (open across exec).
pub fn inherit_fd_at_exec(command: &mut Command, file: File, target: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: the closure runs in the forked child before exec and only calls dup2(2) and
    // fcntl(2), which are async-signal-safe; `file` was opened before the fork.
    unsafe {
        command.pre_exec(move || {
            let fd = file.as_raw_fd();
            let result = if fd == target {
                // dup2 onto itself keeps close-on-exec set; clear it instead.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if result < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
}

/// Turns transparent huge pages off for the command's process (the setting survives exec).
/// QEMU asks for huge pages on its TCG translation cache; with them every touched 2 MiB of the
/// cache is resident, so an idle VM holds the whole cache in RAM.
pub fn no_transparent_huge_pages_at_exec(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Runs `program args…`, feeding `stdin`, and returns its stdout.
pub async fn run<I, S>(
    program: &str,
    args: I,
    stdin: Option<&str>,
    namespace: Namespace<'_>,
) -> Result<String, CommandError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Namespace::Net(path) = namespace {
        let netns = File::open(path).map_err(|source| CommandError::Netns {
            path: path.display().to_string(),
            source,
        })?;
        join_netns_at_exec(&mut command, netns);
    }
    let spawn_error = |source| CommandError::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(spawn_error)?;
        drop(pipe);
    }
    let output = child.wait_with_output().await.map_err(spawn_error)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(CommandError::Failed {
            program: program.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
