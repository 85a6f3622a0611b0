//! Filesystem watches over inotify (through `notify`), translated to create / write / remove /
//! rename / chmod changes.
//!
//! notify reports one rename as up to three events (from, to, both); they are folded into one
//! change carrying both names, and a rename whose other half never arrives is reported alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::FsError;

/// Raw events buffered between notify's thread and the translating task.
const RAW_CAPACITY: usize = 1024;
/// Changes buffered for the client.
const CHANGE_CAPACITY: usize = 256;
/// How long the first half of a rename waits for its second half.
const RENAME_PAIRING: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// Only the directory's direct entries.
    Flat,
    /// The whole tree below it, including directories created later.
    Recursive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Write,
    Remove,
    Rename,
    Chmod,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// The path concerned; for a rename the new name when known, else the old one.
    pub path: PathBuf,
    /// For a rename, the old name when known.
    pub from_path: Option<PathBuf>,
}

/// Starts watching `path`. Changes arrive on the receiver until it is dropped, which stops
/// the watch.
pub fn watch(path: &Path, mode: WatchMode) -> Result<mpsc::Receiver<Change>, FsError> {
    std::fs::symlink_metadata(path).map_err(FsError::io("stat", path))?;
    let watch_error = |source| FsError::Watch {
        path: path.to_path_buf(),
        source,
    };
    let (raw_sender, raw_receiver) = mpsc::channel(RAW_CAPACITY);
    let mut watcher = notify::recommended_watcher(move |event| {
        // Runs on notify's own thread. Blocking here is backpressure; it fails as soon as the
        // translating task is gone.
        let _ = raw_sender.blocking_send(event);
    })
    .map_err(watch_error)?;
    let recursive = match mode {
        WatchMode::Flat => RecursiveMode::NonRecursive,
        WatchMode::Recursive => RecursiveMode::Recursive,
    };
    watcher.watch(path, recursive).map_err(watch_error)?;

    let (sender, receiver) = mpsc::channel(CHANGE_CAPACITY);
    let root = path.to_path_buf();
    tokio::spawn(async move {
        translate(raw_receiver, sender).await;
        // The raw receiver is gone by now, so notify's thread is not blocked on it and can
        // take the shutdown message the watcher's drop sends.
        drop(watcher);
        tracing::debug!(path = %root.display(), "stopped watch");
    });
    Ok(receiver)
}

async fn translate(mut raw: mpsc::Receiver<notify::Result<Event>>, changes: mpsc::Sender<Change>) {
    let mut pairing = RenamePairing::default();
    loop {
        let deadline = pairing.deadline();
        let out = tokio::select! {
            biased;
            () = changes.closed() => return,
            event = raw.recv() => match event {
                Some(Ok(event)) => pairing.push(event, Instant::now()),
                Some(Err(error)) => {
                    tracing::warn!(%error, "filesystem watch error");
                    Vec::new()
                }
                None => return,
            },
            () = sleep_until(deadline), if deadline.is_some() => pairing.expire(),
        };
        for change in out {
            if changes.send(change).await.is_err() {
                return;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// Folds notify's rename halves into single changes.
#[derive(Debug, Default)]
struct RenamePairing {
    /// The "from" half of a rename, waiting for its "to" half.
    pending: Option<PendingRename>,
    /// Tracker of the last rename completed from halves; its "both" event is a duplicate.
    completed: Option<usize>,
}

#[derive(Debug)]
struct PendingRename {
    tracker: usize,
    from: PathBuf,
    deadline: Instant,
}

impl RenamePairing {
    fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|pending| pending.deadline)
    }

    /// The pending half, reported alone: it was moved out of the watched tree.
    fn expire(&mut self) -> Vec<Change> {
        self.pending
            .take()
            .map(|pending| rename(pending.from.clone(), Some(pending.from)))
            .into_iter()
            .collect()
    }

    fn push(&mut self, event: Event, now: Instant) -> Vec<Change> {
        let tracker = event.attrs.tracker();
        let mut paths = event.paths.into_iter();
        let first = paths.next();
        let second = paths.next();
        let Some(path) = first else {
            return Vec::new();
        };
        if let EventKind::Modify(ModifyKind::Name(RenameMode::To)) = event.kind {
            if let Some(pending) = self.pending.take_if(|p| Some(p.tracker) == tracker) {
                self.completed = tracker;
                return vec![rename(path, Some(pending.from))];
            }
        }
        // Anything else first flushes a pending half, keeping the order of events.
        let mut out = self.expire();
        let kind = match event.kind {
            EventKind::Create(_) => ChangeKind::Create,
            EventKind::Remove(_) => ChangeKind::Remove,
            EventKind::Modify(ModifyKind::Metadata(_)) => ChangeKind::Chmod,
            EventKind::Modify(ModifyKind::Name(mode)) => {
                match (mode, tracker) {
                    (RenameMode::From, Some(tracker)) => {
                        self.pending = Some(PendingRename {
                            tracker,
                            from: path,
                            deadline: now + RENAME_PAIRING,
                        });
                    }
                    (RenameMode::Both, _) if tracker.is_some() && tracker == self.completed => {}
                    (RenameMode::Both, _) => match second {
                        Some(to) => out.push(rename(to, Some(path))),
                        None => out.push(rename(path, None)),
                    },
                    (RenameMode::From, None) => out.push(rename(path.clone(), Some(path))),
                    _ => out.push(rename(path, None)),
                }
                return out;
            }
            EventKind::Modify(_) => ChangeKind::Write,
            EventKind::Access(_) | EventKind::Any | EventKind::Other => return out,
        };
        out.push(Change {
            kind,
            path,
            from_path: None,
        });
        out
    }
}

fn rename(path: PathBuf, from_path: Option<PathBuf>) -> Change {
    Change {
        kind: ChangeKind::Rename,
        path,
        from_path,
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind};

    use super::*;

    fn event(kind: EventKind, paths: &[&str], tracker: Option<usize>) -> Event {
        let mut event = Event::new(kind);
        for path in paths {
            event = event.add_path(PathBuf::from(path));
        }
        match tracker {
            Some(tracker) => event.set_tracker(tracker),
            None => event,
        }
    }

    fn name(mode: RenameMode) -> EventKind {
        EventKind::Modify(ModifyKind::Name(mode))
    }

    fn change(kind: ChangeKind, path: &str, from: Option<&str>) -> Change {
        Change {
            kind,
            path: path.into(),
            from_path: from.map(PathBuf::from),
        }
    }

    #[test]
    fn translates_simple_events() {
        let mut pairing = RenamePairing::default();
        let now = Instant::now();
        let cases = [
            (
                EventKind::Create(CreateKind::File),
                Some(ChangeKind::Create),
            ),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                Some(ChangeKind::Write),
            ),
            (
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                Some(ChangeKind::Chmod),
            ),
            (
                EventKind::Remove(RemoveKind::File),
                Some(ChangeKind::Remove),
            ),
            (EventKind::Access(notify::event::AccessKind::Any), None),
        ];
        for (kind, expected) in cases {
            let out = pairing.push(event(kind, &["/w/a"], None), now);
            let expected: Vec<_> = expected
                .map(|kind| change(kind, "/w/a", None))
                .into_iter()
                .collect();
            assert_eq!(out, expected, "{kind:?}");
        }
    }

    #[test]
    fn folds_rename_halves_into_one_change() {
        let mut pairing = RenamePairing::default();
        let now = Instant::now();
        assert!(pairing
            .push(event(name(RenameMode::From), &["/w/old"], Some(7)), now)
            .is_empty());
        assert_eq!(
            pairing.push(event(name(RenameMode::To), &["/w/new"], Some(7)), now),
            [change(ChangeKind::Rename, "/w/new", Some("/w/old"))]
        );
        assert!(pairing
            .push(
                event(name(RenameMode::Both), &["/w/old", "/w/new"], Some(7)),
                now
            )
            .is_empty());
        assert_eq!(pairing.deadline(), None);
    }

    #[test]
    fn reports_unpaired_halves_alone() {
        let mut pairing = RenamePairing::default();
        let now = Instant::now();
        pairing.push(event(name(RenameMode::From), &["/w/gone"], Some(1)), now);
        assert_eq!(pairing.deadline(), Some(now + RENAME_PAIRING));
        assert_eq!(
            pairing.expire(),
            [change(ChangeKind::Rename, "/w/gone", Some("/w/gone"))]
        );
        assert_eq!(
            pairing.push(event(name(RenameMode::To), &["/w/in"], Some(2)), now),
            [change(ChangeKind::Rename, "/w/in", None)]
        );
        pairing.push(event(name(RenameMode::From), &["/w/x"], Some(3)), now);
        assert_eq!(
            pairing.push(
                event(EventKind::Create(CreateKind::File), &["/w/y"], None),
                now
            ),
            [
                change(ChangeKind::Rename, "/w/x", Some("/w/x")),
                change(ChangeKind::Create, "/w/y", None)
            ]
        );
    }
}
