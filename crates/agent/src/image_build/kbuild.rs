//! The kernel source tree's tools: `tar` to unpack it, `make` and `merge_config.sh` to build it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Unpacks `tarball` (a `.tar.xz`) into `dest`, which must exist.
pub fn extract_command(tarball: &Path, dest: &Path) -> Command {
    let mut cmd = Command::new("tar");
    cmd.arg("-xJf").arg(tarball).arg("-C").arg(dest);
    cmd
}

/// `make` in `tree` for the given targets.
pub fn make_command(tree: &Path, jobs: Jobs, targets: &[&str]) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(tree);
    if let Jobs::Parallel(n) = jobs {
        cmd.arg(format!("-j{n}"));
    }
    cmd.args(targets);
    cmd
}

/// Merges `fragment` over the tree's `.config` (`-m`: merge only, `make olddefconfig` runs next).
pub fn merge_config_command(tree: &Path, fragment: &Path) -> Command {
    let mut cmd = Command::new(tree.join("scripts/kconfig/merge_config.sh"));
    cmd.current_dir(tree).arg("-m").arg(".config").arg(fragment);
    cmd
}

/// How many jobs `make` may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    Serial,
    Parallel(usize),
}

impl Jobs {
    /// One job per available CPU, like `make -j$(nproc)`.
    pub fn per_cpu() -> Self {
        match std::thread::available_parallelism() {
            Ok(n) if n.get() > 1 => Jobs::Parallel(n.get()),
            _ => Jobs::Serial,
        }
    }
}

/// A `make` process already working in a tree (for example a build started by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningMake {
    pub pid: u32,
    pub cwd: PathBuf,
}

/// Finds `make` processes whose working directory is `tree` or inside it.
///
/// Two makes in one tree corrupt each other's output, so the builder waits for these first.
pub fn running_makes_in(tree: &Path) -> Vec<RunningMake> {
    let Ok(tree) = tree.canonicalize() else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    procs
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            if comm.trim_end() != "make" {
                return None;
            }
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            cwd.starts_with(&tree).then_some(RunningMake { pid, cwd })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_build::cmd::display;

    #[test]
    fn commands_have_the_expected_arguments() {
        let tree = Path::new("/c/linux");
        assert_eq!(
            display(&make_command(tree, Jobs::Parallel(2), &["vmlinux"])),
            "make -C /c/linux -j2 vmlinux"
        );
        assert_eq!(
            display(&make_command(tree, Jobs::Serial, &["tinyconfig"])),
            "make -C /c/linux tinyconfig"
        );
        let merge = merge_config_command(tree, Path::new("/c/frag.config"));
        assert_eq!(
            display(&merge),
            "/c/linux/scripts/kconfig/merge_config.sh -m .config /c/frag.config"
        );
        assert_eq!(merge.get_current_dir(), Some(tree));
        assert_eq!(
            display(&extract_command(
                Path::new("/usr/src/l.tar.xz"),
                Path::new("/c")
            )),
            "tar -xJf /usr/src/l.tar.xz -C /c"
        );
    }

    #[test]
    fn finds_a_make_running_in_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/Makefile"), "all:\n\tsleep 2\n").unwrap();
        assert!(running_makes_in(&tree).is_empty());
        // Killing make leaves its `sleep` behind; it must not hold the test's output open.
        let mut child = match Command::new("make")
            .current_dir(tree.join("sub"))
            .arg("-s")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("skipped: cannot run make ({e})");
                return;
            }
        };
        // make needs a moment to exec; poll briefly rather than sleep a fixed time.
        let mut found = Vec::new();
        for _ in 0..50 {
            found = running_makes_in(&tree);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, child.id());
        assert!(running_makes_in(&dir.path().join("other")).is_empty());
    }
}
