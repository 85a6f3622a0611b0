//! Per-sandbox disks. Under QEMU: a qcow2 copy-on-write overlay over the template's read-only
//! base image, written directly (`qcow2.rs`; rebasing chains is left to `qemu-img`). Under
//! Firecracker, which reads raw files only: a reflinked or sparse copy of the image.

pub mod qcow2;

use std::path::{Path, PathBuf};

use crate::command::{self, CommandError, Namespace};

/// File name of a sandbox's writable root disk inside its state directory (QEMU).
pub const OVERLAY_FILE: &str = "rootfs.qcow2";
/// File name of a sandbox's raw root disk (Firecracker).
pub const RAW_DISK_FILE: &str = "rootfs.raw";

/// The shape of root disk a VMM takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootDisk {
    /// A qcow2 overlay on the template's image (QEMU).
    Qcow2Overlay,
    /// A raw file of its own (Firecracker).
    Raw,
}

impl RootDisk {
    /// The disk's file name inside a sandbox directory.
    pub fn file_name(self) -> &'static str {
        match self {
            RootDisk::Qcow2Overlay => OVERLAY_FILE,
            RootDisk::Raw => RAW_DISK_FILE,
        }
    }
}

/// How a copy was made, for the one log line that tells operators whether their data
/// directory's filesystem shares blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// `FICLONE`: the copy shares the image's blocks (XFS, btrfs); instant.
    Reflink,
    /// Data extents copied, holes kept.
    Sparse,
}

/// Makes `destination` a private raw copy of the raw image `image`, at least `size_mb` large
/// (envd grows the guest filesystem to fill it).
pub fn copy_raw(image: &Path, destination: &Path, size_mb: u64) -> std::io::Result<CopyMethod> {
    use std::os::fd::AsRawFd;
    let method = {
        let input = std::fs::File::open(image)?;
        let output = std::fs::File::create(destination)?;
        // SAFETY: FICLONE takes the source descriptor as its argument; both are ours.
        let cloned = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) };
        if cloned == 0 {
            CopyMethod::Reflink
        } else {
            drop(output);
            copy_sparse(image, destination)?;
            CopyMethod::Sparse
        }
    };
    let output = std::fs::OpenOptions::new().write(true).open(destination)?;
    if output.metadata()?.len() < size_mb << 20 {
        output.set_len(size_mb << 20)?;
    }
    Ok(method)
}

/// Disk failures.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("rebase {path} onto {base}")]
    Rebase {
        path: PathBuf,
        base: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("create overlay {path} over {base}")]
    Create {
        path: PathBuf,
        base: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an overlay's backing file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseFormat {
    /// A base template's raw ext4 image.
    Raw,
    /// A snapshot template's frozen qcow2 disk.
    Qcow2,
}

impl BaseFormat {
    fn as_str(self) -> &'static str {
        match self {
            BaseFormat::Raw => "raw",
            BaseFormat::Qcow2 => "qcow2",
        }
    }
}

/// Creates `overlay` backed by `base`, `size_mb` large (at least the base's size; envd grows
/// the guest filesystem to fill it). The backing file is not opened, so `base` may be a path
/// that only exists once the caller publishes it.
pub fn create_overlay(
    base: &Path,
    base_format: BaseFormat,
    overlay: &Path,
    size_mb: u64,
) -> Result<(), DiskError> {
    qcow2::create_overlay(overlay, base, base_format.as_str(), size_mb << 20).map_err(|source| {
        DiskError::Create {
            path: overlay.to_owned(),
            base: base.to_owned(),
            source,
        }
    })
}

/// The image at the bottom of `image`'s backing chain (a base template's raw image).
pub fn chain_bottom(image: &Path) -> std::io::Result<PathBuf> {
    let mut current = image.to_owned();
    // Chains are short (see sandbox/flatten.rs); the bound only guards against a loop.
    for _ in 0..32 {
        match qcow2::backing_file(&current)? {
            Some(backing) => current = backing,
            None => return Ok(current),
        }
    }
    Ok(current)
}

/// Makes `overlay` stand directly on `base`: clusters that differ between its current backing
/// chain and `base` are copied into it, so the intermediate layers are no longer needed. Only
/// for an overlay no VMM has open.
pub async fn rebase(
    qemu_img: &Path,
    overlay: &Path,
    base: &Path,
    base_format: BaseFormat,
) -> Result<(), DiskError> {
    command::run(
        &qemu_img.to_string_lossy(),
        [
            "rebase",
            "-q",
            "-f",
            "qcow2",
            "-F",
            base_format.as_str(),
            "-b",
            &base.display().to_string(),
            &overlay.display().to_string(),
        ],
        None,
        Namespace::Host,
    )
    .await
    .map(drop)
    .map_err(|source| DiskError::Rebase {
        path: overlay.to_owned(),
        base: base.to_owned(),
        source,
    })
}

/// Copies a sparse file (guest RAM, disk images) by its data extents only, so a 1 GiB memory
/// file of which the guest touched 40 MiB costs 40 MiB of reads and writes. Durable on return.
pub fn copy_sparse(source: &Path, destination: &Path) -> std::io::Result<u64> {
    let copied = copy_sparse_unsynced(source, destination)?;
    std::fs::File::open(destination)?.sync_all()?;
    Ok(copied)
}

/// [`copy_sparse`] for a caller that makes the copy durable itself, later. In-kernel copies
/// (`copy_file_range`) where the two filesystems allow it; reads and writes where they do not
/// (e.g. from a memfd, whose tmpfs cannot copy into ext4: EXDEV).
pub fn copy_sparse_unsynced(source: &Path, destination: &Path) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let input = std::fs::File::open(source)?;
    let output = std::fs::File::create(destination)?;
    output.set_len(input.metadata()?.len())?;
    let (fd_in, fd_out) = (input.as_raw_fd(), output.as_raw_fd());
    let mut in_kernel = true;
    let mut copied = 0u64;
    for extent in data_extents(&input)? {
        let (mut from, mut to) = (extent.start as i64, extent.start as i64);
        while in_kernel && (from as u64) < extent.end {
            // SAFETY: copy_file_range between two descriptors we own, with offsets pointing at
            // live stack variables.
            let n = unsafe {
                libc::copy_file_range(
                    fd_in,
                    &mut from,
                    fd_out,
                    &mut to,
                    (extent.end - from as u64) as usize,
                    0,
                )
            };
            if n < 0 {
                let error = std::io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
                        in_kernel = false;
                    }
                    _ => return Err(error),
                }
            } else if n == 0 {
                break;
            } else {
                copied += n as u64;
            }
        }
        if !in_kernel {
            copied += copy_by_reads(&input, &output, from as u64..extent.end)?;
        }
    }
    Ok(copied)
}

/// Copies `range` from `input` to the same offsets of `output` through a buffer.
fn copy_by_reads(
    input: &std::fs::File,
    output: &std::fs::File,
    range: std::ops::Range<u64>,
) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 4 << 20;
    let mut buffer = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let len = (range.end - at).min(CHUNK);
        buffer.resize(len as usize, 0);
        input.read_exact_at(&mut buffer, at)?;
        output.write_all_at(&buffer, at)?;
        at += len;
    }
    Ok(range.end - range.start)
}

/// The byte ranges of a file that hold data; everything between them is a hole.
pub fn data_extents(file: &std::fs::File) -> std::io::Result<Vec<std::ops::Range<u64>>> {
    use std::os::fd::AsRawFd;
    let len = file.metadata()?.len() as i64;
    let fd = file.as_raw_fd();
    let mut extents = Vec::new();
    let mut offset: i64 = 0;
    while offset < len {
        // SAFETY: lseek on a descriptor the caller owns; no memory is passed.
        let data = unsafe { libc::lseek(fd, offset, libc::SEEK_DATA) };
        if data < 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ENXIO) {
                break; // Only a hole remains.
            }
            return Err(error);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        extents.push(data as u64..hole as u64);
        offset = hole;
    }
    Ok(extents)
}

/// Drops the page cache over a file's holes: pages that were only ever read there (zeros)
/// and that a process may have mapped. Their contents do not change (a hole reads as zeros);
/// the caller makes sure nothing writes the file meanwhile. Returns the bytes of holes.
pub fn drop_cached_holes(path: &Path) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    // Data still in the page cache counts as data for SEEK_HOLE on our filesystems; synced
    // first all the same, so a hole is never taken for what is only waiting for writeback.
    file.sync_data()?;
    let len = file.metadata()?.len();
    let mut holes = Vec::new();
    let mut previous_end = 0;
    for extent in data_extents(&file)? {
        holes.push(previous_end..extent.start);
        previous_end = extent.end;
    }
    holes.push(previous_end..len);
    let mut dropped = 0;
    for hole in holes.into_iter().filter(|h| !h.is_empty()) {
        // SAFETY: fallocate on a descriptor we own; no memory is passed.
        let punched = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                hole.start as i64,
                (hole.end - hole.start) as i64,
            )
        };
        if punched < 0 {
            return Err(std::io::Error::last_os_error());
        }
        dropped += hole.end - hole.start;
    }
    Ok(dropped)
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
    fn cached_holes_are_dropped_and_data_kept() {
        use std::io::{Read, Seek, SeekFrom, Write};
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(16 << 20).unwrap();
        file.seek(SeekFrom::Start(4 << 20)).unwrap();
        file.write_all(&[9u8; 8192]).unwrap();
        let len = 16usize << 20;
        // SAFETY: a shared read-only mapping of a file we hold open, of its length, unmapped
        // at the end of the test.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        // Touch every page through the mapping, as QEMU checking for zero pages does: the
        // holes get page cache.
        let mut all = Vec::with_capacity(len / 4096);
        for page in 0..len / 4096 {
            // SAFETY: inside the mapping made above.
            all.push(unsafe { std::ptr::read_volatile((map as *const u8).add(page * 4096)) });
        }
        let resident = || {
            let mut pages = vec![0u8; len / 4096];
            // SAFETY: mincore writes one byte per page of the live mapping into `pages`.
            assert_eq!(unsafe { libc::mincore(map, len, pages.as_mut_ptr()) }, 0);
            pages.iter().filter(|p| *p & 1 == 1).count()
        };
        assert_eq!(resident(), 4096);
        let dropped = drop_cached_holes(&path).unwrap();
        assert_eq!(dropped, (16 << 20) - 8192);
        assert_eq!(resident(), 2, "only the data pages stay cached");
        let mut after = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut after).unwrap();
        let after: Vec<u8> = after.iter().step_by(4096).copied().collect();
        assert_eq!(all, after, "contents unchanged");
        assert_eq!(allocated_bytes(&path).unwrap(), 8192);
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(map, len) };
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        let mut file = std::fs::File::create(&source).unwrap();
        file.set_len(64 << 20).unwrap();
        file.seek(SeekFrom::Start(10 << 20)).unwrap();
        file.write_all(&[7u8; 8192]).unwrap();
        file.seek(SeekFrom::Start(40 << 20)).unwrap();
        file.write_all(b"tail").unwrap();
        drop(file);
        let destination = dir.path().join("dst");
        let copied = copy_sparse(&source, &destination).unwrap();
        assert!(
            copied < 1 << 20,
            "copied {copied} bytes of a mostly empty file"
        );
        assert_eq!(
            std::fs::read(&source).unwrap(),
            std::fs::read(&destination).unwrap()
        );
        assert!(allocated_bytes(&destination).unwrap() < 1 << 20);
    }

    #[test]
    fn raw_copies_keep_the_image_and_grow_to_the_disk_size() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.ext4");
        let mut file = std::fs::File::create(&image).unwrap();
        file.set_len(8 << 20).unwrap();
        file.seek(SeekFrom::Start(3 << 20)).unwrap();
        file.write_all(b"superblock").unwrap();
        drop(file);
        let copy = dir.path().join(RAW_DISK_FILE);
        let method = copy_raw(&image, &copy, 16).unwrap();
        let bytes = std::fs::read(&copy).unwrap();
        assert_eq!(bytes.len(), 16 << 20);
        assert_eq!(&bytes[3 << 20..(3 << 20) + 10], b"superblock");
        // The copy is private: writing it leaves the image alone.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .write_all(b"changed")
            .unwrap();
        assert_eq!(&std::fs::read(&image).unwrap()[..7], &[0u8; 7]);
        if method == CopyMethod::Sparse {
            assert!(allocated_bytes(&copy).unwrap() < 1 << 20);
        }
        // A disk size below the image's keeps the image's size.
        copy_raw(&image, &copy, 1).unwrap();
        assert_eq!(std::fs::metadata(&copy).unwrap().len(), 8 << 20);
    }

    #[tokio::test]
    async fn rebase_flattens_a_chain_onto_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let qemu_img = Path::new("qemu-img");
        let base = dir.path().join("base.raw");
        std::fs::File::create(&base)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let middle = dir.path().join("middle.qcow2");
        let top = dir.path().join("top.qcow2");
        create_overlay(&base, BaseFormat::Raw, &middle, 16).unwrap();
        // Data only in the middle layer.
        command::run(
            "qemu-io",
            ["-c", "write -P 0x5a 1M 64k", middle.to_str().unwrap()],
            None,
            Namespace::Host,
        )
        .await
        .unwrap();
        create_overlay(&middle, BaseFormat::Qcow2, &top, 16).unwrap();
        assert_eq!(qcow2::backing_file(&top).unwrap(), Some(middle.clone()));
        rebase(qemu_img, &top, &base, BaseFormat::Raw)
            .await
            .unwrap();
        assert_eq!(qcow2::backing_file(&top).unwrap(), Some(base.clone()));
        std::fs::remove_file(&middle).unwrap();
        let read = command::run(
            "qemu-io",
            [
                "-f",
                "qcow2",
                "-c",
                "read -P 0x5a 1M 64k",
                top.to_str().unwrap(),
            ],
            None,
            Namespace::Host,
        )
        .await
        .unwrap();
        assert!(!read.contains("Pattern verification failed"), "{read}");
    }
}
