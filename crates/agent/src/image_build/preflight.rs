//! Checks, before minutes of work, that the host can build images: root, tools, and a static envd.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::elf::{self, ElfError, Linkage};

/// A program the builder runs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

const fn tool(program: &'static str, package: &'static str) -> Tool {
    Tool { program, package }
}

/// Needed to unpack and compile the kernel (`linux-source-6.1` is checked by the kernel step).
pub const KERNEL_TOOLS: &[Tool] = &[
    tool("tar", "tar"),
    tool("xz", "xz-utils"),
    tool("make", "make"),
    tool("gcc", "gcc"),
    tool("flex", "flex"),
    tool("bison", "bison"),
    tool("bc", "bc"),
];

/// Headers the kernel build needs (objtool links against libelf).
pub const KERNEL_HEADERS: &[(&str, &str)] = &[("/usr/include/libelf.h", "libelf-dev")];

/// Needed to bootstrap, stage and pack a root filesystem.
pub const ROOTFS_TOOLS: &[Tool] = &[
    tool("debootstrap", "debootstrap"),
    tool("cp", "coreutils"),
    tool("mkfs.ext4", "e2fsprogs"),
    tool("dumpe2fs", "e2fsprogs"),
    tool("resize2fs", "e2fsprogs"),
];

/// A precondition that does not hold.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("image builds must run as root (debootstrap, file ownership in the guest); try sudo")]
    NotRoot,
    #[error("{} not found on PATH: apt-get install {}", missing_programs(.tools), missing_packages(.tools))]
    MissingTools { tools: Vec<Tool> },
    #[error("{path} is missing: apt-get install {package}")]
    MissingHeader { path: String, package: &'static str },
    #[error("envd binary {path} not found; build it with scripts/build-envd and pass --envd or WRENN_ENVD")]
    EnvdMissing { path: PathBuf },
    #[error("inspect envd binary {path}")]
    EnvdUnreadable {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("envd binary {path} is dynamically linked (loader {interpreter}); it runs as PID 1 in the guest and must be static: build it with scripts/build-envd")]
    EnvdDynamic { path: PathBuf, interpreter: String },
}

fn missing_programs(tools: &[Tool]) -> String {
    tools
        .iter()
        .map(|t| t.program)
        .collect::<Vec<_>>()
        .join(", ")
}

fn missing_packages(tools: &[Tool]) -> String {
    let mut packages: Vec<_> = tools.iter().map(|t| t.package).collect();
    packages.dedup();
    packages.join(" ")
}

pub fn require_root() -> Result<(), PreflightError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(PreflightError::NotRoot)
    }
}

/// Fails naming every tool in `tools` that is not on PATH.
pub fn require_tools(tools: &[Tool]) -> Result<(), PreflightError> {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| find_program(t.program).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingTools { tools: missing })
    }
}

pub fn require_headers(headers: &[(&str, &'static str)]) -> Result<(), PreflightError> {
    match headers.iter().find(|(path, _)| !Path::new(path).exists()) {
        Some(&(path, package)) => Err(PreflightError::MissingHeader {
            path: path.to_owned(),
            package,
        }),
        None => Ok(()),
    }
}

/// envd must exist and be a static x86-64 executable.
pub fn require_static_envd(path: &Path) -> Result<(), PreflightError> {
    if !path.is_file() {
        return Err(PreflightError::EnvdMissing {
            path: path.to_owned(),
        });
    }
    match elf::linkage(path) {
        Ok(Linkage::Static) => Ok(()),
        Ok(Linkage::Dynamic { interpreter }) => Err(PreflightError::EnvdDynamic {
            path: path.to_owned(),
            interpreter,
        }),
        Err(source) => Err(PreflightError::EnvdUnreadable {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The first executable named `program` on PATH, like `command -v`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_all_named_with_their_packages() {
        let err = require_tools(&[
            tool("sh", "dash"),
            tool("wrenn-no-such-a", "pkg-a"),
            tool("wrenn-no-such-b", "pkg-a"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "wrenn-no-such-a, wrenn-no-such-b not found on PATH: apt-get install pkg-a"
        );
        require_tools(&[tool("sh", "dash")]).unwrap();
    }

    #[test]
    fn envd_must_exist_and_be_static() {
        let missing = require_static_envd(Path::new("/nonexistent/envd")).unwrap_err();
        assert!(matches!(missing, PreflightError::EnvdMissing { .. }));
        let dynamic = require_static_envd(Path::new("/bin/ls")).unwrap_err();
        assert!(
            matches!(dynamic, PreflightError::EnvdDynamic { .. }),
            "{dynamic}"
        );
        if Path::new("/bin/busybox").exists() {
            require_static_envd(Path::new("/bin/busybox")).unwrap();
        }
    }
}
