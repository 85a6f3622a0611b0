//! Where the CLI finds its control plane: the API URL and key from flags, the environment or
//! the file `wrenn login` writes (`$XDG_CONFIG_HOME/wrenn/config.json`, mode 0600).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7200";
pub const API_URL_ENV: &str = "WRENN_API_URL";
pub const API_KEY_ENV: &str = "WRENN_API_KEY";

/// What `wrenn login` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogin {
    pub api_url: String,
    pub api_key: String,
    /// Id of the key when `wrenn login` created it, so `wrenn logout` can revoke it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("neither XDG_CONFIG_HOME nor HOME is set, so there is no place for the config file")]
    NoHome,
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a wrenn config file (delete it or run `wrenn login`)", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("remove {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{url:?} is not an http:// or https:// URL")]
    BadUrl { url: String },
}

/// The config file's location.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
}

impl ConfigFile {
    /// `$XDG_CONFIG_HOME/wrenn/config.json`, else `$HOME/.config/wrenn/config.json`.
    pub fn locate(env: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| env(name).filter(|value| !value.is_empty());
        let base = match non_empty("XDG_CONFIG_HOME") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(non_empty("HOME").ok_or(ConfigError::NoHome)?).join(".config"),
        };
        Ok(Self {
            path: base.join("wrenn").join("config.json"),
        })
    }

    pub fn from_process_env() -> Result<Self, ConfigError> {
        Self::locate(|name| std::env::var_os(name))
    }

    /// The stored login, or `None` when there is no file.
    pub fn load(&self) -> Result<Option<StoredLogin>, ConfigError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| ConfigError::Parse {
                path: self.path.clone(),
                source,
            })
    }

    /// Writes the file readable by its owner only, replacing any old one atomically.
    pub fn save(&self, login: &StoredLogin) -> Result<(), ConfigError> {
        let write_error = |path: &Path| {
            let path = path.to_owned();
            move |source| ConfigError::Write { path, source }
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_error(dir))?;
        let temporary = self.path.with_extension("json.tmp");
        // A leftover from an interrupted save may have other permissions: start afresh.
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(write_error(&temporary))?;
        let mut text = serde_json::to_string_pretty(login).unwrap_or_default();
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(write_error(&temporary))?;
        std::fs::rename(&temporary, &self.path).map_err(write_error(&self.path))
    }

    /// Removes the file; `false` when there was none.
    pub fn remove(&self) -> Result<bool, ConfigError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ConfigError::Remove {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Where to send requests and with which key, once flags, environment and file are weighed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTarget {
    pub url: Url,
    pub key: Option<String>,
    /// Why there is no key, in words for the user (when `key` is `None`).
    pub missing_key: String,
}

/// The inputs of [`ApiTarget::resolve`], each optional.
#[derive(Debug, Clone, Default)]
pub struct ApiSources {
    pub flag_url: Option<String>,
    pub flag_key: Option<String>,
    pub env_url: Option<String>,
    pub env_key: Option<String>,
    pub stored: Option<StoredLogin>,
}

impl ApiSources {
    /// Flags as given, the process environment and the config file (if readable).
    pub fn gather(flag_url: Option<String>, flag_key: Option<String>) -> Result<Self, ConfigError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Ok(Self {
            flag_url,
            flag_key,
            env_url: env(API_URL_ENV),
            env_key: env(API_KEY_ENV),
            stored: ConfigFile::from_process_env()?.load()?,
        })
    }
}

impl ApiTarget {
    /// URL: flag, environment, stored login, default. Key: flag, environment, then the
    /// stored key — but only for the URL it was stored for, so a key never travels to a
    /// server it wasn't issued by.
    pub fn resolve(sources: ApiSources) -> Result<Self, ConfigError> {
        let raw_url = sources
            .flag_url
            .or(sources.env_url)
            .or_else(|| sources.stored.as_ref().map(|s| s.api_url.clone()))
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        let url = parse_api_url(&raw_url)?;
        let stored_key = match &sources.stored {
            Some(stored) if same_url(&stored.api_url, &url) => Ok(stored.api_key.clone()),
            Some(stored) => Err(format!(
                "no API key for {url}: the stored login is for {}; run `wrenn login --api-url {url}` \
                 or pass --api-key / set {API_KEY_ENV}",
                stored.api_url
            )),
            None => Err(format!(
                "no API key: pass --api-key, set {API_KEY_ENV} or run `wrenn login`"
            )),
        };
        let (key, missing_key) = match sources.flag_key.or(sources.env_key) {
            Some(key) => (Some(key.trim().to_owned()), String::new()),
            None => match stored_key {
                Ok(key) => (Some(key), String::new()),
                Err(why) => (None, why),
            },
        };
        Ok(Self {
            url,
            key,
            missing_key,
        })
    }
}

/// An absolute http(s) URL, with a trailing slash so paths join under it.
pub fn parse_api_url(raw: &str) -> Result<Url, ConfigError> {
    let bad = || ConfigError::BadUrl {
        url: raw.to_owned(),
    };
    let mut url = Url::parse(raw.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn same_url(stored: &str, url: &Url) -> bool {
    parse_api_url(stored).is_ok_and(|stored| &stored == url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn stored(url: &str, key: &str) -> Option<StoredLogin> {
        Some(StoredLogin {
            api_url: url.into(),
            api_key: key.into(),
            api_key_id: None,
        })
    }

    #[test]
    fn url_and_key_come_from_flags_then_env_then_the_stored_login() {
        struct Case {
            sources: ApiSources,
            url: &'static str,
            key: Option<&'static str>,
        }
        let cases = [
            Case {
                sources: ApiSources::default(),
                url: "http://127.0.0.1:7200/",
                key: None,
            },
            Case {
                sources: ApiSources {
                    flag_url: Some("http://a:1".into()),
                    env_url: Some("http://b:2".into()),
                    flag_key: Some("wrn_flag".into()),
                    env_key: Some("wrn_env".into()),
                    stored: stored("http://a:1", "wrn_file"),
                },
                url: "http://a:1/",
                key: Some("wrn_flag"),
            },
            Case {
                sources: ApiSources {
                    env_url: Some("http://b:2".into()),
                    env_key: Some("wrn_env".into()),
                    ..Default::default()
                },
                url: "http://b:2/",
                key: Some("wrn_env"),
            },
            Case {
                sources: ApiSources {
                    stored: stored("http://c:3/", "wrn_file"),
                    ..Default::default()
                },
                url: "http://c:3/",
                key: Some("wrn_file"),
            },
            // The stored key is not sent to another server.
            Case {
                sources: ApiSources {
                    flag_url: Some("http://elsewhere:9".into()),
                    stored: stored("http://c:3", "wrn_file"),
                    ..Default::default()
                },
                url: "http://elsewhere:9/",
                key: None,
            },
            Case {
                sources: ApiSources {
                    flag_url: Some("https://cp.example/wrenn".into()),
                    stored: stored("https://cp.example/wrenn/", "wrn_file"),
                    ..Default::default()
                },
                url: "https://cp.example/wrenn/",
                key: Some("wrn_file"),
            },
        ];
        for (n, case) in cases.into_iter().enumerate() {
            let target = ApiTarget::resolve(case.sources).unwrap();
            assert_eq!(target.url.as_str(), case.url, "case {n}");
            assert_eq!(target.key.as_deref(), case.key, "case {n}");
            if case.key.is_none() {
                assert!(target.missing_key.contains("wrenn login"), "case {n}");
            }
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        for raw in ["", "127.0.0.1:7200", "ftp://x/", "http://", "not a url"] {
            assert!(parse_api_url(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn the_config_file_lives_under_xdg_config_home_or_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let file = ConfigFile::locate(env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])).unwrap();
        assert_eq!(file.path, Path::new("/x/wrenn/config.json"));
        let file = ConfigFile::locate(env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/h")])).unwrap();
        assert_eq!(file.path, Path::new("/h/.config/wrenn/config.json"));
        assert!(matches!(
            ConfigFile::locate(env(&[])),
            Err(ConfigError::NoHome)
        ));
    }

    #[test]
    fn saved_logins_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile {
            path: dir.path().join("nested/wrenn/config.json"),
        };
        assert_eq!(file.load().unwrap(), None);
        let login = StoredLogin {
            api_url: "http://127.0.0.1:7200/".into(),
            api_key: "wrn_secret".into(),
            api_key_id: Some("key-1".into()),
        };
        file.save(&login).unwrap();
        file.save(&login).unwrap();
        assert_eq!(file.load().unwrap(), Some(login));
        let mode = std::fs::metadata(&file.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(file.remove().unwrap());
        assert!(!file.remove().unwrap());

        std::fs::write(&file.path, "{not json").unwrap();
        assert!(matches!(file.load(), Err(ConfigError::Parse { .. })));
    }
}
