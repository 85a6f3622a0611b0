//! The gRPC server: the three services, the auth interceptor, and the listener.
//!
//! Connections are served by hyper's HTTP/2 server directly, and calls go to a service by
//! the first segment of their path. tonic's `Server` would route through axum and wrap every
//! connection in a stack of layers envd does not use; under TCG all of that is code the first
//! call after a boot runs for the first time and must be translated (~700 fewer translated
//! blocks before the first `Init` is answered).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use wrenn_envd_api::v1::envd_server::EnvdServer;
use wrenn_envd_api::v1::filesystem_server::FilesystemServer;
use wrenn_envd_api::v1::process_server::ProcessServer;

use crate::auth::AuthInterceptor;
use crate::service::{EnvdService, FilesystemService, ProcessService};
use crate::state::State;

/// Largest message accepted: file chunks and stdin data can be big.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Pause after a failed accept, so that e.g. EMFILE does not spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Large HTTP/2 windows: with the default 64 KiB, file transfers stall on flow control long
/// before the link or the disk is the limit.
const HTTP2_STREAM_WINDOW: u32 = 4 << 20;
const HTTP2_CONNECTION_WINDOW: u32 = 8 << 20;

type Authed<S> = InterceptedService<S, AuthInterceptor>;

/// The three services; a clone serves one call.
#[derive(Clone)]
struct Services {
    envd: EnvdServer<EnvdService>,
    process: Authed<ProcessServer<ProcessService>>,
    files: Authed<FilesystemServer<FilesystemService>>,
}

type Request = http::Request<Incoming>;
type Response = http::Response<Body>;
type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Services {
    fn new(state: Arc<State>) -> Self {
        let interceptor = AuthInterceptor::new(Arc::clone(&state.auth));
        let process = ProcessServer::new(ProcessService::new(Arc::clone(&state)))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let files = FilesystemServer::new(FilesystemService)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Self {
            envd: EnvdServer::new(EnvdService::new(state)),
            process: InterceptedService::new(process, interceptor.clone()),
            files: InterceptedService::new(files, interceptor),
        }
    }

    /// The call's service: the path is `/<package>.<Service>/<Method>`.
    fn route(&self, request: Request) -> ResponseFuture {
        let service = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .map_or("", |(service, _)| service);
        match service {
            EnvdServer::<EnvdService>::NAME => call(self.envd.clone(), request),
            ProcessServer::<ProcessService>::NAME => call(self.process.clone(), request),
            FilesystemServer::<FilesystemService>::NAME => call(self.files.clone(), request),
            _ => {
                let status = tonic::Status::unimplemented(format!(
                    "envd has no service for {}",
                    request.uri().path()
                ));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Hands `request` to `service`; its response body becomes tonic's body type (an
/// interceptor wraps the body of the service it guards).
fn call<S, B>(mut service: S, request: Request) -> ResponseFuture
where
    S: Service<Request, Response = http::Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send,
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    Box::pin(async move {
        std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
        Ok(service.call(request).await?.map(Body::new))
    })
}

impl hyper::service::Service<Request> for Services {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request) -> Self::Future {
        self.route(request)
    }
}

/// Serves all services on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let services = Services::new(state);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Interactive PTY traffic is many tiny writes.
        let _ = stream.set_nodelay(true);
        let connection = http2.serve_connection(TokioIo::new(stream), services.clone());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
}
