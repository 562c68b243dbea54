//! The errors: [`BackendError`] from a state store or bus, [`ServiceError`] from the service.
//!
//! One error type for the service. Each variant is one gRPC status code (mapped once, in
//! `api::status`); the messages keep
//! the well-known texts of the original service and name the connection where there is one.

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

/// What went wrong with a state store or a bus.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A compare-and-set lost: someone else wrote (or deleted) the key first.
    #[error("the stored version of {key} changed (compare-and-set lost)")]
    Conflict { key: String },
    /// The backend could not be reached or failed; retrying later may work.
    #[error("{backend} unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    /// The backend refused the request as malformed; retrying will not help.
    #[error("{backend} refused the request: {reason}")]
    Rejected {
        backend: &'static str,
        reason: String,
    },
}
