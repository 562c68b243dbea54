//! WSM's network surface, in front of [`crate::service`]:
//! - [`grpc`]: `virtufin.WebSocketManager` over tonic (h2c), with reflection and `grpc.health.v1`;
//! - [`http`]: `/health`, `/ready`, `/metrics` and `POST /v1/invoke/{Method}` (proto3-JSON);
//! - [`listen`]: accepting clients on both ports within caps and deadlines;
//! - [`invoke`]: the proto3-JSON transcoding `/v1/invoke` uses, driven by the schema's descriptors;
//! - [`metrics`]: the Prometheus text `/metrics` serves;
//! - [`auth`]: the optional `x-api-key` check both ports share;
//! - [`guard`]: the panic barrier every call passes (a defect answers INTERNAL, never CANCELLED);
//! - [`tail`]: what `Subscribe` streams (the memory bus, or a Redis stream).
//!
//! Both ports call the same [`grpc::GrpcApi`] methods, so an RPC behaves the same whichever way it
//! arrives.

pub mod auth;
mod convert;
pub mod grpc;
pub mod guard;
pub mod http;
pub mod invoke;
pub mod listen;
pub mod metrics;
pub mod status;
pub mod tail;

/// Venue options into a Connect request, for clients (the CLI) that read them as JSON.
pub use convert::set_venue;
