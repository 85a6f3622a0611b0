//! The error body every failed request returns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error":{"code":"...","message":"..."}}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_request`, `conflict`.
    pub code: String,
    /// What went wrong, in plain words.
    pub message: String,
}
