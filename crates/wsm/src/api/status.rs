//! One mapping from service errors to gRPC statuses, and from gRPC codes to the HTTP statuses of
//! `/v1/invoke` (the `google.rpc.Code` table), so both ports report the same failure the same way.

use tonic::{Code, Status};

use crate::error::ServiceError;

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        Status::new(grpc_code(&e), e.to_string())
    }
}

/// The gRPC code a service error answers with: the one mapping.
pub fn grpc_code(e: &ServiceError) -> Code {
    match e {
        ServiceError::InvalidArgument(_) => Code::InvalidArgument,
        ServiceError::NotFound { .. } => Code::NotFound,
        ServiceError::FailedPrecondition(_) | ServiceError::NotOwner { .. } => {
            Code::FailedPrecondition
        }
        ServiceError::DeadlineExceeded => Code::DeadlineExceeded,
        ServiceError::Unavailable(_) => Code::Unavailable,
        ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
        ServiceError::Internal(_) => Code::Internal,
    }
}

/// The gRPC code's canonical name (`NOT_FOUND`), as `/v1/invoke` error bodies carry it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The HTTP status for a gRPC code (google.rpc.Code's documented mapping).
pub(crate) fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_keep_their_code_and_text() {
        let s = Status::from(ServiceError::NotFound { id: "x".into() });
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "Connection not found");
        let s = Status::from(ServiceError::not_connected());
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "WebSocket is not connected");
        let s = Status::from(ServiceError::DeadlineExceeded);
        assert_eq!(
            (s.code(), s.message()),
            (Code::DeadlineExceeded, "Request timeout")
        );
        assert_eq!(http_status(Code::NotFound), 404);
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
    }
}
