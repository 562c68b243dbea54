//! One error type for the service. Each variant is one gRPC status code (`code()`); the messages keep
//! the well-known texts of the original service and name the connection where there is one.

use crate::backends::BackendError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// Empty URL, bad scheme, a target the network policy refuses, empty topic, tag limits,
    /// malformed input.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("Connection not found")]
    NotFound { id: String },
    /// Not connected.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The connection is owned by another instance (FAILED_PRECONDITION; counted as an ownership
    /// miss, the case forwarding to the owner serves).
    #[error("Connection owned by different instance: {owner}")]
    NotOwner { id: String, owner: String },
    #[error("Request timeout")]
    DeadlineExceeded,
    /// Handshake failure (including a name that does not resolve), or the state store is
    /// unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// Instance limits (max connections).
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The gRPC status code name.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::InvalidArgument(_) => "INVALID_ARGUMENT",
            ServiceError::NotFound { .. } => "NOT_FOUND",
            ServiceError::FailedPrecondition(_) | ServiceError::NotOwner { .. } => {
                "FAILED_PRECONDITION"
            }
            ServiceError::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ServiceError::Unavailable(_) => "UNAVAILABLE",
            ServiceError::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
            ServiceError::Internal(_) => "INTERNAL",
        }
    }

    pub fn not_connected() -> Self {
        ServiceError::FailedPrecondition("WebSocket is not connected".into())
    }
}

impl From<BackendError> for ServiceError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Rejected { .. } => ServiceError::Internal(e.to_string()),
            other => ServiceError::Unavailable(format!("state store: {other}")),
        }
    }
}
