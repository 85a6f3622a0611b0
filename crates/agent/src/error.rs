//! The agent's public error: one kind per gRPC status the control plane must tell apart, with a
//! message that is safe to show the caller. Internal detail is logged where it is handled.

use tonic::{Code, Status};

/// Errors returned by the agent's public operations.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The resource exists but is in the wrong state (e.g. exec on a stopped sandbox).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not enough memory, CPUs or network slots on this host.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Try again later: the VM is busy or did not come up.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Another call overtook this one, e.g. a destroy while the sandbox was starting.
    #[error("{0}")]
    Aborted(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> Code {
        match self {
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::ResourceExhausted(_) => Code::ResourceExhausted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// Wraps an unexpected failure, keeping its whole chain in the message.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        ApiError::Internal(error_chain(error))
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

/// "outer: inner: innermost" for an error and its sources.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_distinct_grpc_codes() {
        let status: Status = ApiError::NotFound("sandbox sb-x not found".into()).into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "sandbox sb-x not found");
        let status: Status = ApiError::ResourceExhausted("full".into()).into();
        assert_eq!(status.code(), Code::ResourceExhausted);
    }

    #[test]
    fn chains_include_every_source() {
        let io = std::io::Error::other("disk on fire");
        let outer = crate::disk::DiskError::Rebase {
            path: "/a".into(),
            base: "/b".into(),
            source: crate::command::CommandError::Spawn {
                program: "qemu-img".into(),
                source: io,
            },
        };
        assert_eq!(
            error_chain(&outer),
            "rebase /a onto /b: run qemu-img: disk on fire"
        );
    }
}
