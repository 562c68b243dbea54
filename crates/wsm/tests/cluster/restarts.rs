//! An instance stopped gracefully, or restarted before the stale threshold.

use std::time::Duration;

use tokio::time::Instant;
use wsm::proto;
use wsm_testkit::RedisServer;

use crate::support::server::Poll;

use super::common::{assert_gap_free, connect, feed, instance, list, one_at_a_time, published};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_instances_connections_move_without_waiting_for_the_threshold() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = feed(50).await;
    // API keys on every instance: forwarded calls carry the instances' peer key instead.
    let keys = ["--api-keys", "k1,k2", "--peer-key", "instances-only"];
    let mut a = instance(&url, "wsm-a", &keys);
    let b = instance(&url, "wsm-b", &keys);
    let mut on_a = Vec::new();
    for name in ["g1", "g2"] {
        let topic = format!("graceful.{name}");
        let id = {
            let mut client = a.client().await;
            let mut connect = tonic::Request::new(proto::ConnectRequest {
                url: feed.url("/ws"),
                auto_reconnect: true,
                ..Default::default()
            });
            connect
                .metadata_mut()
                .insert("x-api-key", "k1".parse().unwrap());
            client
                .connect(connect)
                .await
                .expect("Connect")
                .into_inner()
                .id
        };
        // Through B, forwarded to A with B's key.
        let mut publish = tonic::Request::new(proto::StartPublishRequest {
            id: id.clone(),
            topic: topic.clone(),
        });
        publish
            .metadata_mut()
            .insert("x-api-key", "k2".parse().unwrap());
        b.client()
            .await
            .start_publish(publish)
            .await
            .expect("StartPublish forwarded with the peer key");
        on_a.push((id, topic));
    }
    let poll = Poll::new("frames from A's connections");
    while published(&url, &on_a[1].1).await.len() < 10 {
        poll.tick().await;
    }

    assert!(a.terminate().await.success(), "a graceful stop exits 0");
    let stopped = Instant::now();
    let poll = Poll::new("A's connections moved to B");
    loop {
        let mut list = tonic::Request::new(proto::ListRequest::default());
        list.metadata_mut()
            .insert("x-api-key", "k1".parse().unwrap());
        let listed = b
            .client()
            .await
            .list(list)
            .await
            .expect("List")
            .into_inner();
        let moved = on_a.iter().all(|(id, _)| {
            listed
                .connections
                .iter()
                .any(|c| c.id == *id && c.instance_id == "wsm-b" && c.status == "connected")
        });
        if moved {
            break;
        }
        poll.tick().await;
    }
    let moved = stopped.elapsed();
    // The leaving instance announced it; nobody waited for the stale threshold. (A kept
    // heartbeating until it exited, so without that announcement its peers would see it stale no
    // sooner than the threshold minus one interval, 2 s, after the exit.)
    assert!(
        moved < Duration::from_millis(1500),
        "moved {moved:?} after the exit"
    );
    for (_, topic) in &on_a {
        let poll = Poll::new("the new owner publishing");
        while !published(&url, topic).await.iter().any(|(e, _)| *e == 2) {
            poll.tick().await;
        }
        // Everything A had queued was flushed before it left: no gap in epoch 1.
        assert_gap_free(topic, &published(&url, topic).await);
    }
    assert_eq!(
        feed.stats().client_close_codes.get(&1001),
        Some(&2),
        "A closed its sockets with 1001"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_before_the_threshold_resumes_its_own_connections() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = feed(50).await;
    // Peers wait long enough for the restart to come first.
    let slow = ["--stale-threshold-seconds", "30"];
    let mut a = instance(&url, "wsm-a", &slow);
    let b = instance(&url, "wsm-b", &slow);
    let id = connect(&a, &feed.url("/ws"), "restart.a").await;
    let poll = Poll::new("frames from A's connection");
    while published(&url, "restart.a").await.len() < 10 {
        poll.tick().await;
    }

    a.kill();
    let a = instance(&url, "wsm-a", &slow);
    let poll = Poll::new("the connection publishing again under A");
    while !published(&url, "restart.a")
        .await
        .iter()
        .any(|(epoch, _)| *epoch == 2)
    {
        poll.tick().await;
    }
    let listed = list(&b).await;
    assert_eq!(listed[&id].instance_id, "wsm-a");
    assert_eq!(listed[&id].status, "connected");
    assert_eq!(b.metric("wsm_takeovers_total").await, 0.0);
    // It stays in A's index, so a later failover of A still finds it.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let index: Option<String> = redis::cmd("HGET")
        .arg("websocketmanager||websocketmanager.instance.index.wsm-a")
        .arg("data")
        .query_async(&mut conn)
        .await
        .unwrap();
    let index: Vec<String> = serde_json::from_str(&index.unwrap_or_default()).unwrap();
    assert_eq!(index, vec![id.clone()]);
    assert_gap_free("restart.a", &published(&url, "restart.a").await);
    // The resumed socket got on_connect and the replayed SUBSCRIBE again.
    assert_eq!(feed.accepted_total(), 2);
    drop(a);
}
