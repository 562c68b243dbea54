//! Code the API test files share (`mod support;` in each, or `#[path = "../support/mod.rs"]
//! mod support;` in a test folder's main.rs). Every file uses a different part of it.
#![allow(dead_code)]

pub mod events;
pub mod process;
pub mod server;
pub mod upstream;
