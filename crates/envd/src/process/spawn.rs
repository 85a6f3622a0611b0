//! Forks and execs one process from a [`Launch`] plan, with its own session, the requested
//! credentials and either pipes or a PTY as stdio.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::fd::NonBlockingFd;
use super::launch::{Credentials, Launch};
use super::{pty, ProcessError, StdinMode};
use crate::reaper::{ExitStatus, Reaper};

/// A process that is running, with envd's ends of its stdio.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub exit: oneshot::Receiver<ExitStatus>,
    pub io: ProcessIo,
}

#[derive(Debug)]
pub enum ProcessIo {
    Pipes {
        stdin: Option<NonBlockingFd>,
        stdout: NonBlockingFd,
        stderr: NonBlockingFd,
    },
    Pty {
        master: Arc<NonBlockingFd>,
    },
}

/// Whether the child takes its stdin as controlling terminal.
#[derive(Debug, Clone, Copy)]
enum Terminal {
    None,
    Controlling,
}

pub fn spawn(launch: &Launch, reaper: &Reaper) -> Result<Spawned, ProcessError> {
    let spawn_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => ProcessError::ExecutableNotFound {
            cmd: launch.arg0.clone(),
        },
        _ => ProcessError::Spawn {
            cmd: launch.arg0.clone(),
            source,
        },
    };

    let mut command = Command::new(&launch.program);
    command
        .arg0(&launch.arg0)
        .args(&launch.args)
        .env_clear()
        .envs(&launch.env)
        .current_dir(&launch.cwd);

    let pty_master = match launch.pty {
        Some(size) => {
            let pair = pty::open(size).map_err(ProcessError::OpenPty)?;
            let clone = |fd: &OwnedFd| fd.try_clone().map_err(ProcessError::OpenPty);
            command
                .stdin(Stdio::from(clone(&pair.slave)?))
                .stdout(Stdio::from(clone(&pair.slave)?))
                .stderr(Stdio::from(pair.slave));
            Some(pair.master)
        }
        None => {
            let stdin = match launch.stdin {
                StdinMode::Null => Stdio::null(),
                StdinMode::Pipe => Stdio::piped(),
            };
            command
                .stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    let terminal = if pty_master.is_some() {
        Terminal::Controlling
    } else {
        Terminal::None
    };
    let identity = IdentityChange::for_credentials(&launch.credentials);

    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls on data captured before the fork; it does not allocate.
    unsafe {
        command.pre_exec(move || enter_child(terminal, &identity));
    }

    let (mut child, exit) = reaper.spawn(&mut command).map_err(spawn_error)?;
    // The parent's copies of the slave fds go away with the Command.
    drop(command);
    let pid = child.id();

    match take_io(&mut child, pty_master) {
        Ok(io) => Ok(Spawned { pid, exit, io }),
        Err(source) => {
            // Nobody could read its output; don't leave it running unseen.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(spawn_error(source))
        }
    }
}

/// Registers envd's ends of the child's stdio with the reactor.
fn take_io(child: &mut std::process::Child, pty_master: Option<OwnedFd>) -> io::Result<ProcessIo> {
    if let Some(master) = pty_master {
        return Ok(ProcessIo::Pty {
            master: Arc::new(NonBlockingFd::new(master)?),
        });
    }
    let missing = || io::Error::other("child has no output pipe");
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    Ok(ProcessIo::Pipes {
        stdin: child
            .stdin
            .take()
            .map(|stdin| NonBlockingFd::new(stdin.into()))
            .transpose()?,
        stdout: NonBlockingFd::new(stdout.into())?,
        stderr: NonBlockingFd::new(stderr.into())?,
    })
}

/// Credentials to switch to in the child, if they differ from envd's.
#[derive(Debug)]
struct IdentityChange {
    target: Option<Credentials>,
}

impl IdentityChange {
    fn for_credentials(credentials: &Credentials) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        // Root always sets them, so supplementary groups are exact; anyone else can only keep
        // their own identity, and trying anything else fails with EPERM as it should.
        let unchanged = euid != 0 && credentials.uid == euid && credentials.gid == egid;
        Self {
            target: (!unchanged).then(|| credentials.clone()),
        }
    }
}

/// Runs in the child between fork and exec.
fn enter_child(terminal: Terminal, identity: &IdentityChange) -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    if let Terminal::Controlling = terminal {
        // SAFETY: fd 0 is the PTY slave (dup2'ed by std before this hook); TIOCSCTTY takes an int.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(credentials) = &identity.target {
        // SAFETY: the pointer and length describe the captured, live groups vector.
        if unsafe { libc::setgroups(credentials.groups.len(), credentials.groups.as_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: setgid/setuid have no memory-safety preconditions; gid goes first while we
        // still have the privilege to change it.
        if unsafe { libc::setgid(credentials.gid) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::setuid(credentials.uid) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
