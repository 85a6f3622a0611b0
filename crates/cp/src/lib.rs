//! The Wrenn control plane library: REST API, accounts and teams, scheduling over host
//! agents. `main.rs` is a thin shell over [`server`], so tests start the real thing in-process.
//!
//! Layers: `http/` parses and authenticates, `app/` holds the logic, `db/` holds the SQL.

pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod ids;
pub mod server;
pub mod state;
