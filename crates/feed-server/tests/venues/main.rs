//! Venue personalities, both sides of every rule over real sockets: a client that breaks the
//! rule gets the venue's close code within a generous bound, one that follows it stays connected
//! for several deadlines with frames flowing. Deadlines are scaled down through the query.

#[path = "../support/mod.rs"]
mod support;

mod binance;
mod common;
mod config;
mod htx;
mod keepalive;
