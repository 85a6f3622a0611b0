//! The Envd service: Health, Init and Shutdown.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wrenn_envd_api::v1::envd_server::Envd;
use wrenn_envd_api::v1::{
    HealthRequest, HealthResponse, InitRequest, InitResponse, ShutdownRequest, ShutdownResponse,
};

use crate::state::State;
use crate::system::{self, SystemError};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug)]
pub struct EnvdService {
    state: Arc<State>,
}

impl EnvdService {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

impl From<SystemError> for Status {
    fn from(error: SystemError) -> Self {
        let message = crate::report::error_chain(&error);
        match &error {
            SystemError::EntropyTooLarge { .. } => Status::invalid_argument(message),
            SystemError::SetClock(errno) | SystemError::SetHostname { source: errno, .. }
                if *errno == nix::errno::Errno::EPERM =>
            {
                Status::permission_denied(message)
            }
            _ => super::internal_message(message),
        }
    }
}

#[tonic::async_trait]
impl Envd for EnvdService {
    async fn health(
        &self,
        _request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(HealthResponse {
            version: VERSION.to_owned(),
            initialized: self.state.auth.is_initialized(),
            uptime_seconds: self.state.started.elapsed().as_secs_f64(),
        }))
    }

    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        self.state.auth.check_init(request.metadata())?;
        let request = request.into_inner();
        if request.access_token.is_empty() {
            return Err(Status::invalid_argument("access_token must not be empty"));
        }
        if request.unix_time_nanos != 0 {
            system::set_wall_clock(request.unix_time_nanos)?;
        }
        if !request.entropy.is_empty() {
            system::add_entropy(&request.entropy)?;
        }
        if !request.hostname.is_empty() {
            system::set_hostname(&request.hostname)?;
        }
        let env_vars = request.env.len();
        self.state.processes.set_sandbox_env(request.env);
        let rotated = self.state.auth.is_initialized();
        self.state.auth.set_token(request.access_token);
        tracing::debug!(rotated, env_vars, "initialized");
        Ok(Response::new(InitResponse {
            version: VERSION.to_owned(),
        }))
    }

    async fn shutdown(
        &self,
        request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        self.state.auth.check(request.metadata())?;
        tracing::info!("shutdown requested");
        self.state.power.shutdown_after_response().await;
        Ok(Response::new(ShutdownResponse {}))
    }
}
