//! The whole ingest path into a real Redis: feed server → connection → publish queue → batched XADDs,
//! read back from the stream: nothing lost, nothing reordered, Dapr's CloudEvent layout.

use std::sync::Arc;
use std::time::Duration;

use feed_server::{FeedConfig, FeedServer};
use serde_json::Value;
use wsm::backends::redis::{RedisConfig, RedisPublisher, RedisStateStore};
use wsm::connection::ConnectionOptions;
use wsm::security::NetworkPolicy;
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};
use wsm_testkit::{stream_entries, RedisServer};

const FRAMES: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_thousand_sequenced_frames_reach_the_stream_complete_and_in_order() {
    let redis = RedisServer::start();
    let config = RedisConfig {
        url: redis.url(),
        ..RedisConfig::default()
    };
    let state = RedisStateStore::connect(&config)
        .await
        .expect("state store");
    let bus = RedisPublisher::connect(&config).await.expect("publisher");
    let service = WebSocketService::start(
        ServiceConfig {
            instance_id: "wsm-redis-1".into(),
            // The feed server listens on loopback.
            connection: ConnectionOptions {
                network: NetworkPolicy::allow_private(),
                ..ConnectionOptions::default()
            },
            ..ServiceConfig::default()
        },
        Arc::new(state),
        Arc::new(bus),
    )
    .await
    .expect("service starts");
    let feed = FeedServer::start(FeedConfig {
        rate: 0,
        size: 100,
        auto_stream: false,
        ..FeedConfig::default()
    })
    .await
    .unwrap();
    // streams=0: nothing is sent until SUBSCRIBE, so no frame can pass before publishing starts.
    let record = service
        .connect(ConnectRequest {
            url: feed.url(&format!("/stream?count={FRAMES}&streams=0")),
            ..ConnectRequest::default()
        })
        .await
        .unwrap();
    service
        .start_publish(&record.id, "act.exchange.test.orderbook.update")
        .await
        .unwrap();
    service
        .send_raw(
            &record.id,
            bytes::Bytes::from_static(
                br#"{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}"#,
            ),
            "application/json",
            true,
        )
        .await
        .unwrap();

    let topic = "act.exchange.test.orderbook.update";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let entries = loop {
        let entries = stream_entries(&redis.url(), topic).await;
        // +1: the exchange's answer to SUBSCRIBE is a frame like any other, and comes first.
        if entries.len() as u64 > FRAMES {
            break entries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {FRAMES} frames arrived",
            entries.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(entries.len() as u64, FRAMES + 1, "no duplicates either");
    let first: Value = serde_json::from_slice(entries[0].field("data").unwrap()).unwrap();
    assert_eq!(first["data"], r#"{"result":null,"id":1}"#);
    let mut last_u = 0u64;
    for (n, entry) in entries.iter().enumerate().skip(1) {
        let data = entry.field("data").expect("a data field, as Dapr writes");
        let event: Value = serde_json::from_slice(data).expect("CloudEvent JSON");
        assert_eq!(event["seq"], n as u64 + 1, "entry {}", entry.id);
        assert_eq!(event["epoch"], 1);
        assert_eq!(event["websocketId"], record.id.as_str());
        assert_eq!(event["topic"], topic);
        assert_eq!(event["pubsubname"], "pubsub");
        let frame: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
        let u = frame["data"]["u"].as_u64().unwrap();
        assert_eq!(u, last_u + 1, "upstream sequence contiguous");
        last_u = u;
    }
    service.shutdown(Duration::from_secs(5)).await;
}
