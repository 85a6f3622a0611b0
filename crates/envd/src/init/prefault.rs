//! Maps envd's own code in at start, in one system call, instead of page fault by page fault.
//!
//! Under TCG the kernel's page-fault path taken from user mode is translated apart from the
//! same code run inside a system call (QEMU keys translated blocks on CPU state that differs
//! between the two), and each fault is an exception the emulated CPU delivers. One
//! `MADV_POPULATE_READ` over the read-only segments (code and constants, ~3.5 MiB, most of
//! which the first call reads anyway) measured ~850 fewer kernel blocks translated before the
//! first `Init` answer, and a boot 15–20 ms sooner.

use std::ffi::c_void;

/// Populates the page tables of the executable's read-only `PT_LOAD` segments. Failure (a
/// kernel older than 5.14) only costs the faults this saves.
pub fn populate_code() {
    // SAFETY: `first_object` only reads the program headers glibc hands it, during the call.
    unsafe { libc::dl_iterate_phdr(Some(first_object), std::ptr::null_mut()) };
}

/// Called for each loaded object, the executable first; returning 1 stops the walk there.
unsafe extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    _data: *mut c_void,
) -> libc::c_int {
    // SAFETY: glibc passes a valid `dl_phdr_info` whose `dlpi_phdr` points at `dlpi_phnum`
    // program headers, all alive for the duration of this callback.
    let (bias, headers) = unsafe {
        let info = &*info;
        (
            info.dlpi_addr as usize,
            std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)),
        )
    };
    for header in headers {
        if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W != 0 {
            continue;
        }
        let start = (bias + header.p_vaddr as usize) & !(PAGE - 1);
        let end = (bias + (header.p_vaddr + header.p_memsz) as usize + PAGE - 1) & !(PAGE - 1);
        // SAFETY: the range is a segment the loader mapped for this executable; populating it
        // changes no contents.
        let result =
            unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_POPULATE_READ) };
        if result != 0 {
            break; // Logging is not set up yet; the boot goes on with faults instead.
        }
    }
    1
}

const PAGE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    /// Size and resident size (kB) of this executable's code mapping, from /proc/self/smaps.
    fn code_mapping() -> (u64, u64) {
        let exe = std::env::current_exe().unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        while let Some(line) = lines.next() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() == 6 && fields[1] == "r-xp" && exe.to_str() == Some(fields[5]) {
                let mut value = |name: &str| -> u64 {
                    let line = lines.find(|l| l.starts_with(name)).unwrap();
                    line.split_whitespace().nth(1).unwrap().parse().unwrap()
                };
                let size = value("Size:");
                return (size, value("Rss:"));
            }
        }
        panic!("no code mapping of {} in smaps", exe.display());
    }

    #[test]
    fn the_whole_code_segment_is_mapped_in() {
        let (size, before) = code_mapping();
        assert!(before < size, "a test binary runs only part of its code");
        populate_code();
        let (_, after) = code_mapping();
        assert_eq!(
            after, size,
            "code resident before {before} kB, after {after} kB"
        );
    }
}
