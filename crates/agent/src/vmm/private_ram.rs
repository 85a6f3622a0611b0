//! Writes out the RAM of a stopped VMM that maps a template's memory file privately
//! (copy-on-write), without the VMM's help.
//!
//! Pages the guest never wrote are still the template file's page cache; pages it wrote are
//! private anonymous copies in the VMM's address space. So the guest's RAM is the template's
//! file with those pages laid over it: a sparse copy of the file, then every anonymous page of
//! the mapping (found through `/proc/<pid>/pagemap`, read through `/proc/<pid>/mem`) written at
//! its offset. An idle 1 GiB clone costs its template's data plus the few MiB it changed,
//! where a migration stream reads, and its loading side faults in, every page of the RAM.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PAGE: u64 = 4096;
/// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_OR_SHARED: u64 = 1 << 61;

/// What `write_private_ram` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes copied from the template file.
    pub template_bytes: u64,
    /// Bytes of pages the guest changed, copied from the VMM.
    pub changed_bytes: u64,
}

/// Writes the guest RAM of VMM `pid` to `destination`. `template` is the memory file the VMM
/// maps privately; the VMM must be stopped, so that nothing writes guest RAM meanwhile.
pub fn write_private_ram(pid: u32, template: &Path, destination: &Path) -> io::Result<Written> {
    let mappings = mappings_of(pid, template)?;
    if mappings.is_empty() {
        return Err(io::Error::other(format!(
            "process {pid} does not map {}",
            template.display()
        )));
    }
    // Through the mapping itself: the file may have been unlinked since the VMM opened it.
    let mapped = format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        mappings[0].start, mappings[0].end
    );
    // Not synced here: the pause makes every file of the sandbox durable once, in parallel.
    let template_bytes = crate::disk::copy_sparse_unsynced(Path::new(&mapped), destination)?;
    let output = std::fs::OpenOptions::new().write(true).open(destination)?;
    let pagemap = File::open(format!("/proc/{pid}/pagemap"))?;
    let memory = File::open(format!("/proc/{pid}/mem"))?;
    let mut changed_bytes = 0;
    let mut buffer = Vec::new();
    for mapping in &mappings {
        let pages = (mapping.end - mapping.start) / PAGE;
        let mut entries = vec![0u8; (pages * 8) as usize];
        pagemap.read_exact_at(&mut entries, mapping.start / PAGE * 8)?;
        let changed = |page: u64| {
            let at = (page * 8) as usize;
            let entry = u64::from_le_bytes(entries[at..at + 8].try_into().unwrap());
            (entry & PRESENT != 0 && entry & FILE_OR_SHARED == 0) || entry & SWAPPED != 0
        };
        let mut page = 0;
        while page < pages {
            if !changed(page) {
                page += 1;
                continue;
            }
            let first = page;
            while page < pages && changed(page) {
                page += 1;
            }
            let len = ((page - first) * PAGE) as usize;
            buffer.resize(len, 0);
            memory.read_exact_at(&mut buffer, mapping.start + first * PAGE)?;
            output.write_all_at(&buffer, mapping.file_offset + first * PAGE)?;
            changed_bytes += len as u64;
        }
    }
    Ok(Written {
        template_bytes,
        changed_bytes,
    })
}

/// One mapping of a file in a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    start: u64,
    end: u64,
    file_offset: u64,
}

/// The private mappings of `file` in process `pid` (the kernel may split one `mmap` into
/// several, e.g. where `madvise` flags differ).
fn mappings_of(pid: u32, file: &Path) -> io::Result<Vec<Mapping>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(parse_maps(&maps, &file.to_string_lossy()))
}

fn parse_maps(maps: &str, file: &str) -> Vec<Mapping> {
    super::proc_maps::entries(maps)
        .filter(|entry| entry.path == file && entry.perms.ends_with('p'))
        .map(|entry| Mapping {
            start: entry.start,
            end: entry.end,
            file_offset: entry.offset,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_name_the_private_mappings_of_a_file() {
        let maps = "\
7f0000000000-7f0010000000 rw-p 00000000 fe:01 1234                       /t/memory
7f0010000000-7f0020000000 rw-p 10000000 fe:01 1234                       /t/memory (deleted)
7f0030000000-7f0040000000 rw-s 00000000 fe:01 99                         /t/memory
7f0050000000-7f0050001000 r--p 00000000 fe:01 5                          /t/memory.other
";
        assert_eq!(
            parse_maps(maps, "/t/memory"),
            vec![
                Mapping {
                    start: 0x7f00_0000_0000,
                    end: 0x7f00_1000_0000,
                    file_offset: 0
                },
                Mapping {
                    start: 0x7f00_1000_0000,
                    end: 0x7f00_2000_0000,
                    file_offset: 0x1000_0000
                },
            ]
        );
    }

    /// A child maps a file privately and changes some pages: the RAM written is the file with
    /// exactly those changes, and only they are copied from the process.
    #[test]
    fn the_ram_written_is_the_template_with_the_process_changes() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template");
        let len = 64 * PAGE;
        let mut original = vec![0u8; len as usize];
        original[5 * PAGE as usize..6 * PAGE as usize].fill(7);
        original[40 * PAGE as usize..41 * PAGE as usize].fill(9);
        std::fs::File::create(&template)
            .unwrap()
            .write_all(&original)
            .unwrap();
        // A Python child stands in for the VMM: it maps the file privately, writes two pages
        // (one over data, one over zeros), reads a third, and waits.
        let script = format!(
            "import mmap,os,sys\n\
             f=open('{}','rb')\n\
             m=mmap.mmap(f.fileno(),{len},flags=mmap.MAP_PRIVATE,prot=mmap.PROT_READ|mmap.PROT_WRITE)\n\
             m[5*4096:5*4096+3]=b'abc'\n\
             m[20*4096]=1\n\
             _=m[40*4096]\n\
             sys.stdout.write('ready\\n'); sys.stdout.flush()\n\
             sys.stdin.read()\n",
            template.display()
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "ready\n");

        let destination = dir.path().join("own");
        let written = write_private_ram(child.id(), &template, &destination).unwrap();
        drop(child.stdin.take());
        child.wait().unwrap();

        let mut expected = original.clone();
        expected[5 * PAGE as usize..5 * PAGE as usize + 3].copy_from_slice(b"abc");
        expected[20 * PAGE as usize] = 1;
        assert!(std::fs::read(&destination).unwrap() == expected);
        assert_eq!(written.changed_bytes, 2 * PAGE, "{written:?}");
        assert_eq!(
            std::fs::read(&template).unwrap(),
            original,
            "template untouched"
        );
    }
}
