//! Resolution of request paths: relative ones are taken from the default user's home.

use std::path::{Path, PathBuf};

use super::FsError;

/// Base for relative paths: root's home, where the default user's processes start.
pub const RELATIVE_BASE: &str = "/root";

/// Resolves a request path to an absolute, tidied path (`.` and repeated `/` removed).
///
/// `..` is kept: resolving it lexically would give the wrong answer across symlinks.
pub fn resolve(path: &str) -> Result<PathBuf, FsError> {
    resolve_in(Path::new(RELATIVE_BASE), path)
}

fn resolve_in(base: &Path, path: &str) -> Result<PathBuf, FsError> {
    if path.is_empty() {
        return Err(FsError::EmptyPath);
    }
    Ok(base.join(path).components().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths() {
        let cases = [
            ("/etc/hosts", "/etc/hosts"),
            ("notes.txt", "/root/notes.txt"),
            ("./a//b/./c/", "/root/a/b/c"),
            ("/", "/"),
            ("../tmp", "/root/../tmp"),
            ("/tmp/x/", "/tmp/x"),
        ];
        for (input, expected) in cases {
            assert_eq!(resolve(input).unwrap(), PathBuf::from(expected), "{input}");
        }
        assert_eq!(
            resolve_in(Path::new("/home/user"), "file").unwrap(),
            PathBuf::from("/home/user/file")
        );
        assert!(matches!(resolve(""), Err(FsError::EmptyPath)));
    }
}
