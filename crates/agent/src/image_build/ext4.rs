//! e2fsprogs: turns a staged tree into an ext4 image (`mkfs.ext4 -d`), checks its free space
//! (`dumpe2fs -h`) and grows it (`resize2fs`) when the first guess left too little.

use std::path::Path;
use std::process::Command;

use super::cmd::{self, CommandError};
use super::progress::BuildProgress;

const MIB: u64 = 1024 * 1024;

/// Free space every fresh image should have for what sandboxes write (pip installs, files).
pub const MIN_FREE_BYTES: u64 = 256 * MIB;

/// Images are sized in whole multiples of this.
pub const SIZE_STEP: u64 = 64 * MIB;

/// One inode per 8 KiB instead of mke2fs's 16 KiB: Python trees are many small files.
const BYTES_PER_INODE: u32 = 8192;

/// Errors making the image.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("size image file {path}")]
    Size {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("create the ext4 file system")]
    Mkfs(#[source] CommandError),
    #[error("read the ext4 superblock")]
    Inspect(#[source] CommandError),
    #[error("dumpe2fs output for {path} lacks block counts")]
    ParseSuperblock { path: String },
    #[error("grow the ext4 file system")]
    Resize(#[source] CommandError),
}

/// Image size for a tree using `used_bytes`: 30 % for ext4 metadata and block rounding, plus
/// [`MIN_FREE_BYTES`] of room, rounded up to [`SIZE_STEP`].
pub fn image_size(used_bytes: u64) -> u64 {
    let wanted = used_bytes + used_bytes.div_ceil(10) * 3 + MIN_FREE_BYTES;
    wanted.div_ceil(SIZE_STEP) * SIZE_STEP
}

/// `mkfs.ext4` populating a new file system from `staging`; the image file must already have
/// its final size.
pub fn mkfs_command(staging: &Path, image: &Path) -> Command {
    let mut cmd = Command::new("mkfs.ext4");
    // -m 0: no blocks reserved for root; sandbox code runs as `user` and should get them all.
    // lazy_itable_init=0: inode tables are zeroed here, once. Otherwise every guest's kernel
    // zeroes them in the background (ext4lazyinit) into its own overlay: 18 MiB of writes,
    // CPU and translated code per sandbox and clone.
    cmd.args(["-q", "-F", "-L", "rootfs", "-b", "4096", "-m", "0"])
        .args(["-E", "lazy_itable_init=0"])
        .arg("-i")
        .arg(BYTES_PER_INODE.to_string())
        .arg("-d")
        .arg(staging)
        .arg(image);
    cmd
}

pub fn dumpe2fs_command(image: &Path) -> Command {
    let mut cmd = Command::new("dumpe2fs");
    cmd.arg("-h").arg(image);
    cmd
}

/// Grows the file system to fill its (already enlarged) image file.
pub fn resize_command(image: &Path) -> Command {
    let mut cmd = Command::new("resize2fs");
    cmd.arg(image);
    cmd
}

/// Block and inode counts from `dumpe2fs -h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub free_blocks: u64,
    pub free_inodes: u64,
}

impl Superblock {
    pub fn free_bytes(&self) -> u64 {
        self.block_size * self.free_blocks
    }
}

pub fn parse_superblock(dump: &str) -> Option<Superblock> {
    let field = |name: &str| {
        dump.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    Some(Superblock {
        block_size: field("Block size")?,
        free_blocks: field("Free blocks")?,
        free_inodes: field("Free inodes")?,
    })
}

/// Builds the image at `image` from `staging` and makes sure it has [`MIN_FREE_BYTES`] free.
pub fn make_image(
    staging: &Path,
    image: &Path,
    used_bytes: u64,
    progress: &mut dyn BuildProgress,
) -> Result<Superblock, Ext4Error> {
    let size = image_size(used_bytes);
    set_file_len(image, size, TruncateFirst::Yes)?;
    progress.line(&format!(
        "mkfs.ext4: {} MiB used, image {} MiB",
        used_bytes / MIB,
        size / MIB
    ));
    cmd::run(&mut mkfs_command(staging, image), progress).map_err(Ext4Error::Mkfs)?;

    let superblock = inspect(image)?;
    if superblock.free_bytes() >= MIN_FREE_BYTES {
        return Ok(superblock);
    }
    // The 30 % guess fell short (many tiny files, say): grow by the shortfall plus one step
    // for the metadata of the added block groups.
    let shortfall = MIN_FREE_BYTES - superblock.free_bytes();
    let grown = (size + shortfall + SIZE_STEP).div_ceil(SIZE_STEP) * SIZE_STEP;
    progress.line(&format!(
        "only {} MiB free; growing image to {} MiB",
        superblock.free_bytes() / MIB,
        grown / MIB
    ));
    set_file_len(image, grown, TruncateFirst::No)?;
    cmd::run(&mut resize_command(image), progress).map_err(Ext4Error::Resize)?;
    inspect(image)
}

fn inspect(image: &Path) -> Result<Superblock, Ext4Error> {
    let dump = cmd::output(&mut dumpe2fs_command(image)).map_err(Ext4Error::Inspect)?;
    parse_superblock(&dump).ok_or_else(|| Ext4Error::ParseSuperblock {
        path: image.display().to_string(),
    })
}

/// Whether to discard existing contents before sizing a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TruncateFirst {
    Yes,
    No,
}

/// Sets the (sparse) length of `path`, creating it if needed.
fn set_file_len(path: &Path, len: u64, truncate: TruncateFirst) -> Result<(), Ext4Error> {
    let err = |source| Ext4Error::Size {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate == TruncateFirst::Yes)
        .open(path)
        .map_err(err)?;
    file.set_len(len).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_build::cmd::display;
    use crate::image_build::progress::fakes::RecordingProgress;

    #[test]
    fn size_adds_overhead_and_headroom_then_rounds_up() {
        let cases = [
            (0, 256 * MIB),
            (1, 320 * MIB),
            (100 * MIB, 448 * MIB), // 130 + 256 = 386 -> 448
            (200 * MIB, 576 * MIB), // 260 + 256 = 516 -> 576
            (320 * MIB, 704 * MIB), // 416 + 256 = 672 -> 704
        ];
        for (used, want) in cases {
            assert_eq!(image_size(used), want, "used {used}");
            assert_eq!(image_size(used) % SIZE_STEP, 0);
        }
    }

    #[test]
    fn superblock_fields_are_parsed() {
        let dump = "Inode count:              16384\nBlock count:              65536\n\
                    Free blocks:              56023\nFree inodes:              16373\nBlock size:               1024\n";
        let sb = parse_superblock(dump).unwrap();
        assert_eq!(
            sb,
            Superblock {
                block_size: 1024,
                free_blocks: 56023,
                free_inodes: 16373
            }
        );
        assert_eq!(sb.free_bytes(), 56023 * 1024);
        assert_eq!(parse_superblock("Block size: 4096\n"), None);
    }

    #[test]
    fn mkfs_arguments() {
        assert_eq!(
            display(&mkfs_command(Path::new("/s"), Path::new("/i.ext4"))),
            "mkfs.ext4 -q -F -L rootfs -b 4096 -m 0 -E lazy_itable_init=0 -i 8192 -d /s /i.ext4"
        );
    }

    #[test]
    fn makes_an_image_with_headroom_from_a_small_tree() {
        if which("mkfs.ext4").is_none() || which("dumpe2fs").is_none() {
            eprintln!("skipped: e2fsprogs not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("root");
        std::fs::create_dir_all(staging.join("etc")).unwrap();
        std::fs::write(staging.join("etc/hostname"), "sandbox\n").unwrap();
        let image = dir.path().join("rootfs.ext4");
        let sb = make_image(&staging, &image, 4096, &mut RecordingProgress::default()).unwrap();
        assert!(sb.free_bytes() >= MIN_FREE_BYTES, "{sb:?}");
        assert_eq!(std::fs::metadata(&image).unwrap().len(), image_size(4096));
    }

    fn which(program: &str) -> Option<std::path::PathBuf> {
        crate::image_build::preflight::find_program(program)
    }
}
