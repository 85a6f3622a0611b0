//! The table of processes: every running one plus the most recent exited ones.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use super::fd::NonBlockingFd;
use super::output::OutputLog;
use super::{ExitInfo, ProcessInfo, Selector, Spec};

/// Exited processes kept for List and Attach.
pub const EXITED_KEPT: usize = 64;

/// How envd writes to a process's stdin.
#[derive(Debug)]
pub enum Input {
    /// stdin is /dev/null.
    None,
    /// A pipe; `None` inside once closed.
    Pipe(tokio::sync::Mutex<Option<NonBlockingFd>>),
    /// The PTY master.
    Pty(Arc<NonBlockingFd>),
}

/// One process envd started.
#[derive(Debug)]
pub struct ProcessEntry {
    pub pid: u32,
    pub tag: Option<String>,
    pub spec: Spec,
    pub started_at: SystemTime,
    pub output: OutputLog,
    pub input: Input,
    /// Set once the reaper has collected the process; its pid may be reused after that.
    reaped: AtomicBool,
    exit: OnceLock<ExitInfo>,
}

impl ProcessEntry {
    pub fn new(pid: u32, spec: Spec, input: Input) -> Self {
        Self {
            pid,
            tag: spec.tag.clone(),
            spec,
            started_at: SystemTime::now(),
            output: OutputLog::default(),
            input,
            reaped: AtomicBool::new(false),
            exit: OnceLock::new(),
        }
    }

    pub fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::SeqCst);
    }

    pub fn is_reaped(&self) -> bool {
        self.reaped.load(Ordering::SeqCst)
    }

    pub fn set_exit(&self, info: ExitInfo) {
        let _ = self.exit.set(info);
    }

    pub fn info(&self) -> ProcessInfo {
        ProcessInfo {
            pid: self.pid,
            tag: self.tag.clone(),
            spec: self.spec.clone(),
            exit: self.exit.get().cloned(),
            started_at: self.started_at,
        }
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    state: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    running: HashMap<u32, Arc<ProcessEntry>>,
    /// Oldest first.
    exited: VecDeque<Arc<ProcessEntry>>,
}

impl Registry {
    /// Locks the table for a check-then-insert sequence such as a tag reservation.
    pub fn lock(&self) -> RegistryGuard<'_> {
        RegistryGuard {
            table: self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// Moves a process from running to the exited history.
    pub fn finish(&self, entry: &Arc<ProcessEntry>) {
        let mut guard = self.lock();
        let table = &mut guard.table;
        // The pid may already belong to a newer process; only move this very entry.
        if table
            .running
            .get(&entry.pid)
            .is_some_and(|running| Arc::ptr_eq(running, entry))
        {
            table.running.remove(&entry.pid);
            table.retire(Arc::clone(entry));
        }
    }

    pub fn find(&self, selector: &Selector) -> Option<Arc<ProcessEntry>> {
        let guard = self.lock();
        let table = &guard.table;
        let matches = |entry: &&Arc<ProcessEntry>| match selector {
            Selector::Pid(pid) => entry.pid == *pid,
            Selector::Tag(tag) => entry.tag.as_deref() == Some(tag.as_str()),
        };
        table
            .running
            .values()
            .find(matches)
            .or_else(|| table.exited.iter().rev().find(matches))
            .cloned()
    }

    /// Running processes by pid, then exited ones oldest first.
    pub fn all(&self) -> Vec<Arc<ProcessEntry>> {
        let guard = self.lock();
        let mut running: Vec<_> = guard.table.running.values().cloned().collect();
        running.sort_by_key(|entry| entry.pid);
        running.extend(guard.table.exited.iter().cloned());
        running
    }

    pub fn running(&self) -> Vec<Arc<ProcessEntry>> {
        self.lock().table.running.values().cloned().collect()
    }
}

/// Exclusive access to the table.
#[derive(Debug)]
pub struct RegistryGuard<'a> {
    table: MutexGuard<'a, Table>,
}

impl RegistryGuard<'_> {
    pub fn tag_in_use(&self, tag: &str) -> bool {
        self.table
            .running
            .values()
            .any(|entry| entry.tag.as_deref() == Some(tag))
    }

    pub fn insert(&mut self, entry: Arc<ProcessEntry>) {
        // A reaped process whose supervisor has not finished yet may still hold the pid.
        if let Some(previous) = self.table.running.insert(entry.pid, entry) {
            self.table.retire(previous);
        }
    }
}

impl Table {
    fn retire(&mut self, entry: Arc<ProcessEntry>) {
        self.exited.push_back(entry);
        while self.exited.len() > EXITED_KEPT {
            self.exited.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, tag: &str) -> Arc<ProcessEntry> {
        let spec = Spec {
            cmd: "true".to_owned(),
            tag: Some(tag.to_owned()),
            ..Spec::default()
        };
        Arc::new(ProcessEntry::new(pid, spec, Input::None))
    }

    #[test]
    fn finds_running_before_exited_and_caps_history() {
        let registry = Registry::default();
        let first = entry(10, "job");
        registry.lock().insert(Arc::clone(&first));
        assert!(registry.lock().tag_in_use("job"));
        registry.finish(&first);
        assert!(!registry.lock().tag_in_use("job"));

        let second = entry(11, "job");
        registry.lock().insert(Arc::clone(&second));
        let found = registry.find(&Selector::Tag("job".to_owned())).unwrap();
        assert!(Arc::ptr_eq(&found, &second), "running wins over exited");
        registry.finish(&second);
        let found = registry.find(&Selector::Tag("job".to_owned())).unwrap();
        assert!(Arc::ptr_eq(&found, &second), "most recent exited wins");

        for pid in 100..100 + EXITED_KEPT as u32 {
            let old = entry(pid, "filler");
            registry.lock().insert(Arc::clone(&old));
            registry.finish(&old);
        }
        assert_eq!(registry.all().len(), EXITED_KEPT);
        assert!(registry.find(&Selector::Pid(10)).is_none());
    }

    #[test]
    fn a_reused_pid_does_not_retire_the_new_process() {
        let registry = Registry::default();
        let old = entry(7, "old");
        let new = entry(7, "new");
        registry.lock().insert(Arc::clone(&old));
        registry.lock().insert(Arc::clone(&new));
        // The old supervisor finishing late must not touch the new process.
        registry.finish(&old);
        let running = registry.running();
        assert_eq!(running.len(), 1);
        assert!(Arc::ptr_eq(&running[0], &new));
        assert!(registry.find(&Selector::Tag("old".to_owned())).is_some());
    }
}
