//! Boot snapshots made at agent start for named shapes, so that even the first sandbox of
//! each starts from one.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::sandbox::{CreateSandbox, SandboxManager, StartMethod};

/// plane's default size). The disk is the template's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedShape {
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
}

impl std::str::FromStr for PreparedShape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!("invalid shape {s:?}: use <template>:<vcpus>x<memory_mb>, e.g. minimal:1x256")
        };
        let (template, size) = s.split_once(':').ok_or_else(invalid)?;
        let (vcpus, memory_mb) = size.split_once('x').ok_or_else(invalid)?;
        crate::images::validate_template_name(template).map_err(|e| e.to_string())?;
        Ok(Self {
            template: template.to_owned(),
            vcpus: vcpus.parse().map_err(|_| invalid())?,
            memory_mb: memory_mb.parse().map_err(|_| invalid())?,
        })
    }
}

/// Makes sure each shape has its boot snapshot, one after another, in the background: a
/// sandbox of the shape is created (making the snapshot if there is none) and destroyed. It
/// carries the metadata `wrenn.purpose=boot-snapshot`; a control plane ignores it.
pub async fn prepare(manager: Arc<SandboxManager>, shapes: Vec<PreparedShape>) {
    for shape in shapes {
        let started = std::time::Instant::now();
        let request = CreateSandbox {
            id: None,
            template: shape.template.clone(),
            vcpus: shape.vcpus,
            memory_mb: shape.memory_mb,
            disk_mb: 0,
            env: BTreeMap::new(),
            metadata: [("wrenn.purpose".to_owned(), "boot-snapshot".to_owned())].into(),
            internet: crate::network::InternetAccess::Blocked,
            timeout_sec: 0,
            cold_boot: false,
        };
        match manager.create(request).await {
            Ok(info) => {
                let _ = manager.destroy(info.id.as_str()).await;
                tracing::info!(
                    template = shape.template,
                    vcpus = shape.vcpus,
                    memory_mb = shape.memory_mb,
                    made = info.start == StartMethod::ColdBoot,
                    ms = started.elapsed().as_millis() as u64,
                    "boot snapshot ready"
                );
            }
            Err(e) => tracing::warn!(
                template = shape.template,
                error = %e,
                "boot snapshot not prepared; the first sandbox of this shape will make it"
            ),
        }
    }
}

/// Shapes whose boot snapshot a sandbox of this agent is making right now: one at a time per
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_shapes_parse() {
        assert_eq!(
            "minimal:2x512".parse(),
            Ok(PreparedShape {
                template: "minimal".into(),
                vcpus: 2,
                memory_mb: 512
            })
        );
        for bad in [
            "minimal",
            "minimal:2",
            "minimal:ax512",
            "../x:1x256",
            ":1x256",
        ] {
            assert!(bad.parse::<PreparedShape>().is_err(), "{bad}");
        }
    }
}
