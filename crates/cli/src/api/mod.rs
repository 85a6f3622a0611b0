//! Talking to the control plane: where it is and with which key (`config`), its REST routes
//! (`client`) and the process stream protocol over WebSocket (`ws`).

pub mod client;
pub mod config;
pub mod ws;

pub use client::{ApiClient, ApiError, Credential, SandboxFilter};
pub use config::{ApiSources, ApiTarget, ConfigFile, StoredLogin};
pub use ws::ProcessStream;
