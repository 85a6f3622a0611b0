//! Wire types for the control plane <-> host agent boundary, generated from
//! `proto/wrenn/agent/v1/agent.proto`. Guest-side messages are re-used from `wrenn-envd-api`.

pub use wrenn_envd_api::v1 as envd;

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("wrenn.agent.v1");
}
