//! Every command of SPEC section 3 through the real C ABI: `dlopen` of the built plugin, a scripted
//! host, FlatBuffer events in and `WorkerResponse`s out. Each test checks the WSM request body the
//! plugin sent and the reply it built, field by field.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod connections;
mod create;
mod envelope;
mod rotate;
mod send;
mod subscriptions;
