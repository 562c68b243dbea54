//! The `dapr` backends against the test sidecar (a Dapr-API stand-in writing a real redis-server in
//! Dapr's layout): the state-store contract, every operation, and how HTTP answers map to
//! `BackendError`.

use std::time::{Duration, Instant};

use wsm::backends::dapr::{DaprConfig, DaprPublisher, DaprStateStore};
use wsm::backends::{BackendError, Concurrency, Publisher, StateStore};
use wsm_testkit::{stream_entries, DaprSidecar, RedisServer};

#[path = "support/state_contract.rs"]
mod state_contract;

use state_contract::dapr_layout::{self, pairs};

/// A fresh redis-server, a sidecar on it, and a store through the sidecar, for the contract.
async fn contract_store() -> state_contract::Subject {
    let fixture = Fixture::start().await;
    let store = fixture.store();
    state_contract::Subject::new(store, fixture)
}

state_contract::state_contract_tests!(
    #[tokio::test]
    contract_store
);

struct Fixture {
    redis: RedisServer,
    sidecar: DaprSidecar,
}

impl Fixture {
    async fn start() -> Self {
        let redis = RedisServer::start();
        let sidecar =
            DaprSidecar::start(&redis.url(), "websocketmanager", "statestore", "pubsub").await;
        Self { redis, sidecar }
    }

    fn config(&self) -> DaprConfig {
        DaprConfig {
            base_url: self.sidecar.url(),
            timeout: Duration::from_secs(5),
            ..DaprConfig::default()
        }
    }

    fn store(&self) -> DaprStateStore {
        DaprStateStore::new(&self.config()).expect("store")
    }

    fn publisher(&self) -> DaprPublisher {
        DaprPublisher::new(&self.config()).expect("publisher")
    }

    async fn hash(&self, key: &str) -> Vec<(String, String)> {
        dapr_layout::hash(&self.redis.url(), key).await
    }
}

fn frame_event(seq: u64) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"specversion":"1.0","id":"{seq}","source":"urn:wsm","type":"com.virtufin.websocketmanager.frame","#,
            r#""datacontenttype":"text/plain","time":"2026-11-23T10:00:00Z","data":"{{\"u\":{seq}}}","#,
            r#""websocketid":"c1","seq":{seq},"epoch":1}}"#
        ),
        seq = seq
    )
    .into_bytes()
}

#[tokio::test]
async fn values_land_in_daprs_hash_layout_and_read_back_with_etags() {
    let f = Fixture::start().await;
    let store = f.store();
    store
        .set(
            "k",
            br#"{"b":1, "a":"x<y", "f":0.1234567}"#,
            Concurrency::LastWrite,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        f.hash("websocketmanager||k").await,
        pairs(&[
            ("data", r#"{"a":"x<y","b":1,"f":0.123457}"#),
            ("version", "1")
        ])
    );
    let got = store.get("k").await.unwrap().expect("stored");
    assert_eq!(
        (got.value.as_slice(), got.etag.as_str()),
        (&br#"{"a":"x<y","b":1,"f":0.123457}"#[..], "1")
    );
    assert_eq!(store.get("missing").await.unwrap(), None);
    store.ping().await.unwrap();
}

/// A stale ETag (409 from the sidecar) is a `Conflict`: the contract checks that.
#[tokio::test]
async fn unparsable_etags_are_rejected_and_etag_writes_are_not_first_writes() {
    let f = Fixture::start().await;
    let store = f.store();
    store
        .set("k", b"1", Concurrency::LastWrite, None)
        .await
        .unwrap();
    store
        .set("k", b"2", Concurrency::IfMatch("1"), None)
        .await
        .unwrap();
    // 400 for an ETag Dapr cannot parse.
    match store.set("k", b"3", Concurrency::IfMatch("v2"), None).await {
        Err(BackendError::Rejected { reason, .. }) => assert!(reason.contains("400"), "{reason}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    // An ETag write does not mark the key first-write, so last-write still works.
    store
        .set("k", b"4", Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert_eq!(
        f.hash("websocketmanager||k").await,
        pairs(&[("data", "4"), ("version", "3")])
    );
}

#[tokio::test]
async fn if_absent_is_first_write_and_its_refusal_is_a_conflict() {
    let f = Fixture::start().await;
    let store = f.store();
    store
        .set("k", b"1", Concurrency::IfAbsent, None)
        .await
        .unwrap();
    assert_eq!(
        f.hash("websocketmanager||k").await,
        pairs(&[("data", "1"), ("first-write", "0"), ("version", "1")])
    );
    // daprd answers these with 500 and the Lua script's "failed to set key" (a second
    // `IfAbsent`, in the contract, and a write without an ETag).
    assert!(matches!(
        store.set("k", b"2", Concurrency::LastWrite, None).await,
        Err(BackendError::Conflict { .. })
    ));
}

#[tokio::test]
async fn ttl_is_set_refreshed_and_removed() {
    let f = Fixture::start().await;
    dapr_layout::ttl_is_set_refreshed_and_removed(&f.store(), &f.redis.url()).await;
}

/// The order and gaps of `get_bulk` are in the contract; this is how Dapr's bulk answer encodes.
#[tokio::test]
async fn bulk_get_reencodes_values_as_daprs_bulk_answer_does() {
    let f = Fixture::start().await;
    let store = f.store();
    store
        .set("a", br#"{"s":"<A>"}"#, Concurrency::LastWrite, None)
        .await
        .unwrap();
    store
        .set("b", b"\"B2\"", Concurrency::LastWrite, None)
        .await
        .unwrap();
    let keys: Vec<String> = ["b", "missing", "a"].map(String::from).to_vec();
    let got = store.get_bulk(&keys).await.unwrap();
    let got: Vec<Option<(String, String)>> = got
        .into_iter()
        .map(|v| v.map(|v| (String::from_utf8(v.value).unwrap(), v.etag)))
        .collect();
    // Dapr's bulk answer re-encodes data with Go's HTML escaping; the JSON is the same as `get`'s.
    assert_eq!(
        got,
        vec![
            Some(("\"B2\"".into(), "1".into())),
            None,
            Some((r#"{"s":"\u003cA\u003e"}"#.into(), "1".into())),
        ]
    );
    let single: serde_json::Value =
        serde_json::from_slice(&store.get("a").await.unwrap().unwrap().value).unwrap();
    let bulk: serde_json::Value = serde_json::from_str(&got[2].as_ref().unwrap().0).unwrap();
    assert_eq!(single, bulk);
}

#[tokio::test]
async fn events_are_published_in_order_as_cloudevents() {
    let f = Fixture::start().await;
    let publisher = f.publisher();
    let events: Vec<Vec<u8>> = (0..2000).map(frame_event).collect();
    for chunk in events.chunks(500) {
        publisher.publish("md.frames", chunk).await.unwrap();
    }
    let entries = stream_entries(&f.redis.url(), "md.frames").await;
    assert_eq!(entries.len(), 2000);
    for (n, entry) in entries.iter().enumerate() {
        let envelope: serde_json::Value =
            serde_json::from_slice(entry.field("data").unwrap()).unwrap();
        assert_eq!(envelope["seq"], n as u64);
        assert_eq!(envelope["topic"], "md.frames");
        assert_eq!(envelope["pubsubname"], "pubsub");
        assert_eq!(envelope["websocketid"], "c1", "extensions survive");
        assert!(envelope["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-")));
        assert_eq!(entry.field("metadata"), Some(&b"{}"[..]));
    }
    publisher.ping().await.unwrap();
}

#[tokio::test]
async fn refusals_are_rejected() {
    let f = Fixture::start().await;
    // Values must be JSON for Dapr's HTTP state API.
    match f
        .store()
        .set("k", b"\x00 not json", Concurrency::LastWrite, None)
        .await
    {
        Err(BackendError::Rejected { reason, .. }) => {
            assert!(reason.contains("not JSON"), "{reason}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // 400: unknown state store.
    let other_store = DaprStateStore::new(&DaprConfig {
        store_name: "nope".into(),
        ..f.config()
    })
    .unwrap();
    match other_store.get("k").await {
        Err(BackendError::Rejected { reason, .. }) => {
            assert!(
                reason.contains("400") && reason.contains("ERR_STATE_STORE_NOT_FOUND"),
                "{reason}"
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // 404: unknown pub/sub.
    let other_pubsub = DaprPublisher::new(&DaprConfig {
        pubsub_name: "nope".into(),
        ..f.config()
    })
    .unwrap();
    match other_pubsub.publish("t", &[frame_event(1)]).await {
        Err(BackendError::Rejected { reason, .. }) => {
            assert!(
                reason.contains("404") && reason.contains("topic t"),
                "{reason}"
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // 400: keys Dapr refuses.
    assert!(matches!(
        f.store()
            .set("a||b", b"1", Concurrency::LastWrite, None)
            .await,
        Err(BackendError::Rejected { .. })
    ));
    // Only plain HTTP to the sidecar.
    assert!(matches!(
        DaprStateStore::new(&DaprConfig {
            base_url: "https://127.0.0.1:3500".into(),
            ..DaprConfig::default()
        }),
        Err(BackendError::Rejected { .. })
    ));
}

#[tokio::test]
async fn server_errors_are_unavailable_with_status_and_body() {
    let f = Fixture::start().await;
    let store = f.store();
    let publisher = f.publisher();
    store
        .set("k", b"1", Concurrency::LastWrite, None)
        .await
        .unwrap();
    f.sidecar.set_failing(true);
    for result in [
        store.set("k", b"2", Concurrency::LastWrite, None).await,
        store.get("k").await.map(|_| ()),
        store.delete("k", Concurrency::LastWrite).await,
        store.get_bulk(&["k".to_owned()]).await.map(|_| ()),
        publisher.publish("t", &[frame_event(1)]).await,
        store.ping().await,
        publisher.ping().await,
    ] {
        match result {
            Err(BackendError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "dapr");
                assert!(
                    reason.contains("500") && reason.contains("ERR_INJECTED"),
                    "{reason}"
                );
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    f.sidecar.set_failing(false);
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"1");
}

#[tokio::test]
async fn timeouts_and_unreachable_sidecars_are_unavailable() {
    let f = Fixture::start().await;
    let store = DaprStateStore::new(&DaprConfig {
        timeout: Duration::from_millis(300),
        ..f.config()
    })
    .unwrap();
    f.sidecar.set_delay(Duration::from_secs(2));
    let started = Instant::now();
    match store.get("k").await {
        Err(BackendError::Unavailable { reason, .. }) => {
            assert!(reason.contains("timed out"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    f.sidecar.set_delay(Duration::ZERO);

    let port = f.sidecar.port();
    drop(f);
    let gone = DaprPublisher::new(&DaprConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        timeout: Duration::from_secs(2),
        ..DaprConfig::default()
    })
    .unwrap();
    match gone.publish("t", &[frame_event(1)]).await {
        Err(BackendError::Unavailable { reason, .. }) => {
            assert!(reason.contains("topic t"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
