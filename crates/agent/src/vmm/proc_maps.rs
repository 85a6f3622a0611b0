//! Lines of `/proc/<pid>/maps`: where a VMM maps guest RAM.

/// One mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapsEntry<'a> {
    pub start: u64,
    pub end: u64,
    /// e.g. `rw-p` (private) or `rw-s` (shared).
    pub perms: &'a str,
    pub offset: u64,
    /// The mapped file, without the ` (deleted)` the kernel adds once it is unlinked.
    pub path: &'a str,
}

/// The mappings of a `/proc/<pid>/maps` text that name a file; malformed lines are skipped.
pub fn entries(maps: &str) -> impl Iterator<Item = MapsEntry<'_>> {
    maps.lines().filter_map(|line| {
        // start-end perms offset dev inode path
        let mut fields = line.splitn(6, ' ');
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let offset = fields.next()?;
        let path = fields.nth(2)?.trim_start();
        Some(MapsEntry {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            perms,
            offset: u64::from_str_radix(offset, 16).ok()?,
            path: path.strip_suffix(" (deleted)").unwrap_or(path),
        })
    })
}
