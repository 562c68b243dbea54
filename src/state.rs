//! Per-worker-instance state, keyed by the host's callback table: the connections this worker created
//! (so `stop` closes exactly those) and the JSON-RPC id counter for `subscribe`/`unsubscribe`.
//!
//! Entries are never dropped: the ABI has no unload hook, and an entry is a few bytes plus the ids of
//! connections that are still open.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use indexmap::IndexSet;

/// Identity of one worker instance (see `abi::Host::worker_key`).
pub type WorkerKey = (usize, usize);

#[derive(Debug)]
pub struct WorkerState {
    created: Mutex<IndexSet<String>>,
    next_request_id: AtomicU64,
}

impl Default for WorkerState {
    fn default() -> Self {
        WorkerState {
            created: Mutex::new(IndexSet::new()),
            next_request_id: AtomicU64::new(1),
        }
    }
}

impl WorkerState {
    /// Records a connection this worker created.
    pub fn remember(&self, id: &str) {
        self.ids().insert(id.to_owned());
    }

    /// Forgets a connection that is gone (disconnected, or unknown to WSM).
    pub fn forget(&self, id: &str) {
        self.ids().shift_remove(id);
    }

    /// The connections this worker created and has not seen closed, oldest first.
    pub fn created(&self) -> Vec<String> {
        self.ids().iter().cloned().collect()
    }

    /// The next JSON-RPC request id of this worker: 1, 2, 3, ...
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    fn ids(&self) -> MutexGuard<'_, IndexSet<String>> {
        // A panic while holding the lock cannot leave the set half-updated, so poison is harmless.
        self.created.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The state of one worker instance, created on its first call.
pub fn for_worker(key: WorkerKey) -> Arc<WorkerState> {
    thread_local! {
        // The engine calls one worker from the same threads over and over: remembering the last
        // worker per thread keeps the shared registry's lock off the per-call path.
        static LAST: RefCell<Option<(WorkerKey, Arc<WorkerState>)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return from_registry(key);
        };
        match &*last {
            Some((cached, state)) if *cached == key => Arc::clone(state),
            _ => {
                let state = from_registry(key);
                *last = Some((key, Arc::clone(&state)));
                state
            }
        }
    })
}

fn from_registry(key: WorkerKey) -> Arc<WorkerState> {
    static REGISTRY: OnceLock<Mutex<HashMap<WorkerKey, Arc<WorkerState>>>> = OnceLock::new();
    let registry = REGISTRY.get_or_init(Default::default);
    let mut map = registry.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(key).or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_isolated_and_ids_keep_creation_order() {
        let a = for_worker((1, 10));
        let b = for_worker((2, 10));
        a.remember("c1");
        a.remember("c2");
        a.remember("c1");
        b.remember("c3");
        a.forget("missing");
        assert_eq!(a.created(), ["c1", "c2"]);
        assert_eq!(b.created(), ["c3"]);
        assert!(Arc::ptr_eq(&a, &for_worker((1, 10))));
        assert_eq!((a.next_request_id(), a.next_request_id()), (1, 2));
        assert_eq!(b.next_request_id(), 1);
    }
}
