//! The step of a sandbox's start that makes its shape's boot snapshot.

use std::collections::BTreeMap;

use rand::RngCore;

use super::{enforce_limit, mark_used, BuildClaim};
use crate::envd_client::EnvdClient;
use crate::error::{error_chain, ApiError};
use crate::sandbox::actor::{new_token, SandboxActor};
use crate::sandbox::snapshot::FrozenGuest;
use crate::sandbox::SandboxState;

impl SandboxActor {
    /// Freezes this freshly booted sandbox as its shape's boot snapshot, then hands the guest
    /// the request's environment and a token the snapshot does not hold. Failing to make the
    /// snapshot is logged, not fatal: the sandbox is fine and the next one of its shape tries
    /// again. An error means the sandbox itself was lost.
    pub(crate) async fn make_boot_snapshot(
        &mut self,
        claim: &BuildClaim,
        env: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let guest = FrozenGuest {
            envd_token: self.init.access_token.clone(),
            env: BTreeMap::new(),
            inputs_key: claim.key.clone(),
        };
        let started = std::time::Instant::now();
        let made = self.snapshot_as(&claim.template, guest).await;
        if self.info.borrow().state != SandboxState::Running {
            return Err(made.err().unwrap_or_else(|| {
                ApiError::Internal("the sandbox stopped while its boot snapshot was made".into())
            }));
        }
        match made {
            Ok(manifest) => {
                tracing::info!(
                    template = claim.template,
                    snapshot_ms = started.elapsed().as_millis() as u64,
                    "boot snapshot made"
                );
                // The sandbox now stands on the snapshot's frozen disk, like its clones.
                let store = crate::images::ImageStore::new(&self.ctx.config.images_dir);
                let frozen_disk = store.template_dir(&claim.template).join(&manifest.rootfs);
                let id = self.info.borrow().id.to_string();
                if let Err(e) = crate::pins::pin(&frozen_disk, &self.ctx.config.instance, &id) {
                    tracing::warn!(error = %e, "pin the boot snapshot's disk");
                }
                mark_used(&store.template_dir(&claim.template));
                let limit = self.ctx.config.boot_snapshot_limit;
                for name in enforce_limit(&store, limit, &claim.template) {
                    tracing::info!(
                        template = name,
                        limit,
                        "least recently used boot snapshot deleted"
                    );
                }
            }
            // Another agent sharing the image directory may have made it first.
            Err(e) => {
                tracing::warn!(template = claim.template, error = %e, "boot snapshot not made")
            }
        }
        let frozen_token = std::mem::replace(&mut self.init.access_token, new_token());
        self.init.env = env.clone().into_iter().collect();
        self.init_again(&frozen_token).await
    }

    /// Sends envd the actor's current `init` (a new token, the environment) while it still
    /// holds `current_token`.
    async fn init_again(&mut self, current_token: &str) -> Result<(), ApiError> {
        let slot = self.slot.as_ref().expect("a running sandbox has a slot");
        let addr = std::net::SocketAddr::from((slot.addrs.ns_ip, wrenn_envd_api::ENVD_PORT));
        let mut init = self.init.clone();
        init.entropy = vec![0u8; 64];
        rand::thread_rng().fill_bytes(&mut init.entropy);
        let timeout = self.ctx.config.ready_timeout;
        match EnvdClient::connect_and_init(addr, init, Some(current_token), timeout).await {
            Ok(envd) => {
                *self.envd.write().unwrap() = Some(envd);
                Ok(())
            }
            // The caller tears the sandbox down, as for any failed boot.
            Err(e) => Err(ApiError::Unavailable(format!(
                "envd did not take the sandbox's environment: {}",
                error_chain(&e)
            ))),
        }
    }
}
