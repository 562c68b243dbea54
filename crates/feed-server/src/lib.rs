//! A local, Binance-like market-feed WebSocket server for the WebSocket Manager's tests, demo
//! and benchmarks.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use feed_server::{FeedConfig, FeedServer};
//! let feed = FeedServer::start(FeedConfig { rate: 0, size: 100, ..FeedConfig::default() }).await?;
//! let url = feed.url("/ws?count=1000"); // 1000 frames of 100 bytes, as fast as possible
//! # let _ = url;
//! feed.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # What a client gets
//!
//! - **Depth updates.** `/ws` (also `/` and `/ws/<stream>`) sends bare updates
//!   `{"e":"depthUpdate","E":<ms>,"s":"BTCUSDT","U":n,"u":n,"b":[["<px>","<qty>"]],"a":[[...]]}`;
//!   `/stream` wraps them as `{"stream":"btcusdt@depth@100ms","data":{...}}`. `u` (= `U`) is
//!   1, 2, 3, ... per connection, across all its streams, so gaps and reordering show.
//! - **Per-connection overrides** in the query: `rate` (frames/s, `0` = as fast as the socket
//!   takes them), `size` (frame bytes; filled with levels and padded with JSON whitespace to
//!   exactly this size), `count` (stop after N frames; the connection stays open; `0` =
//!   unlimited), `streams` (`1` stream at once, `0` only while a SUBSCRIBE is in effect, or a
//!   `/`-separated list of stream names), `echo` (`0`/`1`), `echo_delay_ms`.
//! - **Subscriptions.** `{"method":"SUBSCRIBE"|"UNSUBSCRIBE","params":[...],"id":N}` is answered
//!   `{"result":null,"id":N}` (also `LIST_SUBSCRIPTIONS`). While a connection has subscriptions,
//!   its frames go round the subscribed streams (symbol = the part before `@`, upper-cased);
//!   without any it gets the default stream, or nothing when it connected with `streams=0`.
//! - **Correlation echo** (SPEC section 5): a text `{"id":"<string>","payload":<any>}` is answered
//!   `{"id":"<same>","payload":<same text>}`; a binary message of 16 bytes or more comes back
//!   unchanged. Payload `"no-reply"` (text) or `no-reply` after the 16-byte prefix (binary) is
//!   never answered, for timeout tests; so is anything when echo is off.
//! - **Pings** are answered by tungstenite, except while the connection is stalled.
//! - **Venue personalities** (see [`venue`]): with [`FeedConfig::venue`] or `?venue=okx|bybit|
//!   htx|binance`, a connection follows that exchange's connection rules (text keepalives with a
//!   deadline, gzip frames and server pings, a message rate limit, a bounded lifetime), closing
//!   a client that breaks one with the venue's close code. Without one: none of this.
//! - **Broadcast** (see [`broadcast`]): with `?broadcast=1` or [`FeedConfig::broadcast`], one
//!   generator per stream name sends every subscribed socket the same bytes, with ids global
//!   per stream (`?ids=0`: id-less frames with a [`broadcast::token`]); a socket that falls
//!   behind is closed with 1008.
//! - **Lifetime**: `?lifetime_ms=N&close_code=C` (optionally `notice_ms`) closes a connection
//!   N ms after its handshake, with or without a venue.
//!
//! # Faults and counters
//!
//! [`FeedHandle`] drops connections without a close frame, closes them with a code, stalls them
//! (no reads, writes or pongs), all of them or one by id
//! ([`FeedHandle::drop_connection`], [`FeedHandle::live_connections`], ...), refuses new ones,
//! and reports connections, handshakes, refused
//! connections, subscriptions, every received message in order (with its receive time), and
//! what the venue rules did. The binary serves the same over HTTP (see [`control`]).
//!
//! # TLS
//!
//! With [`FeedConfig::tls`] (see [`tls::server_config`]) the WebSocket listener serves `wss://`
//! only: protocol versions can be restricted and client certificates required, and failed TLS
//! handshakes are counted in [`FeedStats::tls_handshake_failures_total`]. The control endpoint
//! stays plain HTTP.
//!
//! # Memory
//!
//! Every buffer is bounded. Frames are written with backpressure: when a client stops reading,
//! its session waits (and stops reading that client too) instead of queueing.

pub mod broadcast;
pub mod config;
pub mod control;
pub mod echo;
mod frames;
mod orders;
mod pacer;
mod registry;
mod server;
mod session;
mod shutdown;
mod subscribe;
pub mod tls;
pub mod venue;

pub use config::{ConnectionParams, FeedConfig, FrameForm, Rejection};
pub use registry::{ConnectionStats, FeedStats, Received, ReceivedMessage, VenueCloses};
pub use server::{FeedHandle, FeedServer};
pub use venue::{Lifetime, Venue, VenueRules};
