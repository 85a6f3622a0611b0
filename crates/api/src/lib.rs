//! Wrenn's public REST API types. The control plane serves them (and derives its OpenAPI
//! document from them); the CLI and SDKs send and read them. Requests reject unknown fields.

pub mod audit;
pub mod auth;
pub mod error;
pub mod file;
pub mod process;
pub mod sandbox;
pub mod team;
pub mod template;

pub use audit::*;
pub use auth::*;
pub use error::*;
pub use file::*;
pub use process::*;
pub use sandbox::*;
pub use team::*;
pub use template::*;

/// Header carrying an API key.
pub const API_KEY_HEADER: &str = "X-API-Key";
/// Every API key starts with this.
pub const API_KEY_PREFIX: &str = "wrn_";
