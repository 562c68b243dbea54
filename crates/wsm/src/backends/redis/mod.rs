//! Redis backends that leave exactly what Dapr's Redis components leave, so WSM and Dapr apps share
//! the data and a deployment can switch between `redis` and `dapr` without migrating anything.
//!
//! **State** (components-contrib `state/redis`): key `<key_prefix>||<key>` holding a hash
//! `{data, version}` plus `first-write` once a first-write (`IfAbsent`) write happened. Writes and
//! deletes run Dapr's Lua scripts unchanged in their checks, so the ETag (`version`) and
//! first-write rules are Dapr's:
//!
//! - `IfAbsent` is Dapr's first-write without an ETag: it succeeds if the key is absent *or was
//!   only ever written last-write*, and it marks the key. From then on every write must carry the
//!   current ETag (`IfMatch`); a `LastWrite` to a marked key is refused like Dapr refuses it, and
//!   reported as [`BackendError::Conflict`].
//! - `IfMatch(etag)` passes the ETag as Dapr does after `strconv.Atoi` (`""` means none).
//! - The TTL is applied in the same script (Dapr sends `EXPIRE`/`PERSIST` right after); `None`
//!   persists the key, as Dapr does for `ttlInSeconds: -1`. Doing it in the script keeps a refused
//!   write from touching the TTL and saves a round trip; the stored result is the same.
//!
//! **What is stored as `data`.** daprd re-encodes a JSON value posted to its HTTP state API
//! (sorted keys, jsoniter's escaping, numbers through `float64` with 6 decimals; see
//! `gojson`). This store writes JSON values the same way, so the `redis` and `dapr`
//! backends leave identical hashes and `get` returns the same bytes on both. Values that are not
//! JSON are stored verbatim, as daprd's gRPC API would (the `dapr` backend refuses them: its HTTP
//! API cannot carry them).
//!
//! **Publishing** (components-contrib `pubsub/redis`): `XADD <topic> [MAXLEN ~ n] * data
//! <envelope> metadata {}` per event, in order, all events of a batch pipelined on one connection
//! (no round trip per event; see [`RedisPublisher`]). The envelope is the event re-encoded as daprd
//! would ([`crate::publish::encode::daprd::EnvelopeWriter`]); the `metadata` field is what daprd's HTTP publish always adds (the
//! request's metadata map, empty). An event that is not a JSON object stops its batch: the events
//! before it are published, the error says how many. An error reply that names a passing server
//! state (`LOADING` after a restart, `BUSY`, `OOM`, `READONLY`, `MASTERDOWN`, ...) makes the batch
//! `Unavailable`, so the publisher retries it; other error replies are `Rejected`. A publishing
//! connection sends nothing before Redis answers `PING`, so no batch meets a Redis still loading.
//!
//! The files: `state.rs` (the state store), `streams.rs` (the publisher), `resp.rs` (the publisher's
//! own RESP connection), `tail.rs` (reading a stream back for `Subscribe`).

mod resp;
mod state;
mod streams;
mod tail;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};

use super::BackendError;

pub use state::RedisStateStore;
pub use streams::RedisPublisher;
pub(crate) use tail::RedisTail;

pub(crate) const BACKEND: &str = "redis";

/// About how many lifecycle events the Redis stream keeps.
pub(crate) const DEFAULT_LIFECYCLE_MAX_LEN: u64 = 100_000;

/// How to reach Redis and how to lay data out in it. Defaults match a Dapr Redis component for the
/// app id `websocketmanager`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (`rediss://` is not supported: no TLS is built in).
    pub url: String,
    /// Dapr's `keyPrefix`: keys are stored as `<prefix>||<key>`; `None` is Dapr's `none` (bare keys).
    /// Dapr's default is the app id, so instances share records only under the same prefix.
    pub key_prefix: Option<String>,
    /// The pub/sub component name daprd would write into each envelope's `pubsubname`.
    pub pubsub_name: String,
    /// Dapr's `maxLenApprox`: `XADD … MAXLEN ~ n` trims streams to about `n` entries.
    pub max_len_approx: Option<u64>,
    /// The same for the lifecycle topic alone (default 100,000): nobody trims it otherwise, and
    /// it grows with every reconnect of every connection.
    pub lifecycle_max_len: Option<u64>,
    /// Limit for opening a connection.
    pub connect_timeout: Duration,
    /// Limit for one answer; a publish batch counts as one, so allow for the largest batch.
    pub response_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: Some("websocketmanager".to_owned()),
            pubsub_name: "pubsub".to_owned(),
            max_len_approx: None,
            lifecycle_max_len: Some(DEFAULT_LIFECYCLE_MAX_LEN),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(10),
        }
    }
}

/// A Redis URL as errors and logs show it: without its password (or user), cut short.
pub(crate) fn shown(url: &str) -> String {
    crate::text::excerpt(
        &crate::security::UrlRedactor::default().redact(url),
        crate::text::SHORT,
    )
}

impl RedisConfig {
    /// Opens a reconnecting multiplexed connection. After a dropped connection, calls fail fast
    /// with `Unavailable` while the connection is re-established in the background.
    pub(crate) async fn connect(&self) -> Result<ConnectionManager, BackendError> {
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| BackendError::Rejected {
                backend: BACKEND,
                reason: format!("invalid Redis URL {:?}: {e}", shown(&self.url)),
            })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| unavailable(format!("connecting to {}", shown(&self.url)), &e))
    }
}

pub(crate) async fn ping(conn: &ConnectionManager) -> Result<(), BackendError> {
    let _: String = redis::cmd("PING")
        .query_async(&mut conn.clone())
        .await
        .map_err(|e| error("PING".to_owned(), &e))?;
    Ok(())
}

pub(crate) fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

pub(crate) fn unavailable(what: String, e: &RedisError) -> BackendError {
    BackendError::Unavailable {
        backend: BACKEND,
        reason: format!("{what}: {e}"),
    }
}

/// Connection trouble and transient server states may pass with a retry (`Unavailable`); anything
/// else the server refused for this request (`Rejected`).
pub(crate) fn error(what: String, e: &RedisError) -> BackendError {
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Io
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        );
    if transient {
        unavailable(what, e)
    } else {
        BackendError::Rejected {
            backend: BACKEND,
            reason: format!("{what}: {e}"),
        }
    }
}
