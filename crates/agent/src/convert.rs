//! Conversions between the agent's domain types and the control-plane wire types.

use wrenn_agent_api::v1 as pb;

use crate::images::TemplateManifest;
use crate::network::InternetAccess;
use crate::sandbox::{CreateSandbox, SandboxInfo, SandboxState, StartMethod};

pub fn sandbox_to_wire(info: &SandboxInfo) -> pb::Sandbox {
    pb::Sandbox {
        sandbox_id: info.id.to_string(),
        template: info.template.clone(),
        state: state_to_wire(info.state) as i32,
        vcpus: info.vcpus,
        memory_mb: info.memory_mb,
        disk_mb: info.disk_mb,
        metadata: info.metadata.clone().into_iter().collect(),
        internet: internet_to_wire(info.internet) as i32,
        created_at_ms: info.created_at_ms,
        error: info.error.clone().unwrap_or_default(),
        boot_ms: info.boot_ms,
        timeout_sec: info.timeout_sec,
        last_activity_ms: info.last_activity_ms,
        auto_paused: info.auto_paused,
        start: start_to_wire(info.start) as i32,
    }
}

fn start_to_wire(start: StartMethod) -> pb::StartMethod {
    match start {
        StartMethod::ColdBoot => pb::StartMethod::ColdBoot,
        StartMethod::BootSnapshot => pb::StartMethod::BootSnapshot,
        StartMethod::Template => pb::StartMethod::Template,
    }
}

fn state_to_wire(state: SandboxState) -> pb::SandboxState {
    match state {
        SandboxState::Starting => pb::SandboxState::Starting,
        SandboxState::Running => pb::SandboxState::Running,
        SandboxState::Pausing => pb::SandboxState::Pausing,
        SandboxState::Paused => pb::SandboxState::Paused,
        SandboxState::Resuming => pb::SandboxState::Resuming,
        SandboxState::Stopping => pb::SandboxState::Stopping,
        SandboxState::Stopped => pb::SandboxState::Stopped,
        SandboxState::Error => pb::SandboxState::Error,
    }
}

fn internet_to_wire(internet: InternetAccess) -> pb::InternetAccess {
    match internet {
        InternetAccess::Allowed => pb::InternetAccess::Allowed,
        InternetAccess::Blocked => pb::InternetAccess::Blocked,
    }
}

pub fn create_from_wire(request: pb::CreateSandboxRequest) -> CreateSandbox {
    let internet = match pb::InternetAccess::try_from(request.internet) {
        Ok(pb::InternetAccess::Blocked) => InternetAccess::Blocked,
        _ => InternetAccess::Allowed,
    };
    CreateSandbox {
        id: Some(request.sandbox_id),
        template: request.template,
        vcpus: request.vcpus,
        memory_mb: request.memory_mb,
        disk_mb: request.disk_mb,
        env: request.env.into_iter().collect(),
        metadata: request.metadata.into_iter().collect(),
        internet,
        timeout_sec: request.timeout_sec,
        cold_boot: request.cold_boot,
    }
}

pub fn template_to_wire(manifest: &TemplateManifest) -> pb::Template {
    let snapshot = manifest.snapshot.as_ref();
    pb::Template {
        name: manifest.name.clone(),
        rootfs_bytes: manifest.rootfs_bytes,
        kernel: manifest.kernel.clone(),
        snapshot: snapshot.is_some(),
        vcpus: snapshot.map_or(0, |s| s.vcpus),
        memory_mb: snapshot.map_or(0, |s| s.memory_mb),
        disk_mb: snapshot.map_or(0, |s| s.disk_mb),
        parent: snapshot.map(|s| s.parent.clone()).unwrap_or_default(),
        created_at_ms: manifest.created_at_ms,
    }
}

pub fn sample_to_wire(sample: &crate::sandbox::metrics::Sample) -> pb::MetricSample {
    pb::MetricSample {
        at_ms: sample.at_ms,
        cpu_percent: sample.cpu_percent,
        rss_bytes: sample.rss_bytes,
        pss_bytes: sample.pss_bytes,
        disk_bytes: sample.disk_bytes,
    }
}
