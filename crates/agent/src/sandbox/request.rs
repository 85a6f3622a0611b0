//! Validation of create requests: every limit is checked before anything touches the host.

use std::collections::BTreeMap;

use crate::error::ApiError;
use crate::ids::SandboxId;
use crate::images::validate_template_name;
use crate::network::InternetAccess;

const MAX_ENV_ENTRIES: usize = 256;
const MAX_METADATA_ENTRIES: usize = 64;
const MAX_KEY_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 8192;
/// Largest root disk a sandbox may ask for (1 TiB).
const MAX_DISK_MB: u32 = 1 << 20;

/// A create request as the agent understands it. Sizes are explicit: defaults are the
/// caller's business (control plane, CLI), so a zero is a mistake, not a request for one.
#[derive(Debug, Clone)]
pub struct CreateSandbox {
    pub id: Option<String>,
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub internet: InternetAccess,
    /// Idle seconds before an automatic pause (0 = never).
    pub timeout_sec: u32,
    /// Boot the kernel even where a boot snapshot of the image exists.
    pub cold_boot: bool,
}

/// Host limits a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_vcpus: u32,
    pub host_memory_mb: u64,
}

/// A request with every field checked.
#[derive(Debug, Clone)]
pub struct ValidCreate {
    pub id: SandboxId,
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    /// 0 = the template's size; resolved against the template later.
    pub disk_mb: u32,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub internet: InternetAccess,
    pub timeout_sec: u32,
    pub cold_boot: bool,
}

impl CreateSandbox {
    pub fn validate(self, limits: Limits) -> Result<ValidCreate, ApiError> {
        let invalid = |msg: String| Err(ApiError::InvalidArgument(msg));
        let id = match self.id.as_deref() {
            None | Some("") => SandboxId::generate(),
            Some(id) => {
                SandboxId::parse(id).map_err(|e| ApiError::InvalidArgument(e.to_string()))?
            }
        };
        validate_template_name(&self.template)
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let vcpus = self.vcpus;
        if vcpus == 0 {
            return invalid("vcpus must be at least 1".into());
        }
        if vcpus > limits.max_vcpus {
            return invalid(format!(
                "vcpus {vcpus} is above this host's limit of {}",
                limits.max_vcpus
            ));
        }
        let memory_mb = self.memory_mb;
        if memory_mb < 64 {
            return invalid(format!("memory_mb {memory_mb} is below the minimum of 64"));
        }
        if u64::from(memory_mb) > limits.host_memory_mb {
            return invalid(format!(
                "memory_mb {memory_mb} is above this host's memory of {} MiB",
                limits.host_memory_mb
            ));
        }
        if self.disk_mb > MAX_DISK_MB {
            return invalid(format!(
                "disk_mb {} is above the limit of {MAX_DISK_MB}",
                self.disk_mb
            ));
        }
        check_map("env", &self.env, MAX_ENV_ENTRIES)?;
        if let Some(key) = self.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return invalid(format!(
                "env key {key:?} must be non-empty and contain no '='"
            ));
        }
        check_map("metadata", &self.metadata, MAX_METADATA_ENTRIES)?;
        Ok(ValidCreate {
            id,
            template: self.template,
            vcpus,
            memory_mb,
            disk_mb: self.disk_mb,
            env: self.env,
            metadata: self.metadata,
            internet: self.internet,
            timeout_sec: self.timeout_sec,
            cold_boot: self.cold_boot,
        })
    }
}

fn check_map(
    field: &str,
    map: &BTreeMap<String, String>,
    max_entries: usize,
) -> Result<(), ApiError> {
    if map.len() > max_entries {
        return Err(ApiError::InvalidArgument(format!(
            "{field} has {} entries; at most {max_entries} are allowed",
            map.len()
        )));
    }
    for (key, value) in map {
        if key.len() > MAX_KEY_LEN
            || value.len() > MAX_VALUE_LEN
            || key.contains('\0')
            || value.contains('\0')
        {
            return Err(ApiError::InvalidArgument(format!(
                "{field} entry {:?} is too long or contains NUL (keys ≤ {MAX_KEY_LEN} bytes, values ≤ {MAX_VALUE_LEN})",
                key.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_vcpus: 4,
            host_memory_mb: 8192,
        }
    }

    fn request() -> CreateSandbox {
        CreateSandbox {
            id: None,
            template: "minimal".into(),
            vcpus: 1,
            memory_mb: 512,
            disk_mb: 0,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            internet: InternetAccess::Allowed,
            timeout_sec: 0,
            cold_boot: false,
        }
    }

    #[test]
    fn an_id_is_generated_when_none_is_given() {
        let valid = request().validate(limits()).unwrap();
        assert!(valid.id.as_str().starts_with("sb-"));
    }

    #[test]
    fn bad_requests_are_invalid_arguments_naming_the_field() {
        let cases: Vec<(CreateSandbox, &str)> = vec![
            (
                CreateSandbox {
                    template: "../etc".into(),
                    ..request()
                },
                "template name",
            ),
            (
                CreateSandbox {
                    template: "a/b".into(),
                    ..request()
                },
                "template name",
            ),
            (
                CreateSandbox {
                    memory_mb: 9000,
                    ..request()
                },
                "memory_mb",
            ),
            (
                CreateSandbox {
                    memory_mb: 1,
                    ..request()
                },
                "memory_mb",
            ),
            (
                CreateSandbox {
                    memory_mb: 0,
                    ..request()
                },
                "memory_mb",
            ),
            (
                CreateSandbox {
                    vcpus: 0,
                    ..request()
                },
                "vcpus",
            ),
            (
                CreateSandbox {
                    vcpus: 5,
                    ..request()
                },
                "vcpus",
            ),
            (
                CreateSandbox {
                    disk_mb: u32::MAX,
                    ..request()
                },
                "disk_mb",
            ),
            (
                CreateSandbox {
                    id: Some("sb-../x".into()),
                    ..request()
                },
                "sandbox id",
            ),
            (
                CreateSandbox {
                    env: [("A=B".to_string(), "x".to_string())].into(),
                    ..request()
                },
                "env key",
            ),
            (
                CreateSandbox {
                    metadata: [("k".to_string(), "v".repeat(9000))].into(),
                    ..request()
                },
                "metadata",
            ),
        ];
        for (req, needle) in cases {
            match req.validate(limits()) {
                Err(ApiError::InvalidArgument(msg)) => {
                    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}")
                }
                other => panic!("expected InvalidArgument for {needle}, got {other:?}"),
            }
        }
    }
}
