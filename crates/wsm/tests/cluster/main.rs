//! Several real `wsm serve` processes on one real Redis (SPEC 5, "Several instances"): calls on a
//! connection are served through whichever instance they reach, a killed owner's connections come
//! back on the survivors with the next epoch and nothing lost while an owner was alive, a restarted
//! instance does not take them back, and a paused owner that wakes after the takeover lets go
//! instead of publishing next to the new owner.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod failover;
mod forwarding;
mod restarts;
