//! Starting the control plane: database, host registry, HTTP server and background jobs.
//! `main.rs` and the tests both go through [`ControlPlane::start`].

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::auth::SessionKeys;
use crate::app::hosts::{FirstHost, Host, Hosts};
use crate::app::{reconcile, template};
use crate::config::CpConfig;
use crate::db;
use crate::ids::{self, IdKind};
use crate::state::{AppState, Inner};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("open the database")]
    Database(#[from] db::DbError),
    #[error("prepare the database")]
    Setup(#[source] sqlx::Error),
    #[error("invalid host agent address {address:?}")]
    AgentAddress {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    pub async fn start(config: CpConfig) -> Result<Self, StartError> {
        let pool = db::connect(&config.database_url, config.database_max_connections).await?;
        let sessions = SessionKeys::load(&pool, config.session_ttl)
            .await
            .map_err(StartError::Setup)?;
        let host_row = db::hosts::host_upsert(
            &pool,
            &ids::generate(IdKind::Host),
            &config.agent.name,
            &config.agent.address,
        )
        .await
        .map_err(StartError::Setup)?;
        let host = Host::connect(
            host_row.id.clone(),
            host_row.name.clone(),
            &config.agent.address,
        )
        .map_err(|source| StartError::AgentAddress {
            address: config.agent.address.clone(),
            source,
        })?;
        let mut hosts = Hosts::default();
        hosts.insert(host);
        for name in template::PLATFORM_TEMPLATES {
            db::templates::template_ensure_platform(&pool, &ids::generate(IdKind::Template), name)
                .await
                .map_err(StartError::Setup)?;
        }

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let state = AppState::new(Inner {
            pool,
            config,
            sessions,
            hosts,
            scheduler: std::sync::Arc::new(FirstHost),
            http: reqwest::Client::new(),
        });
        let app = crate::http::router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        let background = vec![tokio::spawn(reconcile::run(state.clone()))];
        tracing::info!(%addr, "control plane listening");
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            server,
            background,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting requests, lets in-flight ones finish, stops background jobs.
    pub async fn shutdown(mut self) {
        for task in &self.background {
            task.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "HTTP server stopped with an error"),
            Err(error) => tracing::warn!(error = %error, "HTTP server task"),
        }
        self.state.pool.close().await;
    }

    /// Runs until `signal` completes, then shuts down.
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
        self.server.abort();
    }
}
