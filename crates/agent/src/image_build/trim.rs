//! Removes what a sandbox never needs from a staged root filesystem: apt lists and caches,
//! documentation (except each package's copyright file), man and info pages, and message
//! translations.

use std::path::{Path, PathBuf};

use super::guest_files::guest_path;

/// Directories emptied (the directory itself stays, as dpkg and apt expect it).
const EMPTIED: &[&str] = &[
    "/var/lib/apt/lists",
    "/var/cache/apt",
    "/usr/share/man",
    "/usr/share/info",
];

/// One directory per package; only its `copyright` file is kept (license notices travel with
/// the image). Top-level symlinks to another package's directory stay too.
const DOC_DIR: &str = "/usr/share/doc";

/// Translations live in per-language subdirectories; the C.UTF-8 locale itself is in
/// /usr/lib/locale and is kept. Top-level files such as `locale.alias` stay too.
const LOCALE_DIR: &str = "/usr/share/locale";

/// Errors trimming the tree.
#[derive(Debug, thiserror::Error)]
pub enum TrimError {
    #[error("resolve {path} in the staging tree")]
    Path {
        path: String,
        #[source]
        source: super::guest_files::GuestFilesError,
    },
    #[error("remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Trims the staged tree at `root`.
pub fn trim(root: &Path) -> Result<(), TrimError> {
    for dir in EMPTIED {
        let path = resolve(root, dir)?;
        remove_children(&path, |_| true)?;
    }
    let doc = resolve(root, DOC_DIR)?;
    if let Ok(packages) = std::fs::read_dir(&doc) {
        for package in packages.flatten() {
            if package.file_type().is_ok_and(|t| t.is_dir()) {
                remove_children(&package.path(), |entry| entry.file_name() != "copyright")?;
            }
        }
    }
    let locale = resolve(root, LOCALE_DIR)?;
    remove_children(&locale, |entry| {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        is_dir && !is_c_locale(&entry.file_name().to_string_lossy())
    })
}

fn is_c_locale(name: &str) -> bool {
    name == "C" || name.starts_with("C.")
}

fn resolve(root: &Path, guest: &str) -> Result<PathBuf, TrimError> {
    guest_path(root, guest).map_err(|source| TrimError::Path {
        path: guest.to_owned(),
        source,
    })
}

/// Removes the entries of `dir` that `select` picks; a missing `dir` is fine.
fn remove_children(
    dir: &Path,
    select: impl Fn(&std::fs::DirEntry) -> bool,
) -> Result<(), TrimError> {
    let remove_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TrimError::Remove { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(TrimError::Remove {
                path: dir.to_owned(),
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(remove_err(dir))?;
        if !select(&entry) {
            continue;
        }
        let path = entry.path();
        // file_type() does not follow symlinks, so a link is removed, never its target.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path).map_err(remove_err(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(remove_err(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_docs_and_translations_but_keeps_copyrights_and_locale_alias() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in [
            "usr/share/doc/bash",
            "usr/share/locale/de/LC_MESSAGES",
            "usr/share/locale/C.UTF-8",
            "var/lib/apt/lists/partial",
            "usr/share/man/man1",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        for file in [
            "usr/share/doc/bash/README",
            "usr/share/doc/bash/copyright",
            "usr/share/locale/locale.alias",
            "var/lib/apt/lists/x_Packages",
            "usr/share/man/man1/ls.1.gz",
        ] {
            std::fs::write(r.join(file), "x").unwrap();
        }
        std::fs::create_dir_all(r.join("usr/share/doc/bash/examples")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("usr/share/doc/bash/link")).unwrap();

        trim(r).unwrap();

        for kept in [
            "usr/share/doc/bash/copyright",
            "usr/share/man",
            "var/lib/apt/lists",
            "usr/share/locale/locale.alias",
            "usr/share/locale/C.UTF-8",
        ] {
            assert!(r.join(kept).exists(), "{kept} should stay");
        }
        for gone in [
            "usr/share/doc/bash/README",
            "usr/share/doc/bash/examples",
            "usr/share/doc/bash/link",
            "usr/share/locale/de",
            "var/lib/apt/lists/partial",
            "usr/share/man/man1",
        ] {
            assert!(
                std::fs::symlink_metadata(r.join(gone)).is_err(),
                "{gone} should be gone"
            );
        }
        assert!(Path::new("/etc/passwd").exists());
    }
}
