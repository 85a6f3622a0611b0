//! The agent's connection to one guest's envd: gRPC over the slot's veth, authenticated with
//! the sandbox's access token.

use std::net::SocketAddr;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use wrenn_envd_api::v1::envd_client::EnvdClient as EnvdRpc;
use wrenn_envd_api::v1::filesystem_client::FilesystemClient;
use wrenn_envd_api::v1::process_client::ProcessClient;
use wrenn_envd_api::v1::{HealthRequest, InitRequest};

/// HTTP/2 flow-control windows on agent connections; the 64 KiB default throttles transfers.
pub const HTTP2_STREAM_WINDOW: u32 = 4 << 20;
pub const HTTP2_CONNECTION_WINDOW: u32 = 8 << 20;

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

fn bearer(token: &str) -> BearerToken {
    BearerToken(
        MetadataValue::try_from(format!("Bearer {token}"))
            .expect("tokens are hex and therefore valid metadata"),
    )
}

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
        current_token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ReadyError> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .expect("socket addresses form valid URIs")
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channel = first_healthy_channel(&endpoint, timeout)
            .await
            .map_err(|last_error| ReadyError::Timeout {
                addr,
                timeout,
                last_error,
            })?;
        // The token envd holds now authorizes this Init: none after a boot, the snapshot's after
        // a clone (the Init then rotates it), the sandbox's own after a resume.
        let current = bearer(current_token.unwrap_or(&init.access_token));
        let new = bearer(&init.access_token);
        init.unix_time_nanos = unix_time_nanos();
        EnvdRpc::with_interceptor(channel.clone(), current)
            .init(init)
            .await
            .map_err(|status| ReadyError::Init { addr, status })?;
        Ok(Self {
            channel,
            token: new,
        })
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

/// Starts a connection attempt every few milliseconds while earlier ones are still pending and
/// takes the first that answers Health. A single attempt at a time would be slow: a SYN sent
/// before the guest's network is up waits for ARP retries or its own timeout, while a fresh
/// attempt started just after envd listens succeeds at once.
async fn first_healthy_channel(endpoint: &Endpoint, timeout: Duration) -> Result<Channel, String> {
    const ATTEMPT_EVERY: Duration = Duration::from_millis(20);
    const MAX_PENDING: usize = 64;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempts = FuturesUnordered::new();
    let mut ticker = tokio::time::interval(ATTEMPT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::from("no attempt finished");
    let mut started_attempts = 0u32;
    loop {
        tokio::select! {
            _ = ticker.tick(), if attempts.len() < MAX_PENDING => {
                started_attempts += 1;
                attempts.push(healthy_channel(endpoint.clone()));
            }
            Some(result) = attempts.next() => match result {
                Ok(channel) => {
                    tracing::debug!(
                        waited_ms = (timeout.as_millis() as u64).saturating_sub(deadline.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64),
                        attempts = started_attempts,
                        "envd answered"
                    );
                    return Ok(channel);
                }
                Err(error) => last_error = error,
            },
            () = tokio::time::sleep_until(deadline) => return Err(last_error),
        }
    }
}

async fn healthy_channel(endpoint: Endpoint) -> Result<Channel, String> {
    let started = std::time::Instant::now();
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| crate::error::error_chain(&e))?;
    let connected_ms = started.elapsed().as_millis() as u64;
    let mut health = EnvdRpc::new(channel.clone());
    match tokio::time::timeout(Duration::from_secs(2), health.health(HealthRequest {})).await {
        Ok(Ok(_)) => {
            tracing::debug!(
                connected_ms,
                healthy_ms = started.elapsed().as_millis() as u64,
                "envd connection"
            );
            Ok(channel)
        }
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("health check timed out".into()),
    }
}

fn unix_time_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}
