//! The error half of a reply: a machine-readable code and a message for the operator.

use std::borrow::Cow;

/// Unparseable event or JSON, missing field, wrong type.
pub const BAD_REQUEST: &str = "BAD_REQUEST";
/// A `command` that names no command.
pub const UNKNOWN_COMMAND: &str = "UNKNOWN_COMMAND";
/// The host speaks another ABI version.
pub const ABI_MISMATCH: &str = "ABI_MISMATCH";
/// The gateway callback failed without a WSM status code.
pub const GATEWAY_ERROR: &str = "GATEWAY_ERROR";
/// A bug in the plugin, caught before it could reach the host.
pub const INTERNAL: &str = "INTERNAL";

/// A failed command. `code` is one of the constants above or a WSM gRPC code name (`NOT_FOUND`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    pub code: Cow<'static, str>,
    pub message: String,
}

impl ReplyError {
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ReplyError {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL, message)
    }
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ReplyError {}
