//! `Subscribe` (what `wsm tail` reads) with the redis pub/sub: events come from the topic's Redis
//! stream, from the newest entry on, with the stream ids and the `seq`/`epoch` of each CloudEvent.

mod support;

use feed_server::{FeedConfig, FeedServer};
use support::server::Wsm;
use wsm::proto;
use wsm_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_reads_the_redis_stream_in_order_from_the_newest_entry() {
    let redis = RedisServer::start();
    let feed = FeedServer::start(FeedConfig {
        rate: 200,
        auto_stream: false,
        ..FeedConfig::default()
    })
    .await
    .unwrap();
    // An entry from before the subscription, which must not be streamed.
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("md.redis")
        .arg("*")
        .arg("data")
        .arg(r#"{"old":true}"#)
        .query_async(&mut admin)
        .await
        .unwrap();

    let url = redis.url();
    let server = Wsm::start(&["--pubsub", "redis", "--redis-url", &url]).await;
    let mut client = server.client().await;
    let mut events = client
        .subscribe(proto::SubscribeRequest {
            topic: "md.redis".into(),
        })
        .await
        .expect("Subscribe opens")
        .into_inner();

    let id = client
        .connect(proto::ConnectRequest {
            url: feed.url("/ws"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    client
        .start_publish(proto::StartPublishRequest {
            id: id.clone(),
            topic: "md.redis".into(),
        })
        .await
        .unwrap();
    client
        .send_raw(proto::SendRawRequest {
            id: id.clone(),
            message: br#"{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}"#.to_vec(),
            content_type: "application/json".into(),
            replay_on_reconnect: false,
        })
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 20 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), events.message())
            .await
            .expect("events arrive")
            .expect("the stream stays healthy")
            .expect("the stream does not end");
        assert_eq!(event.connection_id, id, "{}", event.cloud_event);
        assert!(!event.id.is_empty(), "Redis entries carry their stream id");
        let ce: serde_json::Value = serde_json::from_str(&event.cloud_event).unwrap();
        assert_eq!(ce["seq"].as_u64(), Some(event.seq));
        assert_eq!(ce["pubsubname"], "pubsub", "the Dapr envelope as stored");
        seen.push((event.seq, event.epoch));
    }
    let expected: Vec<(u64, u64)> = (1..=20).map(|seq| (seq, 1)).collect();
    assert_eq!(seen, expected);
}
