//! SIGTERM on a real `wsm serve` process: frames still queued for the bus are published before the
//! process exits, every upstream socket is closed with 1001 (going away), and the connection
//! records stay in the shared store for a successor instance.

mod support;

use std::time::{Duration, Instant};

use feed_server::{FeedConfig, FeedServer};
use support::process::WsmProcess;
use wsm::proto;
use wsm_testkit::{stream_entries, RedisServer};

const TOPIC: &str = "ticks.shutdown";

fn seqs(entries: &[wsm_testkit::StreamEntry]) -> Vec<u64> {
    entries
        .iter()
        .map(|e| {
            let data = e.field("data").expect("every entry has a data field");
            let event: serde_json::Value = serde_json::from_slice(data).expect("data is JSON");
            event["seq"].as_u64().expect("every event has a seq")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_queued_frames_closes_sockets_with_1001_and_keeps_records() {
    let redis = RedisServer::start();
    let feed = FeedServer::start(FeedConfig {
        rate: 2000,
        auto_stream: false,
        ..FeedConfig::default()
    })
    .await
    .expect("the feed server starts");
    let url = redis.url();
    let mut wsm =
        WsmProcess::spawn(&["--state", "redis", "--pubsub", "redis", "--redis-url", &url]);
    let mut client = wsm.client().await;

    let id = client
        .connect(proto::ConnectRequest {
            url: feed.url("/ws"),
            ..Default::default()
        })
        .await
        .expect("Connect succeeds")
        .into_inner()
        .id;
    client
        .start_publish(proto::StartPublishRequest {
            id: id.clone(),
            topic: TOPIC.into(),
        })
        .await
        .expect("StartPublish succeeds");
    // Frames flow only after the SUBSCRIBE, so every received frame is one to publish.
    client
        .send_raw(proto::SendRawRequest {
            id: id.clone(),
            message: br#"{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}"#.to_vec(),
            content_type: "application/json".into(),
            replay_on_reconnect: false,
        })
        .await
        .expect("SendRaw succeeds");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream_entries(&redis.url(), TOPIC).await.len() < 200 {
        assert!(Instant::now() < deadline, "frames never reached the stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Hold the bus: Redis refuses writes for 2 s, so received frames wait in the publish queue.
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    let deadline = Instant::now() + Duration::from_secs(10);
    while wsm.metric("wsm_publish_queue_frames").await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no frame ever waited in the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received_before = wsm.metric("wsm_frames_received_total").await as u64;

    let exit = wsm.terminate().await;
    assert!(exit.success(), "wsm exits cleanly on SIGTERM: {exit:?}");

    let codes = feed.stats().client_close_codes;
    assert_eq!(
        codes.get(&1001),
        Some(&1),
        "the upstream saw a 1001 close: {codes:?}"
    );

    let seqs = seqs(&stream_entries(&redis.url(), TOPIC).await);
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "the stream holds every seq once, in order");
    assert!(
        seqs.len() as u64 >= received_before,
        "{} published, but {received_before} were received before SIGTERM: queued frames were lost",
        seqs.len()
    );

    let snapshot = wsm_testkit::RedisSnapshot::take(&redis.url()).await;
    let key = format!("websocketmanager||websocketmanager.connection.{id}");
    assert!(
        snapshot.keys.contains_key(&key),
        "the record stays for a successor: {:?}",
        snapshot.keys.keys().collect::<Vec<_>>()
    );
}
