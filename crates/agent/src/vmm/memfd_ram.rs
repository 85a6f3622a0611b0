//! Writes out the RAM of a stopped VMM that keeps it in a memfd
//! ([`super::MemorySharing::Anonymous`]), without the VMM's help.
//!
//! The memfd is the guest's RAM and its holes are the pages the guest never touched, so the
//! memory file is a sparse copy of its data extents, read through `/proc/<pid>/map_files`.

use std::io;
use std::path::Path;

/// How QEMU's `memory-backend-memfd` names its memfd in `/proc/<pid>/maps`.
pub const QEMU_MEMFD: &str = "/memfd:memory-backend-memfd";

/// Writes the guest RAM of VMM `pid`, kept in the memfd it maps as `memfd_name`, to
/// `destination`, and returns the bytes of data written. The VMM must be stopped, so that
/// nothing writes guest RAM meanwhile. Not synced: the caller makes the pause durable.
pub fn write_memfd_ram(pid: u32, memfd_name: &str, destination: &Path) -> io::Result<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let (start, end) = shared_mapping(&maps, memfd_name).ok_or_else(|| {
        io::Error::other(format!("process {pid} maps no memfd named {memfd_name}"))
    })?;
    let ram = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    crate::disk::copy_sparse_unsynced(Path::new(&ram), destination)
}

/// The address range of the first shared mapping of `name` in a `/proc/<pid>/maps` text.
fn shared_mapping(maps: &str, name: &str) -> Option<(u64, u64)> {
    super::proc_maps::entries(maps)
        .find(|entry| entry.path == name && entry.perms.ends_with('s'))
        .map(|entry| (entry.start, entry.end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::{AsRawFd, FromRawFd};

    #[test]
    fn maps_lines_name_the_shared_mapping_of_a_memfd() {
        let maps = "\
7f0000000000-7f0010000000 rw-p 00000000 00:01 19827                      /memfd:memory-backend-memfd (deleted)
7f734ffff000-7f735ffff000 rw-s 00000000 00:01 19827                      /memfd:memory-backend-memfd (deleted)
7f7360000000-7f7370000000 rw-s 00000000 00:01 19828                      /memfd:other (deleted)
";
        assert_eq!(
            shared_mapping(maps, QEMU_MEMFD),
            Some((0x7f73_4fff_f000, 0x7f73_5fff_f000))
        );
        assert_eq!(shared_mapping(maps, "/memfd:absent"), None);
    }

    #[test]
    fn the_copy_holds_the_touched_pages_and_holes_elsewhere() {
        use std::os::unix::fs::MetadataExt;
        const LEN: usize = 64 << 20;
        let name = c"wrenn-memfd-ram-test";
        // SAFETY: memfd_create with a valid C string; the descriptor is owned by `memfd` below.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let memfd = unsafe { File::from_raw_fd(fd) };
        memfd.set_len(LEN as u64).unwrap();
        // SAFETY: a fresh shared mapping of the whole memfd, unmapped at the end of the test;
        // nothing else aliases it.
        let ram = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ram, libc::MAP_FAILED);
        // SAFETY: `ram` maps LEN writable bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(ram.cast::<u8>(), LEN) };
        bytes[0] = 1;
        bytes[(32 << 20) + 5] = 2;
        bytes[LEN - 1] = 3;

        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("memory");
        let written = write_memfd_ram(
            std::process::id(),
            "/memfd:wrenn-memfd-ram-test",
            &destination,
        )
        .unwrap();
        // SAFETY: unmaps the mapping made above; `bytes` is not used afterwards.
        unsafe { libc::munmap(ram, LEN) };

        let copy = std::fs::read(&destination).unwrap();
        assert_eq!(copy.len(), LEN);
        assert_eq!((copy[0], copy[(32 << 20) + 5], copy[LEN - 1]), (1, 2, 3));
        assert_eq!(copy.iter().map(|&b| u64::from(b)).sum::<u64>(), 6);
        assert!(written <= 3 << 21, "copied {written} bytes for three pages");
        let allocated = std::fs::metadata(&destination).unwrap().blocks() * 512;
        assert!(allocated <= 3 << 21, "the copy allocates {allocated} bytes");
    }
}
