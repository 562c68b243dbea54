//! Several instances on one Redis (issue 6), measured with real `wsm serve` processes:
//!
//! 1. **Failover time.** Per run: a fresh `redis-server`, three instances A, B and C on it (Redis
//!    state and pub/sub, heartbeat 1 s, stale after 3 s, reconnect base 100 ms), and the feed
//!    server streaming 100 frames/s per connection. B and C start after random pauses of 0–250 ms,
//!    so their observers, which read the heartbeats every quarter heartbeat, look at random phases
//!    of A's heartbeat. Five connections are created through A, each publishing to its own topic.
//!    Once every topic holds 20 events and all three instances have run for two heartbeats, the
//!    bench sleeps a random 0–1000 ms, so the kill lands at a random phase of A's heartbeat, notes
//!    the wall-clock time and SIGKILLs A. A connection's failover time is the time in the Redis
//!    stream entry id of its first event with `epoch` ≥ 2 (published by the survivor that took it
//!    over) minus the kill time; both are this machine's wall clock. Per run: the first connection
//!    back and the last (all back). To split the time into its parts, each run also reads when A
//!    last wrote its heartbeat (its `lastSeenAt`) and when the survivors claimed the connections
//!    and finished their handshakes (the entry times of their `connecting` and `connected`
//!    lifecycle events). Every topic is then checked: epochs only go up, and within each epoch
//!    `seq` goes up by one from 1, so no frame was lost or reordered while an owner was alive.
//! 2. **Forwarding overhead.** Two instances A and B on one Redis (default heartbeat), and one
//!    silent connection created through A. A tonic client calls `SendRaw` (`text/plain`, 100 bytes)
//!    sequentially on A (direct: A owns the connection) and on B (forwarded: B finds A is the owner
//!    and passes the call on over gRPC), after a warm-up, in alternating blocks of 1000 calls so both
//!    paths see the same machine conditions. B's `wsm_forwarded_total` must count every call sent to
//!    B; A must have forwarded nothing and nobody may have taken the connection over.
//!
//! The instances are the built `wsm` binary, spawned as `wsm serve` on free loopback ports with
//! `--allow-private-networks` (the feed is on loopback) and `--log-level warn`. The feed server runs
//! in this process on its own thread and single-threaded runtime; the clients and the Redis reader
//! run on another single-threaded runtime.
//!
//! `scripts/bench_cluster.sh` (`cargo bench -p wsm --bench cluster`)
//!
//! Environment: `BENCH_RUNS` (failover runs, default 5), `BENCH_CALLS` (timed `SendRaw` calls per
//! path, default 20 000), `BENCH_WARMUP` (untimed calls per path first, default 2 000),
//! `BENCH_ONLY` (`failover` or `forward`), `WSM_BIN` (the `wsm` binary; default the one cargo built
//! for this bench), `BENCH_ROWS` (append the main figures as rows to this file for
//! `scripts/bench.sh`).
//!
//! Without `--bench` (`cargo test --all-targets`) it runs a smoke version: one failover run and 200
//! calls per path, about ten seconds. It exits with status 1 after the table if a connection did not
//! come back within 30 s, a frame was lost or reordered within an epoch, a call failed, or the calls
//! sent to B were not forwarded.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use feed_server::FeedConfig;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;
use serde_json::Value;
use tokio::runtime::Builder;
use wsm::proto::{ConnectRequest, ListRequest, SendRawRequest, StartPublishRequest};
use wsm_testkit::RedisServer;

#[path = "support/mod.rs"]
mod support;

use support::rows::{grouped, Rows};
use support::{env_or, spawn_wsm, wanted, wsm_bin, Client, Feed, Latencies, WsmProcess};

/// Failover settings (issue 6): heartbeat every second, stale after three, first reconnect after
/// 100 ms.
const HEARTBEAT_S: u64 = 1;
const STALE_S: u64 = 3;
const RECONNECT_MS: u64 = 100;
/// Connections on the instance that is killed, and the feed's frames per second on each.
const FAILOVER_CONNS: usize = 5;
const FEED_RATE: u32 = 100;
/// Events every topic holds before the kill.
const EVENTS_BEFORE_KILL: usize = 20;
/// A connection not back this long after the kill counts as lost.
const BACK_WITHIN: Duration = Duration::from_secs(30);
/// How long all three instances run before the kill (at the earliest): two heartbeats.
const SETTLE_BEFORE_KILL: Duration = Duration::from_secs(2 * HEARTBEAT_S);
/// How long the new owners publish before the topics are checked.
const NEW_OWNERS_PUBLISH: Duration = Duration::from_secs(1);
/// Between two reads of the topics.
const POLL: Duration = Duration::from_millis(50);
/// Size of the `SendRaw` payload, in bytes.
const PAYLOAD_SIZE: usize = 100;
/// Goals (issue 6).
const GOAL_FAILOVER: Duration = Duration::from_secs(5);
const GOAL_FORWARD_US: f64 = 500.0;
/// What the original C# service documents per forwarded call, for comparison.
const CSHARP_FORWARD_US: f64 = 2000.0;
/// Bound against hangs only.
const HANG: Duration = Duration::from_secs(60);
/// The state store key prefix `wsm serve` uses by default (Dapr's: the app id).
const KEY_PREFIX: &str = "websocketmanager||";
const LIFECYCLE_TOPIC: &str = "websocketmanager.lifecycle";

struct Settings {
    smoke: bool,
    runs: usize,
    calls: usize,
    warmup: usize,
    /// Calls per path in a row before the other path's turn.
    block: usize,
    failover: bool,
    forward: bool,
    wsm_bin: PathBuf,
}

impl Settings {
    fn from_env() -> Self {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let (runs, calls, warmup, block) = if smoke {
            (1, 200, 20, 100)
        } else {
            (
                env_or("BENCH_RUNS", 5usize).max(1),
                env_or("BENCH_CALLS", 20_000usize).max(1),
                env_or("BENCH_WARMUP", 2_000usize),
                1000,
            )
        };
        Settings {
            smoke,
            runs,
            calls,
            warmup,
            block,
            failover: wanted("failover"),
            forward: wanted("forward"),
            wsm_bin: wsm_bin(),
        }
    }
}

/// An instance on the Redis at `redis` (state and pub/sub) named `id`, then `extra`.
fn instance(settings: &Settings, redis: &str, id: &str, extra: &[&str]) -> WsmProcess {
    let base = [
        "--state",
        "redis",
        "--pubsub",
        "redis",
        "--redis-url",
        redis,
        "--instance-id",
        id,
        "--log-level",
        "warn",
    ];
    spawn_wsm(&settings.wsm_bin, &[&base[..], extra].concat())
}

fn millis_since_epoch(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------------------------------------
// Reading Redis

async fn redis_connection(url: &str) -> Result<MultiplexedConnection, String> {
    redis::Client::open(url)
        .map_err(|e| format!("Redis URL {url}: {e}"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("connecting to Redis: {e}"))
}

/// The entries of `stream` after the entry id `after` (from the start with `-`): `(id, data)`.
async fn entries_after(
    conn: &mut MultiplexedConnection,
    stream: &str,
    after: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    const PAGE: usize = 1000;
    let mut out = Vec::new();
    let mut cursor = after.to_owned();
    loop {
        let start = if cursor == "-" {
            cursor.clone()
        } else {
            format!("({cursor}")
        };
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await
            .map_err(|e| format!("XRANGE {stream}: {e}"))?;
        let n = reply.ids.len();
        for entry in reply.ids {
            let data: Vec<u8> = entry.get("data").unwrap_or_default();
            cursor = entry.id.clone();
            out.push((entry.id, data));
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// The time part of a stream entry id (`<ms>-<n>`): when Redis added it, on its clock.
fn entry_millis(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// One published frame: its owner's epoch, its sequence number in the epoch, and when Redis added
/// it (ms since the Unix epoch).
#[derive(Clone, Copy)]
struct Event {
    epoch: u64,
    seq: u64,
    at_ms: i64,
}

/// One topic's events as read so far, in stream order.
struct TopicLog {
    topic: String,
    /// The last entry id read (`-` before the first read).
    cursor: String,
    events: Vec<Event>,
    /// Entries that are not a CloudEvent with numeric `epoch` and `seq`.
    unreadable: usize,
}

impl TopicLog {
    fn new(topic: String) -> Self {
        TopicLog {
            topic,
            cursor: "-".into(),
            events: Vec::new(),
            unreadable: 0,
        }
    }

    async fn read_new(&mut self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        for (id, data) in entries_after(conn, &self.topic, &self.cursor).await? {
            let event: Option<Value> = serde_json::from_slice(&data).ok();
            let numbers = event
                .as_ref()
                .and_then(|e| Some((e["epoch"].as_u64()?, e["seq"].as_u64()?)));
            match numbers {
                Some((epoch, seq)) => self.events.push(Event {
                    epoch,
                    seq,
                    at_ms: entry_millis(&id),
                }),
                None => self.unreadable += 1,
            }
            self.cursor = id;
        }
        Ok(())
    }

    /// The first event a later owner published.
    fn first_taken_over(&self) -> Option<Event> {
        self.events.iter().find(|e| e.epoch >= 2).copied()
    }

    /// Frames missing within an epoch, and anything out of order: the stream starts at epoch 1,
    /// epochs only go up, and within an epoch `seq` goes up by one from 1.
    fn check(&self) -> (u64, Vec<String>) {
        let mut lost = 0;
        let mut faults = Vec::new();
        let mut last: Option<Event> = None;
        for (i, event) in self.events.iter().enumerate() {
            match last {
                None => {
                    if event.epoch != 1 {
                        faults.push(format!("{}: starts at epoch {}", self.topic, event.epoch));
                    }
                    lost += event.seq.saturating_sub(1);
                }
                Some(prev) if prev.epoch == event.epoch => {
                    if event.seq <= prev.seq {
                        faults.push(format!(
                            "{}: seq {} after {} within epoch {} (entry {i})",
                            self.topic, event.seq, prev.seq, event.epoch
                        ));
                    } else {
                        lost += event.seq - prev.seq - 1;
                    }
                }
                Some(prev) if event.epoch > prev.epoch => lost += event.seq.saturating_sub(1),
                Some(prev) => faults.push(format!(
                    "{}: epoch went back from {} to {} (entry {i})",
                    self.topic, prev.epoch, event.epoch
                )),
            }
            last = Some(*event);
        }
        if self.unreadable > 0 {
            faults.push(format!(
                "{}: {} entries without numeric epoch and seq",
                self.topic, self.unreadable
            ));
        }
        (lost, faults)
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Failover time

/// One connection of the killed instance, in ms after the kill (`None`: did not happen).
struct Moved {
    /// The new owner's `connecting` lifecycle event (its claim).
    claimed: Option<i64>,
    /// The new owner's `connected` lifecycle event (its handshake done).
    connected: Option<i64>,
    /// The first event of epoch ≥ 2 in the topic.
    back: Option<i64>,
    new_owner: String,
}

struct FailoverRun {
    /// How long before the kill A last wrote its heartbeat, in ms.
    heartbeat_age: Option<i64>,
    moved: Vec<Moved>,
    /// Frames missing within an epoch, over all topics, and the events checked.
    lost: u64,
    checked: usize,
}

impl FailoverRun {
    fn back(&self) -> Vec<Option<i64>> {
        self.moved.iter().map(|m| m.back).collect()
    }

    fn first_back(&self) -> Option<i64> {
        self.back().into_iter().flatten().min()
    }

    /// The last connection back, if all came back.
    fn all_back(&self) -> Option<i64> {
        self.back()
            .into_iter()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    fn first_claim(&self) -> Option<i64> {
        self.moved.iter().filter_map(|m| m.claimed).min()
    }

    fn last_claim(&self) -> Option<i64> {
        self.moved.iter().filter_map(|m| m.claimed).max()
    }

    /// From each claim to the connection's handshake done, the slowest.
    fn claim_to_connected(&self) -> Option<i64> {
        self.moved
            .iter()
            .filter_map(|m| Some(m.connected? - m.claimed?))
            .max()
    }

    /// From each handshake done to the connection's first frame, the slowest.
    fn connected_to_back(&self) -> Option<i64> {
        self.moved
            .iter()
            .filter_map(|m| Some(m.back? - m.connected?))
            .max()
    }

    fn taken_by(&self, owner: &str) -> usize {
        self.moved.iter().filter(|m| m.new_owner == owner).count()
    }
}

async fn failover_figure(settings: &Settings, problems: &mut Vec<String>) -> Vec<FailoverRun> {
    let mut runs = Vec::new();
    for run in 1..=settings.runs {
        match failover_run(settings, problems).await {
            Ok(result) => {
                println!(
                    "failover run {run}: A's last heartbeat {} before the kill; claims {} – {}; \
                     first back {}, all back {}; taken over by B {} / C {}; {} events checked, {} \
                     lost within an epoch",
                    ms(result.heartbeat_age),
                    ms(result.first_claim()),
                    ms(result.last_claim()),
                    ms(result.first_back()),
                    ms(result.all_back()),
                    result.taken_by("bench-b"),
                    result.taken_by("bench-c"),
                    result.checked,
                    result.lost,
                );
                runs.push(result);
            }
            Err(e) => problems.push(format!("failover run {run}: {e}")),
        }
    }
    runs
}

async fn failover_run(
    settings: &Settings,
    problems: &mut Vec<String>,
) -> Result<FailoverRun, String> {
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = Feed::start(FeedConfig {
        rate: FEED_RATE,
        record_limit: 1024,
        ..FeedConfig::default()
    });
    let timing = [
        "--heartbeat-interval-seconds",
        &HEARTBEAT_S.to_string(),
        "--stale-threshold-seconds",
        &STALE_S.to_string(),
        "--reconnect-base-ms",
        &RECONNECT_MS.to_string(),
    ]
    .map(str::to_owned);
    let timing: Vec<&str> = timing.iter().map(String::as_str).collect();
    // B and C start at random phases of A's heartbeat, as instances started independently would:
    // otherwise each run would see the same delay between A's heartbeat write and the first look
    // of the survivors' observers at it (they look every quarter heartbeat).
    let observe_every = Duration::from_secs(HEARTBEAT_S) / 4;
    let random_phase =
        || Duration::from_millis(rand::random_range(0..observe_every.as_millis() as u64));
    let mut a = instance(settings, &url, "bench-a", &timing);
    std::thread::sleep(random_phase());
    let b = instance(settings, &url, "bench-b", &timing);
    std::thread::sleep(random_phase());
    let c = instance(settings, &url, "bench-c", &timing);
    let settled = Instant::now() + SETTLE_BEFORE_KILL;
    let result = failover_on(&url, &feed, &mut a, &b, &c, settled, problems).await;
    let result = result.map_err(|e| {
        format!(
            "{e}\nA's log ends:\n{}\nB's log ends:\n{}\nC's log ends:\n{}",
            a.logs(),
            b.logs(),
            c.logs()
        )
    });
    drop((a, b, c));
    feed.stop();
    drop(redis);
    result
}

async fn failover_on(
    url: &str,
    feed: &Feed,
    a: &mut WsmProcess,
    b: &WsmProcess,
    c: &WsmProcess,
    settled: Instant,
    problems: &mut Vec<String>,
) -> Result<FailoverRun, String> {
    let mut via_a = a.unbounded_client().await;
    let mut ids = Vec::new();
    let mut logs = Vec::new();
    for i in 1..=FAILOVER_CONNS {
        let id = via_a
            .connect(ConnectRequest {
                url: feed.streaming_url(),
                auto_reconnect: true,
                ..ConnectRequest::default()
            })
            .await
            .map_err(|e| format!("Connect through A: {e}"))?
            .into_inner()
            .id;
        let topic = format!("bench.failover.{i}");
        via_a
            .start_publish(StartPublishRequest {
                id: id.clone(),
                topic: topic.clone(),
            })
            .await
            .map_err(|e| format!("StartPublish through A: {e}"))?;
        ids.push(id);
        logs.push(TopicLog::new(topic));
    }
    drop(via_a);
    let mut conn = redis_connection(url).await?;
    let started = Instant::now();
    loop {
        for log in &mut logs {
            log.read_new(&mut conn).await?;
        }
        if logs.iter().all(|l| l.events.len() >= EVENTS_BEFORE_KILL) {
            break;
        }
        if started.elapsed() > HANG {
            return Err(format!(
                "the topics did not reach {EVENTS_BEFORE_KILL} events within {HANG:?}"
            ));
        }
        tokio::time::sleep(POLL).await;
    }

    // Not before the survivors have watched A's heartbeat change at their usual cadence: a peer
    // counts a heartbeat it reads for the first time as fresh, so an A killed before its first
    // write after their start would be judged from their start instead.
    tokio::time::sleep_until(settled.into()).await;
    // At a random phase of A's heartbeat.
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
    let killed_at = SystemTime::now();
    let killed = Instant::now();
    a.kill();
    let killed_ms = millis_since_epoch(killed_at);

    let heartbeat: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(format!("{KEY_PREFIX}websocketmanager.heartbeat.bench-a"))
        .arg("data")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("reading A's heartbeat: {e}"))?;
    let heartbeat_age = heartbeat
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| humantime::parse_rfc3339(h["lastSeenAt"].as_str()?).ok())
        .map(|written| killed_ms - millis_since_epoch(written));

    loop {
        for log in &mut logs {
            log.read_new(&mut conn).await?;
        }
        if logs.iter().all(|l| l.first_taken_over().is_some()) || killed.elapsed() > BACK_WITHIN {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // Let the new owners publish a while, for the check of their epoch.
    tokio::time::sleep(NEW_OWNERS_PUBLISH).await;
    for log in &mut logs {
        log.read_new(&mut conn).await?;
    }

    let listed = b
        .unbounded_client()
        .await
        .list(ListRequest::default())
        .await
        .map_err(|e| format!("List through B: {e}"))?
        .into_inner()
        .connections;
    let lifecycle = entries_after(&mut conn, LIFECYCLE_TOPIC, "-").await?;
    let mut moved = Vec::new();
    let (mut lost, mut checked) = (0, 0);
    for (id, log) in ids.iter().zip(&logs) {
        let new_owner = listed
            .iter()
            .find(|c| c.id == *id)
            .map_or_else(|| "(not listed)".to_owned(), |c| c.instance_id.clone());
        // The new owner's lifecycle events for this connection, in ms after the kill.
        let event_at = |kind: &str| {
            lifecycle.iter().find_map(|(entry, data)| {
                let event: Value = serde_json::from_slice(data).ok()?;
                let data = &event["data"];
                (data["connection_id"] == id.as_str()
                    && data["instance_id"] != "bench-a"
                    && event["type"]
                        .as_str()
                        .is_some_and(|t| t.rsplit('.').next() == Some(kind)))
                .then(|| entry_millis(entry) - killed_ms)
            })
        };
        let back = log.first_taken_over().map(|e| e.at_ms - killed_ms);
        if back.is_none() {
            problems.push(format!(
                "{} (connection {id}) did not come back within {BACK_WITHIN:?} of the kill; \
                 listed with owner {new_owner}",
                log.topic
            ));
        }
        if !["bench-b", "bench-c"].contains(&new_owner.as_str()) {
            problems.push(format!(
                "{}: owned by {new_owner} after the failover",
                log.topic
            ));
        }
        let (missing, faults) = log.check();
        if missing > 0 {
            problems.push(format!(
                "{}: {missing} frames lost within an epoch",
                log.topic
            ));
        }
        if let Some(epoch) = log.events.iter().map(|e| e.epoch).max().filter(|e| *e > 2) {
            problems.push(format!(
                "{}: epoch {epoch} published; one takeover means epoch 2 at most",
                log.topic
            ));
        }
        problems.extend(faults);
        lost += missing;
        checked += log.events.len();
        moved.push(Moved {
            claimed: event_at("connecting"),
            connected: event_at("connected"),
            back,
            new_owner,
        });
    }
    let takeovers =
        b.try_metric("wsm_takeovers_total").await? + c.try_metric("wsm_takeovers_total").await?;
    if takeovers != FAILOVER_CONNS as f64 {
        problems.push(format!(
            "B and C count {takeovers} takeovers; expected {FAILOVER_CONNS}, one per connection"
        ));
    }
    Ok(FailoverRun {
        heartbeat_age,
        moved,
        lost,
        checked,
    })
}

fn ms(value: Option<i64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v} ms"))
}

// ---------------------------------------------------------------------------------------------
// 2. Forwarding overhead

struct ForwardFigure {
    /// [median, p90, p99, max] in µs.
    direct: [f64; 4],
    forwarded: [f64; 4],
    /// `wsm_forwarded_total` on B and on A after the run.
    forwarded_by_b: f64,
    forwarded_by_a: f64,
}

/// A `text/plain` payload of exactly `PAYLOAD_SIZE` bytes.
fn payload() -> Vec<u8> {
    let text = format!("{:-<PAYLOAD_SIZE$}", "SendRaw forwarding bench ");
    assert_eq!(text.len(), PAYLOAD_SIZE);
    text.into_bytes()
}

async fn send_raw_calls(
    client: &mut Client,
    id: &str,
    payload: &[u8],
    n: usize,
    times: &mut Vec<Duration>,
) -> Result<(), String> {
    for call in 0..n {
        let request = SendRawRequest {
            id: id.to_owned(),
            message: payload.to_vec(),
            content_type: "text/plain".into(),
            replay_on_reconnect: false,
        };
        let started = Instant::now();
        client
            .send_raw(request)
            .await
            .map_err(|e| format!("SendRaw {call}: {e}"))?;
        times.push(started.elapsed());
    }
    Ok(())
}

async fn forward_figure(settings: &Settings, problems: &mut Vec<String>) -> Option<ForwardFigure> {
    let redis = RedisServer::start();
    let url = redis.url();
    let feed = Feed::start(FeedConfig {
        rate: 1,
        auto_stream: false,
        record_limit: 1024,
        ..FeedConfig::default()
    });
    let a = instance(settings, &url, "bench-a", &[]);
    let b = instance(settings, &url, "bench-b", &[]);
    let result = forward_on(settings, &feed, &a, &b).await;
    let result = result.map_err(|e| {
        format!(
            "{e}\nA's log ends:\n{}\nB's log ends:\n{}",
            a.logs(),
            b.logs()
        )
    });
    drop((a, b));
    feed.stop();
    drop(redis);
    match result {
        Ok(figure) => {
            let expected = (settings.warmup + settings.calls) as f64;
            if figure.forwarded_by_b < expected {
                problems.push(format!(
                    "B forwarded {} calls; {expected} were sent to it",
                    figure.forwarded_by_b
                ));
            }
            if figure.forwarded_by_a != 0.0 {
                problems.push(format!(
                    "A, the owner, forwarded {} calls",
                    figure.forwarded_by_a
                ));
            }
            Some(figure)
        }
        Err(e) => {
            problems.push(format!("forwarding: {e}"));
            None
        }
    }
}

async fn forward_on(
    settings: &Settings,
    feed: &Feed,
    a: &WsmProcess,
    b: &WsmProcess,
) -> Result<ForwardFigure, String> {
    let mut direct = a.unbounded_client().await;
    let mut via_b = b.unbounded_client().await;
    let id = direct
        .connect(ConnectRequest {
            url: feed.silent_url(),
            ..ConnectRequest::default()
        })
        .await
        .map_err(|e| format!("Connect through A: {e}"))?
        .into_inner()
        .id;
    let payload = payload();
    let mut ignored = Vec::new();
    send_raw_calls(&mut direct, &id, &payload, settings.warmup, &mut ignored).await?;
    send_raw_calls(&mut via_b, &id, &payload, settings.warmup, &mut ignored).await?;
    let mut direct_times = Vec::with_capacity(settings.calls);
    let mut forwarded_times = Vec::with_capacity(settings.calls);
    let mut left = settings.calls;
    let mut block = 0;
    while left > 0 {
        let n = left.min(settings.block);
        // Alternate which path goes first, so a drift in the machine's speed favours neither.
        if block % 2 == 0 {
            send_raw_calls(&mut direct, &id, &payload, n, &mut direct_times).await?;
            send_raw_calls(&mut via_b, &id, &payload, n, &mut forwarded_times).await?;
        } else {
            send_raw_calls(&mut via_b, &id, &payload, n, &mut forwarded_times).await?;
            send_raw_calls(&mut direct, &id, &payload, n, &mut direct_times).await?;
        }
        left -= n;
        block += 1;
    }
    let takeovers =
        a.try_metric("wsm_takeovers_total").await? + b.try_metric("wsm_takeovers_total").await?;
    if takeovers != 0.0 {
        return Err(format!(
            "{takeovers} takeovers: the connection moved during the run"
        ));
    }
    let figure = ForwardFigure {
        direct: Latencies::new(direct_times).summary(),
        forwarded: Latencies::new(forwarded_times).summary(),
        forwarded_by_b: b.try_metric("wsm_forwarded_total").await?,
        forwarded_by_a: a.try_metric("wsm_forwarded_total").await?,
    };
    let (d, f) = (figure.direct, figure.forwarded);
    println!(
        "forward: {} calls per path in blocks of {}; direct (A) median {:.1} µs (p90 {:.1}, p99 \
         {:.1}, max {:.0}); forwarded (B → A) median {:.1} µs (p90 {:.1}, p99 {:.1}, max {:.0}); \
         B's wsm_forwarded_total {}",
        settings.calls,
        settings.block,
        d[0],
        d[1],
        d[2],
        d[3],
        f[0],
        f[1],
        f[2],
        f[3],
        figure.forwarded_by_b
    );
    Ok(figure)
}

// ---------------------------------------------------------------------------------------------

/// The median (the upper one of an even count) and the max; `None` if a value is missing.
fn median_max(values: &[Option<i64>]) -> Option<(i64, i64)> {
    let mut v = values.iter().copied().collect::<Option<Vec<i64>>>()?;
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some((v[v.len() / 2], v[v.len() - 1]))
}

fn secs(ms: i64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

fn main() {
    let settings = Settings::from_env();
    println!(
        "cluster: wsm at {}{}",
        settings.wsm_bin.display(),
        if settings.smoke {
            "; smoke run (debug build: the figures mean nothing)"
        } else {
            ""
        }
    );
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let mut problems = Vec::new();
    let failover = settings
        .failover
        .then(|| runtime.block_on(failover_figure(&settings, &mut problems)));
    let forward = settings
        .forward
        .then(|| runtime.block_on(forward_figure(&settings, &mut problems)))
        .flatten();
    drop(runtime);

    let pass = |ok: bool| match (settings.smoke, ok) {
        (true, _) => "",
        (false, true) => " ✅",
        (false, false) => " ❌",
    };
    let rows = Rows::from_env("scripts/bench_cluster.sh", settings.smoke);
    if let Some(runs) = failover.as_ref().filter(|runs| !runs.is_empty()) {
        println!();
        let head: Vec<String> = (1..=runs.len()).map(|r| format!("run {r}")).collect();
        println!("| figure | {} | median | max | goal |", head.join(" | "));
        println!("|---|{}---|---|---|", "---|".repeat(runs.len()));
        let row =
            |name: &str, values: Vec<Option<i64>>, format: &dyn Fn(i64) -> String, goal: &str| {
                let cells: Vec<String> = values
                    .iter()
                    .map(|v| v.map_or_else(|| "not back".to_owned(), format))
                    .collect();
                let (median, max) = median_max(&values)
                    .map_or(("—".to_owned(), "—".to_owned()), |(m, x)| {
                        (format(m), format(x))
                    });
                println!(
                    "| {name} | {} | {median} | {max} | {goal} |",
                    cells.join(" | ")
                );
            };
        let ms_cell = |v: i64| format!("{v} ms");
        row(
            "A's last heartbeat write before the kill",
            runs.iter().map(|r| r.heartbeat_age).collect(),
            &ms_cell,
            "—",
        );
        row(
            "first claim (`connecting` from B or C) after the kill",
            runs.iter().map(|r| r.first_claim()).collect(),
            &secs,
            "—",
        );
        row(
            "claim → handshake done (`connected`), slowest connection",
            runs.iter().map(|r| r.claim_to_connected()).collect(),
            &ms_cell,
            "—",
        );
        row(
            "handshake done → first frame published, slowest connection",
            runs.iter().map(|r| r.connected_to_back()).collect(),
            &ms_cell,
            "—",
        );
        row(
            "**first connection back** (its first frame of epoch ≥ 2, after the kill)",
            runs.iter().map(|r| r.first_back()).collect(),
            &secs,
            "—",
        );
        let all: Vec<Option<i64>> = runs.iter().map(|r| r.all_back()).collect();
        let all_ok =
            median_max(&all).is_some_and(|(_, max)| max <= GOAL_FAILOVER.as_millis() as i64);
        let back = all.iter().filter(|v| v.is_some()).count();
        rows.add(
            &format!(
                "Failover: all {FAILOVER_CONNS} connections of a SIGKILLed instance publishing \
                 again from B or C (heartbeat {HEARTBEAT_S} s, stale after {STALE_S} s): median \
                 (max) of {} run(s)",
                runs.len()
            ),
            &median_max(&all).map_or_else(
                || {
                    format!(
                        "a connection not back within {} s in {} of {} run(s)",
                        BACK_WITHIN.as_secs(),
                        runs.len() - back,
                        runs.len()
                    )
                },
                |(median, max)| format!("{} ({})", secs(median), secs(max)),
            ),
            "no runnable alternative; the C# service marks a peer stale after 30 s by default \
             (documented, not run)",
            "—",
            &format!("≤ {} s (max){}", GOAL_FAILOVER.as_secs(), pass(all_ok)),
        );
        row(
            &format!("**all {FAILOVER_CONNS} connections back**"),
            all,
            &secs,
            &format!("≤ {} s (max){}", GOAL_FAILOVER.as_secs(), pass(all_ok)),
        );
        row(
            "all back after A's last heartbeat write",
            runs.iter()
                .map(|r| Some(r.all_back()? + r.heartbeat_age?))
                .collect(),
            &secs,
            "—",
        );
        let cells: Vec<String> = runs
            .iter()
            .map(|r| format!("{} / {}", r.taken_by("bench-b"), r.taken_by("bench-c")))
            .collect();
        println!(
            "| taken over by B / C | {} | — | — | — |",
            cells.join(" | ")
        );
        let cells: Vec<String> = runs
            .iter()
            .map(|r| format!("{} of {}", r.lost, r.checked))
            .collect();
        let lost: u64 = runs.iter().map(|r| r.lost).sum();
        println!(
            "| frames lost within an epoch, of the events checked | {} | — | {lost} | 0{} |",
            cells.join(" | "),
            pass(lost == 0)
        );
    }
    if let Some(f) = &forward {
        println!();
        println!("| `SendRaw`, sequential, µs | median | p90 | p99 | max |");
        println!("|---|---|---|---|---|");
        for (name, s) in [
            ("direct: client → A (owner) → feed", f.direct),
            ("forwarded: client → B → A (owner) → feed", f.forwarded),
        ] {
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
                s[0], s[1], s[2], s[3]
            );
        }
        let overhead = f.forwarded[0] - f.direct[0];
        println!(
            "| forwarded ÷ direct | {:.2} × | {:.2} × | {:.2} × | — |",
            f.forwarded[0] / f.direct[0],
            f.forwarded[1] / f.direct[1],
            f.forwarded[2] / f.direct[2],
        );
        println!(
            "| **forwarding overhead** (forwarded − direct) | **{overhead:.0} µs** (goal ≤ {GOAL_FORWARD_US:.0} µs{}; the C# service: ~{CSHARP_FORWARD_US:.0} µs) | {:.0} | {:.0} | — |",
            pass(overhead <= GOAL_FORWARD_US),
            f.forwarded[1] - f.direct[1],
            f.forwarded[2] - f.direct[2],
        );
        println!(
            "| B's `wsm_forwarded_total` (A's) | {} ({}) | — | — | — |",
            f.forwarded_by_b, f.forwarded_by_a
        );
        rows.add(
            &format!(
                "`SendRaw` forwarded by a non-owner (client → B → A → feed), sequential, 100 \
                 bytes: median (p99) of {} calls",
                grouped(settings.calls as f64)
            ),
            &format!(
                "{} µs ({} µs); forwarding overhead {} µs",
                grouped(f.forwarded[0]),
                grouped(f.forwarded[2]),
                grouped(overhead)
            ),
            &format!(
                "direct call to the owner (client → A → feed), same run: {} µs ({} µs)",
                grouped(f.direct[0]),
                grouped(f.direct[2])
            ),
            &format!("{:.2}", f.forwarded[0] / f.direct[0]),
            &format!(
                "overhead ≤ {GOAL_FORWARD_US:.0} µs{} (the C# service documents ~{:.0} ms per \
                 forward, not run)",
                pass(overhead <= GOAL_FORWARD_US),
                CSHARP_FORWARD_US / 1000.0
            ),
        );
    }
    println!();
    if settings.failover {
        println!(
            "failover: {} run(s); heartbeat {HEARTBEAT_S} s, stale after {STALE_S} s, reconnect \
             base {RECONNECT_MS} ms; {FAILOVER_CONNS} connections at {FEED_RATE} frames/s on A, \
             killed once every topic held {EVENTS_BEFORE_KILL} events and the instances had run \
             {} s, plus a random 0–1000 ms",
            settings.runs,
            SETTLE_BEFORE_KILL.as_secs()
        );
    }
    if settings.forward {
        println!(
            "forward: {} timed calls per path after {} warm-up calls each, alternating blocks of {}",
            settings.calls, settings.warmup, settings.block
        );
    }
    println!("command: scripts/bench_cluster.sh (cargo bench -p wsm --bench cluster)");
    if !problems.is_empty() {
        eprintln!("\nFAILURES — these figures do not count:");
        for problem in &problems {
            eprintln!("  {problem}");
        }
        std::process::exit(1);
    }
}
