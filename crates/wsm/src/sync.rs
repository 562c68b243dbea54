//! Locking that survives a poisoned mutex: the data behind these locks (maps of connections,
//! registries) stays consistent at every await point, so a panic elsewhere must not take every
//! later caller down with it.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
