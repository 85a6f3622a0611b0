//! Cache keys: a short hash over the labelled inputs of a build step.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Hex digits kept from the SHA-256; 64 bits is plenty to tell a handful of builds apart.
const KEY_HEX_LEN: usize = 16;

/// Hashes named fields, each length-prefixed so that ("ab","c") and ("a","bc") differ.
#[derive(Debug, Clone)]
pub struct KeyHasher {
    hasher: Sha256,
}

impl KeyHasher {
    /// Starts a key; `domain` keeps keys of different kinds from ever colliding.
    pub fn new(domain: &str) -> Self {
        let mut key = Self {
            hasher: Sha256::new(),
        };
        key.field("domain", domain.as_bytes());
        key
    }

    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
        self
    }

    /// The first 16 hex digits of the SHA-256.
    pub fn finish(&self) -> String {
        let mut hex = hex::encode(self.hasher.clone().finalize());
        hex.truncate(KEY_HEX_LEN);
        hex
    }
}

/// Full SHA-256 of a file, in hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_stable_and_unambiguous() {
        let key = KeyHasher::new("d").field("a", b"x").finish();
        assert_eq!(key.len(), KEY_HEX_LEN);
        assert_eq!(key, KeyHasher::new("d").field("a", b"x").finish());
        assert_ne!(key, KeyHasher::new("e").field("a", b"x").finish());
        assert_ne!(
            KeyHasher::new("d").field("a", b"bc").finish(),
            KeyHasher::new("d").field("ab", b"c").finish()
        );
    }

    #[test]
    fn file_hash_matches_sha256_of_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            file_sha256(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
