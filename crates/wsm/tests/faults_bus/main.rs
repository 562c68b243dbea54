//! Faults around a publishing connection, each asserting recovery and counting what was lost (0):
//!
//! - the upstream feed server process SIGKILLed and started again on its port ten times: every
//!   new session gets `on_connect` then the replay messages in order, the epochs run 1..=11 and
//!   every frame a session sent is published;
//! - Redis SIGKILLed while frames are being published, kept down, and started again empty: wsm
//!   keeps answering, its publish queue stays within its bound and reading pauses (backpressure,
//!   reported as `degraded`), and afterwards every frame it read is in the stream;
//! - Redis restarted with a data set to load: while it answers `LOADING`, publishing is retried,
//!   not dropped;
//! - the Dapr sidecar answering 500s, then too slowly (timeouts), then healthy again: errors are
//!   surfaced, API calls fail with clear errors, and afterwards every frame read is in the stream
//!   (duplicates allowed where a failed call may have landed; gaps never).
//!
//! Each test uses real processes: `wsm serve`, `redis-server`, and for the first one the
//! `feed-server` binary ([`wsm_testkit::feed_server_bin`]). The tests run one at a time: each
//! keeps a feed streaming, and a 2-core machine running them side by side would measure the
//! machine rather than wsm.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod dapr;
mod feed_restart;
mod redis;
