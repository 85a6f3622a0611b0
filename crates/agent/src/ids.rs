//! Typed identifiers with a readable, prefixed wire form.

use std::fmt;

use rand::Rng;

/// Identifies a sandbox: `sb-` followed by lowercase letters and digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(String);

const SANDBOX_PREFIX: &str = "sb-";
const GENERATED_LEN: usize = 20;
const MAX_SUFFIX_LEN: usize = 40;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A sandbox id that is not of the form `sb-[a-z0-9]{1,40}`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid sandbox id {0:?}: expected \"sb-\" followed by 1-40 characters from a-z and 0-9")]
pub struct InvalidSandboxId(pub String);

impl SandboxId {
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let suffix: String = (0..GENERATED_LEN)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        Self(format!("{SANDBOX_PREFIX}{suffix}"))
    }

    pub fn parse(s: &str) -> Result<Self, InvalidSandboxId> {
        let valid = s.strip_prefix(SANDBOX_PREFIX).is_some_and(|suffix| {
            !suffix.is_empty()
                && suffix.len() <= MAX_SUFFIX_LEN
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidSandboxId(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        assert_ne!(a, b);
        assert_eq!(SandboxId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "sb-",
            "sb-../x",
            "xx-abc",
            "sb-ABC",
            "sb-a/b",
            &format!("sb-{}", "a".repeat(41)),
        ] {
            assert!(SandboxId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
