//! [`Processes`]: the operations of the Process service over the registry, the reaper and
//! the per-process supervisors.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::launch::Launch;
use super::output::Subscription;
use super::registry::{Input, ProcessEntry, Registry};
use super::spawn::{spawn, ProcessIo};
use super::supervise::{kill_group, supervise, OutputKind, OutputSource, Supervision};
use super::{pty, AfterInput, ProcessError, ProcessInfo, PtySize, Selector, Spec};
use crate::reaper::Reaper;
use crate::users::UserDb;

/// How often shutdown checks whether the processes are gone.
const STOP_POLL: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub struct Processes {
    reaper: Arc<Reaper>,
    registry: Arc<Registry>,
    /// Environment from the last Init, added to every new process.
    sandbox_env: RwLock<HashMap<String, String>>,
}

/// A process just started or attached to, with its event subscription.
#[derive(Debug)]
pub struct Attached {
    pub pid: u32,
    pub tag: Option<String>,
    pub subscription: Subscription,
}

impl Processes {
    pub fn new(reaper: Arc<Reaper>) -> Self {
        Self {
            reaper,
            registry: Arc::default(),
            sandbox_env: RwLock::default(),
        }
    }

    /// Replaces the sandbox-wide environment for processes started from now on.
    pub fn set_sandbox_env(&self, env: HashMap<String, String>) {
        *self
            .sandbox_env
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = env;
    }

    /// Starts a process and subscribes to its events from the very beginning.
    pub fn start(&self, spec: Spec) -> Result<Attached, ProcessError> {
        let launch = {
            let env = self
                .sandbox_env
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Launch::resolve(&spec, &UserDb::load(), &env)?
        };

        // Held across the fork so two starts cannot claim the same tag.
        let mut registry = self.registry.lock();
        if let Some(tag) = &spec.tag {
            if registry.tag_in_use(tag) {
                return Err(ProcessError::TagInUse { tag: tag.clone() });
            }
        }
        let started = Instant::now();
        let spawned = spawn(&launch, &self.reaper)?;
        let timeout = spec.timeout;
        let (input, outputs) = match spawned.io {
            ProcessIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => (
                stdin.map_or(Input::None, |stdin| {
                    Input::Pipe(tokio::sync::Mutex::new(Some(stdin)))
                }),
                vec![
                    OutputSource {
                        fd: Arc::new(stdout),
                        kind: OutputKind::Stdout,
                    },
                    OutputSource {
                        fd: Arc::new(stderr),
                        kind: OutputKind::Stderr,
                    },
                ],
            ),
            ProcessIo::Pty { master } => (
                Input::Pty(Arc::clone(&master)),
                vec![OutputSource {
                    fd: master,
                    kind: OutputKind::Pty,
                }],
            ),
        };
        let entry = Arc::new(ProcessEntry::new(spawned.pid, spec, input));
        // Subscribed before the supervisor reads anything, so nothing can be missed.
        let subscription = entry.output.subscribe();
        registry.insert(Arc::clone(&entry));
        drop(registry);

        // Debug only: under TCG every console line costs the guest real time.
        tracing::debug!(
            pid = entry.pid,
            tag = entry.tag.as_deref().unwrap_or_default(),
            cmd = %launch.program.display(),
            "started process"
        );
        tokio::spawn(supervise(Supervision {
            entry: Arc::clone(&entry),
            registry: Arc::clone(&self.registry),
            exit: spawned.exit,
            outputs,
            timeout,
            started,
        }));
        Ok(Attached {
            pid: entry.pid,
            tag: entry.tag.clone(),
            subscription,
        })
    }

    /// Subscribes to a running or recently exited process: replay, then live events.
    pub fn attach(&self, selector: &Selector) -> Result<Attached, ProcessError> {
        let entry = self.find(selector)?;
        Ok(Attached {
            pid: entry.pid,
            tag: entry.tag.clone(),
            subscription: entry.output.subscribe(),
        })
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        self.registry
            .all()
            .iter()
            .map(|entry| entry.info())
            .collect()
    }

    /// Writes to stdin or the PTY, then optionally closes stdin (a PTY gets end-of-file, ^D).
    pub async fn send_input(
        &self,
        selector: &Selector,
        data: &[u8],
        after: AfterInput,
    ) -> Result<(), ProcessError> {
        let entry = self.find_running(selector)?;
        let pid = entry.pid;
        let write_error = |source| ProcessError::WriteInput { pid, source };
        match &entry.input {
            Input::None => Err(ProcessError::NoStdin { pid }),
            Input::Pipe(pipe) => {
                let mut pipe = pipe.lock().await;
                let Some(writer) = pipe.as_ref() else {
                    return Err(ProcessError::StdinClosed { pid });
                };
                writer.write_all(data).await.map_err(write_error)?;
                if after == AfterInput::Close {
                    pipe.take();
                }
                Ok(())
            }
            Input::Pty(master) => {
                master.write_all(data).await.map_err(write_error)?;
                if after == AfterInput::Close {
                    const END_OF_FILE: &[u8] = b"\x04";
                    master.write_all(END_OF_FILE).await.map_err(write_error)?;
                }
                Ok(())
            }
        }
    }

    /// Sends `signal` to the process's whole process group.
    pub fn signal(&self, selector: &Selector, signal: i32) -> Result<(), ProcessError> {
        let signal =
            Signal::try_from(signal).map_err(|_| ProcessError::InvalidSignal { signal })?;
        let entry = self.find_running(selector)?;
        let pid = entry.pid;
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal).map_err(
            |source| match source {
                // Reaped a moment ago, before its supervisor marked it.
                nix::errno::Errno::ESRCH => ProcessError::NotRunning { pid },
                source => ProcessError::Signal { pid, source },
            },
        )?;
        tracing::info!(pid = entry.pid, ?signal, "signalled process group");
        Ok(())
    }

    pub fn resize_pty(&self, selector: &Selector, size: PtySize) -> Result<(), ProcessError> {
        let entry = self.find_running(selector)?;
        let Input::Pty(master) = &entry.input else {
            return Err(ProcessError::NoPty { pid: entry.pid });
        };
        pty::resize(master.raw_fd(), size).map_err(|source| ProcessError::Resize {
            pid: entry.pid,
            source,
        })
    }

    /// SIGTERMs every running process group, waits up to `grace`, then SIGKILLs the rest.
    pub async fn stop_all(&self, grace: Duration) {
        let running = self.registry.running();
        if running.is_empty() {
            return;
        }
        for entry in &running {
            if !entry.is_reaped() {
                kill_group(entry.pid, Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && running.iter().any(|entry| !entry.is_reaped()) {
            tokio::time::sleep(STOP_POLL).await;
        }
        for entry in &running {
            // Also catches group members that outlived their leader.
            kill_group(entry.pid, Signal::SIGKILL);
        }
    }

    fn find(&self, selector: &Selector) -> Result<Arc<ProcessEntry>, ProcessError> {
        self.registry
            .find(selector)
            .ok_or_else(|| ProcessError::NotFound {
                selector: selector.clone(),
            })
    }

    fn find_running(&self, selector: &Selector) -> Result<Arc<ProcessEntry>, ProcessError> {
        let entry = self.find(selector)?;
        if entry.is_reaped() {
            return Err(ProcessError::NotRunning { pid: entry.pid });
        }
        Ok(entry)
    }
}
