//! The two things WSM needs from its environment, behind traits so the rules above them do not care
//! which is configured: a key/value state store with Dapr's semantics (ETags, TTL) and a pub/sub
//! publisher. Implementations are leaves: no business rules.
//!
//! - `memory`: in-process; the embedded default, nothing to install. Its bus can be subscribed to.
//! - `redis`: byte-compatible with Dapr's Redis state store and Redis Streams pub/sub.
//! - `dapr`: the Dapr sidecar's HTTP API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::frames::{FrameBatch, FrameEncoder};

pub mod cloudevent;
pub mod dapr;
mod envelope;
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

/// Publishes CloudEvents to topics.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `events` (CloudEvent JSON) to `topic`, in order. On error none or some may have
    /// been published; the caller retries the whole batch, so consumers may see a duplicate but
    /// never a gap or a reordering (each event's `seq` tells them).
    async fn publish(&self, topic: &str, events: &[Vec<u8>]) -> Result<(), BackendError>;

    /// Publishes received frames as CloudEvents, with the same ordering and retry rules as
    /// [`Publisher::publish`]. A bus overrides this to encode frames straight into its own wire
    /// format (or not at all); by default each frame becomes [`FrameEncoder`] JSON.
    async fn publish_frames(
        &self,
        topic: &str,
        batch: &Arc<FrameBatch>,
    ) -> Result<(), BackendError> {
        let mut encoder = FrameEncoder::new(&batch.source);
        let events: Vec<Vec<u8>> = batch
            .frames
            .iter()
            .map(|frame| {
                let mut event = Vec::new();
                encoder.encode(frame, &mut event);
                event
            })
            .collect();
        self.publish(topic, &events).await
    }

    /// Whether the bus answers; for `/ready`.
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
