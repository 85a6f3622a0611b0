//! envd, the Wrenn guest agent: runs as PID 1 inside each sandbox VM and serves the
//! process and filesystem gRPC services defined in `wrenn-envd-api`.
//!
//! [`run`] is the whole program; `main.rs` only parses arguments and sets up logging, so
//! tests can also embed the server through [`server::serve`].

pub mod auth;
pub mod cli;
pub mod files;
pub mod init;
pub mod process;
pub mod reaper;
pub mod report;
pub mod server;
pub mod service;
pub mod state;
pub mod system;
pub mod users;

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::cli::Cli;
use crate::init::{Power, RunMode};
use crate::process::Processes;
use crate::reaper::{Reaper, ReaperError};
use crate::state::State;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Reaper(#[from] ReaperError),
    #[error("listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("announce listening address")]
    Announce(#[source] std::io::Error),
    #[error("install SIGTERM handler")]
    Signal(#[source] std::io::Error),
}

/// Prepares the guest (as PID 1), binds the listener, prints its address, and serves.
pub async fn run(cli: Cli, mode: RunMode) -> Result<(), RunError> {
    let started = Instant::now();
    init::prepare(mode);
    let reaper = Reaper::start()?;
    let processes = Arc::new(Processes::new(Arc::clone(&reaper)));
    let power = Arc::new(Power::new(mode, reaper, Arc::clone(&processes)));
    power.on_sigterm().map_err(RunError::Signal)?;

    let listener = TcpListener::bind(cli.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: cli.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(RunError::Announce)?;
    announce(addr).map_err(RunError::Announce)?;
    // The announcement above is the line a console log needs; formatting a tracing event
    // is first-time code at boot, measurable under TCG.
    tracing::debug!(
        %addr,
        ?mode,
        version = env!("CARGO_PKG_VERSION"),
        ready_ms = started.elapsed().as_millis() as u64,
        "envd listening"
    );
    init::grow_root_filesystem(mode);

    let state = Arc::new(State {
        auth: Arc::new(Auth::default()),
        processes,
        power,
        started,
    });
    server::serve(listener, state).await;
    Ok(())
}

/// The one line on stdout that tells whoever started envd where it listens.
fn announce(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "envd listening on {addr}")?;
    stdout.flush()
}
