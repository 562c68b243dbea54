//! Publishing: CloudEvents with contiguous seq, binary frames, lifecycle events, a stalled bus.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use wsm::backends::memory::MemoryBus;
use wsm::backends::{BackendError, Publisher};
use wsm::ConnectRequest;

use super::common::{code, config, connect_req, env, env_with, next_event};

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
