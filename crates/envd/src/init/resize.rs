//! Grows the root ext4 filesystem to fill its block device, for VMs given a bigger disk than
//! the image was built with.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Block device holding the root filesystem.
const ROOT_DEVICE: &str = "/dev/vda";
/// Its size in 512-byte sectors.
const ROOT_DEVICE_SECTORS: &str = "/sys/block/vda/size";
const SECTOR_BYTES: u64 = 512;

const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_LEN: usize = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;

nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error("read size of {ROOT_DEVICE}")]
    DeviceSize(#[source] std::io::Error),
    #[error("unparsable size {text:?} in {ROOT_DEVICE_SECTORS}")]
    BadDeviceSize { text: String },
    #[error("read superblock of {ROOT_DEVICE}")]
    ReadSuperblock(#[source] std::io::Error),
    #[error("{ROOT_DEVICE} does not hold an ext4 filesystem")]
    NotExt4,
    #[error("open /")]
    OpenRoot(#[source] std::io::Error),
    #[error("resize from {from} to {to} blocks")]
    Resize {
        from: u64,
        to: u64,
        #[source]
        source: nix::Error,
    },
}

/// Block count and block size from an ext4 superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    blocks: u64,
    block_size: u64,
}

/// A growth of the root filesystem that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    from: Geometry,
    to_blocks: u64,
}

/// Whether the root filesystem is smaller than its device. Cheap (a sysfs file and the
/// superblock, which the mount left cached), unlike the resize itself.
pub fn growth_due() -> Result<Option<Growth>, ResizeError> {
    if !Path::new(ROOT_DEVICE_SECTORS).exists() {
        tracing::debug!("no {ROOT_DEVICE}; not resizing");
        return Ok(None);
    }
    let text = std::fs::read_to_string(ROOT_DEVICE_SECTORS).map_err(ResizeError::DeviceSize)?;
    let sectors: u64 = text
        .trim()
        .parse()
        .map_err(|_| ResizeError::BadDeviceSize { text: text.clone() })?;
    let device_bytes = sectors * SECTOR_BYTES;

    let mut superblock = [0u8; SUPERBLOCK_LEN];
    File::open(ROOT_DEVICE)
        .and_then(|device| device.read_exact_at(&mut superblock, SUPERBLOCK_OFFSET))
        .map_err(ResizeError::ReadSuperblock)?;
    let geometry = parse_superblock(&superblock).ok_or(ResizeError::NotExt4)?;
    let target = device_bytes / geometry.block_size;
    if target <= geometry.blocks {
        tracing::debug!(blocks = geometry.blocks, "root filesystem fills its device");
        return Ok(None);
    }
    Ok(Some(Growth {
        from: geometry,
        to_blocks: target,
    }))
}

/// Grows the mounted root filesystem (online resize).
pub fn grow_root(growth: Growth) -> Result<(), ResizeError> {
    let (geometry, target) = (growth.from, growth.to_blocks);
    let root = File::open("/").map_err(ResizeError::OpenRoot)?;
    // SAFETY: the ioctl reads one u64 from a pointer valid for the call, on an fd of the
    // filesystem to resize.
    unsafe { ext4_resize_fs(root.as_raw_fd(), &target) }.map_err(|source| ResizeError::Resize {
        from: geometry.blocks,
        to: target,
        source,
    })?;
    tracing::info!(
        from_blocks = geometry.blocks,
        to_blocks = target,
        block_size = geometry.block_size,
        "grew root filesystem"
    );
    Ok(())
}

fn parse_superblock(superblock: &[u8]) -> Option<Geometry> {
    let u16_at = |offset: usize| {
        Some(u16::from_le_bytes(
            superblock.get(offset..offset + 2)?.try_into().ok()?,
        ))
    };
    let u32_at = |offset: usize| {
        Some(u32::from_le_bytes(
            superblock.get(offset..offset + 4)?.try_into().ok()?,
        ))
    };
    if u16_at(0x38)? != EXT4_MAGIC {
        return None;
    }
    let log_block_size = u32_at(0x18)?;
    if log_block_size > 6 {
        return None;
    }
    let low = u64::from(u32_at(0x04)?);
    let high = if u32_at(0x60)? & INCOMPAT_64BIT != 0 {
        u64::from(u32_at(0x150)?)
    } else {
        0
    };
    Some(Geometry {
        blocks: high << 32 | low,
        block_size: 1024 << log_block_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(blocks: u64, log_block_size: u32, incompat: u32) -> [u8; SUPERBLOCK_LEN] {
        let mut sb = [0u8; SUPERBLOCK_LEN];
        sb[0x04..0x08].copy_from_slice(&(blocks as u32).to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&log_block_size.to_le_bytes());
        sb[0x38..0x3a].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        sb
    }

    #[test]
    fn parses_superblocks() {
        let cases = [
            (superblock(131_072, 2, 0), Some((131_072, 4096))),
            (
                superblock(5 << 32 | 7, 2, INCOMPAT_64BIT),
                Some((5 << 32 | 7, 4096)),
            ),
            (superblock(5 << 32 | 7, 0, 0), Some((7, 1024))),
            ([0u8; SUPERBLOCK_LEN], None),
        ];
        for (sb, expected) in cases {
            let parsed = parse_superblock(&sb).map(|g| (g.blocks, g.block_size));
            assert_eq!(parsed, expected);
        }
    }
}
