//! Pins keep a base template's root filesystem image on disk while a sandbox stands on it.
//!
//! Rebuilding a template writes a new image and prunes old ones (image_build/rootfs.rs); a
//! sandbox booted before, and paused for a long time since, would otherwise find its base gone
//! when it resumes. A pin is a hard link to the image at
//! `templates/<name>/.pins/<instance>.<sandbox-id>`: it costs no space, survives agent restarts
//! with the paused sandbox, and makes the image's link count say "in use", which is all pruning
//! checks. The sandbox's overlay still names the image itself, never the pin, so snapshot
//! chains never end in a file that goes away with one sandbox.

use std::io;
use std::path::{Path, PathBuf};

const PINS_DIR: &str = ".pins";

fn pin_name(instance: &str, sandbox_id: &str) -> String {
    format!("{instance}.{sandbox_id}")
}

/// Pins `image` (a base template's root filesystem) for one sandbox.
pub fn pin(image: &Path, instance: &str, sandbox_id: &str) -> io::Result<()> {
    let dir = image
        .parent()
        .ok_or_else(|| io::Error::other("image path has no directory"))?
        .join(PINS_DIR);
    std::fs::create_dir_all(&dir)?;
    let pin = dir.join(pin_name(instance, sandbox_id));
    match std::fs::hard_link(image, &pin) {
        // A sandbox directory adopted after a restart may already hold its pin.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Removes a sandbox's pins in every template (it has at most one; the template it was booted
/// from need not be remembered).
pub fn unpin(images_dir: &Path, instance: &str, sandbox_id: &str) {
    let name = pin_name(instance, sandbox_id);
    for dir in pin_dirs(images_dir) {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(pin = %dir.join(&name).display(), error = %e, "remove pin"),
        }
    }
}

/// Removes this instance's pins whose sandbox no longer exists (`exists(sandbox_id)` is false):
/// what a crash left behind. Returns the removed pins' names.
pub fn remove_stale(
    images_dir: &Path,
    instance: &str,
    exists: impl Fn(&str) -> bool,
) -> Vec<String> {
    let prefix = format!("{instance}.");
    let mut removed = Vec::new();
    for dir in pin_dirs(images_dir) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(sandbox_id) = name.strip_prefix(&prefix) else {
                continue;
            };
            if !exists(sandbox_id) && std::fs::remove_file(entry.path()).is_ok() {
                removed.push(name);
            }
        }
    }
    removed
}

/// Whether something besides its own name holds an image (a pin, or any other hard link),
/// from the image's metadata.
pub fn is_pinned(image: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    image.nlink() > 1
}

fn pin_dirs(images_dir: &Path) -> Vec<PathBuf> {
    let Ok(templates) = std::fs::read_dir(images_dir.join("templates")) else {
        return Vec::new();
    };
    templates
        .filter_map(Result::ok)
        .map(|entry| entry.path().join(PINS_DIR))
        .filter(|dir| dir.is_dir())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_hold_an_image_and_go_with_their_sandbox_or_when_stale() {
        let images = tempfile::tempdir().unwrap();
        let template = images.path().join("templates/minimal");
        std::fs::create_dir_all(&template).unwrap();
        let image = template.join("rootfs-a.ext4");
        std::fs::write(&image, "base").unwrap();
        let pinned = |image: &Path| is_pinned(&std::fs::metadata(image).unwrap());
        assert!(!pinned(&image));

        pin(&image, "wt1", "sb-one").unwrap();
        pin(&image, "wt1", "sb-one").unwrap(); // again, as after adoption
        pin(&image, "wt1", "sb-two").unwrap();
        pin(&image, "other", "sb-three").unwrap();
        assert!(pinned(&image));

        unpin(images.path(), "wt1", "sb-one");
        assert!(!template.join(".pins/wt1.sb-one").exists());
        assert!(pinned(&image));

        // sb-two is gone after a crash; another instance's pin is not ours to judge.
        let removed = remove_stale(images.path(), "wt1", |_| false);
        assert_eq!(removed, ["wt1.sb-two"]);
        assert!(template.join(".pins/other.sb-three").exists());
        unpin(images.path(), "other", "sb-three");
        assert!(!pinned(&image));
        assert_eq!(std::fs::read(&image).unwrap(), b"base");
    }

    #[test]
    fn live_sandboxes_keep_their_pins() {
        let images = tempfile::tempdir().unwrap();
        let template = images.path().join("templates/minimal");
        std::fs::create_dir_all(&template).unwrap();
        let image = template.join("rootfs-a.ext4");
        std::fs::write(&image, "base").unwrap();
        pin(&image, "wt1", "sb-live").unwrap();
        assert!(remove_stale(images.path(), "wt1", |id| id == "sb-live").is_empty());
        assert!(is_pinned(&std::fs::metadata(&image).unwrap()));
    }
}
