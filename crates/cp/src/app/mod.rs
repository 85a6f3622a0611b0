//! The control plane's logic, one file per resource. Handlers in `http/` call these; these
//! call `db/` and the host agents. Every mutating operation writes an audit entry.

pub mod api_key;
pub mod audit;
pub mod auth;
pub mod caller;
pub mod exec;
pub mod files;
pub mod hosts;
pub mod metrics;
pub mod oauth;
pub mod process;
pub mod reconcile;
pub mod sandbox;
pub mod team;
pub mod template;
pub mod user;
