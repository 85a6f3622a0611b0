//! Where guest images live on a host and how a template is described on disk.
//!
//! ```text
//! <images_dir>/kernels/vmlinux-<key>             guest kernels, named by their input hash
//! <images_dir>/templates/<name>/template.json    TemplateManifest
//! <images_dir>/templates/<name>/rootfs.ext4      read-only base root filesystem
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Path of envd inside every guest root filesystem; the kernel runs it as PID 1.
pub const GUEST_INIT_PATH: &str = "/usr/sbin/envd";

/// Template every fresh install has.
pub const DEFAULT_TEMPLATE: &str = "minimal";

const MANIFEST_FILE: &str = "template.json";
/// Longest snapshot ancestry followed; chains are flattened long before this.
const MAX_LINEAGE: usize = 16;

/// Writes `template.json` into `dir` atomically and durably, readable by root only: manifests
/// of snapshot templates hold envd's token.
pub fn write_manifest_in(dir: &Path, manifest: &TemplateManifest) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Description of a bootable template, written by the image builder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TemplateManifest {
    pub name: String,
    /// File name under `<images_dir>/kernels/`.
    pub kernel: String,
    /// File name of the root filesystem image inside the template directory.
    pub rootfs: String,
    /// Size of the root filesystem image in bytes (also its minimum disk size).
    pub rootfs_bytes: u64,
    /// Hash of everything the image was built from; a rebuild is skipped when it matches.
    pub inputs_key: String,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Set for templates snapshotted from a sandbox: they resume a saved VM instead of booting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotManifest>,
}

/// The frozen VM behind a snapshot template. `rootfs` of its manifest names the frozen qcow2
/// disk (backed by the base template's image); these files sit beside it and never change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotManifest {
    /// Guest RAM, mapped copy-on-write (`share=off`) by every clone.
    pub memory: String,
    /// Device state saved by the VMM.
    pub device_state: String,
    /// The VM's shape: clones must have exactly these devices.
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    /// envd's token inside the frozen guest; clones rotate it at their first Init. A secret:
    /// manifests of snapshot templates are readable by root only.
    pub envd_token: String,
    /// The environment envd had; clones start from it.
    pub env: std::collections::BTreeMap<String, String>,
    /// Template the frozen disk stands on: the sandbox's disk template when frozen, then,
    /// once flattened, the base template.
    pub parent: String,
    pub source_sandbox: String,
    /// The VMM that saved the device state ("qemu" or "firecracker"): only it can load it.
    /// Templates from before this field were QEMU's.
    #[serde(default = "qemu_kind")]
    pub vmm: String,
}

fn qemu_kind() -> String {
    "qemu".into()
}

/// Error returned when a template name could escape the templates directory or is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid template name {name:?}: use 1-64 characters from a-z, 0-9, '-', '_' and '.', not starting with '.'")]
pub struct InvalidTemplateName {
    pub name: String,
}

/// Checks a template name before it is ever joined to a path.
pub fn validate_template_name(name: &str) -> Result<(), InvalidTemplateName> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if valid {
        Ok(())
    } else {
        Err(InvalidTemplateName {
            name: name.to_owned(),
        })
    }
}

/// Errors reading a template from disk.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(transparent)]
    InvalidName(#[from] InvalidTemplateName),
    #[error("template {name:?} not found")]
    NotFound { name: String },
    #[error("read template manifest {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse template manifest {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The image directory of one host.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// Everything needed to boot a template, with absolute paths.
#[derive(Debug, Clone)]
pub struct ResolvedTemplate {
    pub manifest: TemplateManifest,
    pub kernel_path: PathBuf,
    /// Raw base image, or for a snapshot template its frozen qcow2 disk.
    pub rootfs_path: PathBuf,
    pub snapshot: Option<ResolvedSnapshot>,
}

/// Absolute paths of a snapshot template's frozen files.
#[derive(Debug, Clone)]
pub struct ResolvedSnapshot {
    pub memory_path: PathBuf,
    pub device_state_path: PathBuf,
    pub manifest: SnapshotManifest,
}

impl ImageStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kernels_dir(&self) -> PathBuf {
        self.root.join("kernels")
    }

    pub fn templates_dir(&self) -> PathBuf {
        self.root.join("templates")
    }

    /// Directory of a template; the name must have been validated.
    pub fn template_dir(&self, name: &str) -> PathBuf {
        self.templates_dir().join(name)
    }

    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.template_dir(name).join(MANIFEST_FILE)
    }

    /// Reads a template's manifest, or `Ok(None)` if it has never been built.
    pub fn read_manifest(&self, name: &str) -> Result<Option<TemplateManifest>, TemplateError> {
        validate_template_name(name)?;
        let path = self.manifest_path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TemplateError::Read { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| TemplateError::Parse { path, source })
    }

    /// Writes a manifest atomically (temp file + rename), so readers never see half of one.
    pub fn write_manifest(&self, manifest: &TemplateManifest) -> std::io::Result<()> {
        let dir = self.template_dir(&manifest.name);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, self.manifest_path(&manifest.name))
    }

    /// Resolves a template to the files a VM boots from.
    pub fn resolve(&self, name: &str) -> Result<ResolvedTemplate, TemplateError> {
        let manifest = self
            .read_manifest(name)?
            .ok_or_else(|| TemplateError::NotFound {
                name: name.to_owned(),
            })?;
        let dir = self.template_dir(name);
        Ok(ResolvedTemplate {
            kernel_path: self.kernels_dir().join(&manifest.kernel),
            rootfs_path: dir.join(&manifest.rootfs),
            snapshot: manifest.snapshot.clone().map(|snapshot| ResolvedSnapshot {
                memory_path: dir.join(&snapshot.memory),
                device_state_path: dir.join(&snapshot.device_state),
                manifest: snapshot,
            }),
            manifest,
        })
    }

    /// `name` and the templates its disk stands on, following snapshot parents down to a
    /// base template. A snapshot's disk stands on its parent's until it is flattened onto the
    /// base (`sandbox::Flattener`). Unreadable links end the walk.
    pub fn lineage(&self, name: &str) -> std::collections::BTreeSet<String> {
        let mut lineage = std::collections::BTreeSet::new();
        let mut next = Some(name.to_owned());
        while let Some(current) = next.take() {
            if !lineage.insert(current.clone()) || lineage.len() > MAX_LINEAGE {
                break;
            }
            next = self
                .read_manifest(&current)
                .ok()
                .flatten()
                .and_then(|manifest| manifest.snapshot)
                .map(|snapshot| snapshot.parent);
        }
        lineage
    }

    /// Every file snapshot templates' disks stand on, down to the raw base images, as
    /// (device, inode) pairs: a rebuild must not delete an old base image one still needs.
    pub fn files_under_snapshots(&self) -> std::collections::HashSet<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut files = std::collections::HashSet::new();
        for manifest in self.list().into_iter().filter(|m| m.snapshot.is_some()) {
            let mut next = Some(self.template_dir(&manifest.name).join(&manifest.rootfs));
            // Chains are short; the bound only guards against a loop.
            for _ in 0..MAX_LINEAGE {
                let Some(current) = next.take() else { break };
                if let Ok(meta) = std::fs::metadata(&current) {
                    files.insert((meta.dev(), meta.ino()));
                }
                next = crate::disk::qcow2::backing_file(&current).ok().flatten();
            }
        }
        files
    }

    /// All templates with a readable manifest, sorted by name.
    /// Removes a template's directory: renamed out of the way first, so a half-removed
    /// template never resolves. The caller has checked that nothing uses it.
    pub fn remove_template(&self, name: &str) -> std::io::Result<()> {
        let trash = self.templates_dir().join(format!(".{name}.deleted"));
        std::fs::rename(self.template_dir(name), &trash)?;
        std::fs::remove_dir_all(&trash)
    }

    pub fn list(&self) -> Vec<TemplateManifest> {
        let Ok(entries) = std::fs::read_dir(self.templates_dir()) else {
            return Vec::new();
        };
        let mut manifests: Vec<_> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| self.read_manifest(&name).ok().flatten())
            .collect();
        manifests.sort_by(|a, b| a.name.cmp(&b.name));
        manifests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names_that_could_escape_are_rejected() {
        for bad in [
            "", "..", "../etc", "a/b", "/abs", ".hidden", "UPPER", "sp ace", "a\0b",
        ] {
            assert!(
                validate_template_name(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        for good in ["minimal", "py-3.11", "team_tpl.v2"] {
            assert!(
                validate_template_name(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
        assert!(validate_template_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn manifest_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path());
        assert!(store.read_manifest("minimal").unwrap().is_none());
        let manifest = TemplateManifest {
            name: "minimal".into(),
            kernel: "vmlinux-abc".into(),
            rootfs: "rootfs.ext4".into(),
            rootfs_bytes: 42,
            inputs_key: "k".into(),
            created_at_ms: 1,
            snapshot: None,
        };
        store.write_manifest(&manifest).unwrap();
        assert_eq!(
            store.read_manifest("minimal").unwrap(),
            Some(manifest.clone())
        );
        let resolved = store.resolve("minimal").unwrap();
        assert_eq!(resolved.kernel_path, dir.path().join("kernels/vmlinux-abc"));
        assert_eq!(store.list(), vec![manifest]);
        assert!(matches!(
            store.resolve("nope"),
            Err(TemplateError::NotFound { .. })
        ));
    }
}
