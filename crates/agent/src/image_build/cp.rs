//! `cp -a`: copies a cached tree into a fresh staging directory, so the cache stays pristine.

use std::path::Path;
use std::process::Command;

/// Copies directory `from` to `to` (which must not exist) keeping owners, modes, links and
/// xattrs; `--reflink=auto` makes it nearly free on filesystems that share extents.
pub fn copy_tree_command(from: &Path, to: &Path) -> Command {
    let mut cmd = Command::new("cp");
    cmd.args(["-a", "--reflink=auto", "--no-target-directory"])
        .arg(from)
        .arg(to);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_build::cmd::{self, display};
    use crate::image_build::progress::fakes::RecordingProgress;

    #[test]
    fn copies_a_tree_with_links_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("usr/sbin")).unwrap();
        std::fs::write(from.join("usr/sbin/tool"), "x").unwrap();
        std::fs::set_permissions(
            from.join("usr/sbin/tool"),
            std::fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        std::os::unix::fs::symlink("usr/sbin", from.join("sbin")).unwrap();
        let to = dir.path().join("to");
        let mut copy = copy_tree_command(&from, &to);
        assert!(display(&copy).starts_with("cp -a --reflink=auto --no-target-directory "));
        cmd::run(&mut copy, &mut RecordingProgress::default()).unwrap();
        assert_eq!(
            std::fs::read_link(to.join("sbin")).unwrap(),
            Path::new("usr/sbin")
        );
        let mode = std::fs::metadata(to.join("usr/sbin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o751);
    }
}
