//! The gRPC server: the three services, the auth interceptor, and the listener.

use std::sync::Arc;

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

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("serve gRPC")]
    Serve(#[source] tonic::transport::Error),
}

/// Serves all services on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<State>) -> Result<(), ServerError> {
    let interceptor = AuthInterceptor::new(Arc::clone(&state.auth));
    let process = ProcessServer::new(ProcessService::new(Arc::clone(&state)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let filesystem = FilesystemServer::new(FilesystemService)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        stream.inspect(|stream| {
            // Interactive PTY traffic is many tiny writes.
            let _ = stream.set_nodelay(true);
        })
    });
    Server::builder()
        .add_service(EnvdServer::new(EnvdService::new(state)))
        .add_service(InterceptedService::new(process, interceptor.clone()))
        .add_service(InterceptedService::new(filesystem, interceptor))
        .serve_with_incoming(incoming)
        .await
        .map_err(ServerError::Serve)
}
