//! Per-sandbox disks: a qcow2 copy-on-write overlay over the template's read-only base image,
//! created with `qemu-img`.

use std::path::{Path, PathBuf};

use crate::command::{self, CommandError, Namespace};

/// File name of a sandbox's writable root disk inside its state directory.
pub const OVERLAY_FILE: &str = "rootfs.qcow2";

/// Disk failures.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("create overlay {path} over {base}")]
    Create {
        path: PathBuf,
        base: PathBuf,
        #[source]
        source: CommandError,
    },
}

/// Creates `overlay` backed by the raw image `base`, `size_mb` large (at least the base's size;
/// envd grows the guest filesystem to fill it).
pub async fn create_overlay(
    qemu_img: &Path,
    base: &Path,
    overlay: &Path,
    size_mb: u64,
) -> Result<(), DiskError> {
    let args = overlay_args(base, overlay, size_mb);
    command::run(&qemu_img.to_string_lossy(), &args, None, Namespace::Host)
        .await
        .map(drop)
        .map_err(|source| DiskError::Create {
            path: overlay.to_owned(),
            base: base.to_owned(),
            source,
        })
}

fn overlay_args(base: &Path, overlay: &Path, size_mb: u64) -> Vec<String> {
    vec![
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        "raw".into(),
        "-b".into(),
        base.display().to_string(),
        "-o".into(),
        "cluster_size=65536,lazy_refcounts=on".into(),
        overlay.display().to_string(),
        format!("{size_mb}M"),
    ]
}

/// Bytes a file really occupies on disk (sparse-aware).
pub fn allocated_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_is_qcow2_over_raw_with_the_requested_size() {
        let args = overlay_args(
            Path::new("/i/rootfs.ext4"),
            Path::new("/s/rootfs.qcow2"),
            2048,
        );
        assert_eq!(args.join(" "), "create -q -f qcow2 -F raw -b /i/rootfs.ext4 -o cluster_size=65536,lazy_refcounts=on /s/rootfs.qcow2 2048M");
    }

    #[tokio::test]
    async fn overlay_over_a_real_image_reports_the_virtual_size() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        std::fs::File::create(&base)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let overlay = dir.path().join("o.qcow2");
        create_overlay(Path::new("qemu-img"), &base, &overlay, 128)
            .await
            .unwrap();
        let info = command::run(
            "qemu-img",
            ["info", "--output=json", overlay.to_str().unwrap()],
            None,
            Namespace::Host,
        )
        .await
        .unwrap();
        assert!(info.contains("\"virtual-size\": 134217728"), "{info}");
        assert!(allocated_bytes(&overlay).unwrap() < 1 << 20);
    }
}
