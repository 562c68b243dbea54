//! A killed or paused owner: its connections come back on the survivors, within the limits.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tonic::Code;
use wsm::proto;
use wsm_testkit::{stream_entries, RedisServer};

use crate::support::process::WsmProcess;
use crate::support::server::Poll;

use super::common::{
    assert_gap_free, connect, feed, instance, list, one_at_a_time, published, HEARTBEAT_S,
    RECONNECT_MS, STALE_S,
};

/// Lifecycle events of one connection: `(kind, instance_id, reason)`.
async fn lifecycle(redis: &str, connection: &str) -> Vec<(String, String, String)> {
    stream_entries(redis, "websocketmanager.lifecycle")
        .await
        .iter()
        .filter_map(|entry| {
            let event: Value = serde_json::from_slice(entry.field("data")?).ok()?;
            let data = &event["data"];
            (data["connection_id"] == connection).then(|| {
                let kind = event["type"].as_str().unwrap_or("");
                (
                    kind.rsplit('.').next().unwrap_or("").to_owned(),
                    data["instance_id"].as_str().unwrap_or("").to_owned(),
                    data["reason"].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

/// Connections of `owner` (by id) that are listed as connected on another instance, each with a
/// frame of a later epoch in its stream.
async fn moved_and_publishing(
    via: &WsmProcess,
    redis: &str,
    ids: &[(String, String)],
    owner: &str,
) -> bool {
    let listed = list(via).await;
    for (id, topic) in ids {
        let Some(c) = listed.get(id) else {
            return false;
        };
        if c.instance_id == owner || c.status != "connected" {
            return false;
        }
        if !published(redis, topic)
            .await
            .iter()
            .any(|(epoch, _)| *epoch >= 2)
        {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_connections_resume_on_survivors_with_the_next_epoch() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = feed(50).await;
    let mut a = instance(&url, "wsm-a", &[]);
    let b = instance(&url, "wsm-b", &[]);
    let c = instance(&url, "wsm-c", &[]);
    let mut on_a = Vec::new();
    let mut others = Vec::new();
    for (via, name) in [(&a, "a"), (&a, "a2"), (&b, "b"), (&c, "c")] {
        let topic = format!("ticks.{name}");
        let id = connect(via, &feed.url("/ws"), &topic).await;
        if name.starts_with('a') {
            on_a.push((id, topic));
        } else {
            others.push((id, format!("wsm-{name}"), topic));
        }
    }
    // Let the feed run a while under the first owners.
    let poll = Poll::new("frames from A's connections");
    while published(&url, &on_a[1].1).await.len() < 20 {
        poll.tick().await;
    }

    let killed = Instant::now();
    a.kill();
    let poll = Poll::new("A's connections back and publishing on B or C");
    while !moved_and_publishing(&b, &url, &on_a, "wsm-a").await {
        poll.tick().await;
    }
    let failover = killed.elapsed();
    // Stale threshold + the observation cadence (a quarter heartbeat) + the reconnect delay, and
    // room for a loaded machine.
    let bound = Duration::from_secs(STALE_S + HEARTBEAT_S)
        + Duration::from_millis(RECONNECT_MS)
        + Duration::from_secs(2);
    assert!(
        failover <= bound,
        "failover took {failover:?} (bound {bound:?})"
    );

    let listed = list(&c).await;
    assert_eq!(listed.len(), 4);
    for (id, topic) in &on_a {
        let new_owner = listed[id].instance_id.clone();
        assert!(
            ["wsm-b", "wsm-c"].contains(&new_owner.as_str()),
            "{new_owner}"
        );
        assert_eq!(
            listed[id].topic, *topic,
            "publishing resumed to the same topic"
        );
        let events = published(&url, topic).await;
        assert_gap_free(topic, &events);
        let epochs: Vec<u64> = events.iter().map(|(e, _)| *e).collect();
        assert!(
            epochs.contains(&1) && epochs.contains(&2),
            "{topic}: {epochs:?}"
        );
        // The new owner announced itself, naming the old one.
        let events = lifecycle(&url, id).await;
        assert!(
            events
                .iter()
                .any(|(kind, instance, reason)| kind == "connecting"
                    && *instance == new_owner
                    && reason.contains("taken over from instance wsm-a")),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|(kind, instance, _)| kind == "connected" && *instance == new_owner),
            "{events:?}"
        );
    }
    // The sweep took the ids out of A's index and named them in A's revocation notice.
    let mut redis_conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ids_in = |key: &'static str| {
        let mut conn = redis_conn.clone();
        async move {
            let data: Option<String> = redis::cmd("HGET")
                .arg(format!("websocketmanager||{key}"))
                .arg("data")
                .query_async(&mut conn)
                .await
                .unwrap();
            serde_json::from_str::<Vec<String>>(&data.unwrap_or_else(|| "[]".into())).unwrap()
        }
    };
    assert!(ids_in("websocketmanager.instance.index.wsm-a")
        .await
        .is_empty());
    let notice = ids_in("websocketmanager.revoked.wsm-a").await;
    assert_eq!(notice.len(), 2, "{notice:?}");
    let _ = &mut redis_conn;
    // Connections whose owner is alive never move, and their streams never changed epoch.
    for (id, owner, topic) in &others {
        assert_eq!(listed[id].instance_id, *owner);
        let events = published(&url, topic).await;
        assert_gap_free(topic, &events);
        assert!(events.iter().all(|(epoch, _)| *epoch == 1), "{topic}");
    }
    // One socket per connection: the two reopened, none twice.
    assert_eq!(feed.connections(), 4);
    assert_eq!(feed.accepted_total(), 6);
    let takeovers = b.metric("wsm_takeovers_total").await + c.metric("wsm_takeovers_total").await;
    assert_eq!(takeovers, 2.0, "exactly one winner per connection");
    // The new sockets got on_connect, then the replayed SUBSCRIBE, in order.
    for connection in [5, 6] {
        let texts: Vec<String> = feed
            .received_on(connection)
            .iter()
            .filter_map(|m| m.as_text().map(str::to_owned))
            .take(2)
            .collect();
        assert_eq!(
            texts,
            [
                r#"{"hello":1}"#,
                r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":1}"#
            ],
            "connection {connection}"
        );
    }

    // A restarted with the same HOSTNAME does not take them back.
    let a = instance(&url, "wsm-a", &[]);
    tokio::time::sleep(Duration::from_secs(2 * HEARTBEAT_S + 1)).await;
    let listed = list(&a).await;
    assert!(
        listed.values().all(|c| c.instance_id != "wsm-a"),
        "{listed:?}"
    );
    assert_eq!(a.metric("wsm_takeovers_total").await, 0.0);
    assert_eq!(
        feed.accepted_total(),
        6,
        "no socket opened by the restarted instance"
    );

    // CLEAR_ALL_ON_START wipes every record.
    let d = instance(&url, "wsm-d", &["--clear-all-on-start"]);
    assert!(list(&d).await.is_empty(), "CLEAR_ALL_ON_START honoured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_wakes_lets_its_connections_go_and_never_publishes_next_to_the_new_owner() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = feed(100).await;
    let a = instance(&url, "wsm-a", &[]);
    let b = instance(&url, "wsm-b", &[]);
    let _c = instance(&url, "wsm-c", &[]);
    let mut on_a = Vec::new();
    for name in ["p1", "p2"] {
        let topic = format!("paused.{name}");
        on_a.push((connect(&a, &feed.url("/ws"), &topic).await, topic));
    }
    let poll = Poll::new("frames from A's connections");
    while published(&url, &on_a[1].1).await.len() < 20 {
        poll.tick().await;
    }

    a.signal(libc::SIGSTOP);
    // A call forwarded to the stopped owner, which accepts TCP but never answers: a bounded wait
    // and an error that says why, not a hang.
    let err = b
        .client()
        .await
        .set_tag(proto::SetTagRequest {
            id: on_a[0].0.clone(),
            key: "k".into(),
            value: "v".into(),
        })
        .await
        .expect_err("the owner is stopped");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("did not answer"),
        "{}",
        err.message()
    );
    let poll = Poll::new("A's connections taken over while A is stopped");
    while !moved_and_publishing(&b, &url, &on_a, "wsm-a").await {
        poll.tick().await;
    }
    // The upstream still has A's sockets open (a partition, not a crash) and keeps sending.
    assert_eq!(feed.connections(), 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal(libc::SIGCONT);
    let woke = Instant::now();

    let poll = Poll::new("A noticing it lost both connections");
    while a.metric("wsm_ownership_lost_total").await < 2.0 {
        poll.tick().await;
    }
    // At its first heartbeat after waking, all at once: letting go must not wait on publishers
    // that hold their batches for the lapsed lease.
    let noticed = woke.elapsed();
    assert!(
        noticed < Duration::from_secs(HEARTBEAT_S + 2),
        "A took {noticed:?} to let go"
    );
    let poll = Poll::new("A's sockets closed");
    while feed.connections() != 2 {
        poll.tick().await;
    }
    // Whatever A had read before it stopped was held back, not published after the takeover.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (id, topic) in &on_a {
        let events = published(&url, topic).await;
        let first_new = events
            .iter()
            .position(|(epoch, _)| *epoch >= 2)
            .expect("the new owner published");
        assert!(
            events[first_new..].iter().all(|(epoch, _)| *epoch >= 2),
            "{topic}: the old owner published after the new one began: {:?}",
            &events[first_new.saturating_sub(3)..(first_new + 20).min(events.len())]
        );
        assert_gap_free(topic, &events);
        assert_ne!(list(&a).await[id].instance_id, "wsm-a");
    }
    assert_eq!(a.metric("wsm_takeovers_total").await, 0.0);
    // Calls on the moved connections work through any instance again, A included.
    a.client()
        .await
        .set_tag(proto::SetTagRequest {
            id: on_a[0].0.clone(),
            key: "k".into(),
            value: "v".into(),
        })
        .await
        .expect("SetTag through the woken instance, forwarded to the new owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_claims_no_more_connections_than_max_connections() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = feed(10).await;
    let mut dying = instance(&url, "wsm-dying", &[]);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(connect(&dying, &feed.url("/ws"), &format!("limit.{i}")).await);
    }
    let small = instance(&url, "wsm-small", &["--max-connections", "4"]);
    dying.kill();
    // The survivor takes what its limit allows, and not one more, for good.
    let poll = Poll::new("the survivor's takeover");
    loop {
        let owned = list(&small)
            .await
            .values()
            .filter(|c| c.instance_id == "wsm-small")
            .count();
        assert!(
            owned <= 4,
            "{owned} connections on an instance limited to 4"
        );
        if owned == 4 {
            break;
        }
        poll.tick().await;
    }
    tokio::time::sleep(Duration::from_secs(2 * STALE_S)).await;
    let all = list(&small).await;
    let owned = all
        .values()
        .filter(|c| c.instance_id == "wsm-small")
        .count();
    assert_eq!(owned, 4, "still 4 after further sweeps");
    assert_eq!(
        all.len(),
        10,
        "the other records wait for an instance with room"
    );
    assert_eq!(small.metric("wsm_takeovers_total").await, 4.0);
    assert!(feed.wait_for_connections(4, Duration::from_secs(10)).await);
}
