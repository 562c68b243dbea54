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

/// How many published batches a subscriber may fall behind before publishers wait for it.
pub const SUBSCRIBER_BATCHES: usize = 1024;
/// How long a publisher waits for a stuck subscriber before it publishes anyway; that subscriber then
/// loses the oldest batches (and is told how many).
pub const SUBSCRIBER_PATIENCE: Duration = Duration::from_secs(5);

type Batch = Arc<[Bytes]>;

/// The in-process pub/sub bus. A publish call is one message (the whole batch), so a subscriber costs
/// one channel operation per batch, not per event. Publishers wait while a subscriber is
/// `SUBSCRIBER_BATCHES` behind, so a subscriber that keeps up loses nothing. Publishing to a topic
/// nobody subscribes to costs a map lookup.
#[derive(Debug, Default, Clone)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Batch>>>>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Receives every event published to `topic` from now on, in publish order.
    pub fn subscribe(&self, topic: &str) -> Subscription {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_BATCHES).0)
            .subscribe();
        Subscription {
            receiver,
            pending: std::collections::VecDeque::new(),
        }
    }
}

/// One subscriber's view of a topic: events one at a time, in order.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Batch>,
    pending: std::collections::VecDeque<Bytes>,
}

impl Subscription {
    /// The next event. `Lagged(n)`: this subscriber was stuck for longer than
    /// `SUBSCRIBER_PATIENCE` and lost `n` batches.
    pub async fn recv(&mut self) -> Result<Bytes, broadcast::error::RecvError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let batch = self.receiver.recv().await?;
            self.pending.extend(batch.iter().cloned());
        }
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Result<Bytes, broadcast::error::TryRecvError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let batch = self.receiver.try_recv()?;
            self.pending.extend(batch.iter().cloned());
        }
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
        let batch: Batch = events.iter().map(|e| Bytes::copy_from_slice(e)).collect();
        // Backpressure: wait (bounded) for the slowest subscriber rather than overwrite its backlog.
        let deadline = Instant::now() + SUBSCRIBER_PATIENCE;
        let mut spins = 0u32;
        while sender.len() >= SUBSCRIBER_BATCHES && sender.receiver_count() > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    topic,
                    "a memory-bus subscriber is stuck; it loses its oldest events"
                );
                break;
            }
            spins += 1;
            if spins < 64 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Err only means every subscriber left meanwhile; nothing to deliver to.
        let _ = sender.send(batch);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_subscriber_slows_publishers_down_instead_of_losing_events() {
        let bus = MemoryBus::new();
        let mut slow = bus.subscribe("t");
        let total = SUBSCRIBER_BATCHES as u64 * 3;
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..total {
                    bus.publish("t", &[i.to_string().into_bytes()])
                        .await
                        .unwrap();
                }
            })
        };
        for i in 0..total {
            if i % 700 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(slow.recv().await.expect("no lag"), i.to_string());
        }
        publisher.await.unwrap();
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
