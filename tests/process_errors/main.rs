//! Every error path of `Process` through the real C ABI: bad arguments, bad buffers, bad JSON, bad
//! commands and fields, a host of the wrong ABI version, and every way the gateway can fail. Each
//! error reply is checked for its exact `command`, `code` and `message`, `success:false`, the
//! correlation id (copied whenever the event could be decoded), the gateway calls made (none where
//! none may happen) and the log line.

#[path = "../support/mod.rs"]
mod support;

mod arguments;
mod common;
mod data;
mod fields;
mod gateway;
mod host;
