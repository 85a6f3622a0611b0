//! Keeping boot snapshots bounded: each start from one marks it used, and making one more than
//! the limit deletes the least recently used that nothing stands on.

use std::path::Path;

use super::is_boot_snapshot;
use crate::images::{ImageStore, TemplateManifest};

/// Marker file in a boot snapshot's directory whose modification time is its last use.
const LAST_USED: &str = ".last-used";

/// Records that a sandbox starts from boot snapshot `dir` now (for `enforce_limit`).
pub fn mark_used(dir: &Path) {
    let marker = dir.join(LAST_USED);
    let touched = std::fs::File::create(&marker)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(path = %marker.display(), error = %e, "mark boot snapshot used");
    }
}

/// Keeps at most `limit` boot snapshots: deletes the least recently used beyond that, except
/// `keep` and those a sandbox (pins) or a template (parent) still stands on. Returns the names
/// deleted.
pub fn enforce_limit(store: &ImageStore, limit: usize, keep: &str) -> Vec<String> {
    let templates = store.list();
    let mut candidates: Vec<(std::time::SystemTime, &TemplateManifest)> = templates
        .iter()
        .filter(|t| is_boot_snapshot(&t.name))
        .map(|t| {
            let dir = store.template_dir(&t.name);
            let created = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(t.created_at_ms.max(0) as u64);
            let used = std::fs::metadata(dir.join(LAST_USED))
                .and_then(|m| m.modified())
                .unwrap_or(created);
            (used, t)
        })
        .collect();
    let mut excess = candidates.len().saturating_sub(limit);
    candidates.sort_by_key(|(used, _)| *used);
    let mut deleted = Vec::new();
    for (_, snapshot) in candidates {
        if excess == 0 {
            break;
        }
        let dir = store.template_dir(&snapshot.name);
        let pinned =
            std::fs::metadata(dir.join(&snapshot.rootfs)).is_ok_and(|m| crate::pins::is_pinned(&m));
        let parent_of_another = templates.iter().any(|t| {
            t.snapshot
                .as_ref()
                .is_some_and(|s| s.parent == snapshot.name)
        });
        if snapshot.name == keep || pinned || parent_of_another {
            continue;
        }
        match store.remove_template(&snapshot.name) {
            Ok(()) => {
                excess -= 1;
                deleted.push(snapshot.name.clone());
            }
            Err(e) => tracing::warn!(template = snapshot.name, error = %e, "delete boot snapshot"),
        }
    }
    deleted
}

/// A shape whose boot snapshot the agent makes at start, so that even the first sandbox of
/// it starts fast: `<template>:<vcpus>x<memory_mb>`, e.g. `minimal:1x256` (the control
#[cfg(test)]
mod tests {
    use super::*;

    /// Four boot snapshots, a limit of two: the least recently used unpinned one without
    /// children goes, and the one just made stays whatever its age.
    #[test]
    fn the_least_recently_used_free_boot_snapshots_go_beyond_the_limit() {
        use crate::images::{write_manifest_in, SnapshotManifest};
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path());
        let make = |name: &str, parent: &str, used_secs_ago: u64| {
            let template_dir = store.template_dir(name);
            std::fs::create_dir_all(&template_dir).unwrap();
            std::fs::write(template_dir.join("disk.qcow2"), b"disk").unwrap();
            let manifest = TemplateManifest {
                name: name.into(),
                rootfs: "disk.qcow2".into(),
                snapshot: Some(SnapshotManifest {
                    memory: "memory".into(),
                    device_state: "vmstate".into(),
                    vcpus: 1,
                    memory_mb: 256,
                    disk_mb: 1024,
                    envd_token: String::new(),
                    env: Default::default(),
                    parent: parent.into(),
                    source_sandbox: "sb-x".into(),
                    vmm: "qemu".into(),
                }),
                kernel: "vmlinux".into(),
                rootfs_bytes: 1 << 30,
                inputs_key: "k".into(),
                created_at_ms: 1,
            };
            write_manifest_in(&template_dir, &manifest).unwrap();
            mark_used(&template_dir);
            let used = std::time::SystemTime::now() - std::time::Duration::from_secs(used_secs_ago);
            std::fs::File::options()
                .write(true)
                .open(template_dir.join(LAST_USED))
                .unwrap()
                .set_modified(used)
                .unwrap();
        };
        make("_boot-new", "minimal", 500); // just made, yet marked old: kept
        make("_boot-pinned", "minimal", 400);
        make("_boot-parent", "minimal", 300);
        make("_boot-free-old", "minimal", 200);
        make("_boot-free-recent", "minimal", 10);
        make("user-template", "_boot-parent", 0);
        crate::pins::pin(
            &store.template_dir("_boot-pinned").join("disk.qcow2"),
            "t1",
            "sb-a",
        )
        .unwrap();
        let deleted = enforce_limit(&store, 2, "_boot-new");
        assert_eq!(deleted, ["_boot-free-old", "_boot-free-recent"]);
        let left: Vec<String> = store.list().into_iter().map(|t| t.name).collect();
        assert_eq!(
            left,
            ["_boot-new", "_boot-parent", "_boot-pinned", "user-template"]
        );
    }
}
