//! The service's operations and errors on the embedded (memory) backends, against the real local
//! feed server over loopback.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use feed_server::{FeedConfig, FeedHandle, FeedServer, ReceivedMessage};
use serde_json::Value;
use wsm::backends::memory::{MemoryBus, MemoryStateStore, Subscription};
use wsm::backends::{BackendError, Concurrency, Publisher, StateStore};
use wsm::connection::BackoffPolicy;
use wsm::model::{OutboundMessage, Status};
use wsm::security::NetworkPolicy;
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};

/// The gRPC code name an error answers with (the API's one mapping).
fn code(err: &wsm::ServiceError) -> &'static str {
    wsm::api::status::code_name(wsm::api::status::grpc_code(err))
}

const HANG: Duration = Duration::from_secs(20);

struct Env {
    feed: FeedHandle,
    state: MemoryStateStore,
    bus: MemoryBus,
    service: WebSocketService,
}

fn config() -> ServiceConfig {
    let mut config = ServiceConfig {
        instance_id: "wsm-test-1".into(),
        ..ServiceConfig::default()
    };
    // The feed server listens on loopback.
    config.connection.network = NetworkPolicy::allow_private();
    config.connection.backoff = BackoffPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        max_attempts: 20,
        jitter: 0.1,
    };
    config
}

async fn env_with(
    rate: u32,
    config: ServiceConfig,
    bus: Arc<dyn Publisher>,
    mem_bus: MemoryBus,
) -> Env {
    let feed = FeedServer::start(FeedConfig {
        rate,
        ..FeedConfig::default()
    })
    .await
    .expect("feed starts");
    let state = MemoryStateStore::new();
    let service = WebSocketService::start(config, Arc::new(state.clone()), bus)
        .await
        .expect("service starts");
    Env {
        feed,
        state,
        bus: mem_bus,
        service,
    }
}

async fn env(rate: u32) -> Env {
    let bus = MemoryBus::new();
    env_with(rate, config(), Arc::new(bus.clone()), bus).await
}

fn connect_req(url: String) -> ConnectRequest {
    ConnectRequest {
        url,
        ..ConnectRequest::default()
    }
}

async fn next_event(rx: &mut Subscription) -> Value {
    let bytes = tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("an event within the hang bound")
        .expect("no lag");
    serde_json::from_slice(&bytes).expect("events are JSON")
}

#[tokio::test]
async fn connect_creates_an_owned_persisted_record_and_list_shows_it() {
    let e = env(10).await;
    let mut tags = BTreeMap::new();
    tags.insert("venue".to_owned(), "binance".to_owned());
    let record = e
        .service
        .connect(ConnectRequest {
            url: e.feed.url("/ws"),
            auto_reconnect: true,
            tags: tags.clone(),
            headers: [("Authorization".to_owned(), "Bearer secret".to_owned())].into(),
            ..ConnectRequest::default()
        })
        .await
        .expect("connects");
    assert_eq!(record.status, Status::Connected);
    assert_eq!(record.instance_id, "wsm-test-1");
    assert_eq!(record.epoch, 1);
    assert_eq!(uuid::Uuid::parse_str(&record.id).map(|_| ()), Ok(()));

    let stored = e
        .state
        .get(&format!("websocketmanager.connection.{}", record.id))
        .await
        .unwrap()
        .expect("record persisted");
    let json: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(json["autoReconnect"], true);
    assert_eq!(json["instanceId"], "wsm-test-1");
    assert_eq!(json["status"], "connected");
    let index = e
        .state
        .get("websocketmanager.connection.index")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&index.value).unwrap(),
        std::slice::from_ref(&record.id)
    );
    let by_instance = e
        .state
        .get("websocketmanager.instance.index.wsm-test-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&by_instance.value).unwrap(),
        std::slice::from_ref(&record.id)
    );

    let all = e.service.list(&[]).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].tags, tags);
    let filtered = e
        .service
        .list(&[("venue".into(), "kraken".into())])
        .await
        .unwrap();
    assert!(filtered.is_empty());
    assert_eq!(
        e.service
            .list(&[("venue".into(), "binance".into())])
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn invalid_urls_are_invalid_arguments_and_failed_handshakes_leave_no_record() {
    let e = env(10).await;
    for (url, message) in [
        ("", "URL is required"),
        (
            "http://127.0.0.1:1/",
            "URL must use ws:// or wss://, got http://127.0.0.1:1/",
        ),
    ] {
        let err = e
            .service
            .connect(connect_req(url.into()))
            .await
            .unwrap_err();
        assert_eq!(
            (code(&err), err.to_string().as_str()),
            ("INVALID_ARGUMENT", message)
        );
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = e
        .service
        .connect(connect_req(format!("ws://{closed}/ws")))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "UNAVAILABLE");
    assert!(err.to_string().contains("handshake with"), "{err}");
    assert!(
        e.service.list(&[]).await.unwrap().is_empty(),
        "no record left"
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found_for_every_connection_operation() {
    let e = env(10).await;
    let s = &e.service;
    let id = "00000000-0000-0000-0000-000000000000";
    let errors = vec![
        s.disconnect(id).await.unwrap_err(),
        s.start_publish(id, "t").await.unwrap_err(),
        s.stop_publish(id).await.unwrap_err(),
        s.send(id, Bytes::from_static(b"{}"), "", 0)
            .await
            .unwrap_err(),
        s.send_raw(id, Bytes::from_static(b"{}"), "", false)
            .await
            .unwrap_err(),
        s.set_tag(id, "k", "v").await.unwrap_err(),
        s.get_tag(id, "k").await.unwrap_err(),
        s.set_tags(id, BTreeMap::new()).await.unwrap_err(),
        s.get_tags(id).await.unwrap_err(),
    ];
    for err in errors {
        assert_eq!(
            (code(&err), err.to_string()),
            ("NOT_FOUND", "Connection not found".into())
        );
    }
}

#[tokio::test]
async fn publishing_sends_cloudevents_with_contiguous_seq_until_stopped() {
    let e = env(200).await;
    let record = e
        .service
        .connect(connect_req(e.feed.url("/ws")))
        .await
        .unwrap();
    let mut rx = e.bus.subscribe("market.depth");
    let err = e.service.start_publish(&record.id, " ").await.unwrap_err();
    assert_eq!(
        (code(&err), err.to_string()),
        ("INVALID_ARGUMENT", "Topic is required".into())
    );
    e.service
        .start_publish(&record.id, "market.depth")
        .await
        .unwrap();
    for expected in 1..=20u64 {
        let event = next_event(&mut rx).await;
        assert_eq!(event["seq"], expected);
        assert_eq!(event["epoch"], 1);
        assert_eq!(event["websocketId"], record.id.as_str());
        assert_eq!(event["websocketUrl"], record.url.as_str());
        assert_eq!(event["contentType"], "text/plain");
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["type"], "com.dapr.event.sent");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], format!("{}:1:{expected}", record.id));
        let data: Value =
            serde_json::from_str(event["data"].as_str().expect("data is the frame text"))
                .expect("frame text is JSON");
        assert_eq!(data["e"], "depthUpdate");
        assert!(event["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
    }
    let listed = e.service.list(&[]).await.unwrap();
    assert_eq!(listed[0].topic.as_deref(), Some("market.depth"));

    e.service.stop_publish(&record.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    while rx.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "nothing published after StopPublish"
    );
    assert_eq!(e.service.list(&[]).await.unwrap()[0].topic, None);
}

#[tokio::test]
async fn binary_frames_are_published_as_data_base64() {
    let e = env(10).await;
    let record = e
        .service
        .connect(connect_req(e.feed.url("/ws?streams=0")))
        .await
        .unwrap();
    let mut rx = e.bus.subscribe("bin");
    e.service.start_publish(&record.id, "bin").await.unwrap();
    // An uncorrelated binary message of >= 16 bytes is echoed by the feed; nothing is pending, so the
    // echo is an ordinary frame and gets published.
    e.service
        .send_raw(
            &record.id,
            Bytes::from_static(&[7u8; 20]),
            "application/octet-stream",
            false,
        )
        .await
        .unwrap();
    let event = next_event(&mut rx).await;
    assert_eq!(event["contentType"], "application/octet-stream");
    assert_eq!(event["datacontenttype"], "application/octet-stream");
    assert_eq!(event["data_base64"], "BwcHBwcHBwcHBwcHBwcHBwcHBwc=");
    assert!(event.get("data").is_none());
}

#[tokio::test]
async fn send_returns_the_correlated_response_and_times_out_as_deadline_exceeded() {
    let e = env(10).await;
    let record = e
        .service
        .connect(connect_req(e.feed.url("/ws")))
        .await
        .unwrap();
    let response = e
        .service
        .send(
            &record.id,
            Bytes::from_static(br#"{"q":1}"#),
            "application/json",
            5000,
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(v["payload"], serde_json::json!({"q":1}));
    let err = e
        .service
        .send(
            &record.id,
            Bytes::from_static(b"\"no-reply\""),
            "application/json",
            200,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (code(&err), err.to_string()),
        ("DEADLINE_EXCEEDED", "Request timeout".into())
    );
    let err = e
        .service
        .send(&record.id, Bytes::from_static(b"{}"), "", -1)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
}

#[tokio::test]
async fn send_raw_with_replay_is_persisted_and_replayed_after_a_reconnect() {
    let e = env(20).await;
    let record = e
        .service
        .connect(ConnectRequest {
            url: e.feed.url("/ws"),
            auto_reconnect: true,
            on_connect: vec![OutboundMessage {
                payload: Bytes::from_static(br#"{"hello":1}"#),
                content_type: "application/json".into(),
            }],
            ..ConnectRequest::default()
        })
        .await
        .unwrap();
    let subscribe = br#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":7}"#;
    e.service
        .send_raw(
            &record.id,
            Bytes::from_static(subscribe),
            "application/json",
            true,
        )
        .await
        .unwrap();
    let stored = e.service.store().get(&record.id).await.unwrap().unwrap();
    assert_eq!(stored.replay.len(), 1);

    let mut rx = e.bus.subscribe("t");
    e.service.start_publish(&record.id, "t").await.unwrap();
    assert_eq!(next_event(&mut rx).await["epoch"], 1);
    e.feed.drop_all().await;
    let after = loop {
        let event = next_event(&mut rx).await;
        if event["epoch"] == 2 {
            break event;
        }
    };
    assert!(after["seq"].as_u64().unwrap() > 1);
    let replayed: Vec<String> = e
        .feed
        .received_on(2)
        .into_iter()
        .filter_map(|m| match m {
            ReceivedMessage::Text(t) => Some(t),
            ReceivedMessage::Binary(_) => None,
        })
        .collect();
    assert_eq!(
        replayed[..2],
        [
            r#"{"hello":1}"#.to_owned(),
            String::from_utf8_lossy(subscribe).into_owned()
        ]
    );
    // The persisted record follows: epoch 2, connected again.
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let r = e
            .service
            .store()
            .repository()
            .load(&record.id)
            .await
            .unwrap()
            .unwrap()
            .0;
        if r.epoch == 2 && r.status == Status::Connected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "record not updated: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn lifecycle_events_are_published_in_order() {
    let bus = MemoryBus::new();
    let mut rx = bus.subscribe("websocketmanager.lifecycle");
    let e = env_with(10, config(), Arc::new(bus.clone()), bus).await;
    let record = e
        .service
        .connect(ConnectRequest {
            url: e.feed.url("/ws"),
            auto_reconnect: true,
            ..ConnectRequest::default()
        })
        .await
        .unwrap();
    e.feed.drop_all().await;
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let event = next_event(&mut rx).await;
        assert_eq!(event["data"]["connection_id"], record.id.as_str());
        assert_eq!(event["data"]["instance_id"], "wsm-test-1");
        assert_eq!(event["data"]["url"], record.url.as_str());
        kinds.push(
            event["type"]
                .as_str()
                .unwrap()
                .trim_start_matches("com.virtufin.websocketmanager.lifecycle.")
                .to_owned(),
        );
    }
    assert_eq!(
        kinds,
        ["connecting", "connected", "reconnecting", "connected"]
    );
    e.service.disconnect(&record.id).await.unwrap();
    let last = next_event(&mut rx).await;
    assert_eq!(
        last["type"],
        "com.virtufin.websocketmanager.lifecycle.disconnected"
    );
}

/// A record that vanishes from the shared store while its owner lives (a store restarted without
/// persistence, a clear, an expiry) ends the connection, and its consumers hear so: no other
/// instance will report it.
#[tokio::test]
async fn a_connection_whose_record_vanished_ends_with_a_disconnected_event() {
    let bus = MemoryBus::new();
    let mut rx = bus.subscribe("websocketmanager.lifecycle");
    let e = env_with(10, config(), Arc::new(bus.clone()), bus).await;
    let record = e
        .service
        .connect(ConnectRequest {
            url: e.feed.url("/ws"),
            auto_reconnect: true,
            ..ConnectRequest::default()
        })
        .await
        .unwrap();
    for _ in 0..2 {
        next_event(&mut rx).await; // connecting, connected
    }
    e.state
        .delete(
            &wsm::store::keys::record_key(&record.id),
            Concurrency::LastWrite,
        )
        .await
        .unwrap();
    assert_eq!(e.service.verify_ownership().await.unwrap(), 1);
    let event = next_event(&mut rx).await;
    assert_eq!(
        event["type"], "com.virtufin.websocketmanager.lifecycle.disconnected",
        "{event}"
    );
    assert_eq!(event["data"]["connection_id"], record.id.as_str());
    assert_eq!(event["data"]["url"], record.url.as_str());
    assert!(
        event["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("record is gone from the shared store")),
        "{event}"
    );
    assert!(
        e.feed.wait_for_connections(0, HANG).await,
        "the socket is closed"
    );
    // Nothing else follows: the connection is over, not reconnecting.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "no lifecycle event after the disconnect"
    );
}

#[tokio::test]
async fn tags_can_be_set_and_read_within_the_limits() {
    let e = env(10).await;
    let id = e
        .service
        .connect(connect_req(e.feed.url("/ws")))
        .await
        .unwrap()
        .id;
    e.service.set_tag(&id, "desk", "fx").await.unwrap();
    assert_eq!(e.service.get_tag(&id, "desk").await.unwrap(), "fx");
    assert_eq!(e.service.get_tag(&id, "absent").await.unwrap(), "");
    let tags: BTreeMap<String, String> =
        [("a".into(), "1".into()), ("b".into(), "2".into())].into();
    e.service.set_tags(&id, tags.clone()).await.unwrap();
    assert_eq!(e.service.get_tags(&id).await.unwrap(), tags);

    let too_many: BTreeMap<String, String> =
        (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
    let err = e.service.set_tags(&id, too_many).await.unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
    assert_eq!(err.to_string(), "at most 50 tags per connection, got 51");
    let err = e
        .service
        .set_tag(&id, &"k".repeat(129), "v")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
    let err = e
        .service
        .set_tag(&id, "k", &"v".repeat(1025))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_ARGUMENT");
    assert_eq!(
        e.service.get_tags(&id).await.unwrap(),
        tags,
        "refused changes change nothing"
    );
}

#[tokio::test]
async fn disconnect_closes_the_socket_and_removes_the_record() {
    let e = env(10).await;
    let id = e
        .service
        .connect(connect_req(e.feed.url("/ws")))
        .await
        .unwrap()
        .id;
    assert!(e.feed.wait_for_connections(1, HANG).await);
    e.service.disconnect(&id).await.unwrap();
    assert!(e.feed.wait_for_connections(0, HANG).await, "socket closed");
    assert!(e.service.list(&[]).await.unwrap().is_empty());
    assert_eq!(
        e.state
            .get(&format!("websocketmanager.connection.{id}"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        code(&e.service.disconnect(&id).await.unwrap_err()),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn a_dropped_connection_without_auto_reconnect_is_not_connected() {
    let e = env(10).await;
    let id = e
        .service
        .connect(connect_req(e.feed.url("/ws")))
        .await
        .unwrap()
        .id;
    e.feed.drop_all().await;
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        match e
            .service
            .send_raw(&id, Bytes::from_static(b"{}"), "", false)
            .await
        {
            Err(err) => {
                assert_eq!(
                    (code(&err), err.to_string()),
                    ("FAILED_PRECONDITION", "WebSocket is not connected".into())
                );
                break;
            }
            Ok(()) => assert!(tokio::time::Instant::now() < deadline),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = e.service.start_publish(&id, "t").await.unwrap_err();
    assert_eq!(code(&err), "FAILED_PRECONDITION");
}

#[tokio::test]
async fn another_instances_connection_is_refused_with_its_owner_named() {
    let e = env(10).await;
    let foreign = serde_json::json!({
        "id": "c-foreign", "url": "ws://example.invalid/", "status": "connected",
        "autoReconnect": false, "createdAt": "2026-01-01T00:00:00Z", "instanceId": "wsm-other"
    });
    e.state
        .set(
            "websocketmanager.connection.c-foreign",
            foreign.to_string().as_bytes(),
            Concurrency::LastWrite,
            None,
        )
        .await
        .unwrap();
    let err = e.service.disconnect("c-foreign").await.unwrap_err();
    assert_eq!(code(&err), "FAILED_PRECONDITION");
    assert_eq!(
        err.to_string(),
        "Connection owned by different instance: wsm-other"
    );
    // Reads are not owner-only.
    assert_eq!(
        e.service.get_tags("c-foreign").await.unwrap(),
        BTreeMap::new()
    );
}

#[tokio::test]
async fn clear_all_on_start_removes_every_record() {
    let state = MemoryStateStore::new();
    let bus = MemoryBus::new();
    let first = WebSocketService::start(config(), Arc::new(state.clone()), Arc::new(bus.clone()))
        .await
        .unwrap();
    let feed = FeedServer::start(FeedConfig::default()).await.unwrap();
    first.connect(connect_req(feed.url("/ws"))).await.unwrap();
    first.connect(connect_req(feed.url("/ws"))).await.unwrap();
    first.shutdown(Duration::from_secs(5)).await;

    let keep = WebSocketService::start(config(), Arc::new(state.clone()), Arc::new(bus.clone()))
        .await
        .unwrap();
    assert_eq!(
        keep.list(&[]).await.unwrap().len(),
        2,
        "records survive a restart by default"
    );

    let cleared = WebSocketService::start(
        ServiceConfig {
            clear_all_on_start: true,
            ..config()
        },
        Arc::new(state.clone()),
        Arc::new(bus),
    )
    .await
    .unwrap();
    assert!(cleared.list(&[]).await.unwrap().is_empty());
}

/// A bus that refuses frames (Unavailable) until opened, then records each frame's `seq`.
#[derive(Clone)]
struct GatedBus {
    open: Arc<AtomicBool>,
    inner: MemoryBus,
    seqs: Arc<std::sync::Mutex<Vec<u64>>>,
}

#[async_trait]
impl Publisher for GatedBus {
    async fn publish(&self, topic: &str, events: &[Vec<u8>]) -> Result<(), BackendError> {
        if topic != "websocketmanager.lifecycle" && !self.open.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable {
                backend: "test bus",
                reason: "stalled".into(),
            });
        }
        if topic == "t" {
            let mut seqs = self.seqs.lock().unwrap();
            for event in events {
                let event: Value = serde_json::from_slice(event).expect("event JSON");
                seqs.push(event["seq"].as_u64().expect("seq"));
            }
        }
        self.inner.publish(topic, events).await
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_stalled_bus_bounds_memory_then_everything_arrives_in_order() {
    let inner = MemoryBus::new();
    let gate = GatedBus {
        open: Arc::new(AtomicBool::new(false)),
        inner: inner.clone(),
        seqs: Arc::default(),
    };
    let mut lifecycle = inner.subscribe("websocketmanager.lifecycle");
    let mut cfg = config();
    cfg.publish_queue_frames = 64;
    cfg.publish_queue_bytes = 64 << 10;
    let e = env_with(0, cfg, Arc::new(gate.clone()), inner.clone()).await;
    let record = e
        .service
        .connect(connect_req(e.feed.url("/ws?count=200000")))
        .await
        .unwrap();
    e.service.start_publish(&record.id, "t").await.unwrap();
    // While the bus refuses, the feed is not drained: the socket pauses once the queue is full.
    // Both reasons are reported, in either order: the bus failing, and the queue filling up.
    let (mut bus_failed, mut queue_full) = (false, false);
    while !(bus_failed && queue_full) {
        let event = next_event(&mut lifecycle).await;
        if event["type"] == "com.virtufin.websocketmanager.lifecycle.degraded" {
            let reason = event["data"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            bus_failed |= reason.contains("publishing to t failed") && reason.contains("stalled");
            queue_full |= reason.contains("publish queue is full");
        }
    }
    // Socket buffers hold a few MB; once they are full the upstream is stuck too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = e.feed.stats().frames_sent_total;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = e.feed.stats().frames_sent_total;
    assert_eq!(before, after, "the upstream is paused by backpressure");
    assert!(after < 200_000, "only buffers' worth was sent: {after}");

    gate.open.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while gate.seqs.lock().unwrap().len() < 200_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seqs = gate.seqs.lock().unwrap();
    assert!(
        seqs.iter().copied().eq(1..=200_000u64),
        "every frame arrives exactly once, in order"
    );
}
