//! The agent's connection to one guest's envd: gRPC over the slot's veth, authenticated with
//! the sandbox's access token.

use std::net::SocketAddr;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::net::TcpStream;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use wrenn_envd_api::v1::envd_client::EnvdClient as EnvdRpc;
use wrenn_envd_api::v1::filesystem_client::FilesystemClient;
use wrenn_envd_api::v1::process_client::ProcessClient;
use wrenn_envd_api::v1::InitRequest;

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
    /// Waits until envd accepts a connection, then hands it the token, the host's clock and
    /// fresh entropy over that connection; the answer to `Init` is the readiness proof.
    pub async fn connect_and_init(
        addr: SocketAddr,
        mut init: InitRequest,
        current_token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ReadyError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let started = std::time::Instant::now();
        // The token envd holds now authorizes this Init: none after a boot, the snapshot's after
        // a clone (the Init then rotates it), the sandbox's own after a resume.
        let current = bearer(current_token.unwrap_or(&init.access_token));
        let new = bearer(&init.access_token);
        let mut last_error = String::from("no connection attempt finished");
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let timed_out = |last_error: String| ReadyError::Timeout {
                addr,
                timeout,
                last_error,
            };
            if remaining.is_zero() {
                return Err(timed_out(last_error));
            }
            let (stream, attempts) = first_connection(addr, remaining)
                .await
                .map_err(|error| timed_out(format!("{last_error}; then {error}")))?;
            let connected_ms = started.elapsed().as_millis() as u64;
            let channel = match channel_over(addr, stream).await {
                Ok(channel) => channel,
                Err(error) => {
                    last_error = error;
                    continue;
                }
            };
            init.unix_time_nanos = unix_time_nanos();
            let answer = tokio::time::timeout(
                remaining.min(INIT_TIMEOUT),
                EnvdRpc::with_interceptor(channel.clone(), current.clone()).init(init.clone()),
            )
            .await;
            match answer {
                Ok(Ok(_)) => {
                    tracing::debug!(
                        connected_ms,
                        ready_ms = started.elapsed().as_millis() as u64,
                        attempts,
                        "envd initialized"
                    );
                    return Ok(Self {
                        channel,
                        token: new,
                    });
                }
                // The connection broke (envd restarting, a reset): wait for another one.
                Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                    last_error = status.to_string();
                }
                Ok(Err(status)) => return Err(ReadyError::Init { addr, status }),
                Err(_) => last_error = format!("Init did not answer within {INIT_TIMEOUT:?}"),
            }
        }
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

/// Longest wait for envd's answer to `Init` on an established connection.
const INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a TCP connection attempt every few milliseconds while earlier ones are pending and
/// keeps the first that connects; dropping the others closes them. A single attempt at a time
/// would be slow: a SYN sent before the guest's network is up waits for ARP retries or its own
/// timeout, while a fresh attempt started just after envd listens succeeds at once. Only one
/// connection goes on to HTTP/2: every extra handshake costs a guest that just woke up (and,
/// under TCG, translates its network stack afresh) real time.
async fn first_connection(addr: SocketAddr, within: Duration) -> Result<(TcpStream, u32), String> {
    const ATTEMPT_EVERY: Duration = Duration::from_millis(10);
    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
    const MAX_PENDING: usize = 128;
    let deadline = tokio::time::Instant::now() + within;
    let mut attempts = FuturesUnordered::new();
    let mut ticker = tokio::time::interval(ATTEMPT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::from("no connection attempt finished");
    let mut started_attempts = 0u32;
    loop {
        tokio::select! {
            _ = ticker.tick(), if attempts.len() < MAX_PENDING => {
                started_attempts += 1;
                attempts.push(tokio::time::timeout(ATTEMPT_TIMEOUT, TcpStream::connect(addr)));
            }
            Some(result) = attempts.next() => match result {
                Ok(Ok(stream)) => return Ok((stream, started_attempts)),
                Ok(Err(error)) => last_error = error.to_string(),
                Err(_) => last_error = format!("connect timed out after {ATTEMPT_TIMEOUT:?}"),
            },
            () = tokio::time::sleep_until(deadline) => return Err(last_error),
        }
    }
}

/// An HTTP/2 channel whose first connection is `stream`; should it ever drop, the channel
/// reconnects by dialing `addr` afresh.
async fn channel_over(addr: SocketAddr, stream: TcpStream) -> Result<Channel, String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let first = std::sync::Arc::new(std::sync::Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let first = first.lock().unwrap().take();
        async move {
            let stream = match first {
                Some(stream) => stream,
                None => {
                    let stream = TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    stream
                }
            };
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("socket addresses form valid URIs")
        .connect_timeout(Duration::from_secs(1))
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await
        .map_err(|e| crate::error::error_chain(&e))
}

fn unix_time_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}
