//! The two-tier record store: TTL refresh by the owner, the List merge rule, and index updates that
//! survive concurrent writers (compare-and-set).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wsm::backends::memory::MemoryStateStore;
use wsm::backends::{BackendError, Concurrency, StateStore, Versioned};
use wsm::connection::Status;
use wsm::store::{ConnectionStore, CONNECTION_INDEX_KEY};
use wsm::ConnectionRecord;

fn record(id: &str, instance: &str) -> ConnectionRecord {
    ConnectionRecord {
        id: id.into(),
        url: "wss://feed.example/ws".into(),
        status: Status::Connected,
        topic: None,
        auto_reconnect: true,
        created_at: format!("2026-11-24T00:00:00.{id}Z"),
        instance_id: instance.into(),
        tags: BTreeMap::new(),
        headers: BTreeMap::new(),
        subprotocols: Vec::new(),
        on_connect: Vec::new(),
        replay: Vec::new(),
        epoch: 1,
        ping_interval_ms: None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_owner_refreshes_record_ttls_and_unrefreshed_records_expire() {
    let state = MemoryStateStore::new();
    let store = ConnectionStore::new(Arc::new(state.clone()), Duration::from_secs(30));
    store.put(record("1", "a")).await.unwrap();
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(store.refresh().await, 0);
    }
    // 100 s after the write, refreshed every 20 s: still there for every instance.
    let other = ConnectionStore::new(Arc::new(state.clone()), Duration::from_secs(30));
    assert_eq!(other.list().await.unwrap().len(), 1);

    // The owner stops refreshing (it died): the record expires after its TTL.
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(other.list().await.unwrap().is_empty());
    // Listing pruned the expired id from the index.
    let index = state.get(CONNECTION_INDEX_KEY).await.unwrap().unwrap();
    assert_eq!(index.value, b"[]");
}

/// A state store whose writes fail while `down` is set.
#[derive(Clone)]
struct Flaky {
    inner: MemoryStateStore,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl StateStore for Flaky {
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
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable {
                backend: "flaky",
                reason: "down".into(),
            });
        }
        self.inner.set(key, value, concurrency, ttl).await
    }
    async fn delete(&self, key: &str, concurrency: Concurrency<'_>) -> Result<(), BackendError> {
        self.inner.delete(key, concurrency).await
    }
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[tokio::test]
async fn list_merges_shared_and_local_records_by_id_and_the_shared_copy_wins() {
    let flaky = Flaky {
        inner: MemoryStateStore::new(),
        down: Arc::new(AtomicBool::new(false)),
    };
    let store = ConnectionStore::new(Arc::new(flaky.clone()), Duration::from_secs(300));
    store.put(record("1", "a")).await.unwrap();
    // Another writer (e.g. the owner's status writer on another path) changed the shared copy.
    let mut shared = record("1", "a");
    shared.status = Status::Reconnecting;
    store.repository().save(&shared).await.unwrap();
    // A record written while the shared store was down exists only locally.
    flaky.down.store(true, Ordering::SeqCst);
    assert!(store.put(record("2", "a")).await.is_err());
    flaky.down.store(false, Ordering::SeqCst);

    let listed = store.list().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["1", "2"],
        "shared first, then local-only, no duplicates"
    );
    assert_eq!(
        listed[0].status,
        Status::Reconnecting,
        "the shared copy wins"
    );
    assert_eq!(listed[1].status, Status::Connected);
    // The next refresh persists the local-only record.
    assert_eq!(store.refresh().await, 0);
    assert_eq!(store.repository().load_all().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_never_lose_index_entries() {
    let state: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    let stores: Vec<Arc<ConnectionStore>> = (0..4)
        .map(|_| {
            Arc::new(ConnectionStore::new(
                Arc::clone(&state),
                Duration::from_secs(300),
            ))
        })
        .collect();
    let mut tasks = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        for i in 0..25 {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                store
                    .put(record(&format!("{n}-{i:02}"), &format!("inst-{n}")))
                    .await
            }));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let all = stores[0].repository().load_all().await.unwrap();
    assert_eq!(all.len(), 100);
    for n in 0..4 {
        let ids = stores[0]
            .repository()
            .instance_ids(&format!("inst-{n}"))
            .await
            .unwrap();
        assert_eq!(ids.len(), 25, "instance {n}");
    }
}

#[tokio::test]
async fn clear_all_removes_records_and_the_index() {
    let state = MemoryStateStore::new();
    let store = ConnectionStore::new(Arc::new(state.clone()), Duration::from_secs(300));
    store.put(record("1", "a")).await.unwrap();
    store.put(record("2", "b")).await.unwrap();
    assert_eq!(store.clear_all().await.unwrap(), 2);
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(
        state.get("websocketmanager.connection.1").await.unwrap(),
        None
    );
    assert_eq!(state.get(CONNECTION_INDEX_KEY).await.unwrap(), None);
}
