//! In-process backends: the embedded default, nothing to install. State lives in a map with Dapr's
//! ETag and TTL semantics; the bus keeps per-topic broadcast channels that `Subscribe`/`wsm tail` read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{BackendError, Concurrency, Publisher, StateStore, Versioned};

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    version: u64,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

/// State in process memory. Versions count 1, 2, 3, … per key, like Dapr's Redis store.
#[derive(Debug, Default, Clone)]
pub struct MemoryStateStore {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl MemoryStateStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored (live) version of `key`, checked against `concurrency`.
    fn check(
        map: &HashMap<String, Entry>,
        key: &str,
        concurrency: Concurrency<'_>,
        now: Instant,
    ) -> Result<Option<u64>, BackendError> {
        let current = map.get(key).filter(|e| e.live(now)).map(|e| e.version);
        let ok = match concurrency {
            Concurrency::LastWrite => true,
            Concurrency::IfAbsent => current.is_none(),
            Concurrency::IfMatch(etag) => current.map(|v| v.to_string()).as_deref() == Some(etag),
        };
        if ok {
            Ok(current)
        } else {
            Err(BackendError::Conflict {
                key: key.to_owned(),
            })
        }
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, BackendError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| Versioned {
                value: e.value.clone(),
                etag: e.version.to_string(),
            }))
    }

    async fn get_bulk(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, BackendError> {
        let now = Instant::now();
        let map = self.lock();
        Ok(keys
            .iter()
            .map(|key| {
                map.get(key).filter(|e| e.live(now)).map(|e| Versioned {
                    value: e.value.clone(),
                    etag: e.version.to_string(),
                })
            })
            .collect())
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        concurrency: Concurrency<'_>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut map = self.lock();
        let current = Self::check(&map, key, concurrency, now)?;
        map.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                version: current.unwrap_or(0) + 1,
                expires: ttl.map(|ttl| now + ttl),
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str, concurrency: Concurrency<'_>) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut map = self.lock();
        Self::check(&map, key, concurrency, now)?;
        map.remove(key);
        Ok(())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// How many published events a slow subscriber may fall behind before it starts losing the oldest
/// (it is told how many it lost).
pub const SUBSCRIBER_BUFFER: usize = 65_536;

/// The in-process pub/sub bus. Publishing to a topic nobody subscribes to costs a map lookup.
#[derive(Debug, Default, Clone)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Bytes>>>>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Receives every event published to `topic` from now on, in publish order.
    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<Bytes> {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_BUFFER).0)
            .subscribe()
    }
}

#[async_trait]
impl Publisher for MemoryBus {
    async fn publish(&self, topic: &str, events: &[Vec<u8>]) -> Result<(), BackendError> {
        let sender = {
            let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
            match topics.get(topic) {
                Some(sender) if sender.receiver_count() > 0 => sender.clone(),
                _ => return Ok(()),
            }
        };
        for event in events {
            // Err only means every subscriber left meanwhile; nothing to deliver to.
            let _ = sender.send(Bytes::copy_from_slice(event));
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_count_up_and_compare_and_set_has_one_winner() {
        let store = MemoryStateStore::new();
        store
            .set("k", b"a", Concurrency::IfAbsent, None)
            .await
            .expect("first write");
        assert!(matches!(
            store.set("k", b"b", Concurrency::IfAbsent, None).await,
            Err(BackendError::Conflict { .. })
        ));
        let v1 = store.get("k").await.unwrap().expect("stored");
        assert_eq!((v1.value.as_slice(), v1.etag.as_str()), (&b"a"[..], "1"));
        store
            .set("k", b"c", Concurrency::IfMatch("1"), None)
            .await
            .expect("matching etag wins");
        assert!(store
            .set("k", b"d", Concurrency::IfMatch("1"), None)
            .await
            .is_err());
        assert_eq!(store.get("k").await.unwrap().unwrap().etag, "2");
        store
            .delete("k", Concurrency::IfMatch("2"))
            .await
            .expect("delete");
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl() {
        let store = MemoryStateStore::new();
        store
            .set(
                "k",
                b"a",
                Concurrency::LastWrite,
                Some(Duration::from_secs(30)),
            )
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(store.get("k").await.unwrap().is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.get_bulk(&["k".into()]).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn bus_delivers_in_order_to_every_subscriber() {
        let bus = MemoryBus::new();
        bus.publish("t", &[b"lost".to_vec()]).await.unwrap();
        let mut a = bus.subscribe("t");
        let mut b = bus.subscribe("t");
        bus.publish("t", &[b"1".to_vec(), b"2".to_vec()])
            .await
            .unwrap();
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.recv().await.unwrap(), "1");
            assert_eq!(rx.recv().await.unwrap(), "2");
        }
    }
}
