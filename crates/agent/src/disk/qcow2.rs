//! The few parts of the qcow2 format the agent reads and writes itself: an empty overlay over
//! a backing file, and the backing file named in a header. Everything else (rebase, flatten,
//! I/O) is QEMU's. Writing an empty overlay is four small writes; spawning `qemu-img create`
//! for it cost 10–20 ms of every boot and clone.
//!
//! An empty overlay, in the layout `qemu-img create -o cluster_size=65536,lazy_refcounts=on`
//! produces (version 3, 64 KiB clusters, 16-bit refcounts):
//!
//! ```text
//! cluster 0   header, header extensions (backing format, end), backing file name
//! cluster 1   refcount table: one entry, pointing at cluster 2
//! cluster 2   refcount block: clusters 0 .. 3 + L1 clusters have refcount 1
//! cluster 3.. L1 table, all zero (nothing allocated: every read falls through to the backing file)
//! ```

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"QFI\xfb";
const VERSION: u32 = 3;
const CLUSTER_BITS: u32 = 16;
const CLUSTER_SIZE: u64 = 1 << CLUSTER_BITS;
/// 2^4 = 16-bit refcounts.
const REFCOUNT_ORDER: u32 = 4;
/// Version 3 header with the compression-type field, padded to 8 bytes.
const HEADER_LENGTH: u32 = 112;
/// Compatible feature bit 0: refcounts may be stale after a crash and are repaired on open, so
/// allocating writes do not wait for refcount updates.
const LAZY_REFCOUNTS: u64 = 1;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_END: u32 = 0;
/// QEMU refuses longer backing file names.
const MAX_BACKING_NAME: usize = 1023;
/// Bytes one L2 table maps: (cluster size / 8-byte entries) clusters.
const BYTES_PER_L2: u64 = (CLUSTER_SIZE / 8) * CLUSTER_SIZE;
/// Clusters one refcount block counts: (cluster size / 2-byte refcounts).
const CLUSTERS_PER_REFCOUNT_BLOCK: u64 = CLUSTER_SIZE / 2;

/// Writes an empty qcow2 image of `size` bytes over `backing` (recorded as given, not opened)
/// at `path`, replacing any file there.
pub fn create_overlay(
    path: &Path,
    backing: &Path,
    backing_format: &str,
    size: u64,
) -> io::Result<()> {
    let image = OverlayLayout::new(backing, backing_format, size)?;
    let mut file = std::fs::File::create(path)?;
    file.write_all(&image.header_cluster())?;
    file.seek(SeekFrom::Start(CLUSTER_SIZE))?;
    file.write_all(&image.refcount_table())?;
    file.seek(SeekFrom::Start(2 * CLUSTER_SIZE))?;
    file.write_all(&image.refcount_block())?;
    // The L1 table is all zeros: extending the file to its end writes it as a hole.
    file.set_len(image.l1_offset() + image.l1_entries * 8)
}

struct OverlayLayout<'a> {
    backing: &'a [u8],
    backing_format: &'a [u8],
    size: u64,
    l1_entries: u64,
}

impl<'a> OverlayLayout<'a> {
    fn new(backing: &'a Path, backing_format: &'a str, size: u64) -> io::Result<Self> {
        let backing = backing.as_os_str().as_bytes();
        if backing.is_empty() || backing.len() > MAX_BACKING_NAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "backing file name must be 1 to {MAX_BACKING_NAME} bytes, not {}",
                    backing.len()
                ),
            ));
        }
        if size == 0 || !size.is_multiple_of(512) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("image size {size} is not a positive multiple of 512"),
            ));
        }
        let l1_entries = size.div_ceil(BYTES_PER_L2);
        let layout = Self {
            backing,
            backing_format: backing_format.as_bytes(),
            size,
            l1_entries,
        };
        if layout.metadata_clusters() > CLUSTERS_PER_REFCOUNT_BLOCK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("image size {size} needs more than one refcount block"),
            ));
        }
        Ok(layout)
    }

    fn l1_clusters(&self) -> u64 {
        (self.l1_entries * 8).div_ceil(CLUSTER_SIZE)
    }

    fn l1_offset(&self) -> u64 {
        3 * CLUSTER_SIZE
    }

    /// Header, refcount table, refcount block and the L1 table.
    fn metadata_clusters(&self) -> u64 {
        3 + self.l1_clusters()
    }

    fn header_cluster(&self) -> Vec<u8> {
        let mut extensions = Vec::new();
        push_extension(&mut extensions, EXT_BACKING_FORMAT, self.backing_format);
        push_extension(&mut extensions, EXT_END, &[]);
        let backing_offset = u64::from(HEADER_LENGTH) + extensions.len() as u64;

        let mut header = Vec::with_capacity(512);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_be_bytes());
        header.extend_from_slice(&backing_offset.to_be_bytes());
        header.extend_from_slice(&(self.backing.len() as u32).to_be_bytes());
        header.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
        header.extend_from_slice(&self.size.to_be_bytes());
        header.extend_from_slice(&0u32.to_be_bytes()); // no encryption
        header.extend_from_slice(&(self.l1_entries as u32).to_be_bytes());
        header.extend_from_slice(&self.l1_offset().to_be_bytes());
        header.extend_from_slice(&CLUSTER_SIZE.to_be_bytes()); // refcount table offset
        header.extend_from_slice(&1u32.to_be_bytes()); // refcount table clusters
        header.extend_from_slice(&0u32.to_be_bytes()); // no snapshots
        header.extend_from_slice(&0u64.to_be_bytes()); // snapshot table offset
        header.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
        header.extend_from_slice(&LAZY_REFCOUNTS.to_be_bytes());
        header.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
        header.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes());
        header.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        header.push(0); // compression type: zlib
        header.resize(HEADER_LENGTH as usize, 0);
        header.extend_from_slice(&extensions);
        header.extend_from_slice(self.backing);
        header
    }

    fn refcount_table(&self) -> [u8; 8] {
        (2 * CLUSTER_SIZE).to_be_bytes()
    }

    fn refcount_block(&self) -> Vec<u8> {
        (0..self.metadata_clusters())
            .flat_map(|_| 1u16.to_be_bytes())
            .collect()
    }
}

/// Appends one header extension: type, length, data padded to 8 bytes.
fn push_extension(out: &mut Vec<u8>, kind: u32, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(8), 0);
}

/// The backing file recorded in a qcow2 image's header, or `None` for an image without one or
/// a file that is not qcow2 (a raw base image). Relative names resolve against the image's
/// directory, as QEMU resolves them.
pub fn backing_file(image: &Path) -> io::Result<Option<PathBuf>> {
    // A header naming a longer backing file is not one we wrote.
    const MAX_NAME: u32 = 4096;
    let mut file = std::fs::File::open(image)?;
    let mut header = [0u8; 20];
    if file.read_exact(&mut header).is_err() || &header[..4] != MAGIC {
        return Ok(None);
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
    let size = u32::from_be_bytes(header[16..20].try_into().expect("4 bytes"));
    if offset == 0 || size == 0 || size > MAX_NAME {
        return Ok(None);
    }
    let mut name = vec![0u8; size as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut name)?;
    let name =
        PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(name));
    Ok(Some(match image.parent() {
        Some(dir) if name.is_relative() => dir.join(name),
        _ => name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu_img(args: &[&str]) -> String {
        let out = Command::new("qemu-img").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn info(image: &Path) -> serde_json::Value {
        serde_json::from_str(&qemu_img(&[
            "info",
            "--output=json",
            &image.display().to_string(),
        ]))
        .unwrap()
    }

    #[test]
    fn overlays_match_what_qemu_img_creates() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("base.raw");
        std::fs::File::create(&raw)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let qcow2 = dir.path().join("base.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            &qcow2.display().to_string(),
            "8M",
        ]);
        for (format, size_mb) in [
            ("raw", 1u64),
            ("raw", 2048),
            ("qcow2", 513),
            ("raw", 600_000),
        ] {
            let base = if format == "raw" { &raw } else { &qcow2 };
            let ours = dir.path().join(format!("ours-{size_mb}.qcow2"));
            let theirs = dir.path().join(format!("theirs-{size_mb}.qcow2"));
            create_overlay(&ours, base, format, size_mb << 20).unwrap();
            qemu_img(&[
                "create",
                "-q",
                "-u",
                "-f",
                "qcow2",
                "-F",
                format,
                "-b",
                &base.display().to_string(),
                "-o",
                "cluster_size=65536,lazy_refcounts=on",
                &theirs.display().to_string(),
                &format!("{size_mb}M"),
            ]);
            let (ours_bytes, theirs_bytes) = (
                std::fs::read(&ours).unwrap(),
                std::fs::read(&theirs).unwrap(),
            );
            // The header proper is the same field for field; only QEMU's optional
            // feature-name table (and so the backing name's offset) differs.
            let fields = |bytes: &[u8]| [&bytes[..8], &bytes[16..0x70]].concat();
            assert_eq!(fields(&ours_bytes), fields(&theirs_bytes), "{size_mb} MiB");
            assert_eq!(ours_bytes.len(), theirs_bytes.len(), "{size_mb} MiB");
            assert_eq!(
                ours_bytes[CLUSTER_SIZE as usize..],
                theirs_bytes[CLUSTER_SIZE as usize..],
                "refcounts and L1 of {size_mb} MiB"
            );
            let info = info(&ours);
            assert_eq!(info["virtual-size"], size_mb << 20);
            assert_eq!(info["backing-filename"], base.display().to_string());
            assert_eq!(info["backing-filename-format"], format);
            assert_eq!(info["format-specific"]["data"]["lazy-refcounts"], true);
            qemu_img(&["check", "-q", &ours.display().to_string()]);
            assert_eq!(backing_file(&ours).unwrap().as_ref(), Some(base));
            assert!(crate::disk::allocated_bytes(&ours).unwrap() <= 3 * CLUSTER_SIZE);
        }
    }

    #[test]
    fn overlay_reads_through_to_its_base_and_keeps_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mut content = vec![0u8; 4 << 20];
        for (i, byte) in content.iter_mut().enumerate() {
            *byte = (i % 251) as u8;
        }
        std::fs::write(&base, &content).unwrap();
        let overlay = dir.path().join("overlay.qcow2");
        create_overlay(&overlay, &base, "raw", 64 << 20).unwrap();
        let io = |command: &str| {
            let out = Command::new("qemu-io")
                .args(["-f", "qcow2", "-c", command, &overlay.display().to_string()])
                .output()
                .unwrap();
            assert!(out.status.success(), "qemu-io {command}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        io("write -P 0xab 1M 64k");
        // Written bytes come from the overlay, the rest from the base; past the base's end
        // the disk reads as zeros.
        assert!(!io("read -P 0xab 1M 64k").contains("Pattern verification failed"));
        assert!(!io("read -P 0x00 10M 64k").contains("Pattern verification failed"));
        let out = Command::new("qemu-img")
            .args(["convert", "-O", "raw", &overlay.display().to_string()])
            .arg(dir.path().join("flat.raw"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let flat = std::fs::read(dir.path().join("flat.raw")).unwrap();
        assert_eq!(flat.len(), 64 << 20);
        assert_eq!(flat[..1 << 20], content[..1 << 20]);
        assert!(flat[1 << 20..(1 << 20) + 65536].iter().all(|&b| b == 0xab));
        assert_eq!(
            flat[(1 << 20) + 65536..4 << 20],
            content[(1 << 20) + 65536..]
        );
        qemu_img(&["check", "-q", &overlay.display().to_string()]);
    }

    #[test]
    fn bad_sizes_and_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.qcow2");
        let base = Path::new("/b.raw");
        for size in [0, 1000] {
            let error = create_overlay(&path, base, "raw", size).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
        let long = PathBuf::from("/".repeat(2000));
        assert_eq!(
            create_overlay(&path, &long, "raw", 1 << 20)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn backing_file_of_images_without_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("base.raw");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        assert_eq!(backing_file(&raw).unwrap(), None);
        let standalone = dir.path().join("standalone.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            &standalone.display().to_string(),
            "1M",
        ]);
        assert_eq!(backing_file(&standalone).unwrap(), None);
    }
}
