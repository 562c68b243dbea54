//! Several real `wsm serve` processes on one real Redis (SPEC 5, "Several instances"): calls on a
//! connection are served through whichever instance they reach, a killed owner's connections come
//! back on the survivors with the next epoch and nothing lost while an owner was alive, a restarted
//! instance does not take them back, and a paused owner that wakes after the takeover lets go
//! instead of publishing next to the new owner.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use feed_server::{FeedConfig, FeedHandle};
use serde_json::Value;
use tokio::time::Instant;
use tonic::Code;
use wsm::proto::{self, WebSocketConnection};
use wsm_testkit::{stream_entries, RedisServer};

use support::process::WsmProcess;
use support::server::{feed_with, Poll};

const HEARTBEAT_S: u64 = 1;
const STALE_S: u64 = 3;
const RECONNECT_MS: u64 = 100;

/// Three or four processes per test: one test at a time, so a 2-core machine does not starve
/// their heartbeats.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// An instance on the shared Redis (state and pub/sub), heartbeat 1 s, stale after 3 s unless
/// `extra` sets `--stale-threshold-seconds`.
fn instance(redis: &str, id: &str, extra: &[&str]) -> WsmProcess {
    let hb = HEARTBEAT_S.to_string();
    let stale = STALE_S.to_string();
    let reconnect = RECONNECT_MS.to_string();
    let base = [
        "--state",
        "redis",
        "--pubsub",
        "redis",
        "--redis-url",
        redis,
        "--instance-id",
        id,
        "--heartbeat-interval-seconds",
        &hb,
        "--reconnect-base-ms",
        &reconnect,
    ];
    let stale_flag = "--stale-threshold-seconds";
    let stale: &[&str] = if extra.contains(&stale_flag) {
        &[]
    } else {
        &[stale_flag, &stale]
    };
    WsmProcess::spawn(&[&base[..], stale, extra].concat())
}

async fn feed(rate: u32) -> FeedHandle {
    feed_with(FeedConfig {
        rate,
        ..FeedConfig::default()
    })
    .await
}

/// Connects through `via` (which becomes the owner) and starts publishing to `topic`.
async fn connect(via: &WsmProcess, url: &str, topic: &str) -> String {
    let mut client = via.client().await;
    let id = client
        .connect(proto::ConnectRequest {
            url: url.to_owned(),
            auto_reconnect: true,
            on_connect: vec![proto::OutboundMessage {
                message: br#"{"hello":1}"#.to_vec(),
                content_type: "application/json".into(),
            }],
            ..Default::default()
        })
        .await
        .expect("Connect")
        .into_inner()
        .id;
    client
        .send_raw(proto::SendRawRequest {
            id: id.clone(),
            message: br#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":1}"#.to_vec(),
            content_type: "application/json".into(),
            replay_on_reconnect: true,
        })
        .await
        .expect("SendRaw with replay");
    client
        .start_publish(proto::StartPublishRequest {
            id: id.clone(),
            topic: topic.to_owned(),
        })
        .await
        .expect("StartPublish");
    id
}

async fn list(via: &WsmProcess) -> BTreeMap<String, WebSocketConnection> {
    via.list()
        .await
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect()
}

/// `(epoch, seq)` of every event in a topic's stream, in stream order.
async fn published(redis: &str, topic: &str) -> Vec<(u64, u64)> {
    stream_entries(redis, topic)
        .await
        .iter()
        .map(|entry| {
            let data = entry.field("data").expect("a data field");
            let event: Value = serde_json::from_slice(data).expect("CloudEvent JSON");
            (
                event["epoch"].as_u64().expect("epoch"),
                event["seq"].as_u64().expect("seq"),
            )
        })
        .collect()
}

/// Nothing lost or reordered while an owner was alive: within an epoch `seq` goes up by one from
/// 1, and epochs only go up (a new owner starts its epoch at `seq` 1).
fn assert_gap_free(topic: &str, events: &[(u64, u64)]) {
    let mut last: Option<(u64, u64)> = None;
    for (i, &(epoch, seq)) in events.iter().enumerate() {
        match last {
            None => assert_eq!(
                (epoch, seq),
                (1, 1),
                "{topic}: the stream starts at epoch 1, seq 1"
            ),
            Some((e, s)) if e == epoch => assert_eq!(
                seq,
                s + 1,
                "{topic}: a gap or reordering at entry {i} within epoch {epoch}"
            ),
            Some((e, _)) => {
                assert!(
                    epoch > e,
                    "{topic}: epoch went back from {e} to {epoch} at entry {i}"
                );
                assert_eq!(seq, 1, "{topic}: epoch {epoch} starts at seq 1");
            }
        }
        last = Some((epoch, seq));
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_call_reaching_a_non_owner_is_served_by_forwarding() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = feed(20).await;
    let a = instance(&url, "wsm-a", &[]);
    let b = instance(&url, "wsm-b", &[]);
    let c = instance(&url, "wsm-c", &[]);
    let ids = [
        connect(&a, &feed.url("/ws"), "fwd.a").await,
        connect(&b, &feed.url("/ws"), "fwd.b").await,
        connect(&c, &feed.url("/ws"), "fwd.c").await,
    ];
    // List on any instance shows every connection with its owner.
    for via in [&a, &b, &c] {
        let listed = list(via).await;
        let owners: Vec<&str> = ids
            .iter()
            .map(|id| listed[id].instance_id.as_str())
            .collect();
        assert_eq!(owners, ["wsm-a", "wsm-b", "wsm-c"]);
        assert!(listed.values().all(|c| c.status == "connected"));
    }

    // Every connection-specific call on A's connection, sent to B.
    let id = ids[0].clone();
    let mut via_b = b.client().await;
    via_b
        .set_tag(proto::SetTagRequest {
            id: id.clone(),
            key: "desk".into(),
            value: "fx".into(),
        })
        .await
        .expect("SetTag through B");
    via_b
        .set_tags(proto::SetTagsRequest {
            id: id.clone(),
            tags: [
                ("desk".to_string(), "rates".to_string()),
                ("venue".into(), "x".into()),
            ]
            .into(),
        })
        .await
        .expect("SetTags through B");
    let tag = c
        .client()
        .await
        .get_tag(proto::GetTagRequest {
            id: id.clone(),
            key: "desk".into(),
        })
        .await
        .expect("GetTag through C")
        .into_inner()
        .value;
    assert_eq!(tag, "rates");
    let tags = via_b
        .get_tags(proto::GetTagsRequest { id: id.clone() })
        .await
        .expect("GetTags through B")
        .into_inner()
        .tags;
    assert_eq!(tags.len(), 2);
    let reply = via_b
        .send(proto::SendRequest {
            id: id.clone(),
            message: br#"{"q":"forwarded"}"#.to_vec(),
            timeout_ms: 5000,
            content_type: "application/json".into(),
        })
        .await
        .expect("Send through B")
        .into_inner()
        .response;
    let reply: Value = serde_json::from_slice(&reply).expect("the feed's JSON echo");
    assert_eq!(reply["payload"]["q"], "forwarded");
    via_b
        .send_raw(proto::SendRawRequest {
            id: id.clone(),
            message: b"raw through b".to_vec(),
            content_type: "text/plain".into(),
            replay_on_reconnect: false,
        })
        .await
        .expect("SendRaw through B");
    assert!(
        feed.wait_for_received(Duration::from_secs(10), |r| r.connection == 1
            && r.message.as_text() == Some("raw through b"))
            .await,
        "the upstream of A's connection received B's SendRaw"
    );
    via_b
        .start_publish(proto::StartPublishRequest {
            id: id.clone(),
            topic: "fwd.moved".into(),
        })
        .await
        .expect("StartPublish through B");
    assert_eq!(list(&c).await[&id].topic, "fwd.moved");
    let poll = Poll::new("frames on the topic set through B");
    while stream_entries(&url, "fwd.moved").await.is_empty() {
        poll.tick().await;
    }
    via_b
        .stop_publish(proto::StopPublishRequest { id: id.clone() })
        .await
        .expect("StopPublish through B");
    assert_eq!(list(&a).await[&id].topic, "");
    // Each of B's calls but the read-only GetTags was forwarded (GetTag/GetTags read the shared
    // record on any instance).
    assert_eq!(b.metric("wsm_forwarded_total").await, 6.0);
    assert_eq!(a.metric("wsm_forwarded_total").await, 0.0);
    assert_eq!(
        list(&a).await[&id].instance_id,
        "wsm-a",
        "no ownership moved"
    );

    // One hop only: a call marked as forwarded is answered by the instance it reaches.
    let mut marked = tonic::Request::new(proto::DisconnectRequest { id: id.clone() });
    marked
        .metadata_mut()
        .insert(wsm::cluster::HOP_HEADER, "wsm-x".parse().unwrap());
    let err = c
        .client()
        .await
        .disconnect(marked)
        .await
        .expect_err("a forwarded call is not forwarded again");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "Connection owned by different instance: wsm-a"
    );
    assert_eq!(c.metric("wsm_ownership_misses_total").await, 1.0);

    c.client()
        .await
        .disconnect(proto::DisconnectRequest { id: id.clone() })
        .await
        .expect("Disconnect through C");
    assert!(!list(&b).await.contains_key(&id));
    let poll = Poll::new("A's socket closed by the forwarded Disconnect");
    while feed.connections() != 2 {
        poll.tick().await;
    }
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

/// `message` with the client key and, when given, a forged hop marker.
fn keyed<T>(message: T, forwarded_by: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", "client-key".parse().expect("ASCII"));
    if let Some(hop) = forwarded_by {
        request
            .metadata_mut()
            .insert("x-wsm-forwarded-by", hop.parse().expect("ASCII"));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_needs_the_peer_key_goes_only_to_allowed_peers_and_caps_the_hop_header() {
    let _serial = one_at_a_time().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = feed(10).await;
    let keys = ["--api-keys", "client-key"];
    let peer = ["--peer-key", "instances-only"];
    let owner = instance(&url, "wsm-owner", &[&keys[..], &peer[..]].concat());
    // No peer key: its forwarded calls carry no credential (the client's key is never passed on).
    let keyless = instance(&url, "wsm-keyless", &keys);
    // Peers only in 10/8, and the owner advertises 127.0.0.1.
    let fenced = WsmProcess::spawn_with(
        &[
            &["--state", "redis", "--pubsub", "redis", "--redis-url", &url][..],
            &[
                "--instance-id",
                "wsm-fenced",
                "--heartbeat-interval-seconds",
                "1",
            ],
            &["--stale-threshold-seconds", "3"],
            &keys[..],
            &peer[..],
            &["--peer-allowed-cidrs", "10.0.0.0/8"],
        ]
        .concat(),
        &support::process::Spawn {
            capture_logs: true,
            ..Default::default()
        },
    );
    let id = owner
        .client()
        .await
        .connect(keyed(
            proto::ConnectRequest {
                url: feed.url("/ws"),
                ..Default::default()
            },
            None,
        ))
        .await
        .expect("Connect")
        .into_inner()
        .id;
    let set_tag = || proto::SetTagRequest {
        id: id.clone(),
        key: "k".into(),
        value: "v".into(),
    };

    let status = keyless
        .client()
        .await
        .set_tag(keyed(set_tag(), None))
        .await
        .expect_err("the owner refuses a call without the peer key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("--peer-key"), "{status:?}");

    let status = fenced
        .client()
        .await
        .set_tag(keyed(set_tag(), None))
        .await
        .expect_err("the owner's address is outside the allowed CIDRs");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("--peer-allowed-cidrs"),
        "{status:?}"
    );

    // A caller's own hop marker: answered as a hop (not forwarded again), logged cut short.
    let hop = "x".repeat(8000);
    let status = fenced
        .client()
        .await
        .set_tag(keyed(set_tag(), Some(&hop)))
        .await
        .expect_err("one hop only");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let poll = Poll::new("the hop warning");
    while !fenced
        .logs()
        .contains("a forwarded call reached a non-owner")
    {
        poll.tick().await;
    }
    let logs = fenced.logs();
    assert!(
        !logs.contains(&"x".repeat(100)),
        "the header is cut short in the log"
    );
    assert!(logs.contains("8000 bytes in all"), "{logs}");

    // Nobody claimed the live owner's connection on the way.
    let listed = owner
        .client()
        .await
        .list(keyed(proto::ListRequest::default(), None))
        .await
        .expect("List")
        .into_inner()
        .connections;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].instance_id, "wsm-owner");
    assert!(listed[0].tags.is_empty(), "no SetTag got through");
    drop(keyless);
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
