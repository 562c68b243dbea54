//! The same counts over a real Redis (its own `redis-server`): the state store and the stream
//! publisher are Redis, and the venue ids are read back from the stream as Dapr's CloudEvents.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wsm::backends::redis::{RedisConfig, RedisPublisher, RedisStateStore};
use wsm::connection::ConnectionOptions;
use wsm::security::NetworkPolicy;
use wsm::venue::VenueOptions;
use wsm::{ConnectRequest, ServiceConfig, WebSocketService};
use wsm_testkit::{stream_entries, RedisServer};

use super::{assert_continuous, legs_open, options, venue, Ids, Seen, RATE, TOPIC};

async fn service(redis: &RedisServer) -> WebSocketService {
    let config = RedisConfig {
        url: redis.url(),
        ..RedisConfig::default()
    };
    WebSocketService::start(
        ServiceConfig {
            instance_id: "wsm-continuity-redis".into(),
            connection: ConnectionOptions {
                network: NetworkPolicy::allow_private(),
                ..ConnectionOptions::default()
            },
            ..ServiceConfig::default()
        },
        Arc::new(RedisStateStore::connect(&config).await.expect("state")),
        Arc::new(RedisPublisher::connect(&config).await.expect("publisher")),
    )
    .await
    .expect("service starts")
}

/// The stream's frames, in stream order, once it has stopped growing.
async fn read_back(redis: &RedisServer) -> Vec<Seen> {
    let mut last = usize::MAX;
    loop {
        let entries = stream_entries(&redis.url(), TOPIC).await;
        if entries.len() == last {
            return entries
                .iter()
                .filter_map(|e| {
                    let event: Value = serde_json::from_slice(e.field("data")?).ok()?;
                    Some(Seen {
                        id: feed_server::broadcast::frame_id(event["data"].as_str()?),
                        seq: event["seq"].as_u64()?,
                        epoch: event["epoch"].as_u64()?,
                    })
                })
                .collect();
        }
        last = entries.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_rotations_and_a_dropped_leg_lose_nothing() {
    for (legs, ids) in [(1u8, Ids::Sequenced), (2, Ids::Fingerprint)] {
        let redis = RedisServer::start();
        let service = service(&redis).await;
        let feed = venue().await;
        let form = if ids == Ids::Fingerprint {
            "&ids=0"
        } else {
            ""
        };
        let record = service
            .connect(ConnectRequest {
                url: feed.url(&format!("/ws?rate={RATE}{form}")),
                auto_reconnect: true,
                venue: options(
                    ids,
                    VenueOptions {
                        redundancy: Some(legs),
                        ..VenueOptions::default()
                    },
                ),
                ..ConnectRequest::default()
            })
            .await
            .expect("connects");
        service.start_publish(&record.id, TOPIC).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        if legs == 1 {
            for _ in 0..3 {
                let rotated = service.rotate(&record.id).await.expect("rotates");
                assert!(rotated.overlap, "{rotated:?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        } else {
            let live = legs_open(&feed, 2).await;
            assert!(feed.drop_connection(live[0]).await);
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        service.disconnect(&record.id).await.unwrap();
        let frames = read_back(&redis).await;
        assert_continuous(&frames, 800, &format!("Redis, {legs} leg(s), {ids:?}"));
        service.shutdown(Duration::from_secs(5)).await;
    }
}
