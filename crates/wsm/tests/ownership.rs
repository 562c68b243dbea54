//! Ownership between instances on one real Redis, in process: of three instances racing to take
//! the same connections over, exactly one wins each; and an owner that is alive but unreachable for
//! a peer loses the connection to the instance a call reached, and closes its own socket on the
//! revocation notice.

mod support;

use std::sync::Arc;
use std::time::Duration;

use feed_server::FeedConfig;
use tokio::sync::Barrier;
use wsm::api::proto;
use wsm::backends::memory::MemoryBus;
use wsm::backends::redis::{RedisConfig, RedisStateStore};
use wsm::connection::{BackoffPolicy, Status};
use wsm::security::NetworkPolicy;
use wsm::service::TakeOver;
use wsm::store::ConnectionStore;
use wsm::{ConnectionRecord, ServiceConfig, WebSocketService};
use wsm_testkit::RedisServer;

use support::server::{bounded, dead_port, feed_with, Poll, Wsm};

async fn service(redis: &str, instance: &str) -> WebSocketService {
    let state = RedisStateStore::connect(&RedisConfig {
        url: redis.to_owned(),
        ..RedisConfig::default()
    })
    .await
    .expect("redis state");
    let mut config = ServiceConfig {
        instance_id: instance.into(),
        ..ServiceConfig::default()
    };
    config.connection.network = NetworkPolicy::allow_private();
    config.connection.backoff = BackoffPolicy {
        base: Duration::from_millis(50),
        ..BackoffPolicy::default()
    };
    WebSocketService::start(config, Arc::new(state), Arc::new(MemoryBus::new()))
        .await
        .expect("service starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_racing_for_the_same_connections_claim_each_exactly_once() {
    bounded(async {
        const CONNECTIONS: usize = 30;
        let redis = RedisServer::start();
        let feed = feed_with(FeedConfig::default()).await;
        // A dead instance's records, as it left them.
        let ghost = ConnectionStore::new(
            Arc::new(
                RedisStateStore::connect(&RedisConfig {
                    url: redis.url(),
                    ..RedisConfig::default()
                })
                .await
                .unwrap(),
            ),
            Duration::from_secs(300),
        );
        let mut ids = Vec::new();
        for i in 0..CONNECTIONS {
            let record = ConnectionRecord {
                id: format!("conn-{i:02}"),
                url: feed.url("/ws"),
                status: Status::Connected,
                topic: Some(format!("race.{i}")),
                auto_reconnect: true,
                created_at: "2026-11-24T00:00:00Z".into(),
                instance_id: "wsm-ghost".into(),
                tags: Default::default(),
                headers: Default::default(),
                subprotocols: Vec::new(),
                on_connect: Vec::new(),
                replay: Vec::new(),
                epoch: 1,
                ping_interval_ms: None,
            };
            ghost.put(record.clone()).await.unwrap();
            ids.push(record.id);
        }
        let racers = [
            service(&redis.url(), "wsm-1").await,
            service(&redis.url(), "wsm-2").await,
            service(&redis.url(), "wsm-3").await,
        ];
        let start = Arc::new(Barrier::new(racers.len()));
        let tasks: Vec<_> = racers
            .iter()
            .enumerate()
            .map(|(n, racer)| {
                let racer = racer.clone();
                let start = Arc::clone(&start);
                // Each goes through the ids in its own order, so they collide along the way.
                let mut order = ids.clone();
                order.rotate_left(n * CONNECTIONS / 3);
                tokio::spawn(async move {
                    start.wait().await;
                    let mut won = Vec::new();
                    for id in order {
                        match racer.take_over(&id, "wsm-ghost", "test race", None).await {
                            Ok(TakeOver::Claimed) => won.push(id),
                            Ok(TakeOver::Owner(_)) => {}
                            other => panic!("{id}: {other:?}"),
                        }
                    }
                    won
                })
            })
            .collect();
        let mut winners = std::collections::BTreeMap::new();
        for (n, task) in tasks.into_iter().enumerate() {
            for id in task.await.unwrap() {
                assert!(
                    winners.insert(id.clone(), n).is_none(),
                    "{id} was won twice"
                );
            }
        }
        assert_eq!(winners.len(), CONNECTIONS, "every connection has a winner");
        // The store agrees with the winners, and each connection has exactly one socket.
        let owners = racers[0].store().repository().owners(&ids).await.unwrap();
        for (id, owner) in ids.iter().zip(owners) {
            assert_eq!(owner, Some(format!("wsm-{}", winners[id] + 1)), "{id}");
        }
        assert!(
            feed.wait_for_connections(CONNECTIONS, Duration::from_secs(20))
                .await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            feed.accepted_total(),
            CONNECTIONS as u64,
            "one socket per connection"
        );
        let epochs: Vec<u64> = racers[0]
            .list(&[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.epoch)
            .collect();
        assert!(epochs.iter().all(|e| *e == 2), "the next epoch: {epochs:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_owner_loses_the_connection_to_the_instance_a_call_reached() {
    bounded(async {
        let redis = RedisServer::start();
        let url = redis.url();
        let feed = feed_with(FeedConfig::default()).await;
        let shared = ["--state", "redis", "--redis-url", url.as_str()];
        // The owner advertises a port nobody listens on: alive and heartbeating, unreachable.
        let dead = dead_port().to_string();
        let owner = Wsm::start(
            &[
                &shared[..],
                &["--instance-id", "wsm-owner", "--grpc-advertise-port", &dead],
            ]
            .concat(),
        )
        .await;
        let other = Wsm::start(&[&shared[..], &["--instance-id", "wsm-other"]].concat()).await;
        let id = owner
            .client()
            .await
            .connect(proto::ConnectRequest {
                url: feed.url("/ws"),
                ..Default::default()
            })
            .await
            .expect("Connect on the owner")
            .into_inner()
            .id;

        other
            .client()
            .await
            .send_raw(proto::SendRawRequest {
                id: id.clone(),
                message: b"after the move".to_vec(),
                content_type: "text/plain".into(),
                replay_on_reconnect: false,
            })
            .await
            .expect("served by the instance the call reached");
        assert!(
            feed.wait_for_received(Duration::from_secs(10), |r| r.connection == 2
                && r.message.as_text() == Some("after the move"))
                .await,
            "sent on the claimer's own new socket"
        );
        let listed = other
            .client()
            .await
            .list(proto::ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .connections;
        assert_eq!(listed[0].instance_id, "wsm-other");
        // The old owner reads its revocation notice and closes its socket.
        let poll = Poll::new("the old owner's socket closed");
        while feed.connections() != 1 {
            poll.tick().await;
        }
        assert_eq!(owner.running.service.snapshot().ownership_lost, 1);
        assert_eq!(other.running.service.snapshot().taken_over, 1);
    })
    .await;
}
