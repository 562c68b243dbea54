//! The WebSocket Manager core: outbound WebSocket client connections kept on behalf of other services,
//! every received frame published to pub/sub, correlated request/response over a socket, and
//! connection records in a shared store.
//!
//! Layers, each in its own module:
//! - [`api`]: the gRPC service and the HTTP port (health, metrics, `/v1/invoke`), API keys;
//! - [`service`]: the rules of the API (validation, ownership, errors), transport-agnostic;
//! - [`connection`]: one socket's life (dial, read task, writes, correlation, reconnect, keepalive);
//! - [`publish`]: every received frame from its socket to the bus (queue, batches, fence, encoders),
//!   and lifecycle events;
//! - [`lifecycle`]: what happens to a connection, as events;
//! - [`venue`]: venue protocols (keepalive messages, pacing, decompression, notices, gaps) and
//!   the profiles that preset them;
//! - [`security`]: the network policy (SSRF guard) every dial is checked against;
//! - [`cluster`]: several instances: heartbeats, forwarding to owners, failover;
//! - [`store`]: connection records in two tiers (local cache, shared repository);
//! - [`backends`]: memory, Redis, Dapr — leaves behind the `StateStore`/`Publisher`/`BusTail`
//!   traits.
//!
//! `docs/architecture.md` has the path of a frame through them. What is `pub` is what the binary,
//! the tests and an embedding user need (the service and its config, the backend traits and their
//! implementations, the model, the server); the rest is `pub(crate)`.

pub mod api;
pub mod backends;
pub mod cluster;
pub mod config;
pub mod connection;
mod error;
mod gojson;
pub(crate) mod jsonscan;
pub mod lifecycle;
pub mod model;
pub mod proto;
pub mod publish;
pub mod security;
pub mod server;
pub mod service;
pub mod store;
mod sync;
pub(crate) mod text;
pub mod venue;

pub use error::ServiceError;
pub use model::ConnectionRecord;
pub use service::{ConnectRequest, ServiceConfig, WebSocketService};
