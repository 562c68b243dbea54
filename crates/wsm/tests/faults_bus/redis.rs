//! Redis SIGKILLed while publishing and started again empty; Redis `LOADING` after a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use feed_server::FeedConfig;
use tokio::time::Instant;
use wsm::proto;
use wsm_testkit::RedisServer;

use crate::support::process::WsmProcess;
use crate::support::server::{bounded, feed_with, Poll};

use super::common::{
    assert_updates_complete, event, open_publishing, probe, published, stop_and_drain, tally,
    Event, Metrics, ONE_AT_A_TIME,
};

/// The per-connection publish queue's frame budget (`ServiceConfig::publish_queue_frames`).
const QUEUE_FRAMES: u64 = 4096;

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
        // The outage's backlog is out and the socket is read again before the feed is stopped: a
        // feed held back by wsm's backpressure looks settled while its last send is still under
        // way, and its count would then be short.
        let paused_at = paused.map_or(0, |(_, received, _)| received);
        let poll = Poll::new("wsm to publish the outage's backlog and read the socket again");
        loop {
            let m = Metrics::scrape(&wsm).await;
            if m.published() >= paused_at && m.received() > paused_at {
                break;
            }
            poll.tick().await;
        }
        // Let frames flow for a moment, then stop the feed and count.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (sent, read) = stop_and_drain(&feed, &wsm).await;
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
        let (sent, read) = stop_and_drain(&feed, &wsm).await;
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
