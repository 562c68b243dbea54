//! The service's operations and errors on the embedded (memory) backends, against the real local
//! feed server over loopback.

mod common;
mod connections;
mod publishing;
mod sending;
