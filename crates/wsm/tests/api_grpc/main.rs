//! `virtufin.WebSocketManager` over real gRPC: an in-process `wsm serve` (memory backends) in front of
//! the local feed server, every RPC and every error code the API promises.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod connections;
mod errors;
mod frames;
mod rotate;
