//! The gRPC server: the three services, the auth interceptor, and the listener.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use wrenn_envd_api::v1::envd_server::EnvdServer;
use wrenn_envd_api::v1::filesystem_server::FilesystemServer;
use wrenn_envd_api::v1::process_server::ProcessServer;

use crate::auth::AuthInterceptor;
use crate::service::{EnvdService, FilesystemService, ProcessService};
use crate::state::State;

/// Largest message accepted: file chunks and stdin data can be big.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("serve gRPC")]
    Serve(#[source] tonic::transport::Error),
}

/// Serves all services on `listener` until the process ends.
const HTTP2_STREAM_WINDOW: u32 = 4 << 20;
const HTTP2_CONNECTION_WINDOW: u32 = 8 << 20;

pub async fn serve(listener: TcpListener, state: Arc<State>) -> Result<(), ServerError> {
    let interceptor = AuthInterceptor::new(Arc::clone(&state.auth));
    let process = ProcessServer::new(ProcessService::new(Arc::clone(&state)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let filesystem = FilesystemServer::new(FilesystemService)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = TcpListenerStream::new(listener).then(|accepted| async move {
        match &accepted {
            // Interactive PTY traffic is many tiny writes.
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
            }
            // tonic skips failed accepts; pausing keeps e.g. EMFILE from spinning the loop.
            Err(error) => {
                tracing::warn!(%error, "accept connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
        accepted
    });
    Server::builder()
        // Large HTTP/2 windows: with the default 64 KiB, file transfers stall on flow control
        // long before the link or the disk is the limit.
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .tcp_nodelay(true)
        .trace_fn(|request| tracing::info_span!("rpc", method = %request.uri().path()))
        .add_service(EnvdServer::new(EnvdService::new(state)))
        .add_service(InterceptedService::new(process, interceptor.clone()))
        .add_service(InterceptedService::new(filesystem, interceptor))
        .serve_with_incoming(incoming)
        .await
        .map_err(ServerError::Serve)
}
