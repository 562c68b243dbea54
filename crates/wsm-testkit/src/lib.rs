//! Test support for `wsm`, never a production dependency:
//!
//! - [`RedisServer`]: a real `redis-server` on a free loopback port, stopped when dropped.
//! - [`DaprSidecar`]: a Dapr-API-compatible HTTP sidecar (state and pub/sub) writing real Redis in
//!   Dapr's layout, because `daprd` cannot be installed on these machines.
//! - [`RedisSnapshot`] and [`stream_entries`]: what a test left in Redis, read back.
//! - [`tls::TestCa`]: a certificate authority made at test time, for `wss://` tests.
//! - [`feed_server_bin`]: the `feed-server` binary, for tests that run the feed as a process.

mod bins;
pub mod gojson;
mod inspect;
mod redis_server;
mod sidecar;
pub mod tls;

pub use bins::feed_server_bin;
pub use inspect::{stream_entries, KeyState, KeyValue, RedisSnapshot, StreamEntry};
pub use redis_server::RedisServer;
pub use sidecar::DaprSidecar;
