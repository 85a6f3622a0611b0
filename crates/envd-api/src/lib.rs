//! Wire types for the host agent <-> guest agent (envd) boundary, generated from
//! `proto/wrenn/envd/v1/envd.proto`.

/// TCP port envd listens on inside every guest.
pub const ENVD_PORT: u16 = 49983;

/// Metadata key carrying `Bearer <token>` on every authenticated call.
pub const AUTHORIZATION_HEADER: &str = "authorization";

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("wrenn.envd.v1");
}
