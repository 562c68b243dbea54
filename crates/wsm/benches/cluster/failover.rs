//! The failover time: three instances, the owner SIGKILLed, its connections timed back.

use std::time::{Duration, Instant, SystemTime};

use feed_server::FeedConfig;
use serde_json::Value;
use wsm::proto::{ConnectRequest, ListRequest, StartPublishRequest};
use wsm_testkit::RedisServer;

use crate::support::{Feed, WsmProcess};

use super::common::{instance, ms, Settings, HANG};
use super::streams::{
    entries_after, entry_millis, millis_since_epoch, redis_connection, TopicLog, KEY_PREFIX,
    LIFECYCLE_TOPIC,
};

/// Failover settings (issue 6): heartbeat every second, stale after three, first reconnect after
/// 100 ms.
pub(crate) const HEARTBEAT_S: u64 = 1;
pub(crate) const STALE_S: u64 = 3;
pub(crate) const RECONNECT_MS: u64 = 100;
/// Connections on the instance that is killed, and the feed's frames per second on each.
pub(crate) const FAILOVER_CONNS: usize = 5;
pub(crate) const FEED_RATE: u32 = 100;
/// Events every topic holds before the kill.
pub(crate) const EVENTS_BEFORE_KILL: usize = 20;
/// A connection not back this long after the kill counts as lost.
pub(crate) const BACK_WITHIN: Duration = Duration::from_secs(30);
/// How long all three instances run before the kill (at the earliest): two heartbeats.
pub(crate) const SETTLE_BEFORE_KILL: Duration = Duration::from_secs(2 * HEARTBEAT_S);
/// How long the new owners publish before the topics are checked.
const NEW_OWNERS_PUBLISH: Duration = Duration::from_secs(1);
/// Between two reads of the topics.
const POLL: Duration = Duration::from_millis(50);

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

pub(crate) struct FailoverRun {
    /// How long before the kill A last wrote its heartbeat, in ms.
    pub(crate) heartbeat_age: Option<i64>,
    moved: Vec<Moved>,
    /// Frames missing within an epoch, over all topics, and the events checked.
    pub(crate) lost: u64,
    pub(crate) checked: usize,
}

impl FailoverRun {
    fn back(&self) -> Vec<Option<i64>> {
        self.moved.iter().map(|m| m.back).collect()
    }

    pub(crate) fn first_back(&self) -> Option<i64> {
        self.back().into_iter().flatten().min()
    }

    /// The last connection back, if all came back.
    pub(crate) fn all_back(&self) -> Option<i64> {
        self.back()
            .into_iter()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    pub(crate) fn first_claim(&self) -> Option<i64> {
        self.moved.iter().filter_map(|m| m.claimed).min()
    }

    fn last_claim(&self) -> Option<i64> {
        self.moved.iter().filter_map(|m| m.claimed).max()
    }

    /// From each claim to the connection's handshake done, the slowest.
    pub(crate) fn claim_to_connected(&self) -> Option<i64> {
        self.moved
            .iter()
            .filter_map(|m| Some(m.connected? - m.claimed?))
            .max()
    }

    /// From each handshake done to the connection's first frame, the slowest.
    pub(crate) fn connected_to_back(&self) -> Option<i64> {
        self.moved
            .iter()
            .filter_map(|m| Some(m.back? - m.connected?))
            .max()
    }

    pub(crate) fn taken_by(&self, owner: &str) -> usize {
        self.moved.iter().filter(|m| m.new_owner == owner).count()
    }
}

pub(crate) async fn failover_figure(
    settings: &Settings,
    problems: &mut Vec<String>,
) -> Vec<FailoverRun> {
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
