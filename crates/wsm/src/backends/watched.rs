//! Whether writes succeed, for `/ready`. A Redis out of memory still answers PING, so a ping alone
//! called an instance ready while every heartbeat, record write and publish failed. These wrappers
//! watch the real writes (the heartbeat writes its key every interval, so the state store is
//! never unwatched for long) and `/ready` reports a store or bus whose last write failed.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{BackendError, Concurrency, Publisher, StateStore, Versioned};
use crate::publish::FrameBatch;

/// The outcome of the last write: failing from when, and why.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    failing: Mutex<Option<(SystemTime, String)>>,
}

impl WriteHealth {
    fn record<T>(&self, result: &Result<T, BackendError>) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            // A lost compare-and-set was answered: the store takes writes.
            Ok(_) | Err(BackendError::Conflict { .. }) => *failing = None,
            Err(e) => {
                if failing.is_none() {
                    *failing = Some((SystemTime::now(), e.to_string()));
                } else if let Some((_, why)) = failing.as_mut() {
                    *why = e.to_string();
                }
            }
        }
    }

    /// Why writes fail, while the last one failed: since when, and the last error.
    pub fn failing(&self) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        failing.as_ref().map(|(since, why)| {
            let since = humantime::format_rfc3339_seconds(*since);
            format!("writes failing since {since}: {why}")
        })
    }
}

/// A state store whose writes are watched.
pub(crate) struct WatchedState {
    inner: Arc<dyn StateStore>,
    health: Arc<WriteHealth>,
}

impl WatchedState {
    pub fn new(inner: Arc<dyn StateStore>, health: Arc<WriteHealth>) -> Self {
        WatchedState { inner, health }
    }
}

#[async_trait]
impl StateStore for WatchedState {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, BackendError> {
        self.inner.get(key).await
    }

    async fn get_bulk(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, BackendError> {
        self.inner.get_bulk(keys).await
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        concurrency: Concurrency<'_>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let result = self.inner.set(key, value, concurrency, ttl).await;
        self.health.record(&result);
        result
    }

    async fn delete(&self, key: &str, concurrency: Concurrency<'_>) -> Result<(), BackendError> {
        // Not recorded as a success: an out-of-memory Redis still deletes, but takes no writes.
        let result = self.inner.delete(key, concurrency).await;
        if result.is_err() {
            self.health.record(&result);
        }
        result
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.inner.ping().await
    }
}

/// A bus whose publishes are watched.
pub(crate) struct WatchedBus {
    inner: Arc<dyn Publisher>,
    health: Arc<WriteHealth>,
}

impl WatchedBus {
    pub fn new(inner: Arc<dyn Publisher>, health: Arc<WriteHealth>) -> Self {
        WatchedBus { inner, health }
    }
}

#[async_trait]
impl Publisher for WatchedBus {
    async fn publish(&self, topic: &str, events: &[Vec<u8>]) -> Result<(), BackendError> {
        let result = self.inner.publish(topic, events).await;
        self.health.record(&result);
        result
    }

    async fn publish_frames(
        &self,
        topic: &str,
        batch: &Arc<FrameBatch>,
    ) -> Result<(), BackendError> {
        let result = self.inner.publish_frames(topic, batch).await;
        self.health.record(&result);
        result
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_write_decides_and_a_lost_compare_and_set_counts_as_answered() {
        let health = WriteHealth::default();
        assert_eq!(health.failing(), None);
        let down = BackendError::Unavailable {
            backend: "redis",
            reason: "OOM command not allowed".into(),
        };
        health.record::<()>(&Err(down));
        let failing = health.failing().expect("failing");
        assert!(failing.contains("OOM command not allowed"), "{failing}");
        health.record::<()>(&Err(BackendError::Conflict { key: "k".into() }));
        assert_eq!(health.failing(), None);
    }
}
