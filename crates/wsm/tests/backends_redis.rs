//! The `redis` backends against a real redis-server: the state-store contract, Dapr's hash
//! layout, ETag and first-write rules, TTLs, bulk reads, and ordered, lossless batched publishing
//! to streams.

use std::time::{Duration, Instant};

use wsm::backends::redis::{RedisConfig, RedisPublisher, RedisStateStore};
use wsm::backends::{BackendError, Concurrency, Publisher, StateStore};
use wsm_testkit::{stream_entries, KeyValue, RedisServer, RedisSnapshot};

#[path = "support/state_contract.rs"]
mod state_contract;

use state_contract::dapr_layout::{self, pairs};

/// A fresh redis-server and a store on it, for the contract.
async fn contract_store() -> state_contract::Subject {
    let server = RedisServer::start();
    let store = store(&server).await;
    state_contract::Subject::new(store, server)
}

state_contract::state_contract_tests!(
    #[tokio::test]
    contract_store
);

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        url: server.url(),
        ..RedisConfig::default()
    }
}

async fn store(server: &RedisServer) -> RedisStateStore {
    RedisStateStore::connect(&config(server))
        .await
        .expect("connect")
}

async fn redis_conn(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn ttl(server: &RedisServer, key: &str) -> i64 {
    dapr_layout::ttl(&server.url(), key).await
}

async fn hash(server: &RedisServer, key: &str) -> Vec<(String, String)> {
    dapr_layout::hash(&server.url(), key).await
}

/// A CloudEvent as WSM builds one for a text frame.
fn frame_event(seq: u64) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"specversion":"1.0","id":"{seq}","source":"urn:wsm","type":"com.virtufin.websocketmanager.frame","#,
            r#""datacontenttype":"text/plain","time":"2026-11-23T10:00:00Z","#,
            r#""data":"{{\"e\":\"depthUpdate\",\"u\":{seq},\"b\":[[\"0.0024\",\"10\"]]}}","#,
            r#""websocketid":"c1","websocketurl":"wss://example/ws","seq":{seq},"epoch":1}}"#
        ),
        seq = seq
    )
    .into_bytes()
}

#[tokio::test]
async fn values_are_kept_in_daprs_hash_layout_under_the_app_prefix() {
    let server = RedisServer::start();
    let store = store(&server).await;
    store
        .set("k", br#"{"b":1, "a":"x<y"}"#, Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert_eq!(
        hash(&server, "websocketmanager||k").await,
        pairs(&[("data", r#"{"a":"x<y","b":1}"#), ("version", "1")])
    );
    let got = store.get("k").await.unwrap().expect("stored");
    assert_eq!(
        (got.value.as_slice(), got.etag.as_str()),
        (&br#"{"a":"x<y","b":1}"#[..], "1")
    );
    assert_eq!(store.get("missing").await.unwrap(), None);

    let bare = RedisStateStore::connect(&RedisConfig {
        key_prefix: None,
        ..config(&server)
    })
    .await
    .unwrap();
    bare.set("plain", b"1", Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert_eq!(
        hash(&server, "plain").await,
        pairs(&[("data", "1"), ("version", "1")])
    );
}

#[tokio::test]
async fn json_values_are_stored_as_daprd_stores_them_and_other_bytes_verbatim() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let value =
        br#"{ "tags": {"z":"1","a":"<&>"}, "ratio": 0.1234567, "n": 1e2, "s": "\u00e9\/" }"#;
    store
        .set("j", value, Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert_eq!(
        store.get("j").await.unwrap().unwrap().value,
        "{\"n\":100,\"ratio\":0.123457,\"s\":\"é/\",\"tags\":{\"a\":\"<&>\",\"z\":\"1\"}}"
            .as_bytes()
    );
    store
        .set("b", b"\x00\xffnot json", Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert_eq!(
        store.get("b").await.unwrap().unwrap().value,
        b"\x00\xffnot json"
    );
}

/// Compare-and-set itself is in the contract; these are Dapr's rules around it.
#[tokio::test]
async fn if_match_refuses_unparsable_etags_and_writes_absent_keys() {
    let server = RedisServer::start();
    let store = store(&server).await;
    store
        .set("k", b"1", Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert!(matches!(
        store.set("k", b"3", Concurrency::IfMatch("v2"), None).await,
        Err(BackendError::Rejected { .. })
    ));
    // An ETag on a key that does not exist: Dapr writes (no stored version to compare).
    store
        .set("new", b"1", Concurrency::IfMatch("7"), None)
        .await
        .unwrap();
    assert_eq!(store.get("new").await.unwrap().unwrap().etag, "1");
}

#[tokio::test]
async fn if_absent_is_daprs_first_write() {
    let server = RedisServer::start();
    let store = store(&server).await;
    store
        .set("k", b"1", Concurrency::IfAbsent, None)
        .await
        .unwrap();
    assert_eq!(
        hash(&server, "websocketmanager||k").await,
        pairs(&[("data", "1"), ("first-write", "0"), ("version", "1")])
    );
    // A first-written key refuses writes without an ETag, as Dapr's script does (the contract
    // has the refused `IfAbsent` and the `IfMatch` that succeeds).
    assert!(matches!(
        store.set("k", b"2", Concurrency::LastWrite, None).await,
        Err(BackendError::Conflict { .. })
    ));
    // Dapr's first-write only guards keys that were first-written: a last-written key is taken.
    store
        .set("lw", b"1", Concurrency::LastWrite, None)
        .await
        .unwrap();
    store
        .set("lw", b"2", Concurrency::IfAbsent, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn ttl_is_set_refreshed_and_removed() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let key = "websocketmanager||rec";
    dapr_layout::ttl_is_set_refreshed_and_removed(&store, &server.url()).await;
    // Sub-second TTLs round up to a second rather than meaning "no expiry".
    store
        .set(
            "rec",
            b"3",
            Concurrency::LastWrite,
            Some(Duration::from_millis(10)),
        )
        .await
        .unwrap();
    assert_eq!(ttl(&server, key).await, 1);
    store
        .set("rec", b"4", Concurrency::LastWrite, None)
        .await
        .unwrap();
    assert_eq!(ttl(&server, key).await, -1);
    // A refused write leaves the TTL alone.
    store
        .set(
            "rec",
            b"5",
            Concurrency::LastWrite,
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let _ = store
        .set(
            "rec",
            b"6",
            Concurrency::IfMatch("1"),
            Some(Duration::from_secs(900)),
        )
        .await;
    assert_eq!(ttl(&server, key).await, 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.get("rec").await.unwrap(), None);
}

/// The order and gaps of `get_bulk` are in the contract; this is a key from before Dapr's hashes.
#[tokio::test]
async fn bulk_get_reads_plain_string_values_without_an_etag() {
    let server = RedisServer::start();
    let store = store(&server).await;
    store
        .set("b", b"\"B2\"", Concurrency::LastWrite, None)
        .await
        .unwrap();
    // A plain string (written before Dapr used hashes) is read without an ETag, as Dapr does.
    let _: () = redis::cmd("SET")
        .arg("websocketmanager||legacy")
        .arg("old")
        .query_async(&mut redis_conn(&server).await)
        .await
        .unwrap();
    let keys: Vec<String> = ["b", "missing", "legacy"].map(String::from).to_vec();
    let got = store.get_bulk(&keys).await.unwrap();
    let got: Vec<Option<(String, String)>> = got
        .into_iter()
        .map(|v| v.map(|v| (String::from_utf8(v.value).unwrap(), v.etag)))
        .collect();
    assert_eq!(
        got,
        vec![
            Some(("\"B2\"".into(), "1".into())),
            None,
            Some(("old".into(), String::new())),
        ]
    );
}

#[tokio::test]
async fn keys_dapr_refuses_are_rejected() {
    let server = RedisServer::start();
    let store = store(&server).await;
    for key in ["", "a||b"] {
        assert!(matches!(
            store.set(key, b"1", Concurrency::LastWrite, None).await,
            Err(BackendError::Rejected { .. })
        ));
        assert!(matches!(
            store.get(key).await,
            Err(BackendError::Rejected { .. })
        ));
    }
    store.ping().await.unwrap();
}

#[tokio::test]
async fn published_entries_are_the_envelopes_daprd_writes() {
    let server = RedisServer::start();
    let publisher = RedisPublisher::connect(&config(&server)).await.unwrap();
    let binary = br#"{"specversion":"1.0","id":"b1","source":"urn:wsm","type":"t","time":"2026-11-23T10:00:00Z",
        "datacontenttype":"application/octet-stream","data_base64":"AAEC","seq":2}"#;
    publisher
        .publish("md.frames", &[frame_event(1), binary.to_vec()])
        .await
        .unwrap();
    let entries = stream_entries(&server.url(), "md.frames").await;
    assert_eq!(entries.len(), 2);
    let names: Vec<&str> = entries[0].fields.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, ["data", "metadata"]);
    assert_eq!(entries[0].field("metadata"), Some(&b"{}"[..]));
    assert_eq!(
        String::from_utf8(entries[0].field("data").unwrap().to_vec()).unwrap(),
        concat!(
            r#"{"data":"{\"e\":\"depthUpdate\",\"u\":1,\"b\":[[\"0.0024\",\"10\"]]}","#,
            r#""datacontenttype":"text/plain","epoch":1,"id":"1","pubsubname":"pubsub","seq":1,"#,
            r#""source":"urn:wsm","specversion":"1.0","time":"2026-11-23T10:00:00Z","topic":"md.frames","#,
            r#""traceid":"","traceparent":"","tracestate":"","#,
            r#""type":"com.virtufin.websocketmanager.frame","websocketid":"c1","websocketurl":"wss://example/ws"}"#
        )
    );
    assert_eq!(
        String::from_utf8(entries[1].field("data").unwrap().to_vec()).unwrap(),
        concat!(
            r#"{"data_base64":"AAEC","datacontenttype":"application/octet-stream","id":"b1","#,
            r#""pubsubname":"pubsub","seq":2,"source":"urn:wsm","specversion":"1.0","#,
            r#""time":"2026-11-23T10:00:00Z","topic":"md.frames","traceid":"","traceparent":"","#,
            r#""tracestate":"","type":"t"}"#
        )
    );
}

#[tokio::test]
async fn streams_are_trimmed_like_daprs_max_len_approx() {
    // `MAXLEN ~` trims whole macro nodes only; nodes of exactly 10 entries (no byte limit to end
    // one sooner) make the bound a tight one.
    let server = RedisServer::start_with(&[
        "--stream-node-max-entries",
        "10",
        "--stream-node-max-bytes",
        "0",
    ]);
    let publisher = RedisPublisher::connect(&RedisConfig {
        max_len_approx: Some(10),
        ..config(&server)
    })
    .await
    .unwrap();
    let events: Vec<Vec<u8>> = (0..1000).map(frame_event).collect();
    publisher.publish("trimmed", &events).await.unwrap();
    let len: usize = redis::cmd("XLEN")
        .arg("trimmed")
        .query_async(&mut redis_conn(&server).await)
        .await
        .unwrap();
    // At least MAXLEN entries stay, and less than one more node (untrimmed, all 1000 would).
    assert!(
        (10..20).contains(&len),
        "MAXLEN ~ 10 with 10-entry nodes keeps 10 to 19 entries, kept {len}"
    );
}

#[tokio::test]
async fn invalid_events_are_rejected_naming_the_topic() {
    let server = RedisServer::start();
    let publisher = RedisPublisher::connect(&config(&server)).await.unwrap();
    match publisher
        .publish("t1", &[frame_event(1), b"not json".to_vec()])
        .await
    {
        Err(BackendError::Rejected { reason, .. }) => {
            assert!(reason.contains("event 1 of 2 for topic t1"), "{reason}");
            assert!(
                reason.contains("the 1 events before it were published"),
                "{reason}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(stream_entries(&server.url(), "t1").await.len(), 1);
    // Redis refusing an XADD (the key is not a stream) is reported, and the connection stays usable.
    let _: () = redis::cmd("SET")
        .arg("not-a-stream")
        .arg("x")
        .query_async(&mut redis_conn(&server).await)
        .await
        .unwrap();
    match publisher.publish("not-a-stream", &[frame_event(1)]).await {
        Err(BackendError::Rejected { reason, .. }) => {
            assert!(reason.contains("WRONGTYPE"), "{reason}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    publisher.publish("t1", &[frame_event(2)]).await.unwrap();
    assert_eq!(stream_entries(&server.url(), "t1").await.len(), 2);
    publisher.publish("t1", &[]).await.unwrap();
    publisher.ping().await.unwrap();
}

/// 100 000 events in batches of 1 000 come back in order, none lost. Prints the rate; in release
/// mode (`cargo test --release -p wsm --test backends_redis -- --nocapture batches`) it measures
/// the publisher. `WSM_PUBLISH_EVENTS` and `WSM_PUBLISH_BATCH` change the sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arrive_in_order_with_none_lost() {
    let total: u64 = std::env::var("WSM_PUBLISH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let batch: usize = std::env::var("WSM_PUBLISH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let server = RedisServer::start();
    let publisher = RedisPublisher::connect(&config(&server)).await.unwrap();
    let events: Vec<Vec<u8>> = (0..total).map(frame_event).collect();
    let bytes: usize = events.iter().map(Vec::len).sum();

    let started = Instant::now();
    for chunk in events.chunks(batch) {
        publisher.publish("md.bulk", chunk).await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "published {total} events ({} bytes each on average) in batches of {batch}: {:.0} events/s ({:?})",
        bytes / events.len(),
        total as f64 / elapsed.as_secs_f64(),
        elapsed
    );

    let entries = stream_entries(&server.url(), "md.bulk").await;
    assert_eq!(entries.len() as u64, total);
    for (n, entry) in entries.iter().enumerate() {
        let data = entry.field("data").expect("data field");
        let envelope: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(envelope["seq"], n as u64, "entry {n} out of order");
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_until_it_returns() {
    let mut server = RedisServer::start();
    let store = store(&server).await;
    let publisher = RedisPublisher::connect(&config(&server)).await.unwrap();
    store
        .set("k", b"1", Concurrency::LastWrite, None)
        .await
        .unwrap();

    server.stop();
    assert!(matches!(
        store.get("k").await,
        Err(BackendError::Unavailable { .. })
    ));
    match store.set("k", b"2", Concurrency::LastWrite, None).await {
        Err(BackendError::Unavailable { reason, .. }) => {
            assert!(reason.contains("websocketmanager||k"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match publisher.publish("t", &[frame_event(1)]).await {
        Err(BackendError::Unavailable { reason, .. }) => {
            assert!(reason.contains("stream t"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(store.ping().await.is_err());

    server.restart();
    // The connection comes back by itself (the data did not: the server keeps nothing on disk).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.set("k", b"3", Concurrency::LastWrite, None).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("store did not reconnect: {e}"),
        }
    }
    loop {
        match publisher.publish("t", &[frame_event(1)]).await {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("publisher did not reconnect: {e}"),
        }
    }
    let snapshot = RedisSnapshot::take(&server.url()).await;
    assert!(matches!(snapshot.keys["t"].value, KeyValue::Stream(ref e) if e.len() == 1));
}

#[tokio::test]
async fn the_database_in_the_url_is_used_for_state_and_streams() {
    let server = RedisServer::start();
    let db1 = RedisConfig {
        url: format!("{}/1", server.url()),
        ..RedisConfig::default()
    };
    let store = RedisStateStore::connect(&db1).await.unwrap();
    let publisher = RedisPublisher::connect(&db1).await.unwrap();
    store
        .set("k", b"1", Concurrency::LastWrite, None)
        .await
        .unwrap();
    publisher.publish("t", &[frame_event(1)]).await.unwrap();
    // Nothing in database 0.
    assert!(RedisSnapshot::take(&server.url()).await.keys.is_empty());
    let in_db1 = RedisSnapshot::take(&db1.url).await;
    assert_eq!(
        in_db1.keys.keys().collect::<Vec<_>>(),
        ["t", "websocketmanager||k"]
    );
    assert!(matches!(
        RedisPublisher::connect(&RedisConfig {
            url: "redis+unix:///tmp/nope.sock".into(),
            ..RedisConfig::default()
        })
        .await,
        Err(BackendError::Rejected { .. })
    ));
}
