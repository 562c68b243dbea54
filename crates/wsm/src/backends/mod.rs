//! The two things WSM needs from its environment, behind traits so the rules above them do not care
//! which is configured: a key/value state store with Dapr's semantics (ETags, TTL) and a pub/sub
//! publisher. Implementations are leaves: no business rules.
//!
//! - `memory`: in-process; the embedded default, nothing to install. Its bus can be subscribed to.
//! - `redis`: byte-compatible with Dapr's Redis state store and Redis Streams pub/sub.
//! - `dapr`: the Dapr sidecar's HTTP API.

use std::time::Duration;

use async_trait::async_trait;

pub use crate::error::BackendError;
pub use crate::publish::Publisher;

pub mod dapr;
pub mod memory;
pub mod redis;
pub mod watched;

/// A stored value and its ETag (Dapr's Redis store: the hash's `version` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub etag: String,
}

/// How a write treats the stored version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency<'a> {
    /// Write whatever is stored (Dapr's last-write).
    LastWrite,
    /// Write only if the stored ETag is this one (compare-and-set).
    IfMatch(&'a str),
    /// Write only if the key does not exist.
    IfAbsent,
}

/// Key/value state with Dapr semantics. Values are opaque bytes (WSM stores JSON).
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The value and ETag of `key`, or `None` if absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, BackendError>;

    /// Several keys at once, in the order asked; absent keys are `None`.
    async fn get_bulk(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, BackendError>;

    /// Writes `value`; `ttl` sets the key's expiry (`None` = keep no expiry).
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        concurrency: Concurrency<'_>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError>;

    /// Deletes `key` (a no-op if absent). With `IfMatch`, only if the ETag still matches.
    async fn delete(&self, key: &str, concurrency: Concurrency<'_>) -> Result<(), BackendError>;

    /// Whether the store answers; for `/ready`.
    async fn ping(&self) -> Result<(), BackendError>;
}

/// The `ttlInSeconds` the Dapr-compatible backends use for a write: whole seconds rounded up (a
/// record never expires earlier than asked, and 0 would mean "no expiry" to Dapr), capped at
/// `i32::MAX`; `None` is -1, on which Dapr's Redis store persists the key (drops an earlier TTL).
pub(crate) fn dapr_ttl_seconds(ttl: Option<Duration>) -> i64 {
    match ttl {
        None => -1,
        Some(ttl) => {
            let secs = ttl
                .as_secs()
                .saturating_add(u64::from(ttl.subsec_nanos() > 0));
            secs.clamp(1, i32::MAX as u64) as i64
        }
    }
}
