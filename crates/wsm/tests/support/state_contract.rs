//! The state-store contract: what every `StateStore` (memory, redis, dapr) does alike, written
//! once. A backend's test file includes this file (`#[path = "support/state_contract.rs"] mod
//! state_contract;`) and expands [`state_contract_tests!`] with a function that starts a fresh
//! store; each property is then one test of that file. What only some backends do (Dapr's
//! first-write flag, keys Dapr refuses, ETags it cannot parse, the hash layout in Redis) stays in
//! the backend's own file; [`dapr_layout`] has the checks the two Redis-backed stores share.
#![allow(dead_code)]

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use wsm::backends::{BackendError, Concurrency, StateStore};

/// A store under test, and whatever must outlive it (a redis-server, a sidecar).
pub struct Subject {
    pub store: Arc<dyn StateStore>,
    pub _keep: Box<dyn Any + Send>,
}

impl Subject {
    pub fn new(store: impl StateStore, keep: impl Any + Send) -> Subject {
        Subject {
            store: Arc::new(store),
            _keep: Box::new(keep),
        }
    }
}

fn value_and_etag(got: Option<wsm::backends::Versioned>) -> Option<(String, String)> {
    got.map(|v| (String::from_utf8(v.value).expect("UTF-8 values"), v.etag))
}

fn some(value: &str, etag: &str) -> Option<(String, String)> {
    Some((value.to_owned(), etag.to_owned()))
}

/// A value reads back with ETag 1, each write counts the ETag up, an absent key is `None`, and
/// the store answers pings.
pub async fn values_read_back_with_etags_that_count_up(store: &dyn StateStore) {
    let value = r#"{"a":"x","b":1}"#;
    store
        .set("k", value.as_bytes(), Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert_eq!(
        value_and_etag(store.get("k").await.unwrap()),
        some(value, "1")
    );
    store
        .set("k", b"2", Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert_eq!(
        value_and_etag(store.get("k").await.unwrap()),
        some("2", "2")
    );
    assert_eq!(store.get("missing").await.unwrap(), None);
    store.ping().await.unwrap();
}

/// `IfMatch` writes only over the stored ETag; a stale one is a `Conflict` naming the key and
/// changes nothing.
pub async fn if_match_is_compare_and_set_on_the_etag(store: &dyn StateStore) {
    store
        .set("k", b"1", Concurrency::LastWrite, None)
        .await
        .unwrap();
    store
        .set("k", b"2", Concurrency::IfMatch("1"), None)
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().etag, "2");
    match store.set("k", b"3", Concurrency::IfMatch("1"), None).await {
        Err(BackendError::Conflict { key }) => assert_eq!(key, "k"),
        other => panic!("a stale ETag must conflict, got {other:?}"),
    }
    assert_eq!(
        value_and_etag(store.get("k").await.unwrap()),
        some("2", "2")
    );
}

/// `IfAbsent` writes a new key (ETag 1) and conflicts on an existing one, which its ETag still
/// updates.
pub async fn if_absent_writes_only_a_new_key(store: &dyn StateStore) {
    store
        .set("k", b"1", Concurrency::IfAbsent, None)
        .await
        .unwrap();
    assert_eq!(
        value_and_etag(store.get("k").await.unwrap()),
        some("1", "1")
    );
    assert!(matches!(
        store.set("k", b"2", Concurrency::IfAbsent, None).await,
        Err(BackendError::Conflict { .. })
    ));
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"1");
    store
        .set("k", b"2", Concurrency::IfMatch("1"), None)
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"2");
}

/// `attempts` concurrent writes with the same ETag: one wins, the others conflict; likewise
/// concurrent `IfAbsent` claims of one key.
pub async fn concurrent_compare_and_set_has_exactly_one_winner(
    store: Arc<dyn StateStore>,
    attempts: usize,
) {
    store
        .set("k", b"0", Concurrency::LastWrite, None)
        .await
        .unwrap();
    let race = |concurrency: Concurrency<'static>, key: &'static str| {
        let store = Arc::clone(&store);
        async move {
            let writes = (0..attempts).map(|n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let value = n.to_string();
                    store.set(key, value.as_bytes(), concurrency, None).await
                })
            });
            let results = futures_util::future::join_all(writes).await;
            let wins = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
            let conflicts = results
                .iter()
                .filter(|r| matches!(r, Ok(Err(BackendError::Conflict { .. }))))
                .count();
            (wins, conflicts)
        }
    };
    assert_eq!(
        race(Concurrency::IfMatch("1"), "k").await,
        (1, attempts - 1),
        "compare-and-set"
    );
    assert_eq!(
        race(Concurrency::IfAbsent, "claim").await,
        (1, attempts - 1),
        "first write"
    );
}

/// A delete with a stale ETag or `IfAbsent` on a stored key conflicts; with the ETag it deletes;
/// deleting an absent key is a no-op however it is asked.
pub async fn delete_honours_etags(store: &dyn StateStore) {
    store
        .set("k", b"1", Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert!(matches!(
        store.delete("k", Concurrency::IfMatch("9")).await,
        Err(BackendError::Conflict { .. })
    ));
    assert!(matches!(
        store.delete("k", Concurrency::IfAbsent).await,
        Err(BackendError::Conflict { .. })
    ));
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"1");
    store.delete("k", Concurrency::IfMatch("1")).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    store.delete("k", Concurrency::LastWrite).await.unwrap();
    store.delete("k", Concurrency::IfAbsent).await.unwrap();
    store
        .set("k", b"1", Concurrency::IfAbsent, None)
        .await
        .unwrap();
    store.delete("k", Concurrency::LastWrite).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
}

/// A value written with a TTL is there before it runs out and gone after (for `get` and
/// `get_bulk`); a write without a TTL removes an earlier one.
pub async fn ttls_expire_values_and_a_write_without_one_keeps_the_value(store: &dyn StateStore) {
    let second = Some(Duration::from_secs(1));
    store
        .set("rec", b"1", Concurrency::LastWrite, second)
        .await
        .unwrap();
    store
        .set("kept", b"1", Concurrency::LastWrite, second)
        .await
        .unwrap();
    store
        .set("kept", b"2", Concurrency::LastWrite, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.get("rec").await.unwrap().unwrap().value, b"1");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(store.get("rec").await.unwrap(), None);
    let keys = ["rec".to_owned(), "kept".to_owned()];
    let bulk: Vec<_> = store
        .get_bulk(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(value_and_etag)
        .collect();
    assert_eq!(bulk, [None, some("2", "2")]);
    // An expired key is absent: a first write takes it again.
    store
        .set("rec", b"3", Concurrency::IfAbsent, None)
        .await
        .unwrap();
}

/// `get_bulk` answers in the order asked, `None` for absent keys, with each value's ETag.
pub async fn bulk_get_answers_in_the_order_asked_with_gaps(store: &dyn StateStore) {
    for (key, value) in [("a", "\"A\""), ("b", "\"B\""), ("b", "\"B2\"")] {
        store
            .set(key, value.as_bytes(), Concurrency::LastWrite, None)
            .await
            .unwrap();
    }
    let keys: Vec<String> = ["b", "missing", "a"].map(String::from).to_vec();
    let got: Vec<_> = store
        .get_bulk(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(value_and_etag)
        .collect();
    assert_eq!(got, [some("\"B2\"", "2"), None, some("\"A\"", "1")]);
    assert_eq!(store.get_bulk(&[]).await.unwrap(), vec![]);
}

/// One test per property of the contract, each on a fresh store from `$start` (an async fn of
/// the including file returning a [`Subject`]), under the test attribute given (`#[tokio::test]`, or with a paused
/// clock for a store that keeps time with tokio's).
macro_rules! state_contract_tests {
    (#[$test:meta] $start:ident) => {
        mod state_store_contract {
            use super::state_contract as contract;

            #[$test]
            async fn values_read_back_with_etags_that_count_up() {
                let subject = super::$start().await;
                contract::values_read_back_with_etags_that_count_up(&*subject.store).await;
            }

            #[$test]
            async fn if_match_is_compare_and_set_on_the_etag() {
                let subject = super::$start().await;
                contract::if_match_is_compare_and_set_on_the_etag(&*subject.store).await;
            }

            #[$test]
            async fn if_absent_writes_only_a_new_key() {
                let subject = super::$start().await;
                contract::if_absent_writes_only_a_new_key(&*subject.store).await;
            }

            #[$test]
            async fn concurrent_compare_and_set_has_exactly_one_winner() {
                let subject = super::$start().await;
                contract::concurrent_compare_and_set_has_exactly_one_winner(
                    subject.store.clone(),
                    16,
                )
                .await;
            }

            #[$test]
            async fn delete_honours_etags() {
                let subject = super::$start().await;
                contract::delete_honours_etags(&*subject.store).await;
            }

            #[$test]
            async fn ttls_expire_values_and_a_write_without_one_keeps_the_value() {
                let subject = super::$start().await;
                contract::ttls_expire_values_and_a_write_without_one_keeps_the_value(
                    &*subject.store,
                )
                .await;
            }

            #[$test]
            async fn bulk_get_answers_in_the_order_asked_with_gaps() {
                let subject = super::$start().await;
                contract::bulk_get_answers_in_the_order_asked_with_gaps(&*subject.store).await;
            }
        }
    };
}
pub(crate) use state_contract_tests;

/// Checks the two stores that write Redis in Dapr's layout (`redis` directly, `dapr` through the
/// sidecar) share, read in that Redis.
pub mod dapr_layout {
    use std::time::Duration;

    use wsm::backends::{Concurrency, StateStore};

    async fn connection(redis_url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url)
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("the test connects to Redis")
    }

    /// A hash's fields, sorted.
    pub async fn hash(redis_url: &str, key: &str) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut connection(redis_url).await)
            .await
            .unwrap();
        fields.sort();
        fields
    }

    /// A key's TTL in seconds (-1: none, -2: no such key).
    pub async fn ttl(redis_url: &str, key: &str) -> i64 {
        redis::cmd("TTL")
            .arg(key)
            .query_async(&mut connection(redis_url).await)
            .await
            .unwrap()
    }

    pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// `rec` under the `websocketmanager||` prefix: a TTL is set, refreshed by a write with a new
    /// one, and removed by a write without one.
    pub async fn ttl_is_set_refreshed_and_removed(store: &dyn StateStore, redis_url: &str) {
        let key = "websocketmanager||rec";
        store
            .set(
                "rec",
                b"1",
                Concurrency::LastWrite,
                Some(Duration::from_secs(300)),
            )
            .await
            .unwrap();
        assert!((299..=300).contains(&ttl(redis_url, key).await));
        store
            .set(
                "rec",
                b"2",
                Concurrency::IfMatch("1"),
                Some(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert!((59..=60).contains(&ttl(redis_url, key).await));
        store
            .set("rec", b"3", Concurrency::LastWrite, None)
            .await
            .unwrap();
        assert_eq!(ttl(redis_url, key).await, -1);
    }
}
