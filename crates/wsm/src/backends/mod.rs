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

/// One event read back from a topic: its CloudEvent JSON and what identifies it (for frames, the
/// connection and its `seq`/`epoch`; `id` is the bus's own id of the entry, where it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailEvent {
    pub cloud_event: String,
    pub connection_id: String,
    pub seq: u64,
    pub epoch: u64,
    pub id: String,
}

impl TailEvent {
    /// An event known only by its JSON (lifecycle events, Redis entries): the fields read back
    /// from it; what is missing stays empty or 0.
    pub(crate) fn from_json(cloud_event: String, id: String) -> Self {
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Fields {
            websocket_id: String,
            seq: serde_json::Value,
            epoch: serde_json::Value,
        }
        let fields: Fields = serde_json::from_str(&cloud_event).unwrap_or_default();
        let number = |v: &serde_json::Value| match v {
            serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
            serde_json::Value::String(s) => s.parse().unwrap_or(0),
            _ => 0,
        };
        TailEvent {
            connection_id: fields.websocket_id,
            seq: number(&fields.seq),
            epoch: number(&fields.epoch),
            cloud_event,
            id,
        }
    }
}

/// Why reading a topic stopped, or could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TailError {
    /// The reader fell behind and events were lost; it must start again.
    #[error("{0}")]
    Lagged(String),
    /// The bus could not be read (unreachable, or a read failed).
    #[error("{0}")]
    Unavailable(String),
    /// The configuration is wrong (a URL that cannot be used).
    #[error("{0}")]
    Invalid(String),
}

/// Reads what is published to a topic, from now on: the bus side of `Subscribe`. Events go to
/// `events` until it is closed (the reader left) or the read fails (the last item says why).
#[async_trait]
pub trait BusTail: Send + Sync + std::fmt::Debug + 'static {
    /// Starts reading `topic`; fails when reading cannot start at all.
    async fn tail(
        &self,
        topic: &str,
        events: tokio::sync::mpsc::Sender<Result<TailEvent, TailError>>,
    ) -> Result<(), TailError>;
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
