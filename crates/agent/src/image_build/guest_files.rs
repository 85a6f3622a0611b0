//! Writes files into a staged guest root filesystem without a chroot: the guest agent, the
//! sandbox user, and the machine identity files.
//!
//! Every path is resolved inside the staging root and its parents are checked not to be
//! symlinks, so a link in the Debian tree (absolute ones point at the host) is never followed.

use std::fmt::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::images::GUEST_INIT_PATH;

use super::path_io::{io_err, PathIoError};

/// The unprivileged account sandbox processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestUser {
    pub name: &'static str,
    pub uid: u32,
    /// The user's own group has the same name and this id.
    pub gid: u32,
    pub home: &'static str,
    pub shell: &'static str,
}

pub const SANDBOX_USER: GuestUser = GuestUser {
    name: "user",
    uid: 1000,
    gid: 1000,
    home: "/home/user",
    shell: "/bin/bash",
};

pub const HOSTNAME: &str = "sandbox";

/// Resolver for the guest. A default to revisit: it should come from the host agent's network
/// settings (per-host DNS, or a resolver inside the sandbox network namespace).
pub const RESOLV_CONF: &str = "nameserver 1.1.1.1\n";

/// Keeps later `apt-get install`s in a sandbox from bringing back what we trimmed.
const DPKG_NODOC: &str = "\
# Written by the wrenn image builder: no docs, man pages or translations in sandboxes.
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
";

/// Errors editing the staged tree.
#[derive(Debug, thiserror::Error)]
pub enum GuestFilesError {
    #[error("guest path {path} goes through a symlink or leaves the root")]
    UnsafePath { path: String },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{file} already has an entry named {name:?} or with id {id}")]
    EntryExists {
        file: &'static str,
        name: String,
        id: u32,
    },
}

/// The host path of guest path `guest` (absolute) under `root`, refusing symlinked parents.
pub fn guest_path(root: &Path, guest: &str) -> Result<PathBuf, GuestFilesError> {
    let unsafe_path = || GuestFilesError::UnsafePath {
        path: guest.to_owned(),
    };
    let relative = Path::new(guest)
        .strip_prefix("/")
        .map_err(|_| unsafe_path())?;
    let mut path = root.to_owned();
    let components: Vec<_> = relative.components().collect();
    for (i, component) in components.iter().enumerate() {
        let Component::Normal(name) = component else {
            return Err(unsafe_path());
        };
        path.push(name);
        let is_parent = i + 1 < components.len();
        if is_parent && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(unsafe_path());
        }
    }
    Ok(path)
}

/// Replaces whatever is at `guest` (file or symlink) with a new root-owned file.
pub fn write_file(
    root: &Path,
    guest: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), GuestFilesError> {
    let path = guest_path(root, guest)?;
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if meta.is_dir() {
            return Err(GuestFilesError::UnsafePath {
                path: guest.to_owned(),
            });
        }
        std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(io_err("create", &path))?;
    std::io::Write::write_all(&mut file, contents).map_err(io_err("write", &path))?;
    // The umask may have narrowed `mode`; set it exactly.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", &path))?;
    Ok(std::os::unix::fs::chown(&path, Some(0), Some(0)).map_err(io_err("chown", &path))?)
}

/// Installs the guest agent at [`GUEST_INIT_PATH`], mode 0755, owned by root.
pub fn install_envd(root: &Path, envd: &Path) -> Result<(), GuestFilesError> {
    let binary = std::fs::read(envd).map_err(io_err("read envd binary", envd))?;
    write_file(root, GUEST_INIT_PATH, &binary, 0o755)
}

/// Hostname, hosts, resolver, an empty machine-id, and the dpkg no-docs rule.
pub fn write_identity(root: &Path) -> Result<(), GuestFilesError> {
    write_file(
        root,
        "/etc/hostname",
        format!("{HOSTNAME}\n").as_bytes(),
        0o644,
    )?;
    write_file(
        root,
        "/etc/hosts",
        format!("127.0.0.1 localhost {HOSTNAME}\n").as_bytes(),
        0o644,
    )?;
    write_file(root, "/etc/resolv.conf", RESOLV_CONF.as_bytes(), 0o644)?;
    // Empty, not absent: the first boot of each sandbox may generate its own id.
    write_file(root, "/etc/machine-id", b"", 0o444)?;
    write_file(
        root,
        "/etc/dpkg/dpkg.cfg.d/wrenn-nodoc",
        DPKG_NODOC.as_bytes(),
        0o644,
    )
}

/// Adds `user` to passwd, group, shadow (and gshadow when present) and creates its home.
pub fn add_user(
    root: &Path,
    user: &GuestUser,
    days_since_epoch: u64,
) -> Result<(), GuestFilesError> {
    edit_table(root, "/etc/passwd", |text| add_passwd_entry(text, user))?;
    edit_table(root, "/etc/group", |text| add_group_entry(text, user))?;
    edit_table(root, "/etc/shadow", |text| {
        add_shadow_entry(text, user, days_since_epoch)
    })?;
    if guest_path(root, "/etc/gshadow")?.exists() {
        edit_table(root, "/etc/gshadow", |text| add_gshadow_entry(text, user))?;
    }
    create_home(root, user)
}

/// Rewrites an existing table file in place, keeping its owner and mode (shadow is 0640).
fn edit_table(
    root: &Path,
    guest: &str,
    edit: impl FnOnce(&str) -> Result<String, GuestFilesError>,
) -> Result<(), GuestFilesError> {
    let path = guest_path(root, guest)?;
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(GuestFilesError::UnsafePath {
            path: guest.to_owned(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
    Ok(std::fs::write(&path, edit(&text)?).map_err(io_err("write", &path))?)
}

fn create_home(root: &Path, user: &GuestUser) -> Result<(), GuestFilesError> {
    let home = guest_path(root, user.home)?;
    std::fs::create_dir_all(&home).map_err(io_err("create home", &home))?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750))
        .map_err(io_err("chmod", &home))?;
    std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid))
        .map_err(io_err("chown", &home))?;
    // Like useradd -m: the skeleton dotfiles (.bashrc, .profile) are top-level regular files.
    let skel = guest_path(root, "/etc/skel")?;
    let Ok(entries) = std::fs::read_dir(&skel) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", &skel))?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let dest = home.join(entry.file_name());
        std::fs::copy(entry.path(), &dest).map_err(io_err("copy skeleton file to", &dest))?;
        std::os::unix::fs::chown(&dest, Some(user.uid), Some(user.gid))
            .map_err(io_err("chown", &dest))?;
    }
    Ok(())
}

pub fn add_passwd_entry(passwd: &str, user: &GuestUser) -> Result<String, GuestFilesError> {
    let line = format!(
        "{}:x:{}:{}::{}:{}",
        user.name, user.uid, user.gid, user.home, user.shell
    );
    append_entry(passwd, "/etc/passwd", user.name, Some((2, user.uid)), &line)
}

pub fn add_group_entry(group: &str, user: &GuestUser) -> Result<String, GuestFilesError> {
    let line = format!("{}:x:{}:", user.name, user.gid);
    append_entry(group, "/etc/group", user.name, Some((2, user.gid)), &line)
}

/// A locked password (`*`): sandbox processes are started by envd, nobody logs in.
pub fn add_shadow_entry(
    shadow: &str,
    user: &GuestUser,
    days_since_epoch: u64,
) -> Result<String, GuestFilesError> {
    let line = format!("{}:*:{days_since_epoch}:0:99999:7:::", user.name);
    append_entry(shadow, "/etc/shadow", user.name, None, &line)
}

pub fn add_gshadow_entry(gshadow: &str, user: &GuestUser) -> Result<String, GuestFilesError> {
    let line = format!("{}:!::", user.name);
    append_entry(gshadow, "/etc/gshadow", user.name, None, &line)
}

/// Appends `line` to a colon-separated table, refusing a duplicate name or (field `id_field`) id.
fn append_entry(
    table: &str,
    file: &'static str,
    name: &str,
    id: Option<(usize, u32)>,
    line: &str,
) -> Result<String, GuestFilesError> {
    let clash = table.lines().any(|existing| {
        let fields: Vec<&str> = existing.split(':').collect();
        fields[0] == name
            || id.is_some_and(|(index, id)| fields.get(index) == Some(&id.to_string().as_str()))
    });
    if clash {
        return Err(GuestFilesError::EntryExists {
            file,
            name: name.to_owned(),
            id: id.map_or(0, |(_, id)| id),
        });
    }
    let mut out = table.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    writeln!(out, "{line}").expect("writing to a String cannot fail");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";

    #[test]
    fn passwd_group_and_shadow_get_the_sandbox_user() {
        let passwd = add_passwd_entry(PASSWD, &SANDBOX_USER).unwrap();
        assert!(passwd.starts_with(PASSWD));
        assert!(
            passwd.ends_with("\nuser:x:1000:1000::/home/user:/bin/bash\n"),
            "{passwd}"
        );
        assert_eq!(
            add_group_entry("root:x:0:\n", &SANDBOX_USER).unwrap(),
            "root:x:0:\nuser:x:1000:\n"
        );
        assert_eq!(
            add_shadow_entry("root:*:20000:0:99999:7:::\n", &SANDBOX_USER, 20400).unwrap(),
            "root:*:20000:0:99999:7:::\nuser:*:20400:0:99999:7:::\n"
        );
        assert_eq!(add_gshadow_entry("", &SANDBOX_USER).unwrap(), "user:!::\n");
    }

    #[test]
    fn existing_name_or_id_is_refused() {
        let with_user = add_passwd_entry(PASSWD, &SANDBOX_USER).unwrap();
        assert!(add_passwd_entry(&with_user, &SANDBOX_USER).is_err());
        let uid_taken = format!("{PASSWD}\nalice:x:1000:1000::/home/alice:/bin/sh\n");
        assert!(matches!(
            add_passwd_entry(&uid_taken, &SANDBOX_USER),
            Err(GuestFilesError::EntryExists {
                file: "/etc/passwd",
                ..
            })
        ));
        assert!(add_group_entry("staff:x:1000:\n", &SANDBOX_USER).is_err());
    }

    #[test]
    fn guest_paths_never_follow_symlinked_parents() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/sbin")).unwrap();
        std::os::unix::fs::symlink("usr/sbin", root.path().join("sbin")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("hostetc")).unwrap();
        assert_eq!(
            guest_path(root.path(), "/usr/sbin/envd").unwrap(),
            root.path().join("usr/sbin/envd")
        );
        for bad in ["/sbin/envd", "/hostetc/passwd", "relative", "/a/../etc"] {
            assert!(guest_path(root.path(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_file_replaces_a_symlink_instead_of_writing_through_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: write_file chowns to root, which needs root");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("resolv.conf");
        std::fs::write(&target, "host\n").unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("etc/resolv.conf")).unwrap();
        write_file(
            root.path(),
            "/etc/resolv.conf",
            RESOLV_CONF.as_bytes(),
            0o644,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "host\n");
        let written = root.path().join("etc/resolv.conf");
        assert_eq!(std::fs::read_to_string(&written).unwrap(), RESOLV_CONF);
        assert_eq!(
            std::fs::metadata(&written).unwrap().permissions().mode() & 0o7777,
            0o644
        );
    }
}
