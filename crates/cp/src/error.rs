//! The control plane's one public error type. Each kind maps to one HTTP status and a stable
//! `code`; the message is safe to show the caller. Internal detail is logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wrenn_api::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, bad path or query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid: unknown fields, out-of-range values.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// The host (or the database) cannot serve this now; try again.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the detail goes to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid(_) => "invalid_request",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// What the caller sees: internal errors say nothing about the inside.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; the server log has the details".into(),
            other => other.to_string(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.public_message(),
            },
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::NotFound(format!("{what} {id} not found"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid(message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        (self.status(), axum::Json(self.body())).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::warn!(error = %error, "database unavailable");
                ApiError::Unavailable("the database is unavailable; try again".into())
            }
            _ => ApiError::Internal(format!("database: {error}")),
        }
    }
}

/// Agent errors keep their message (the agent writes it for callers) and map by gRPC code.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_owned();
        match status.code() {
            Code::NotFound => ApiError::NotFound(message),
            Code::InvalidArgument | Code::OutOfRange => ApiError::Invalid(message),
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => {
                ApiError::Conflict(message)
            }
            Code::ResourceExhausted => {
                ApiError::Unavailable(format!("insufficient capacity: {message}"))
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                ApiError::Unavailable(if message.is_empty() {
                    "the host is unavailable; try again".into()
                } else {
                    message
                })
            }
            _ => ApiError::Internal(format!("host agent: {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_detail() {
        let error = ApiError::Internal("password column missing".into());
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.public_message().contains("password"));
    }

    #[test]
    fn agent_codes_map_to_http_statuses() {
        let cases = [
            (tonic::Code::NotFound, StatusCode::NOT_FOUND),
            (
                tonic::Code::InvalidArgument,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (tonic::Code::FailedPrecondition, StatusCode::CONFLICT),
            (
                tonic::Code::ResourceExhausted,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (tonic::Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (code, status) in cases {
            let error = ApiError::from(tonic::Status::new(code, "x"));
            assert_eq!(error.status(), status, "{code:?}");
        }
    }
}
