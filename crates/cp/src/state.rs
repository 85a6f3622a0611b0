//! Shared state handed to every request handler and background job.

use std::ops::Deref;
use std::sync::Arc;

use sqlx::PgPool;

use crate::app::auth::SessionKeys;
use crate::app::hosts::{Hosts, SharedScheduler};
use crate::config::CpConfig;

#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub pool: PgPool,
    pub config: CpConfig,
    pub sessions: SessionKeys,
    pub hosts: Hosts,
    pub scheduler: SharedScheduler,
    /// Outbound HTTP (OAuth providers).
    pub http: reqwest::Client,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
