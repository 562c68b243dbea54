//! The two-tier record store: TTL refresh by the owner, the List merge rule, and index updates that
//! survive concurrent writers (compare-and-set).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wsm::backends::memory::MemoryStateStore;
use wsm::backends::{BackendError, Concurrency, StateStore, Versioned};
use wsm::model::Status;
use wsm::store::keys::CONNECTION_INDEX_KEY;
use wsm::store::ConnectionStore;
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
        profile: None,
        venue: None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_owner_refreshes_record_ttls_and_unrefreshed_records_expire() {
    let state = MemoryStateStore::new();
    let store = ConnectionStore::new(Arc::new(state.clone()), Duration::from_secs(30));
    store.put(record("1", "a")).await.unwrap();
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(store.refresh().await.failed, 0);
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
    // A refresh does not bring back a record the shared store lacks (it was disconnected through
    // another instance, cleared, or it expired): it reports it lost, for the service to let go.
    let refreshed = store.refresh().await;
    assert_eq!(refreshed.failed, 0);
    assert_eq!(refreshed.lost, vec![("2".to_string(), None)]);
    assert_eq!(store.repository().load_all().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_owner_never_overwrites_a_record_another_instance_claimed() {
    let state: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    let owner = ConnectionStore::new(Arc::clone(&state), Duration::from_secs(300));
    let claimer = ConnectionStore::new(Arc::clone(&state), Duration::from_secs(300));
    owner.put(record("1", "a")).await.unwrap();
    let (stored, etag) = claimer.repository().load("1").await.unwrap().unwrap();
    let claimed = ConnectionRecord {
        instance_id: "b".into(),
        ..stored
    };
    claimer.repository().save_if(&claimed, &etag).await.unwrap();
    // A second claim from the same version loses: exactly one winner.
    let rival = ConnectionRecord {
        instance_id: "c".into(),
        ..claimed.clone()
    };
    assert!(matches!(
        claimer.repository().save_if(&rival, &etag).await,
        Err(BackendError::Conflict { .. })
    ));

    // The old owner (paused meanwhile) changes its copy: the write is refused, naming the new owner.
    let err = owner
        .update("1", |r| r.status = Status::Reconnecting)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, wsm::store::OwnedWriteError::Lost { owner: Some(o) } if o == "b"),
        "{err}"
    );
    let refreshed = owner.refresh().await;
    assert_eq!(
        refreshed.lost,
        vec![("1".to_string(), Some("b".to_string()))]
    );
    let (now, _) = claimer.repository().load("1").await.unwrap().unwrap();
    assert_eq!(now, claimed, "the claim stands");
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

/// A state store that counts writes to the connection index and fails the one numbered `fail`
/// (1, 2, …; 0 = none). Its reads yield once, as a store across the network would, so other
/// callers get to queue meanwhile.
#[derive(Clone, Default)]
struct IndexWrites {
    inner: MemoryStateStore,
    writes: Arc<AtomicUsize>,
    fail: Arc<AtomicUsize>,
}

#[async_trait]
impl StateStore for IndexWrites {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, BackendError> {
        tokio::task::yield_now().await;
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
        if key == CONNECTION_INDEX_KEY {
            let write = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
            if write == self.fail.load(Ordering::SeqCst) {
                return Err(BackendError::Unavailable {
                    backend: "index-writes",
                    reason: "down".into(),
                });
            }
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

/// Puts records `0..n` of instance `a` concurrently; the results in id order.
async fn put_concurrently(store: &Arc<ConnectionStore>, n: usize) -> Vec<bool> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.put(record(&format!("{i:03}"), "a")).await.is_ok() })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test]
async fn concurrent_index_adds_are_written_together() {
    let state = IndexWrites::default();
    let store = Arc::new(ConnectionStore::new(
        Arc::new(state.clone()),
        Duration::from_secs(300),
    ));
    assert!(put_concurrently(&store, 100).await.iter().all(|ok| *ok));
    assert_eq!(store.repository().load_all().await.unwrap().len(), 100);
    assert_eq!(
        store.repository().instance_ids("a").await.unwrap().len(),
        100
    );
    let writes = state.writes.load(Ordering::SeqCst);
    assert!(writes < 10, "{writes} index writes for 100 concurrent puts");
}

#[tokio::test]
async fn a_failed_index_write_leaves_the_other_waiting_ids_to_their_callers() {
    let state = IndexWrites::default();
    // The first write holds the first caller's id; the second, the ids queued meanwhile.
    state.fail.store(2, Ordering::SeqCst);
    let store = Arc::new(ConnectionStore::new(
        Arc::new(state.clone()),
        Duration::from_secs(300),
    ));
    let results = put_concurrently(&store, 10).await;
    // The writer of the failed write is told; the other callers wrote their ids again.
    assert_eq!(results.iter().filter(|ok| !**ok).count(), 1, "{results:?}");
    let failed = results.iter().position(|ok| !ok).unwrap();
    let index = state.get(CONNECTION_INDEX_KEY).await.unwrap().unwrap();
    let ids: Vec<String> = serde_json::from_slice(&index.value).unwrap();
    let expected: Vec<String> = (0..10)
        .filter(|i| *i != failed)
        .map(|i| format!("{i:03}"))
        .collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn refresh_updates_each_index_once_and_restores_lost_entries() {
    let state = IndexWrites::default();
    let store = Arc::new(ConnectionStore::new(
        Arc::new(state.clone()),
        Duration::from_secs(300),
    ));
    assert!(put_concurrently(&store, 50).await.iter().all(|ok| *ok));
    // The shared store lost the index (e.g. a flush); the next refresh lists every record again.
    state
        .delete(CONNECTION_INDEX_KEY, Concurrency::LastWrite)
        .await
        .unwrap();
    state.writes.store(0, Ordering::SeqCst);
    assert_eq!(store.refresh().await.failed, 0);
    assert_eq!(state.writes.load(Ordering::SeqCst), 1);
    assert_eq!(store.repository().load_all().await.unwrap().len(), 50);
    // Nothing to add: no index write at all.
    assert_eq!(store.refresh().await.failed, 0);
    assert_eq!(state.writes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn clear_all_removes_records_and_the_index() {
    let state = MemoryStateStore::new();
    let store = ConnectionStore::new(Arc::new(state.clone()), Duration::from_secs(300));
    store.put(record("1", "a")).await.unwrap();
    store.put(record("2", "b")).await.unwrap();
    assert_eq!(store.clear_all(&[]).await.unwrap(), 2);
    assert_eq!(
        state
            .get("websocketmanager.instance.index.a")
            .await
            .unwrap(),
        None,
        "the owners' indexes go too"
    );
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(
        state.get("websocketmanager.connection.1").await.unwrap(),
        None
    );
    assert_eq!(state.get(CONNECTION_INDEX_KEY).await.unwrap(), None);
}
