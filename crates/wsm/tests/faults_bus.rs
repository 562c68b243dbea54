//! Faults around a publishing connection, each asserting recovery and counting what was lost (0):
//!
//! - the upstream feed server process SIGKILLed and started again on its port ten times: every
//!   new session gets `on_connect` then the replay messages in order, the epochs run 1..=11 and
//!   every frame a session sent is published;
//! - Redis SIGKILLed while frames are being published, kept down, and started again empty: wsm
//!   keeps answering, its publish queue stays within its bound and reading pauses (backpressure,
//!   reported as `degraded`), and afterwards every frame it read is in the stream;
//! - Redis restarted with a data set to load: while it answers `LOADING`, publishing is retried,
//!   not dropped;
//! - the Dapr sidecar answering 500s, then too slowly (timeouts), then healthy again: errors are
//!   surfaced, API calls fail with clear errors, and afterwards every frame read is in the stream
//!   (duplicates allowed where a failed call may have landed; gaps never).
//!
//! Each test uses real processes: `wsm serve`, `redis-server`, and for the first one the
//! `feed-server` binary ([`wsm_testkit::feed_server_bin`]). The tests run one at a time: each
//! keeps a feed streaming, and a 2-core machine running them side by side would measure the
//! machine rather than wsm.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use feed_server::{FeedConfig, FeedHandle};
use serde_json::Value;
use tokio::time::Instant;
use tonic::Code;
use wsm::proto;
use wsm_testkit::{stream_entries, DaprSidecar, RedisServer};

use support::process::WsmProcess;
use support::server::{bounded, feed_with, metric, Poll, HANG};

/// One test at a time (see the module docs).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LIFECYCLE: &str = "websocketmanager.lifecycle";
/// The per-connection publish queue's frame budget (`ServiceConfig::publish_queue_frames`).
const QUEUE_FRAMES: u64 = 4096;

// ---------------------------------------------------------------------------------------------
// Shared helpers

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
async fn open_publishing(
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

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG)
        .build()
        .expect("an HTTP client")
}

/// One scrape of `/metrics`.
struct Metrics(String);

impl Metrics {
    async fn scrape(wsm: &WsmProcess) -> Metrics {
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

    fn get(&self, name: &str) -> u64 {
        metric(&self.0, name) as u64
    }

    fn received(&self) -> u64 {
        self.get("wsm_frames_received_total")
    }

    fn published(&self) -> u64 {
        self.get("wsm_frames_published_total")
    }

    fn queued(&self) -> u64 {
        self.get("wsm_publish_queue_frames")
    }
}

/// The HTTP status of `GET <path>` on wsm's HTTP port.
async fn probe(wsm: &WsmProcess, path: &str) -> u16 {
    http()
        .get(format!("http://{}{path}", wsm.http))
        .send()
        .await
        .expect("the HTTP port answers")
        .status()
        .as_u16()
}

/// Waits until wsm is done with what it read (the feed is stalled): its queue is empty and its
/// counters stay put. Returns how many frames it read; the stream then shows what became of them.
async fn drained(wsm: &WsmProcess) -> u64 {
    let poll = Poll::new("wsm's publish queue to empty");
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
        if m.queued() == 0 && counted && last == Some(now) {
            return now.0;
        }
        last = (m.queued() == 0).then_some(now);
        tokio::time::sleep(Duration::from_millis(100)).await;
        poll.tick().await;
    }
}

/// Stalls every session of `feed` and returns the frames its only session has sent, once that
/// no longer changes (a stall takes effect after the step in progress).
async fn stall_and_count(feed: &FeedHandle) -> u64 {
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
struct Event {
    id: String,
    epoch: u64,
    seq: u64,
    /// The feed's per-session frame number (`u`) of a depth update.
    update: Option<u64>,
    /// The `id` of a reply to a method call (SUBSCRIBE, LIST_SUBSCRIPTIONS).
    reply: Option<u64>,
}

fn event(entry_id: &str, data: &[u8]) -> Event {
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

async fn published(redis_url: &str, topic: &str) -> Vec<Event> {
    stream_entries(redis_url, topic)
        .await
        .iter()
        .map(|e| event(&e.id, e.field("data").expect("a data field")))
        .collect()
}

/// What a stream holds of one connection's frames, counted against what it read.
#[derive(Debug)]
struct Tally {
    /// Distinct `seq`s seen.
    distinct: u64,
    /// Entries whose `seq` was seen before (a retried call that had landed).
    duplicates: u64,
    /// Duplicates that arrived after a later `seq` (a timed-out call that landed late).
    late: u64,
    /// `seq`s in 1..=read missing from the stream.
    gaps: u64,
}

/// Counts `events` against `read` frames read by wsm: every `seq` in 1..=read should be there,
/// first occurrences in order.
fn tally(events: &[Event], read: u64) -> Tally {
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
fn assert_updates_complete(events: &[Event], sent: u64, what: &str) {
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

/// Resident memory of a process in KiB (Linux).
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("the test connects to Redis")
}

// ---------------------------------------------------------------------------------------------
// 1. The feed server killed and restarted

/// A `feed-server` process (the feed server's own binary) on a fixed port, controlled over its
/// HTTP control endpoint.
struct FeedProcess {
    child: Child,
    control: String,
    _stdout: BufReader<ChildStdout>,
}

impl FeedProcess {
    fn spawn(listen: SocketAddr) -> FeedProcess {
        let listen = listen.to_string();
        let mut child = Command::new(wsm_testkit::feed_server_bin())
            .args(["--listen", &listen, "--rate", "400", "--wait-for-subscribe"])
            .args(["--control-port", "0", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the feed server process starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut control = None;
        let mut listening = false;
        while control.is_none() || !listening {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("stdout reads");
            assert!(n > 0, "the feed server process exited before listening");
            if let Some(addr) = line.trim().strip_prefix("control http://") {
                control = Some(format!("http://{addr}"));
            }
            listening |= line.starts_with("listening ws://");
        }
        FeedProcess {
            child,
            control: control.unwrap_or_default(),
            _stdout: stdout,
        }
    }

    /// SIGKILL, and reaps the process.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A control call (`GET /stats`, `POST /stall?ms=N`, ...) and its JSON answer.
    async fn call(&self, method: reqwest::Method, path: &str) -> Value {
        let body = http()
            .request(method, format!("{}{path}", self.control))
            .send()
            .await
            .expect("the feed's control endpoint answers")
            .bytes()
            .await
            .expect("a whole body");
        serde_json::from_slice(&body).expect("JSON from the control endpoint")
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path).await
    }

    /// The texts the one session of this process received, once it has received `greeting`
    /// messages and sent at least `frames`.
    async fn session(&self, greeting: usize, frames: u64) -> Vec<String> {
        let poll = Poll::new("the feed's session to be greeted and streaming");
        loop {
            let stats = self.get("/stats").await;
            assert!(
                stats["accepted_total"].as_u64() <= Some(1),
                "wsm opened more than one session to one feed process: {stats}"
            );
            let sent = stats["sessions"][0]["frames_sent"].as_u64().unwrap_or(0);
            let texts: Vec<String> = self
                .get("/received")
                .await
                .as_array()
                .expect("a list")
                .iter()
                .filter_map(|r| r["text"].as_str().map(str::to_owned))
                .collect();
            if texts.len() >= greeting && sent >= frames {
                return texts;
            }
            poll.tick().await;
        }
    }

    async fn frames_sent(&self) -> u64 {
        self.get("/stats").await["sessions"][0]["frames_sent"]
            .as_u64()
            .expect("one session")
    }

    /// Stops the session writing and returns what it sent, once that no longer changes (a
    /// stall takes effect after the step in progress).
    async fn stall_and_count(&self) -> u64 {
        self.call(reqwest::Method::POST, "/stall?ms=600000").await;
        let poll = Poll::new("the feed process to stop sending");
        let mut last = self.frames_sent().await;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.frames_sent().await;
            if now == last {
                return now;
            }
            last = now;
            poll.tick().await;
        }
    }
}

impl Drop for FeedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One session of the feed, as the test saw it.
struct FeedSession {
    epoch: u64,
    /// Frames the feed sent on it: exactly, or at least (killed while streaming).
    sent: u64,
    exact: bool,
}

/// The feed server process is SIGKILLed ten times and started again on the same port. wsm
/// reconnects each time; every new session receives `on_connect` and then the replay messages in
/// order; the published events carry epochs 1..=11 in order with `seq` counting on from 1 without
/// a gap; and in every epoch the published depth updates are the feed's frames 1..=n of that
/// session: all it sent (stopped first, so the count is exact), or at least all it had sent
/// shortly before it was killed while streaming (every other cycle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_killed_and_restarted_ten_times() {
    let _one = ONE_AT_A_TIME.lock().await;
    bounded(async {
        const TOPIC: &str = "faults.feed.restarts";
        const KILLS: u64 = 10;
        let hello = r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#;
        let subscribes = [
            r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":2}"#,
            r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":3}"#,
        ];
        let greeting: Vec<String> = std::iter::once(hello)
            .chain(subscribes)
            .map(str::to_owned)
            .collect();

        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let mut feed = FeedProcess::spawn(listen);
        let redis = RedisServer::start();
        let url = redis.url();
        let wsm = WsmProcess::spawn(&[
            "--pubsub",
            "redis",
            "--redis-url",
            &url,
            "--reconnect-base-ms",
            "50",
            "--reconnect-attempts",
            "0",
        ]);
        let id = open_publishing(
            &wsm,
            &format!("ws://{listen}/ws"),
            true,
            &[hello],
            TOPIC,
            &subscribes,
        )
        .await;

        let mut sessions = Vec::new();
        for epoch in 1..=KILLS + 1 {
            let texts = feed.session(greeting.len(), 40).await;
            assert_eq!(
                texts, greeting,
                "epoch {epoch}: the session received on_connect, then the replay messages in order"
            );
            // Odd epochs end quietly: the feed stops writing first, so what it sent is exact. Even
            // ones are killed while frames are flowing: the count read just before is a floor.
            let quiet = epoch % 2 == 1 || epoch == KILLS + 1;
            let sent = if quiet {
                feed.stall_and_count().await
            } else {
                feed.frames_sent().await
            };
            sessions.push(FeedSession {
                epoch,
                sent,
                exact: quiet,
            });
            if epoch <= KILLS {
                feed.kill();
                feed = FeedProcess::spawn(listen);
            }
        }

        // Everything of the last epoch is published (the feed is stalled; its last update is in).
        let last_sent = sessions.last().map_or(0, |s| s.sent);
        let poll = Poll::new("the last epoch's updates to be published");
        let events = loop {
            let events = published(&url, TOPIC).await;
            let done = events
                .iter()
                .any(|e| e.epoch == KILLS + 1 && e.update == Some(last_sent));
            if done {
                break events;
            }
            poll.tick().await;
        };

        // seq counts on from 1 across reconnects, without a gap; epochs go up one at a time.
        let mut last: Option<&Event> = None;
        for e in &events {
            match last {
                None => assert_eq!((e.epoch, e.seq), (1, 1), "the first event"),
                Some(prev) => {
                    assert_eq!(e.seq, prev.seq + 1, "a gap or repeat before entry {}", e.id);
                    assert!(
                        e.epoch == prev.epoch || e.epoch == prev.epoch + 1,
                        "epoch {} follows epoch {} at entry {}",
                        e.epoch,
                        prev.epoch,
                        e.id
                    );
                }
            }
            last = Some(e);
        }
        let epochs: BTreeSet<u64> = events.iter().map(|e| e.epoch).collect();
        assert_eq!(
            epochs,
            (1..=KILLS + 1).collect(),
            "one epoch per (re)connect"
        );

        let mut lost_total = 0;
        println!("epoch  sent        published  replies    lost");
        for session in &sessions {
            let of_epoch: Vec<&Event> =
                events.iter().filter(|e| e.epoch == session.epoch).collect();
            let updates: Vec<u64> = of_epoch.iter().filter_map(|e| e.update).collect();
            let replies: Vec<u64> = of_epoch.iter().filter_map(|e| e.reply).collect();
            let n = updates.len() as u64;
            let lost = session.sent.saturating_sub(n);
            lost_total += lost;
            let sent = if session.exact {
                format!("{}", session.sent)
            } else {
                format!(">= {}", session.sent)
            };
            println!(
                "{:>5}  {sent:<10}  {n:>9}  {replies:?}  {lost:>4}",
                session.epoch
            );
            assert_eq!(
                updates,
                (1..=n).collect::<Vec<_>>(),
                "epoch {}: the session's updates from 1, in order, without a gap",
                session.epoch
            );
            if session.exact {
                assert_eq!(
                    n, session.sent,
                    "epoch {}: every update sent",
                    session.epoch
                );
            } else {
                assert!(n >= session.sent, "epoch {}: updates lost", session.epoch);
            }
            // The answer to on_connect's call in the first epoch may come before publishing
            // starts; from then on every answer is published, in the order they were sent.
            let expected: &[&[u64]] = if session.epoch == 1 {
                &[&[1, 2, 3], &[2, 3]]
            } else {
                &[&[1, 2, 3]]
            };
            assert!(
                expected.contains(&replies.as_slice()),
                "epoch {}: the answers to on_connect and the replays, in order: {replies:?}",
                session.epoch
            );
        }
        println!("lost: {lost_total}");
        assert_eq!(lost_total, 0);

        // The lifecycle: connected once per epoch, one outage before each reconnect.
        let lifecycle: Vec<(String, u64, u64)> = stream_entries(&url, LIFECYCLE)
            .await
            .iter()
            .filter_map(|entry| {
                let event: Value = serde_json::from_slice(entry.field("data")?).ok()?;
                let data = &event["data"];
                (data["connection_id"] == id.as_str()).then(|| {
                    let kind = event["type"].as_str().unwrap_or("");
                    (
                        kind.rsplit('.').next().unwrap_or("").to_owned(),
                        data["attempt"].as_u64().unwrap_or(0),
                        data["epoch"].as_u64().unwrap_or(0),
                    )
                })
            })
            .collect();
        let connected: Vec<u64> = lifecycle
            .iter()
            .filter(|(kind, _, _)| kind == "connected")
            .map(|(_, _, epoch)| *epoch)
            .collect();
        assert_eq!(connected, (1..=KILLS + 1).collect::<Vec<_>>(), "connected");
        let outages = lifecycle
            .iter()
            .filter(|(kind, attempt, _)| kind == "reconnecting" && *attempt == 1)
            .count() as u64;
        let attempts = lifecycle
            .iter()
            .filter(|(kind, _, _)| kind == "reconnecting")
            .count() as u64;
        assert_eq!(outages, KILLS, "one outage per kill");
        assert!(
            !lifecycle.iter().any(|(kind, _, _)| kind == "disconnected"),
            "the connection never gave up: {lifecycle:?}"
        );
        let m = Metrics::scrape(&wsm).await;
        let reconnects = m.get("wsm_reconnects_total");
        println!(
            "reconnects: {outages} outages, {attempts} attempts, wsm_reconnects_total {reconnects}"
        );
        assert_eq!(reconnects, attempts, "every reconnect attempt is counted");
        let listed = wsm.list().await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, "connected");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. Redis restarted during publishing

/// Reads one stream continuously with XREAD, across a restart of Redis: a restarted test Redis
/// starts empty and keeps nothing of before, so only a reader that was there before the stop
/// sees everything. It continues after the last entry ID it saw, which a restarted server's
/// entries (IDs from the clock) are all past.
struct StreamReader {
    events: Arc<Mutex<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StreamReader {
    fn start(url: String, topic: &'static str) -> StreamReader {
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let seen = Arc::clone(&events);
        let task = tokio::spawn(async move {
            let mut from = "0-0".to_owned();
            loop {
                let client = redis::Client::open(url.as_str()).expect("a Redis URL");
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_millis(500)))
                    .set_response_timeout(Some(Duration::from_secs(5)));
                let Ok(mut conn) = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                loop {
                    // No BLOCK: a reader must keep reading while Redis pauses writes.
                    let reply: Result<redis::Value, _> = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(2000)
                        .arg("STREAMS")
                        .arg(topic)
                        .arg(&from)
                        .query_async(&mut conn)
                        .await;
                    let Ok(reply) = reply else { break };
                    let page = xread_entries(reply);
                    if page.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    if let Some((last, _)) = page.last() {
                        from = last.clone();
                    }
                    let mut events = seen.lock().unwrap();
                    events.extend(page.iter().map(|(id, data)| event(id, data)));
                }
            }
        });
        StreamReader { events, task }
    }

    fn last_id(&self) -> Option<String> {
        self.events.lock().unwrap().last().map(|e| e.id.clone())
    }

    fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    fn has_update(&self, update: u64) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .any(|e| e.update == Some(update))
    }

    fn finish(self) -> Vec<Event> {
        self.task.abort();
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

/// `(entry id, data)` of an XREAD reply for one stream.
fn xread_entries(reply: redis::Value) -> Vec<(String, Vec<u8>)> {
    use redis::Value as V;
    let text = |v: &V| match v {
        V::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        V::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    let streams = match reply {
        V::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                V::Array(mut parts) if parts.len() == 2 => parts.pop(),
                _ => None,
            })
            .collect::<Vec<_>>(),
        V::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let V::Array(entries) = entries else { continue };
        for entry in entries {
            let V::Array(parts) = entry else { continue };
            let [id, V::Array(fields)] = parts.as_slice() else {
                continue;
            };
            let data = fields
                .chunks(2)
                .find(|kv| kv.len() == 2 && text(&kv[0]) == "data")
                .and_then(|kv| match &kv[1] {
                    V::BulkString(b) => Some(b.clone()),
                    _ => None,
                });
            if let Some(data) = data {
                out.push((text(id), data));
            }
        }
    }
    out
}

/// The last entry ID of `topic` (`None` while empty).
async fn last_entry_id(
    conn: &mut redis::aio::MultiplexedConnection,
    topic: &str,
) -> Option<String> {
    let reply: redis::Value = redis::cmd("XREVRANGE")
        .arg(topic)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await
        .expect("XREVRANGE");
    let redis::Value::Array(entries) = reply else {
        return None;
    };
    let redis::Value::Array(parts) = entries.into_iter().next()? else {
        return None;
    };
    match parts.into_iter().next()? {
        redis::Value::BulkString(id) => Some(String::from_utf8_lossy(&id).into_owned()),
        redis::Value::SimpleString(id) => Some(id),
        _ => None,
    }
}

/// Stops Redis with nothing it acknowledged unread: writes are paused (an XADD batch of wsm's
/// stays in flight and dies with the server), the reader catches up, then SIGKILL.
async fn stop_with_reader_caught_up(redis: &mut RedisServer, reader: &StreamReader, topic: &str) {
    let mut conn = redis_conn(&redis.url()).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .expect("CLIENT PAUSE WRITE");
    let last = last_entry_id(&mut conn, topic).await;
    let poll = Poll::new("the reader to catch up with the paused stream");
    while reader.last_id() != last {
        poll.tick().await;
    }
    redis.stop();
}

/// Runs `RedisServer::restart` (blocking until the server answers PING) off the runtime.
async fn restart(redis: RedisServer) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        redis.restart();
        redis
    })
    .await
    .expect("restart")
}

/// A wsm with the Redis pub/sub publishes a 3000 frames/s feed; Redis is SIGKILLed with a batch in
/// flight, stays down until wsm's publish queue is full and its socket has stopped being read for
/// a while, and comes back empty on the same port. Meanwhile wsm answers (`/health`, `List`) and
/// reports the fault (`/ready` 503, `wsm_publish_errors_total`, `wsm_degraded_total` counting both
/// the failed publish and the full queue); the queue never holds more than its 4096 frames. After
/// Redis returns, a reader that followed the stream throughout has every frame wsm read: `seq`
/// 1..=n without a gap or duplicate, and the feed's updates 1..=sent.
///
/// State is kept in memory: this test is about the bus path. (A test Redis keeps nothing on disk,
/// so with Redis state the restart would also wipe the connection record, and the owner would
/// read that at its next refresh as a Disconnect made elsewhere and close the socket: a separate,
/// documented rule.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_during_publishing() {
    let _one = ONE_AT_A_TIME.lock().await;
    bounded(async {
        const TOPIC: &str = "faults.redis.restart";
        /// The socket must stay unread at least this long for the test to call it paused.
        const PAUSED_FOR: Duration = Duration::from_millis(500);
        /// Redis stays down at least this long.
        const MIN_OUTAGE: Duration = Duration::from_secs(3);

        let mut redis = RedisServer::start();
        let url = redis.url();
        let wsm = WsmProcess::spawn(&[
            "--state",
            "memory",
            "--pubsub",
            "redis",
            "--redis-url",
            &url,
        ]);
        let feed = feed_with(FeedConfig {
            rate: 3000,
            size: 1000,
            auto_stream: false,
            ..FeedConfig::default()
        })
        .await;
        let reader = StreamReader::start(url.clone(), TOPIC);
        let subscribe = r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":1}"#;
        let id = open_publishing(&wsm, &feed.url("/ws"), false, &[], TOPIC, &[subscribe]).await;
        let poll = Poll::new("frames to flow into Redis");
        while reader.len() < 1500 {
            poll.tick().await;
        }
        let rss_before = rss_kib(wsm.pid());

        stop_with_reader_caught_up(&mut redis, &reader, TOPIC).await;
        let acked_before = reader.len();
        let down_at = Instant::now();
        let mut client = wsm.client().await;
        // Sample until the socket has not been read for PAUSED_FOR with the queue full.
        let (mut max_queue, mut max_rss) = (0, rss_before);
        let mut flat_since: Option<(Instant, u64)> = None;
        let mut paused = None;
        let poll = Poll::new("wsm to stop reading its socket while Redis is down");
        loop {
            let m = Metrics::scrape(&wsm).await;
            let now = Instant::now();
            max_queue = max_queue.max(m.queued());
            max_rss = max_rss.max(rss_kib(wsm.pid()));
            assert!(
                m.queued() <= QUEUE_FRAMES,
                "the publish queue holds {} frames, over its bound of {QUEUE_FRAMES}",
                m.queued()
            );
            flat_since = match flat_since {
                Some((at, received)) if received == m.received() => Some((at, received)),
                _ => Some((now, m.received())),
            };
            if let Some((at, received)) = flat_since {
                if paused.is_none() && now - at >= PAUSED_FOR && m.queued() > 0 {
                    paused = Some((now - at, received, m.queued()));
                }
            }
            if paused.is_some() && now - down_at >= MIN_OUTAGE {
                break;
            }
            poll.tick().await;
        }
        // Still answering, and saying what is wrong.
        assert_eq!(
            probe(&wsm, "/health").await,
            200,
            "/health while Redis is down"
        );
        assert_eq!(
            probe(&wsm, "/ready").await,
            503,
            "/ready while Redis is down"
        );
        let listed = client
            .list(proto::ListRequest::default())
            .await
            .expect("List while Redis is down (state is in memory)")
            .into_inner()
            .connections;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, "connected", "the upstream is untouched");
        let during = Metrics::scrape(&wsm).await;
        let outage = down_at.elapsed();

        let redis = restart(redis).await;
        let poll = Poll::new("/ready after Redis returned");
        while probe(&wsm, "/ready").await != 200 {
            poll.tick().await;
        }
        // Let frames flow for a moment after the restart, then stop the feed and count.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = stall_and_count(&feed).await;
        let read = drained(&wsm).await;
        let poll = Poll::new("the reader to see the feed's last update");
        while !reader.has_update(sent) {
            poll.tick().await;
        }
        let after = Metrics::scrape(&wsm).await;
        let rss_after = rss_kib(wsm.pid());
        let events = reader.finish();
        drop(redis);

        let (paused_for, paused_at, queued_at_pause) =
            paused.expect("the socket paused while Redis was down");
        let t = tally(&events, read);
        println!(
            "redis down {outage:?}; {acked_before} events read before the stop; socket unread for \
             {paused_for:?} at {paused_at} frames read with {queued_at_pause} queued (max queue \
             {max_queue} of {QUEUE_FRAMES}); errors {} degraded {}; RSS {rss_before} KiB before, \
             max {max_rss} KiB while down, {rss_after} KiB after",
            during.get("wsm_publish_errors_total"),
            during.get("wsm_degraded_total"),
        );
        println!(
            "wsm read {read}; stream has {} distinct, {} duplicates, {} gaps; lost {}",
            t.distinct, t.duplicates, t.gaps, t.gaps
        );
        assert!(
            queued_at_pause + 1024 >= QUEUE_FRAMES,
            "the socket paused because the queue was full (within one run of its bound)"
        );
        assert!(during.get("wsm_publish_errors_total") >= 1);
        // The degraded events themselves could not reach the bus; they are counted as dropped.
        assert!(during.get("wsm_lifecycle_events_dropped_total") >= 2);
        // One for the failed publish, at least one more for the full queue.
        assert!(
            during.get("wsm_degraded_total") >= 2,
            "degraded for the failing bus and for the full queue: {}",
            during.get("wsm_degraded_total")
        );
        assert_eq!(after.get("wsm_frames_dropped_total"), 0, "nothing dropped");
        assert_eq!(t.gaps, 0, "lost frames");
        assert_eq!(t.distinct, read, "every frame read is published");
        assert_eq!(
            t.duplicates, 0,
            "a batch in flight on the killed server is not repeated"
        );
        assert_updates_complete(&events, sent, "redis restart");
        let listed = wsm.list().await;
        assert_eq!(listed[0].id, id);
    })
    .await;
}

/// A Redis that restarts with a data set answers `LOADING` until it has read it (seconds, for a
/// large one). That is a passing state: wsm keeps retrying the batch instead of dropping it as
/// refused. Writes are paused and saved before the SIGKILL, so the restarted server holds every
/// event it ever acknowledged, and the stream must end up with `seq` 1..=n, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_loading_after_a_restart_is_waited_for_not_dropped() {
    let _one = ONE_AT_A_TIME.lock().await;
    bounded(async {
        const TOPIC: &str = "faults.redis.loading";
        // Loading checks for clients every KiB and spends 50 µs per key: a couple of seconds
        // for the filler below.
        let mut redis = RedisServer::start_with(&[
            "--key-load-delay",
            "50",
            "--loading-process-events-interval-bytes",
            "1024",
        ]);
        let url = redis.url();
        let mut conn = redis_conn(&url).await;
        let _: i64 = redis::cmd("EVAL")
            .arg("for i = 1, 20000 do redis.call('SET', 'filler:' .. i, 'x') end return 1")
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("filler keys");
        let wsm = WsmProcess::spawn(&["--state", "memory", "--pubsub", "redis", "--redis-url", &url]);
        let feed = feed_with(FeedConfig {
            rate: 1000,
            auto_stream: false,
            ..FeedConfig::default()
        })
        .await;
        let subscribe = r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":1}"#;
        open_publishing(&wsm, &feed.url("/ws"), false, &[], TOPIC, &[subscribe]).await;
        let poll = Poll::new("frames to flow into Redis");
        while Metrics::scrape(&wsm).await.published() < 300 {
            poll.tick().await;
        }

        // Everything acknowledged so far goes into the dump the restart loads.
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(60_000)
            .arg("WRITE")
            .query_async(&mut conn)
            .await
            .expect("CLIENT PAUSE WRITE");
        let _: () = redis::cmd("SAVE")
            .query_async(&mut conn)
            .await
            .expect("SAVE");
        drop(conn);
        redis.stop();
        let port = redis.port();
        let watcher = tokio::spawn(loading_replies(port));
        let redis = restart(redis).await;
        let loading = watcher.await.expect("the LOADING watcher");
        println!("the restarted Redis answered LOADING {loading} times");
        assert!(loading > 0, "the restart had a loading phase");

        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = stall_and_count(&feed).await;
        let read = drained(&wsm).await;
        let m = Metrics::scrape(&wsm).await;
        let events = published(&url, TOPIC).await;
        let t = tally(&events, read);
        println!(
            "wsm read {read}; stream has {} distinct, {} duplicates, {} gaps; errors {}, dropped {}",
            t.distinct,
            t.duplicates,
            t.gaps,
            m.get("wsm_publish_errors_total"),
            m.get("wsm_frames_dropped_total")
        );
        assert!(m.get("wsm_publish_errors_total") >= 1, "publishing failed meanwhile");
        assert_eq!(m.get("wsm_frames_dropped_total"), 0, "no batch dropped as refused");
        assert_eq!(t.gaps, 0, "lost frames");
        assert_eq!(t.distinct, read);
        assert_updates_complete(&events, sent, "redis loading");
        drop(redis);
    })
    .await;
}

/// PINGs a restarting Redis on `port` until it answers PONG; returns how many `-LOADING` answers
/// came first.
async fn loading_replies(port: u16) -> u64 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut loading = 0;
    let poll = Poll::new("the restarted Redis to answer PONG");
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut stream = tokio::io::BufReader::new(stream);
            let mut line = String::new();
            loop {
                line.clear();
                if stream.get_mut().write_all(b"PING\r\n").await.is_err()
                    || stream.read_line(&mut line).await.unwrap_or(0) == 0
                {
                    break;
                }
                if line.starts_with("+PONG") {
                    return loading;
                }
                if line.starts_with("-LOADING") {
                    loading += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        poll.tick().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A failing Dapr sidecar

/// The gRPC status of a failed call, or panics naming the call.
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) -> tonic::Status {
    match result {
        Ok(ok) => panic!("{what} succeeded while the sidecar failed: {ok:?}"),
        Err(status) => status,
    }
}

/// wsm on the Dapr state store and pub/sub, through the Dapr-API test sidecar (which writes a real
/// Redis), while a feed publishes 500 frames/s. The sidecar answers 500 for a while, then answers
/// later than wsm's 5 s Dapr timeout, then is healthy again. Meanwhile: wsm keeps running and
/// reports the fault (`wsm_publish_errors_total`, `wsm_degraded_total`, `/ready` 503); calls that
/// need the shared store fail with `UNAVAILABLE` naming it and the cause (HTTP 500, timed out),
/// and `GetTag` is served from the owner's copy. Afterwards every frame read is in the stream
/// with `seq` 1..=n: gaps 0; duplicates only where a call that failed had landed (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_sidecar_failing_then_timing_out() {
    let _one = ONE_AT_A_TIME.lock().await;
    bounded(async {
        const TOPIC: &str = "faults.dapr";
        let redis = RedisServer::start();
        let sidecar =
            DaprSidecar::start(&redis.url(), "websocketmanager", "statestore", "pubsub").await;
        let port = sidecar.port().to_string();
        let wsm = WsmProcess::spawn(&[
            "--state",
            "dapr",
            "--pubsub",
            "dapr",
            "--dapr-http-port",
            &port,
        ]);
        let feed = feed_with(FeedConfig {
            rate: 500,
            auto_stream: false,
            ..FeedConfig::default()
        })
        .await;
        let subscribe = r#"{"method":"SUBSCRIBE","params":["btcusdt@depth"],"id":1}"#;
        let id = open_publishing(&wsm, &feed.url("/ws"), false, &[], TOPIC, &[subscribe]).await;
        let mut client = wsm.client().await;
        let set_tag = |value: &str| proto::SetTagRequest {
            id: id.clone(),
            key: "phase".into(),
            value: value.into(),
        };
        client
            .set_tag(set_tag("healthy"))
            .await
            .expect("SetTag while healthy");
        let poll = Poll::new("frames to be published");
        while Metrics::scrape(&wsm).await.published() < 200 {
            poll.tick().await;
        }

        // 1. Every sidecar call answers 500.
        sidecar.set_failing(true);
        let errors = Metrics::scrape(&wsm).await.get("wsm_publish_errors_total");
        let status = refused(client.set_tag(set_tag("failing")).await, "SetTag");
        println!("SetTag during 500s: {status:?}");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("state store") && status.message().contains("500"),
            "the error names the state store and the sidecar's answer: {}",
            status.message()
        );
        let status = refused(client.list(proto::ListRequest::default()).await, "List");
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        assert!(status.message().contains("500"), "{}", status.message());
        let tag = client
            .get_tag(proto::GetTagRequest {
                id: id.clone(),
                key: "phase".into(),
            })
            .await
            .expect("GetTag is served from the owner's copy")
            .into_inner()
            .value;
        assert!(["healthy", "failing"].contains(&tag.as_str()), "{tag}");
        assert_eq!(
            probe(&wsm, "/ready").await,
            503,
            "/ready while the sidecar fails"
        );
        assert_eq!(probe(&wsm, "/health").await, 200);
        let poll = Poll::new("publishing to fail a few times");
        while Metrics::scrape(&wsm).await.get("wsm_publish_errors_total") < errors + 3 {
            poll.tick().await;
        }

        // 2. Every sidecar call answers after wsm's 5 s timeout.
        sidecar.set_failing(false);
        sidecar.set_delay(Duration::from_secs(6));
        let errors = Metrics::scrape(&wsm).await.get("wsm_publish_errors_total");
        let started = Instant::now();
        let status = refused(client.set_tag(set_tag("slow")).await, "SetTag");
        println!(
            "SetTag during timeouts: {status:?} after {:?}",
            started.elapsed()
        );
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("state store") && status.message().contains("timed out"),
            "the error names the state store and the timeout: {}",
            status.message()
        );
        let poll = Poll::new("a publish to time out");
        while Metrics::scrape(&wsm).await.get("wsm_publish_errors_total") < errors + 1 {
            poll.tick().await;
        }
        let during = Metrics::scrape(&wsm).await;
        // The owner's copy has what the failed SetTags asked for; the shared copy does not yet.
        let tag = client
            .get_tag(proto::GetTagRequest {
                id: id.clone(),
                key: "phase".into(),
            })
            .await
            .expect("GetTag")
            .into_inner()
            .value;
        println!("GetTag after two failed SetTags: {tag:?}");

        // 3. Healthy again.
        sidecar.set_delay(Duration::ZERO);
        let poll = Poll::new("/ready after the sidecar recovered");
        while probe(&wsm, "/ready").await != 200 {
            poll.tick().await;
        }
        client
            .set_tag(set_tag("recovered"))
            .await
            .expect("SetTag after recovery");
        let listed = client
            .list(proto::ListRequest::default())
            .await
            .expect("List after recovery")
            .into_inner()
            .connections;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, "connected");
        assert_eq!(
            listed[0].tags.get("phase").map(String::as_str),
            Some("recovered")
        );

        let sent = stall_and_count(&feed).await;
        let read = drained(&wsm).await;
        let poll = Poll::new("the feed's last update in the stream");
        let events = loop {
            let events = published(&redis.url(), TOPIC).await;
            if events.iter().any(|e| e.update == Some(sent)) {
                break events;
            }
            poll.tick().await;
        };
        let t = tally(&events, read);
        println!(
            "errors {} degraded {}; wsm read {read}; stream has {} entries: {} distinct, {} \
             duplicates ({} late), {} gaps",
            during.get("wsm_publish_errors_total"),
            during.get("wsm_degraded_total"),
            events.len(),
            t.distinct,
            t.duplicates,
            t.late,
            t.gaps
        );
        assert_eq!(
            Metrics::scrape(&wsm).await.get("wsm_frames_dropped_total"),
            0,
            "nothing dropped"
        );
        assert_eq!(t.gaps, 0, "lost frames");
        assert_eq!(t.distinct, read, "every frame read is published");
        assert_updates_complete(&events, sent, "dapr faults");
        assert!(during.get("wsm_degraded_total") >= 1, "degraded reported");
        assert!(
            during.get("wsm_lifecycle_events_dropped_total") >= 1,
            "lifecycle events the sidecar did not take are counted"
        );
    })
    .await;
}
