//! Asks dpkg which version of a Debian package is installed (`dpkg-query`).

use std::process::Command;

use super::cmd::{self, CommandError};

/// Errors looking up an installed package.
#[derive(Debug, thiserror::Error)]
pub enum DpkgError {
    #[error("package {package} is not installed (apt-get install {package})")]
    NotInstalled {
        package: String,
        #[source]
        source: CommandError,
    },
    #[error("package {package} is known to dpkg but not installed (status {status:?}); apt-get install {package}")]
    NotFullyInstalled { package: String, status: String },
}

/// The installed version of `package`, e.g. `6.1.192-2`.
pub fn installed_version(package: &str) -> Result<String, DpkgError> {
    let mut query = Command::new("dpkg-query");
    query.args(["-W", "-f=${db:Status-Abbrev}|${Version}", package]);
    let out = cmd::output(&mut query).map_err(|source| DpkgError::NotInstalled {
        package: package.to_owned(),
        source,
    })?;
    parse_query(&out).ok_or_else(|| DpkgError::NotFullyInstalled {
        package: package.to_owned(),
        status: out.trim().to_owned(),
    })
}

/// Parses `ii |6.1.192-2`; only "installed" (`ii`) counts.
fn parse_query(out: &str) -> Option<String> {
    let (status, version) = out.trim().split_once('|')?;
    (status.trim() == "ii" && !version.is_empty()).then(|| version.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_have_a_version() {
        assert_eq!(parse_query("ii |6.1.192-2"), Some("6.1.192-2".into()));
        assert_eq!(parse_query("rc |6.1.192-2"), None);
        assert_eq!(parse_query("un |"), None);
        assert_eq!(parse_query(""), None);
    }

    #[test]
    fn unknown_package_is_not_installed() {
        let err = installed_version("wrenn-no-such-package").unwrap_err();
        assert!(matches!(err, DpkgError::NotInstalled { .. }), "{err:?}");
    }
}
