//! Boot snapshots: a sandbox of a base image starts from a snapshot of that image freshly
//! booted, not from a cold kernel boot.
//!
//! The first sandbox of a shape (image, vCPUs, memory, disk, kernel command line, VMM build,
//! accelerator) boots cold with an empty environment, is frozen into a hidden snapshot
//! template named after a hash of that shape, and only then gets its own environment and a
//! new envd token. Every later sandbox of the shape is a clone of it. Nothing of a user is in
//! the frozen guest: it never ran a user's command nor saw a user's environment.
//!
//! A changed image, kernel, QEMU or Firecracker binary changes the shape's key, so a stale
//! snapshot is never used; start-up deletes stale ones nobody uses. See docs/snapshots.md.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::accel::Accelerator;
use crate::images::TemplateManifest;

mod make;
mod prepare;
mod retention;

pub use prepare::{prepare, PreparedShape};
pub use retention::{enforce_limit, mark_used};

/// Hidden templates made for boot snapshots start with this; `list_templates` leaves them out.
pub const PREFIX: &str = "_boot-";

pub fn is_boot_snapshot(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Everything a saved guest depends on: a sandbox may start from a boot snapshot only when
/// all of it is equal.
#[derive(Debug, Clone)]
pub struct Shape<'a> {
    pub base: &'a TemplateManifest,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub kernel_args: &'a str,
    pub vmm: &'a str,
    pub vmm_build: &'a str,
    pub accelerator: Accelerator,
}

impl Shape<'_> {
    /// The base image and VMM build this shape was made from: stale once either changes.
    fn origin(&self) -> String {
        origin(self.base, self.vmm, self.vmm_build)
    }

    /// Recorded as the boot snapshot's `inputs_key`: readable, and hashed into its name.
    pub fn key(&self) -> String {
        format!(
            "{} vcpus={} memory_mb={} disk_mb={} accel={} args={}",
            self.origin(),
            self.vcpus,
            self.memory_mb,
            self.disk_mb,
            self.accelerator.as_str(),
            self.kernel_args
        )
    }

    pub fn template_name(&self) -> String {
        let digest = Sha256::digest(self.key().as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{PREFIX}{hex}")
    }
}

fn origin(base: &TemplateManifest, vmm: &str, vmm_build: &str) -> String {
    format!(
        "boot/v1 base={}@{}/{} kernel={} vmm={vmm}/{vmm_build}",
        base.name, base.inputs_key, base.created_at_ms, base.kernel
    )
}

/// Whether a boot snapshot was made from something that has changed since: its base image
/// rebuilt or gone, or another VMM build. Such a snapshot can never be used again.
pub fn is_stale(
    snapshot: &TemplateManifest,
    base: Option<&TemplateManifest>,
    vmm: &str,
    vmm_build: &str,
) -> bool {
    match base {
        Some(base) => !snapshot
            .inputs_key
            .starts_with(&format!("{} ", origin(base, vmm, vmm_build))),
        None => true,
    }
}

/// Identifies the VMM binary a saved state came from: its resolved path, size and change
/// time. Saved device state is only guaranteed to load into the same build.
pub fn vmm_build(binary: &Path) -> String {
    let resolved = resolve_in_path(binary).unwrap_or_else(|| binary.to_path_buf());
    match std::fs::metadata(&resolved) {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            format!(
                "{}:{}:{}",
                resolved.display(),
                meta.size(),
                meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
            )
        }
        Err(_) => resolved.display().to_string(),
    }
}

fn resolve_in_path(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return std::fs::canonicalize(binary).ok();
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(binary))
        .find(|candidate| candidate.is_file())
        .and_then(|found| std::fs::canonicalize(found).ok())
}

/// shape; other sandboxes of the shape boot cold meanwhile.
#[derive(Debug, Default)]
pub struct Builds {
    in_progress: Arc<Mutex<HashSet<String>>>,
}

/// The right to make one boot snapshot, released when dropped.
#[derive(Debug)]
pub struct BuildClaim {
    pub template: String,
    pub key: String,
    in_progress: Arc<Mutex<HashSet<String>>>,
    /// Set when making the snapshot lost the sandbox that was booted to make it.
    lost_sandbox: Arc<AtomicBool>,
}

impl BuildClaim {
    /// Records that making the snapshot lost its sandbox (seen through [`Self::lost_flag`]).
    pub fn mark_lost_sandbox(&self) {
        self.lost_sandbox.store(true, Ordering::Relaxed);
    }

    /// A flag that outlives the claim and tells whether making the snapshot lost the sandbox.
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.lost_sandbox)
    }
}

impl Builds {
    pub fn claim(&self, template: &str, key: String) -> Option<BuildClaim> {
        let fresh = self.in_progress.lock().unwrap().insert(template.to_owned());
        fresh.then(|| BuildClaim {
            template: template.to_owned(),
            key,
            in_progress: self.in_progress.clone(),
            lost_sandbox: Arc::default(),
        })
    }
}

impl Drop for BuildClaim {
    fn drop(&mut self) {
        self.in_progress.lock().unwrap().remove(&self.template);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(inputs: &str) -> TemplateManifest {
        TemplateManifest {
            name: "minimal".into(),
            kernel: "vmlinux-abc".into(),
            rootfs: "rootfs.ext4".into(),
            rootfs_bytes: 1 << 30,
            inputs_key: inputs.into(),
            created_at_ms: 1,
            snapshot: None,
        }
    }

    fn shape<'a>(base: &'a TemplateManifest, memory_mb: u32, args: &'a str) -> Shape<'a> {
        Shape {
            base,
            vcpus: 1,
            memory_mb,
            disk_mb: 1024,
            kernel_args: args,
            vmm: "qemu",
            vmm_build: "/usr/bin/qemu:1:2",
            accelerator: Accelerator::Tcg,
        }
    }

    #[test]
    fn every_input_of_a_saved_guest_changes_the_name() {
        let (a, b) = (base("k1"), base("k2"));
        let names: HashSet<String> = [
            shape(&a, 256, "x"),
            shape(&a, 512, "x"),
            shape(&a, 256, "y"),
            shape(&b, 256, "x"),
            Shape {
                vmm_build: "/usr/bin/qemu:1:3",
                ..shape(&a, 256, "x")
            },
            Shape {
                accelerator: Accelerator::Kvm,
                ..shape(&a, 256, "x")
            },
        ]
        .iter()
        .map(|s| s.template_name())
        .collect();
        assert_eq!(names.len(), 6);
        let name = shape(&a, 256, "x").template_name();
        assert!(is_boot_snapshot(&name));
        assert!(crate::images::validate_template_name(&name).is_ok());
        assert_eq!(name, shape(&a, 256, "x").template_name());
    }

    #[test]
    fn a_snapshot_of_a_rebuilt_image_or_another_vmm_build_is_stale() {
        let (a, rebuilt) = (base("k1"), base("k2"));
        let snapshot = TemplateManifest {
            inputs_key: shape(&a, 256, "x").key(),
            ..base("ignored")
        };
        assert!(!is_stale(&snapshot, Some(&a), "qemu", "/usr/bin/qemu:1:2"));
        assert!(is_stale(
            &snapshot,
            Some(&rebuilt),
            "qemu",
            "/usr/bin/qemu:1:2"
        ));
        assert!(is_stale(&snapshot, Some(&a), "qemu", "/usr/bin/qemu:9:9"));
        assert!(is_stale(
            &snapshot,
            Some(&a),
            "firecracker",
            "/usr/bin/qemu:1:2"
        ));
        assert!(is_stale(&snapshot, None, "qemu", "/usr/bin/qemu:1:2"));
    }

    #[test]
    fn one_build_per_shape_at_a_time() {
        let builds = Builds::default();
        let claim = builds.claim("_boot-1", "k".into()).unwrap();
        assert!(builds.claim("_boot-1", "k".into()).is_none());
        assert!(builds.claim("_boot-2", "k".into()).is_some());
        drop(claim);
        assert!(builds.claim("_boot-1", "k".into()).is_some());
    }
}
