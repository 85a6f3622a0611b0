//! Tells a statically linked x86-64 ELF executable from a dynamically linked one.
//!
//! envd runs as PID 1 in guests whose libc we don't control, so it must be static. A dynamic
//! executable names its loader in a PT_INTERP program header; a static one (static-pie
//! included) has none. Only the ELF header and program headers are read.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;
const ELF_HEADER_LEN: usize = 64;
const PROGRAM_HEADER_LEN: usize = 56;

/// How an executable is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    Static,
    /// Dynamically linked; carries the interpreter path, e.g. `/lib64/ld-linux-x86-64.so.2`.
    Dynamic {
        interpreter: String,
    },
}

/// Errors inspecting an executable.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a 64-bit little-endian ELF file")]
    NotElf64 { path: String },
    #[error("{path} is built for ELF machine {machine}, not x86-64")]
    WrongMachine { path: String, machine: u16 },
}

/// Reads the program headers of `path` and reports how it is linked.
pub fn linkage(path: &Path) -> Result<Linkage, ElfError> {
    let shown = path.display().to_string();
    let read_err = |source| ElfError::Read {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;

    let mut header = [0u8; ELF_HEADER_LEN];
    if file.read_exact(&mut header).is_err()
        || &header[..4] != b"\x7fELF"
        || header[4] != 2
        || header[5] != 1
    {
        return Err(ElfError::NotElf64 { path: shown });
    }
    let machine = u16_at(&header, 0x12);
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine {
            path: shown,
            machine,
        });
    }
    let phoff = u64_at(&header, 0x20);
    let phentsize = usize::from(u16_at(&header, 0x36));
    let phnum = usize::from(u16_at(&header, 0x38));
    if phentsize < PROGRAM_HEADER_LEN {
        return Err(ElfError::NotElf64 { path: shown });
    }

    let mut table = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff)).map_err(read_err)?;
    file.read_exact(&mut table).map_err(read_err)?;
    for entry in table.chunks_exact(phentsize) {
        if u32_at(entry, 0) != PT_INTERP {
            continue;
        }
        let (offset, size) = (u64_at(entry, 0x08), u64_at(entry, 0x20));
        let mut interp = vec![0u8; usize::try_from(size.min(4096)).unwrap_or(4096)];
        file.seek(SeekFrom::Start(offset)).map_err(read_err)?;
        file.read_exact(&mut interp).map_err(read_err)?;
        let interpreter = String::from_utf8_lossy(&interp)
            .trim_end_matches('\0')
            .to_owned();
        return Ok(Linkage::Dynamic { interpreter });
    }
    Ok(Linkage::Static)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_static_is_static_and_ls_is_dynamic() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!("skipped: /bin/busybox missing (apt-get install busybox-static)");
            return;
        }
        assert_eq!(linkage(busybox).unwrap(), Linkage::Static);
        match linkage(Path::new("/bin/ls")).unwrap() {
            Linkage::Dynamic { interpreter } => {
                assert!(interpreter.contains("ld-linux"), "{interpreter}")
            }
            Linkage::Static => panic!("/bin/ls should be dynamic"),
        }
    }

    #[test]
    fn non_elf_and_short_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in [
            ("script", &b"#!/bin/sh\necho hi\n"[..]),
            ("empty", b""),
            ("short", b"\x7fELF\x02\x01"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            assert!(
                matches!(linkage(&path), Err(ElfError::NotElf64 { .. })),
                "{name}"
            );
        }
        assert!(matches!(
            linkage(&dir.path().join("missing")),
            Err(ElfError::Read { .. })
        ));
    }
}
