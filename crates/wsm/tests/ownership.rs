//! Ownership between instances on one real Redis (directly, or through Dapr-API sidecars), in
//! process: of three instances racing to take the same connections over, exactly one wins each; and an owner that is alive but unreachable for
//! a peer loses the connection to the instance a call reached, and closes its own socket on the
//! revocation notice.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use std::time::Duration;

use feed_server::FeedConfig;
use tokio::sync::Barrier;
use wsm::backends::dapr::{DaprConfig, DaprStateStore};
use wsm::backends::memory::MemoryBus;
use wsm::backends::redis::{RedisConfig, RedisStateStore};
use wsm::backends::{BackendError, Concurrency, StateStore, Versioned};
use wsm::connection::BackoffPolicy;
use wsm::model::Status;
use wsm::proto;
use wsm::security::NetworkPolicy;
use wsm::service::TakeOver;
use wsm::store::keys::{CONNECTION_INDEX_KEY, CONNECTION_KEY_PREFIX};
use wsm::store::ConnectionStore;
use wsm::{ConnectionRecord, ServiceConfig, WebSocketService};
use wsm_testkit::{DaprSidecar, RedisServer};

use support::server::{bounded, dead_port, feed_with, Poll, Wsm};

async fn redis_state(redis: &str) -> Arc<dyn StateStore> {
    Arc::new(
        RedisStateStore::connect(&RedisConfig {
            url: redis.to_owned(),
            ..RedisConfig::default()
        })
        .await
        .expect("redis state"),
    )
}

fn dapr_state(sidecar: &DaprSidecar) -> Arc<dyn StateStore> {
    Arc::new(
        DaprStateStore::new(&DaprConfig {
            base_url: sidecar.url(),
            ..DaprConfig::default()
        })
        .expect("dapr state"),
    )
}

async fn service(state: Arc<dyn StateStore>, instance: &str) -> WebSocketService {
    let mut config = ServiceConfig {
        instance_id: instance.into(),
        ..ServiceConfig::default()
    };
    config.connection.network = NetworkPolicy::allow_private();
    config.connection.backoff = BackoffPolicy {
        base: Duration::from_millis(50),
        ..BackoffPolicy::default()
    };
    WebSocketService::start(config, state, Arc::new(MemoryBus::new()))
        .await
        .expect("service starts")
}

/// Holds each racer's first read of a record until all three have read it, so all three try to
/// claim the same version: only compare-and-set can then keep two of them from winning.
struct SameVersion {
    inner: Arc<dyn StateStore>,
    reads: Arc<std::sync::Mutex<Reads>>,
}

/// Per record key: reads so far, and the barrier the first three meet at.
type Reads = BTreeMap<String, (usize, Arc<Barrier>)>;

#[async_trait]
impl StateStore for SameVersion {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, BackendError> {
        let value = self.inner.get(key).await?;
        if key.starts_with(CONNECTION_KEY_PREFIX) && key != CONNECTION_INDEX_KEY {
            let barrier = {
                let mut reads = self.reads.lock().unwrap();
                let (count, barrier) = reads
                    .entry(key.to_owned())
                    .or_insert_with(|| (0, Arc::new(Barrier::new(3))));
                *count += 1;
                (*count <= 3).then(|| Arc::clone(barrier))
            };
            if let Some(barrier) = barrier {
                barrier.wait().await;
            }
        }
        Ok(value)
    }
    async fn get_bulk(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, BackendError> {
        self.inner.get_bulk(keys).await
    }
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        concurrency: Concurrency<'_>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.inner.set(key, value, concurrency, ttl).await
    }
    async fn delete(&self, key: &str, concurrency: Concurrency<'_>) -> Result<(), BackendError> {
        self.inner.delete(key, concurrency).await
    }
    async fn ping(&self) -> Result<(), BackendError> {
        self.inner.ping().await
    }
}

/// A dead instance's records (written through `ghost`), then three instances (each on its own
/// state store client) racing to take every one over at once, each having read the same version
/// of every record: each record is won exactly once, the store names the winner, and each
/// connection gets exactly one new socket.
async fn race(ghost: Arc<dyn StateStore>, racers: [Arc<dyn StateStore>; 3]) {
    const CONNECTIONS: usize = 30;
    let feed = feed_with(FeedConfig::default()).await;
    let ghost = ConnectionStore::new(ghost, Duration::from_secs(300));
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
            profile: None,
            venue: None,
        };
        ghost.put(record.clone()).await.unwrap();
        ids.push(record.id);
    }
    let reads = Arc::default();
    let mut services = Vec::new();
    for (n, state) in racers.into_iter().enumerate() {
        let gated = Arc::new(SameVersion {
            inner: state,
            reads: Arc::clone(&reads),
        });
        services.push(service(gated, &format!("wsm-{}", n + 1)).await);
    }
    let start = Arc::new(Barrier::new(services.len()));
    let tasks: Vec<_> = services
        .iter()
        .map(|racer| {
            let racer = racer.clone();
            let start = Arc::clone(&start);
            // The same order for all: they meet on every record.
            let order = ids.clone();
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
    let owners = services[0].store().repository().owners(&ids).await.unwrap();
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
    let epochs: Vec<u64> = services[0]
        .list(&[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.epoch)
        .collect();
    assert!(epochs.iter().all(|e| *e == 2), "the next epoch: {epochs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_racing_on_redis_claim_each_connection_exactly_once() {
    bounded(async {
        let redis = RedisServer::start();
        let url = redis.url();
        let racers = [
            redis_state(&url).await,
            redis_state(&url).await,
            redis_state(&url).await,
        ];
        race(redis_state(&url).await, racers).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_racing_through_their_own_dapr_sidecars_claim_each_connection_exactly_once()
{
    bounded(async {
        let redis = RedisServer::start();
        let mut sidecars = Vec::new();
        for _ in 0..4 {
            sidecars.push(
                DaprSidecar::start(&redis.url(), "websocketmanager", "statestore", "pubsub").await,
            );
        }
        let racers = [
            dapr_state(&sidecars[1]),
            dapr_state(&sidecars[2]),
            dapr_state(&sidecars[3]),
        ];
        race(dapr_state(&sidecars[0]), racers).await;
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
