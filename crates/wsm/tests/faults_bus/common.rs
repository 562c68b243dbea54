//! Shared by the fault tests: opening a publishing connection, probes, reading what was published.

use std::collections::BTreeSet;
use std::time::Duration;

use feed_server::FeedHandle;
use serde_json::Value;
use wsm::proto;
use wsm_testkit::stream_entries;

use crate::support::process::WsmProcess;
use crate::support::server::{metric, Poll, HANG};

/// One test at a time (see the module docs).
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A JSON text message for the gRPC API.
fn json_message(text: &str) -> proto::OutboundMessage {
    proto::OutboundMessage {
        message: text.as_bytes().to_vec(),
        content_type: "application/json".into(),
    }
}

/// Connects through `wsm` to `url`, publishes to `topic`, then sends `subscribes` flagged
/// `replay_on_reconnect`. With a feed that streams only while subscribed, nothing arrives before
/// publishing starts, so every frame read is a frame to publish.
pub(crate) async fn open_publishing(
    wsm: &WsmProcess,
    url: &str,
    auto_reconnect: bool,
    on_connect: &[&str],
    topic: &str,
    subscribes: &[&str],
) -> String {
    let mut client = wsm.client().await;
    let id = client
        .connect(proto::ConnectRequest {
            url: url.to_owned(),
            auto_reconnect,
            on_connect: on_connect.iter().map(|m| json_message(m)).collect(),
            ..Default::default()
        })
        .await
        .expect("Connect")
        .into_inner()
        .id;
    client
        .start_publish(proto::StartPublishRequest {
            id: id.clone(),
            topic: topic.to_owned(),
        })
        .await
        .expect("StartPublish");
    for subscribe in subscribes {
        client
            .send_raw(proto::SendRawRequest {
                id: id.clone(),
                message: subscribe.as_bytes().to_vec(),
                content_type: "application/json".into(),
                replay_on_reconnect: true,
            })
            .await
            .expect("SendRaw with replay_on_reconnect");
    }
    id
}

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG)
        .build()
        .expect("an HTTP client")
}

/// One scrape of `/metrics`.
pub(crate) struct Metrics(String);

impl Metrics {
    pub(crate) async fn scrape(wsm: &WsmProcess) -> Metrics {
        let text = http()
            .get(format!("http://{}/metrics", wsm.http))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics has a body");
        Metrics(text)
    }

    pub(crate) fn get(&self, name: &str) -> u64 {
        metric(&self.0, name) as u64
    }

    pub(crate) fn received(&self) -> u64 {
        self.get("wsm_frames_received_total")
    }

    pub(crate) fn published(&self) -> u64 {
        self.get("wsm_frames_published_total")
    }

    pub(crate) fn queued(&self) -> u64 {
        self.get("wsm_publish_queue_frames")
    }
}

/// The HTTP status of `GET <path>` on wsm's HTTP port.
pub(crate) async fn probe(wsm: &WsmProcess, path: &str) -> u16 {
    http()
        .get(format!("http://{}{path}", wsm.http))
        .send()
        .await
        .expect("the HTTP port answers")
        .status()
        .as_u16()
}

/// Waits until wsm is done with what it read (the feed is stalled): it has read at least the `sent`
/// frames the feed sent, its queue is empty and its counters stay put. Returns how many frames it read; the stream then shows what became of them.
pub(crate) async fn drained(wsm: &WsmProcess, sent: u64) -> u64 {
    let poll = Poll::new("wsm to read every frame the feed sent and its publish queue to empty");
    let mut last = None;
    loop {
        let m = Metrics::scrape(wsm).await;
        let now = (
            m.received(),
            m.published(),
            m.get("wsm_frames_dropped_total"),
        );
        // The socket task adds its reads to the counter once per burst: until it has, the
        // counter may trail what was already published.
        let counted = now.0 >= now.1 + now.2;
        // After a long backpressure pause the socket may resume reading a little later than the
        // queue empties: every frame the stalled feed sent must have been read first.
        let all_read = now.0 >= sent;
        if m.queued() == 0 && counted && all_read && last == Some(now) {
            return now.0;
        }
        last = (m.queued() == 0).then_some(now);
        tokio::time::sleep(Duration::from_millis(100)).await;
        poll.tick().await;
    }
}

/// Stops the feed and waits until wsm has read and published all it sent: `(sent, read)`. A feed
/// held back by wsm's backpressure looks settled while its last send is still under way, so the
/// count is taken again once wsm has caught up, until the two agree.
pub(crate) async fn stop_and_drain(feed: &FeedHandle, wsm: &WsmProcess) -> (u64, u64) {
    let mut sent = stall_and_count(feed).await;
    loop {
        let read = drained(wsm, sent).await;
        let again = stall_and_count(feed).await;
        if again == sent {
            return (sent, read);
        }
        sent = again;
    }
}

/// Stalls every session of `feed` and returns the frames its only session has sent, once that
/// no longer changes (a stall takes effect after the step in progress).
pub(crate) async fn stall_and_count(feed: &FeedHandle) -> u64 {
    feed.stall(Duration::from_secs(600)).await;
    let sent = || {
        let stats = feed.stats();
        assert_eq!(stats.sessions.len(), 1, "one session: {stats:?}");
        stats.sessions[0].frames_sent
    };
    settled(sent).await
}

/// Reads `count` until two reads 100 ms apart agree.
async fn settled(count: impl Fn() -> u64) -> u64 {
    let poll = Poll::new("the feed to stop sending");
    let mut last = count();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count();
        if now == last {
            return now;
        }
        last = now;
        poll.tick().await;
    }
}

/// One published frame event, reduced to what the checks need.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) id: String,
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    /// The feed's per-session frame number (`u`) of a depth update.
    pub(crate) update: Option<u64>,
    /// The `id` of a reply to a method call (SUBSCRIBE, LIST_SUBSCRIPTIONS).
    pub(crate) reply: Option<u64>,
}

pub(crate) fn event(entry_id: &str, data: &[u8]) -> Event {
    let cloud: Value = serde_json::from_slice(data).expect("a CloudEvent JSON entry");
    let frame: Value = serde_json::from_str(cloud["data"].as_str().expect("text frame data"))
        .expect("the feed sends JSON frames");
    let update = (frame["e"] == "depthUpdate").then(|| frame["u"].as_u64().expect("u"));
    let reply = frame
        .get("result")
        .and_then(|_| frame["id"].as_u64())
        .filter(|_| update.is_none());
    assert!(
        update.is_some() || reply.is_some(),
        "an unexpected frame was published: {frame}"
    );
    Event {
        id: entry_id.to_owned(),
        epoch: cloud["epoch"].as_u64().expect("epoch"),
        seq: cloud["seq"].as_u64().expect("seq"),
        update,
        reply,
    }
}

pub(crate) async fn published(redis_url: &str, topic: &str) -> Vec<Event> {
    stream_entries(redis_url, topic)
        .await
        .iter()
        .map(|e| event(&e.id, e.field("data").expect("a data field")))
        .collect()
}

/// What a stream holds of one connection's frames, counted against what it read.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Distinct `seq`s seen.
    pub(crate) distinct: u64,
    /// Entries whose `seq` was seen before (a retried call that had landed).
    pub(crate) duplicates: u64,
    /// Duplicates that arrived after a later `seq` (a timed-out call that landed late).
    pub(crate) late: u64,
    /// `seq`s in 1..=read missing from the stream.
    pub(crate) gaps: u64,
}

/// Counts `events` against `read` frames read by wsm: every `seq` in 1..=read should be there,
/// first occurrences in order.
pub(crate) fn tally(events: &[Event], read: u64) -> Tally {
    let mut seen = BTreeSet::new();
    let (mut duplicates, mut late, mut highest) = (0, 0, 0);
    for e in events {
        if !seen.insert(e.seq) {
            duplicates += 1;
            if e.seq < highest {
                late += 1;
            }
            continue;
        }
        assert!(
            e.seq > highest,
            "seq {} first appears after seq {highest} (entry {}): reordered",
            e.seq,
            e.id
        );
        highest = e.seq;
    }
    assert!(
        highest <= read,
        "seq {highest} published but wsm counts only {read} frames read"
    );
    let gaps = (1..=read).filter(|s| !seen.contains(s)).count() as u64;
    Tally {
        distinct: seen.len() as u64,
        duplicates,
        late,
        gaps,
    }
}

/// The depth updates of `events` (first occurrences) are the feed's frames 1..=`sent`, in order.
pub(crate) fn assert_updates_complete(events: &[Event], sent: u64, what: &str) {
    let mut seen = BTreeSet::new();
    let updates: Vec<u64> = events
        .iter()
        .filter(|e| seen.insert(e.seq))
        .filter_map(|e| e.update)
        .collect();
    let published: BTreeSet<u64> = updates.iter().copied().collect();
    let lost = (1..=sent).filter(|u| !published.contains(u)).count();
    println!(
        "{what}: the feed sent {sent} updates, {} published, lost {lost}",
        updates.len()
    );
    assert_eq!(lost, 0, "{what}: updates the feed sent are missing");
    assert_eq!(
        updates,
        (1..=sent).collect::<Vec<_>>(),
        "{what}: the feed's updates 1..={sent}, each once, in order"
    );
}
