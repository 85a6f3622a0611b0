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

/// Finds the `make` processes whose working directory is `tree` or inside it, leaving out
/// those a make in the tree started: sub-makes, and the children make forks for a recipe,
/// which are called `make` until they exec.
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
    let makes: Vec<(RunningMake, Option<u32>)> = procs
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            if comm.trim_end() != "make" {
                return None;
            }
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            cwd.starts_with(&tree)
                .then(|| (RunningMake { pid, cwd }, parent_of(pid)))
        })
        .collect();
    let pids: Vec<u32> = makes.iter().map(|(make, _)| make.pid).collect();
    makes
        .into_iter()
        .filter(|(_, parent)| parent.is_none_or(|parent| !pids.contains(&parent)))
        .map(|(make, _)| make)
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_build::cmd::display;
    use std::os::unix::process::CommandExt;

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
    fn finds_a_make_running_in_a_tree_but_not_the_makes_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub/inner")).unwrap();
        // A make that starts a sub-make: only the first counts as a build in the tree.
        std::fs::write(tree.join("sub/Makefile"), "all:\n\t@$(MAKE) -s -C inner\n").unwrap();
        std::fs::write(tree.join("sub/inner/Makefile"), "all:\n\tsleep 5\n").unwrap();
        assert!(running_makes_in(&tree).is_empty());
        // In a process group of its own, so the make, the sub-make and `sleep` go together;
        // none may hold the test's output open.
        let mut child = match Command::new("make")
            .current_dir(tree.join("sub"))
            .process_group(0)
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
        // Until the sub-make runs (poll, rather than sleep a fixed time).
        let inner = tree.join("sub/inner").canonicalize().unwrap();
        let sub_make_runs = || {
            std::fs::read_dir("/proc").unwrap().any(|entry| {
                let pid = entry.unwrap().file_name();
                let comm = std::fs::read_to_string(Path::new("/proc").join(&pid).join("comm"));
                let cwd = std::fs::read_link(Path::new("/proc").join(&pid).join("cwd"));
                matches!((comm, cwd), (Ok(comm), Ok(cwd)) if comm.trim_end() == "make" && cwd == inner)
            })
        };
        for _ in 0..250 {
            if sub_make_runs() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(sub_make_runs(), "the sub-make never started");
        let found = running_makes_in(&tree);
        let group = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, child.id());
        assert!(running_makes_in(&dir.path().join("other")).is_empty());
    }
}
