//! Typed-id helpers: every entity's id is a prefix plus random lowercase letters and digits,
//! e.g. `team-4k2…`, so ids read well in URLs and logs and cannot be confused across kinds.

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const RANDOM_LEN: usize = 20;

/// The kinds of entity with an id of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User,
    Team,
    ApiKey,
    Host,
    Template,
    Sandbox,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::User => "usr-",
            IdKind::Team => "team-",
            IdKind::ApiKey => "key-",
            IdKind::Host => "host-",
            IdKind::Template => "tpl-",
            IdKind::Sandbox => "sb-",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Team => "team",
            IdKind::ApiKey => "API key",
            IdKind::Host => "host",
            IdKind::Template => "template",
            IdKind::Sandbox => "sandbox",
        }
    }
}

pub fn generate(kind: IdKind) -> String {
    let mut rng = rand::thread_rng();
    let suffix: String = (0..RANDOM_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}{suffix}", kind.prefix())
}

/// Whether `id` has the form of a `kind` id. Lookups of malformed ids answer 404 like unknown
/// ones, so ids never leak which part was wrong; this check keeps junk out of queries.
pub fn is_well_formed(kind: IdKind, id: &str) -> bool {
    id.strip_prefix(kind.prefix()).is_some_and(|suffix| {
        !suffix.is_empty()
            && suffix.len() <= 40
            && suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_well_formed_and_distinct() {
        let a = generate(IdKind::Team);
        let b = generate(IdKind::Team);
        assert!(is_well_formed(IdKind::Team, &a), "{a}");
        assert_ne!(a, b);
        assert!(!is_well_formed(IdKind::Sandbox, &a));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for id in [
            "",
            "sb-",
            "sb-ABC",
            "sb-../x",
            "sb-é",
            "team-x",
            &format!("sb-{}", "a".repeat(41)),
        ] {
            assert!(!is_well_formed(IdKind::Sandbox, id), "{id}");
        }
    }
}
