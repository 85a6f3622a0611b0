//! State shared by the gRPC services.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Auth;
use crate::init::Power;
use crate::process::Processes;

#[derive(Debug)]
pub struct State {
    pub auth: Arc<Auth>,
    pub processes: Arc<Processes>,
    pub power: Arc<Power>,
    /// When envd started, for Health's uptime.
    pub started: Instant,
}
