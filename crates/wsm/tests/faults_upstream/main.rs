//! Hostile and broken upstreams: a 100 MB frame, invalid UTF-8 in a text frame, handshakes that
//! dribble in a byte at a time or never come, and a thousand connects to a refusing port. Each test
//! asserts how wsm recovers and counts what was lost; the leak tests count tokio tasks and open file
//! descriptors before and after.
//!
//! The upstreams are written here as raw bytes over a tokio `TcpListener` ([`Hostile`]), so a test
//! can send what no well-behaved WebSocket library would.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod frames;
mod handshakes;
mod hostile;
mod refused;
