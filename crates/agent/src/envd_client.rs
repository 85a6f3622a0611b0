//! The agent's connection to one guest's envd: gRPC over the slot's veth, authenticated with
//! the sandbox's access token.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use wrenn_envd_api::v1::envd_client::EnvdClient as EnvdRpc;
use wrenn_envd_api::v1::filesystem_client::FilesystemClient;
use wrenn_envd_api::v1::process_client::ProcessClient;
use wrenn_envd_api::v1::{HealthRequest, InitRequest};

/// Largest message either side accepts (file chunks are far smaller; exec output may not be).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(wrenn_envd_api::AUTHORIZATION_HEADER, self.0.clone());
        Ok(request)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

type Authed = InterceptedService<Channel, BearerToken>;

/// Cloneable handle to one envd.
#[derive(Clone, Debug)]
pub struct EnvdClient {
    channel: Channel,
    token: BearerToken,
}

/// Readiness failures.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("envd at {addr} did not answer within {timeout:?} (last error: {last_error})")]
    Timeout {
        addr: SocketAddr,
        timeout: Duration,
        last_error: String,
    },
    #[error("envd at {addr} refused initialization: {status}")]
    Init { addr: SocketAddr, status: Status },
}

impl EnvdClient {
    /// Polls until envd answers Health, then hands it the token and the host's clock.
    pub async fn connect_and_init(
        addr: SocketAddr,
        mut init: InitRequest,
        timeout: Duration,
    ) -> Result<Self, ReadyError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .expect("socket addresses form valid URIs")
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let mut last_error = String::from("no attempt yet");
        let channel = loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(ReadyError::Timeout {
                    addr,
                    timeout,
                    last_error,
                });
            }
            match endpoint.connect().await {
                Ok(channel) => {
                    let mut health = EnvdRpc::new(channel.clone());
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        health.health(HealthRequest {}),
                    )
                    .await
                    {
                        Ok(Ok(_)) => break channel,
                        Ok(Err(status)) => last_error = status.to_string(),
                        Err(_) => last_error = "health check timed out".into(),
                    }
                }
                Err(e) => last_error = crate::error::error_chain(&e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let token = MetadataValue::try_from(format!("Bearer {}", init.access_token))
            .expect("tokens are hex and therefore valid metadata");
        let client = Self {
            channel,
            token: BearerToken(token),
        };
        init.unix_time_nanos = unix_time_nanos();
        client
            .envd()
            .init(init)
            .await
            .map_err(|status| ReadyError::Init { addr, status })?;
        Ok(client)
    }

    pub fn envd(&self) -> EnvdRpc<Authed> {
        EnvdRpc::with_interceptor(self.channel.clone(), self.token.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn process(&self) -> ProcessClient<Authed> {
        ProcessClient::with_interceptor(self.channel.clone(), self.token.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn files(&self) -> FilesystemClient<Authed> {
        FilesystemClient::with_interceptor(self.channel.clone(), self.token.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn unix_time_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}
