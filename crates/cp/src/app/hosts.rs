//! Hosts and scheduling: the registry of host agents this control plane talks to, and the
//! [`Scheduler`] that picks one for a new sandbox. One configured host today; the registry and
//! the trait are shaped for many.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use wrenn_agent_api::v1::host_agent_client::HostAgentClient;

use crate::error::{ApiError, ApiResult};

pub type AgentClient = HostAgentClient<Channel>;

/// Largest gRPC message from an agent: exec output is capped at 16 MiB per stream there.
const MAX_AGENT_MESSAGE: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub client: AgentClient,
}

impl Host {
    pub fn connect(
        id: String,
        name: String,
        address: &str,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(address.to_owned())?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let client = HostAgentClient::new(channel)
            .max_decoding_message_size(MAX_AGENT_MESSAGE)
            .max_encoding_message_size(MAX_AGENT_MESSAGE);
        Ok(Self { id, name, client })
    }
}

/// Every host this control plane can reach, by id.
#[derive(Debug, Default)]
pub struct Hosts {
    by_id: HashMap<String, Host>,
}

impl Hosts {
    pub fn insert(&mut self, host: Host) {
        self.by_id.insert(host.id.clone(), host);
    }

    pub fn get(&self, id: &str) -> ApiResult<&Host> {
        self.by_id.get(id).ok_or_else(|| {
            ApiError::Unavailable(format!("host {id} is not connected to this control plane"))
        })
    }

    pub fn all(&self) -> impl Iterator<Item = &Host> {
        self.by_id.values()
    }
}

/// What a new sandbox needs from a host.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub vcpus: u32,
    pub memory_mb: u32,
    /// Snapshot templates live on one host; their sandboxes must start there.
    pub pinned_host: Option<&'a str>,
}

/// Chooses the host for a new sandbox.
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    fn place(&self, hosts: &Hosts, placement: Placement<'_>) -> ApiResult<Host>;
}

/// Places on the pinned host if any, else on the first host. Capacity is checked by the
/// host itself, which refuses with a clear "insufficient capacity" error.
#[derive(Debug, Default)]
pub struct FirstHost;

impl Scheduler for FirstHost {
    fn place(&self, hosts: &Hosts, placement: Placement<'_>) -> ApiResult<Host> {
        if let Some(id) = placement.pinned_host {
            return hosts.get(id).cloned();
        }
        let mut all: Vec<&Host> = hosts.all().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.first()
            .map(|host| (*host).clone())
            .ok_or_else(|| ApiError::Unavailable("no host is available to run sandboxes".into()))
    }
}

pub type SharedScheduler = Arc<dyn Scheduler>;
