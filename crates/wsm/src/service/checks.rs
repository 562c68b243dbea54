//! What a request may carry, and how a socket's refusal reads as a service error: the limits of
//! tags, `on_connect` and `Send` timeouts (SPEC 4), checked before anything is dialed or sent.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::connection::SendError;
use crate::error::ServiceError;

/// Tag limits (SPEC 4): at most 50 tags, keys ≤ 128 and values ≤ 1024 characters.
pub(crate) const MAX_TAGS: usize = 50;
pub(crate) const MAX_TAG_KEY: usize = 128;
pub(crate) const MAX_TAG_VALUE: usize = 1024;
/// Longest `Send` timeout a caller may ask for (5 minutes): a pending request holds memory until
/// it is answered or times out, so a caller must not be able to park one for weeks.
pub(crate) const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(300);
/// Most `on_connect` messages per connection (as many as replayed messages).
pub(crate) const MAX_ON_CONNECT: usize = 1024;

pub(super) fn send_error(e: SendError) -> ServiceError {
    match e {
        SendError::NotConnected | SendError::Closed => ServiceError::not_connected(),
        SendError::Timeout => ServiceError::DeadlineExceeded,
        e @ SendError::Paced { .. } => ServiceError::ResourceExhausted(e.to_string()),
        SendError::NotUtf8 | SendError::ReplayFull(_) => {
            ServiceError::InvalidArgument(e.to_string())
        }
        SendError::Write(reason) => ServiceError::Unavailable(format!(
            "{reason}; the connection is reconnecting or closed"
        )),
        e @ SendError::RotateFailed(_) => ServiceError::Unavailable(e.to_string()),
        e @ SendError::Rotating => ServiceError::FailedPrecondition(e.to_string()),
    }
}

/// A Send's timeout: the default for 0, at most [`MAX_SEND_TIMEOUT`].
pub(crate) fn send_timeout(timeout_ms: i32, default: Duration) -> Result<Duration, ServiceError> {
    let max = MAX_SEND_TIMEOUT.as_millis();
    match u64::try_from(timeout_ms) {
        Ok(0) => Ok(default),
        Ok(ms) if u128::from(ms) <= max => Ok(Duration::from_millis(ms)),
        Ok(_) => Err(ServiceError::InvalidArgument(format!(
            "timeout_ms is at most {max} (5 minutes), got {timeout_ms}"
        ))),
        Err(_) => Err(ServiceError::InvalidArgument(format!(
            "timeout_ms must not be negative, got {timeout_ms}"
        ))),
    }
}

/// Text (`application/json`) unless the caller says otherwise.
pub(super) fn default_content_type(content_type: &str) -> &str {
    if content_type.trim().is_empty() {
        "application/json"
    } else {
        content_type
    }
}

pub(super) fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if tags.len() > MAX_TAGS {
        return Err(ServiceError::InvalidArgument(format!(
            "at most {MAX_TAGS} tags per connection, got {}",
            tags.len()
        )));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > MAX_TAG_KEY {
            return Err(ServiceError::InvalidArgument(format!(
                "tag keys must have 1 to {MAX_TAG_KEY} characters, got {}",
                key.chars().count()
            )));
        }
        if value.chars().count() > MAX_TAG_VALUE {
            return Err(ServiceError::InvalidArgument(format!(
                "tag {key}: values have at most {MAX_TAG_VALUE} characters, got {}",
                value.chars().count()
            )));
        }
    }
    Ok(())
}
