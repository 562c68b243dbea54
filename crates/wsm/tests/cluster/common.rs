//! Shared by the cluster tests: the instances, the feed, connecting, and reading what was published.

use std::collections::BTreeMap;

use feed_server::{FeedConfig, FeedHandle};
use serde_json::Value;
use wsm::proto::{self, WebSocketConnection};
use wsm_testkit::stream_entries;

use crate::support::process::WsmProcess;
use crate::support::server::feed_with;

pub(crate) const HEARTBEAT_S: u64 = 1;
pub(crate) const STALE_S: u64 = 3;
pub(crate) const RECONNECT_MS: u64 = 100;

/// Three or four processes per test: one test at a time, so a 2-core machine does not starve
/// their heartbeats.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// An instance on the shared Redis (state and pub/sub), heartbeat 1 s, stale after 3 s unless
/// `extra` sets `--stale-threshold-seconds`.
pub(crate) fn instance(redis: &str, id: &str, extra: &[&str]) -> WsmProcess {
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

pub(crate) async fn feed(rate: u32) -> FeedHandle {
    feed_with(FeedConfig {
        rate,
        ..FeedConfig::default()
    })
    .await
}

/// Connects through `via` (which becomes the owner) and starts publishing to `topic`.
pub(crate) async fn connect(via: &WsmProcess, url: &str, topic: &str) -> String {
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

pub(crate) async fn list(via: &WsmProcess) -> BTreeMap<String, WebSocketConnection> {
    via.list()
        .await
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect()
}

/// `(epoch, seq)` of every event in a topic's stream, in stream order.
pub(crate) async fn published(redis: &str, topic: &str) -> Vec<(u64, u64)> {
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
pub(crate) fn assert_gap_free(topic: &str, events: &[(u64, u64)]) {
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
