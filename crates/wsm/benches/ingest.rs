//! One connection's ingest throughput, measured side by side with its baselines (SPEC section 7):
//!
//! 1. **bare client**: a bare tokio-tungstenite client that only counts frames;
//! 2. **wsm → memory bus**: `Connection` + `PublishQueue` + `spawn_publisher` into a `MemoryBus`, a
//!    subscriber taking every delivered event a batch at a time and checking that `seq` counts
//!    1, 2, 3, … (nothing lost, duplicated or reordered). It runs three ways: with the bare
//!    client's 128 KiB socket reads (the goal's like-for-like figure), with wsm's default 8 KiB
//!    reads (small so 10k idle connections stay cheap), and with a reader that takes each event as
//!    CloudEvent JSON (what `wsm tail` does);
//! 3. **wsm → Redis Streams**: the same into `RedisPublisher` on a real redis-server (XLEN must
//!    match, and a sample of entries must carry contiguous `seq`);
//! 4. **naive bridge**: the bare client doing `XADD` in pipelines of up to 256 per round trip;
//! 5. **Python bridge**: `benches/python_bridge.py`, what a user would write by hand with the
//!    `websockets` and `redis` packages: one awaited `XADD` per frame. It runs with the interpreter
//!    in `BENCH_PYTHON` (a venv with `benches/python_bridge.requirements.txt`; `scripts/bench.sh`
//!    makes one), against the same feed server and a redis-server of its own; XLEN must match the
//!    frames it counted and its last frame must be the feed's last. Without `BENCH_PYTHON` its row
//!    says "not run".
//!
//! Every path reads ~100-byte text frames from the local feed server at max rate on one connection,
//! for a fixed number of frames, three times; the median rate counts. The clock starts when the
//! SUBSCRIBE that starts the stream is sent (the connection is opened with `streams=0`, so nothing
//! arrives before the topic is set) and stops when the last frame is counted, delivered to the
//! memory subscriber, or acknowledged by Redis. The SUBSCRIBE reply is a frame too: `count + 1` are
//! expected everywhere.
//!
//! `cargo bench -p wsm --bench ingest`
//!
//! Without `--bench` (`cargo test --all-targets`) each path runs once with a few thousand frames.
//! Counts are chosen so each run lasts at least ~2 s and the whole bench under 2 minutes.
//! Environment: `BENCH_BARE_FRAMES` (default 10 000 000), `BENCH_FRAMES` (memory, default
//! 10 000 000; half for the JSON reader), `BENCH_REDIS_FRAMES` (Redis and naive bridge, default
//! 1 000 000), `BENCH_PYTHON_FRAMES` (Python bridge, default 100 000: about 10 s at its ~10k/s),
//! `BENCH_PYTHON` (the Python interpreter), `BENCH_RUNS` (default 3), `BENCH_ONLY` (comma list of
//! `bare,memory,memory-default,memory-json,redis,naive,python`, to profile one path),
//! `BENCH_READ_BUFFER` (wsm's socket read buffer in bytes on every wsm path, for experiments),
//! `BENCH_ROWS` (append the table's rows to this file for `scripts/bench.sh`).
//!
//! The feed server runs on its own thread and single-threaded runtime, like a separate process; the
//! measured side runs on a multi-threaded runtime with 2 workers (the machines have 2 cores). Other
//! work on the machine (builds, tests) skews the figures by 20-30 %: run it on a quiet machine.
//! A run that lost or duplicated anything does not count; the bench exits with status 1 after the
//! table when any run did.

use std::path::{Path as FsPath, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use feed_server::FeedConfig;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsm::backends::memory::{BusEventRef, MemoryBus, Subscription};
use wsm::backends::redis::{RedisConfig, RedisPublisher};
use wsm::backends::Publisher;
use wsm::connection::{Connection, ConnectionOptions, ConnectionSpec};
use wsm::lifecycle::{LifecycleEvent, LifecycleKind, LifecycleSink};
use wsm::model::OutboundMessage;
use wsm::publish::PublishQueue;
use wsm::publish::{spawn_publisher, FrameSource, PublishMetrics, PublishOptions};
use wsm::security::NetworkPolicy;
use wsm_testkit::RedisServer;

#[path = "support/mod.rs"]
mod support;

use support::env_or;
use support::rows::{grouped, Rows};

/// Starts the stream of a connection opened with `streams=0`; its reply is one more text frame.
const SUBSCRIBE: &str = r#"{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}"#;
const TOPIC: &str = "bench.ingest";
const NAIVE_STREAM: &str = "bench.naive";
const PYTHON_STREAM: &str = "bench.python";
/// The hand-written Python bridge.
const PYTHON_BRIDGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_bridge.py");
/// Bound against hangs of the Python bridge, which is about 100 times slower than the others.
const PYTHON_HANG: Duration = Duration::from_secs(900);
const FRAME_SIZE: usize = 100;
/// tokio-tungstenite's default read buffer, which the bare client uses.
const BARE_READ_BUFFER: usize = 128 << 10;
/// Most XADDs per naive-bridge round trip (SPEC section 7).
const NAIVE_PIPELINE: usize = 256;
/// The publish queue between socket and publisher: frames and payload bytes.
const QUEUE_FRAMES: usize = 8192;
const QUEUE_BYTES: usize = 8 << 20;
/// Stream entries read back from each end of a Redis stream to check `seq`.
const SAMPLE: usize = 1000;
/// Bound against hangs only.
const HANG: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Bare,
    Memory,
    MemoryDefault,
    MemoryJson,
    Redis,
    Naive,
    Python,
}

impl Path {
    const ALL: [Path; 7] = [
        Path::Bare,
        Path::Memory,
        Path::MemoryDefault,
        Path::MemoryJson,
        Path::Redis,
        Path::Naive,
        Path::Python,
    ];

    fn name(self) -> &'static str {
        match self {
            Path::Bare => "bare",
            Path::Memory => "memory",
            Path::MemoryDefault => "memory-default",
            Path::MemoryJson => "memory-json",
            Path::Redis => "redis",
            Path::Naive => "naive",
            Path::Python => "python",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Path::Bare => "bare tokio-tungstenite client",
            Path::Memory => "wsm → memory bus (128 KiB reads)",
            Path::MemoryDefault => "wsm → memory bus (8 KiB reads)",
            Path::MemoryJson => "wsm → memory bus, JSON reader",
            Path::Redis => "wsm → Redis Streams",
            Path::Naive => "naive bridge (XADD, pipelines ≤ 256)",
            Path::Python => "Python bridge (one XADD per frame)",
        }
    }
}

struct Settings {
    smoke: bool,
    /// Frames per run, by path (`Path::ALL` order).
    frames: [u64; 7],
    runs: usize,
    paths: Vec<Path>,
    /// The interpreter for the Python bridge; without it that path does not run.
    python: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Self {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let paths = match std::env::var("BENCH_ONLY") {
            Ok(list) => Path::ALL
                .into_iter()
                .filter(|p| list.split(',').any(|n| n.trim() == p.name()))
                .collect(),
            Err(_) => Path::ALL.to_vec(),
        };
        let python = std::env::var_os("BENCH_PYTHON")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let paths = paths
            .into_iter()
            .filter(|p| *p != Path::Python || python.is_some())
            .collect();
        if smoke {
            return Settings {
                smoke,
                frames: [3000; 7],
                runs: 1,
                paths,
                python,
            };
        }
        let redis = env_or("BENCH_REDIS_FRAMES", 1_000_000);
        Settings {
            smoke,
            frames: [
                env_or("BENCH_BARE_FRAMES", 10_000_000),
                env_or("BENCH_FRAMES", 10_000_000),
                env_or("BENCH_FRAMES", 10_000_000),
                env_or("BENCH_FRAMES", 10_000_000) / 2,
                redis,
                redis,
                env_or("BENCH_PYTHON_FRAMES", 100_000),
            ],
            runs: env_or("BENCH_RUNS", 3usize).max(1),
            paths,
            python,
        }
    }

    fn frames(&self, path: Path) -> u64 {
        self.frames[Path::ALL.iter().position(|p| *p == path).unwrap_or(0)]
    }
}

/// One timed run.
struct Run {
    /// Frames counted, delivered or stored (the SUBSCRIBE reply included).
    frames: u64,
    elapsed: Duration,
    /// Backpressure episodes reported by the connection (not a loss).
    degraded: u64,
    /// Anything lost, duplicated, out of order or failed: the run does not count.
    problems: Vec<String>,
}

impl Run {
    fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.frames as f64 / self.elapsed.as_secs_f64()
    }

    /// A run that produced no figure.
    fn failed(problem: String) -> Run {
        Run {
            frames: 0,
            elapsed: Duration::ZERO,
            degraded: 0,
            problems: vec![problem],
        }
    }
}

fn feed_url(base: &str, count: u64) -> String {
    format!("{base}/ws?rate=0&size={FRAME_SIZE}&count={count}&streams=0")
}

/// The `seq` extension of a CloudEvent or Dapr envelope (top level; the frame text inside `data`
/// is a JSON string, so its quotes are escaped and cannot match).
fn seq_of(event: &[u8]) -> Option<u64> {
    let key = b"\"seq\":";
    let at = event.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = event[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&event[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// The feed's per-connection frame counter `u` of a depth update.
fn u_of(frame: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(frame)
        .ok()?
        .get("u")?
        .as_u64()
}

// ---------------------------------------------------------------------------------------------
// 1. The bare client

async fn bare(base: &str, count: u64) -> Run {
    let (mut ws, _) = tokio_tungstenite::connect_async(feed_url(base, count))
        .await
        .expect("bare client connects");
    let expected = count + 1;
    let started = Instant::now();
    ws.send(Message::Text(Utf8Bytes::from_static(SUBSCRIBE)))
        .await
        .expect("send SUBSCRIBE");
    let mut frames = 0u64;
    let mut last = Utf8Bytes::from_static("");
    while frames < expected {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                frames += 1;
                last = text;
            }
            Some(Ok(_)) => {}
            other => panic!("bare client: the stream ended after {frames} frames: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let mut problems = Vec::new();
    if u_of(last.as_str()) != Some(count) {
        problems.push(format!(
            "bare: last frame's u is {:?}, expected {count}",
            u_of(last.as_str())
        ));
    }
    let _ = ws.close(None).await;
    Run {
        frames,
        elapsed,
        degraded: 0,
        problems,
    }
}

// ---------------------------------------------------------------------------------------------
// 2. and 3. wsm

/// Counts `degraded` (backpressure) and keeps `error` events: a publish error is a loss.
#[derive(Default)]
struct Lifecycle {
    degraded: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl LifecycleSink for Lifecycle {
    fn emit(&self, event: LifecycleEvent) {
        match event.kind {
            LifecycleKind::Degraded => {
                self.degraded.fetch_add(1, Ordering::Relaxed);
            }
            LifecycleKind::Error => self
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event.reason),
            _ => {}
        }
    }
}

/// A wsm connection publishing through its own publisher task into `bus`.
struct Wsm {
    conn: Connection,
    publisher: tokio::task::JoinHandle<()>,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<PublishMetrics>,
}

impl Wsm {
    /// `read_buffer`: the socket read buffer, `None` for wsm's default (8 KiB).
    async fn open(url: String, bus: Arc<dyn Publisher>, read_buffer: Option<usize>) -> Wsm {
        let (queue, frames) = PublishQueue::new(QUEUE_FRAMES, QUEUE_BYTES);
        let lifecycle = Arc::new(Lifecycle::default());
        let metrics = Arc::new(PublishMetrics::default());
        let source = FrameSource {
            connection_id: "bench-1".into(),
            url: url.as_str().into(),
            source: "websocketmanager".into(),
        };
        let publisher = spawn_publisher(
            frames,
            source,
            bus,
            lifecycle.clone(),
            metrics.clone(),
            PublishOptions::default(),
        );
        let spec = ConnectionSpec {
            id: "bench-1".into(),
            url,
            ..ConnectionSpec::default()
        };
        let mut options = ConnectionOptions {
            // The feed server listens on loopback.
            network: NetworkPolicy::allow_private(),
            ..ConnectionOptions::default()
        };
        if let Some(bytes) = read_buffer {
            options.read_buffer_size = bytes;
        }
        if let Ok(Ok(bytes)) = std::env::var("BENCH_READ_BUFFER").map(|v| v.parse()) {
            options.read_buffer_size = bytes;
        }
        let conn = Connection::open(spec, options, queue, lifecycle.clone())
            .await
            .expect("wsm connects to the feed server");
        conn.set_topic(Some(TOPIC)).await.expect("set topic");
        Wsm {
            conn,
            publisher,
            lifecycle,
            metrics,
        }
    }

    /// Starts the stream; the socket task handles the topic command before this one.
    async fn subscribe(&self) -> Instant {
        let started = Instant::now();
        self.conn
            .send_raw(
                OutboundMessage {
                    payload: Bytes::from_static(SUBSCRIBE.as_bytes()),
                    content_type: "application/json".into(),
                },
                false,
            )
            .await
            .expect("send SUBSCRIBE");
        started
    }

    /// Closes the socket (which drops the queue and so ends the publisher) and reports what the
    /// publisher and the lifecycle saw.
    async fn finish(self, problems: &mut Vec<String>) -> u64 {
        self.conn.close(1000, "bench done").await;
        if tokio::time::timeout(HANG, self.publisher).await.is_err() {
            problems.push("the publisher task did not end after close".into());
        }
        let dropped = self.metrics.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            problems.push(format!("the publisher dropped {dropped} events"));
        }
        let errors = self.metrics.publish_errors.load(Ordering::Relaxed);
        if errors > 0 {
            problems.push(format!("{errors} publish calls failed (retried)"));
        }
        for error in self
            .lifecycle
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            problems.push(format!("lifecycle error: {error}"));
        }
        self.lifecycle.degraded.load(Ordering::Relaxed)
    }
}

/// What the memory-bus subscriber saw.
struct Delivered {
    events: u64,
    lagged: u64,
    /// Events whose `seq` was not the previous one's + 1 (the first must be 1).
    out_of_order: u64,
    done: Instant,
    last: Option<u64>,
}

/// Takes every event the bus delivers and checks that `seq` counts 1, 2, 3, … With `json`, each
/// event is read as CloudEvent JSON (what `wsm tail` or a gRPC subscriber does); without, as it
/// travels on the bus, a batch at a time.
async fn drain(mut events: Subscription, expected: u64, json: bool) -> Delivered {
    let (mut delivered, mut lagged, mut out_of_order) = (0u64, 0u64, 0u64);
    let mut last = None;
    let mut check = |seq: Option<u64>| {
        if seq != Some(last.unwrap_or(0) + 1) {
            out_of_order += 1;
        }
        last = seq;
    };
    while delivered + lagged < expected {
        if json {
            match events.recv().await {
                Ok(event) => {
                    check(seq_of(&event));
                    delivered += 1;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => lagged += n,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        } else {
            match events.recv_batch().await {
                Ok(batch) => {
                    for event in batch.iter() {
                        check(match event {
                            BusEventRef::Frame(_, frame) => Some(frame.seq),
                            BusEventRef::Encoded(json) => seq_of(json),
                        });
                        delivered += 1;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => lagged += n,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
    Delivered {
        events: delivered,
        lagged,
        out_of_order,
        done: Instant::now(),
        last,
    }
}

async fn memory(base: &str, count: u64, json: bool, read_buffer: Option<usize>) -> Run {
    let expected = count + 1;
    let bus = MemoryBus::new();
    let subscriber = tokio::spawn(drain(bus.subscribe(TOPIC), expected, json));
    let wsm = Wsm::open(feed_url(base, count), Arc::new(bus.clone()), read_buffer).await;
    let started = wsm.subscribe().await;
    let delivered = tokio::time::timeout(HANG, subscriber)
        .await
        .expect("memory: every event delivered in time")
        .expect("subscriber task");
    let elapsed = delivered.done - started;
    let mut problems = Vec::new();
    if delivered.lagged > 0 {
        problems.push(format!(
            "memory: the subscriber lagged and lost {} events",
            delivered.lagged
        ));
    }
    if delivered.events != expected {
        problems.push(format!(
            "memory: {} events delivered, expected {expected}",
            delivered.events
        ));
    }
    if delivered.out_of_order > 0 || delivered.last != Some(expected) {
        problems.push(format!(
            "memory: {} events out of sequence; the last seq is {:?}, expected {expected}",
            delivered.out_of_order, delivered.last
        ));
    }
    let degraded = wsm.finish(&mut problems).await;
    Run {
        frames: delivered.events,
        elapsed,
        degraded,
        problems,
    }
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis-server")
}

async fn flush(conn: &mut redis::aio::MultiplexedConnection) {
    redis::cmd("FLUSHALL")
        .exec_async(conn)
        .await
        .expect("FLUSHALL");
}

async fn xlen(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(conn)
        .await
        .expect("XLEN")
}

/// The `seq` of up to `SAMPLE` entries from one end of `stream`, in stream order.
async fn sample_seqs(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    from_end: bool,
) -> Vec<Option<u64>> {
    let (command, from, to) = if from_end {
        ("XREVRANGE", "+", "-")
    } else {
        ("XRANGE", "-", "+")
    };
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd(command)
        .arg(stream)
        .arg(from)
        .arg(to)
        .arg("COUNT")
        .arg(SAMPLE)
        .query_async(conn)
        .await
        .expect("XRANGE");
    let mut seqs: Vec<Option<u64>> = entries
        .iter()
        .map(|(_, fields)| {
            let data = fields.chunks(2).find(|kv| kv[0] == b"data")?.get(1)?;
            seq_of(data)
        })
        .collect();
    if from_end {
        seqs.reverse();
    }
    seqs
}

async fn wsm_redis(base: &str, redis_url: &str, count: u64) -> Run {
    let expected = count + 1;
    let mut check = redis_conn(redis_url).await;
    flush(&mut check).await;
    let publisher = RedisPublisher::connect(&RedisConfig {
        url: redis_url.to_owned(),
        ..RedisConfig::default()
    })
    .await
    .expect("RedisPublisher connects");
    let wsm = Wsm::open(feed_url(base, count), Arc::new(publisher), None).await;
    let metrics = wsm.metrics.clone();
    let started = wsm.subscribe().await;
    // `published` counts events Redis acknowledged; polling it costs no Redis round trips.
    let deadline = started + HANG;
    let mut problems = Vec::new();
    loop {
        let published = metrics.published.load(Ordering::Relaxed);
        let dropped = metrics.dropped.load(Ordering::Relaxed);
        if published + dropped >= expected {
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "redis: only {published} of {expected} events published in {HANG:?}"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let degraded = wsm.finish(&mut problems).await;
    let stored = xlen(&mut check, TOPIC).await;
    if stored != expected {
        problems.push(format!("redis: XLEN {stored}, expected {expected}"));
    }
    let head = sample_seqs(&mut check, TOPIC, false).await;
    let tail = sample_seqs(&mut check, TOPIC, true).await;
    let want_head: Vec<Option<u64>> = (1..=head.len() as u64).map(Some).collect();
    let tail_start = expected + 1 - tail.len() as u64;
    let want_tail: Vec<Option<u64>> = (tail_start..=expected).map(Some).collect();
    if head != want_head || tail != want_tail {
        problems.push(format!(
            "redis: sampled seq not contiguous: head {:?}…, tail …{:?}",
            &head[..head.len().min(5)],
            &tail[tail.len().saturating_sub(5)..]
        ));
    }
    flush(&mut check).await;
    Run {
        frames: stored.min(expected),
        elapsed,
        degraded,
        problems,
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The naive bridge

async fn naive(base: &str, redis_url: &str, count: u64) -> Run {
    let expected = count + 1;
    let mut conn = redis_conn(redis_url).await;
    flush(&mut conn).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(feed_url(base, count))
        .await
        .expect("naive bridge connects");
    let mut pipe = redis::Pipeline::with_capacity(NAIVE_PIPELINE);
    let started = Instant::now();
    ws.send(Message::Text(Utf8Bytes::from_static(SUBSCRIBE)))
        .await
        .expect("send SUBSCRIBE");
    let mut frames = 0u64;
    while frames < expected {
        // Wait for one frame, then take whatever else is already there, up to a full pipeline.
        let mut next = ws.next().await;
        let mut batch = 0;
        loop {
            match next {
                Some(Ok(Message::Text(text))) => {
                    pipe.cmd("XADD")
                        .arg(NAIVE_STREAM)
                        .arg("*")
                        .arg("data")
                        .arg(text.as_bytes());
                    frames += 1;
                    batch += 1;
                }
                Some(Ok(_)) => {}
                other => panic!("naive bridge: the stream ended after {frames} frames: {other:?}"),
            }
            if batch == NAIVE_PIPELINE || frames == expected {
                break;
            }
            match ws.next().now_or_never() {
                Some(message) => next = message,
                None => break,
            }
        }
        if batch > 0 {
            pipe.exec_async(&mut conn).await.expect("XADD pipeline");
            pipe.clear();
        }
    }
    let elapsed = started.elapsed();
    let _ = ws.close(None).await;
    let mut problems = Vec::new();
    let stored = xlen(&mut conn, NAIVE_STREAM).await;
    if stored != expected {
        problems.push(format!("naive: XLEN {stored}, expected {expected}"));
    }
    flush(&mut conn).await;
    Run {
        frames: stored.min(expected),
        elapsed,
        degraded: 0,
        problems,
    }
}

// ---------------------------------------------------------------------------------------------
// 5. The Python bridge

/// What `python_bridge.py` prints.
#[derive(serde::Deserialize)]
struct PythonReport {
    frames: u64,
    seconds: f64,
    last_u: Option<u64>,
}

async fn python(python: &FsPath, base: &str, redis_url: &str, count: u64) -> Run {
    let expected = count + 1;
    let mut conn = redis_conn(redis_url).await;
    flush(&mut conn).await;
    let child = tokio::process::Command::new(python)
        .arg(PYTHON_BRIDGE)
        .arg(feed_url(base, count))
        .arg(redis_url)
        .arg(PYTHON_STREAM)
        .arg(expected.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let what = format!("python: {} {PYTHON_BRIDGE}", python.display());
    let out = match tokio::time::timeout(PYTHON_HANG, child).await {
        Err(_) => return Run::failed(format!("{what} did not finish within {PYTHON_HANG:?}")),
        Ok(Err(e)) => return Run::failed(format!("{what} could not start: {e}")),
        Ok(Ok(out)) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str::<PythonReport>(line).ok());
    let report = match (out.status.success(), report) {
        (true, Some(report)) => report,
        _ => {
            return Run::failed(format!(
                "{what} exited with {} and no report: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let mut problems = Vec::new();
    if report.frames != expected {
        problems.push(format!(
            "python: counted {} frames, expected {expected}",
            report.frames
        ));
    }
    if report.last_u != Some(count) {
        problems.push(format!(
            "python: the last frame's u is {:?}, expected {count}",
            report.last_u
        ));
    }
    let stored = xlen(&mut conn, PYTHON_STREAM).await;
    if stored != report.frames {
        problems.push(format!(
            "python: XLEN {stored}, but it counted {} frames",
            report.frames
        ));
    }
    flush(&mut conn).await;
    Run {
        frames: stored.min(report.frames),
        elapsed: Duration::from_secs_f64(report.seconds.max(0.0)),
        degraded: 0,
        problems,
    }
}

// ---------------------------------------------------------------------------------------------

fn measure(
    runtime: &Runtime,
    path: Path,
    settings: &Settings,
    base: &str,
    redis: Option<&RedisServer>,
) -> Vec<Run> {
    let count = settings.frames(path);
    let redis_url = redis.map(RedisServer::url).unwrap_or_default();
    (0..settings.runs)
        .map(|n| {
            let run = runtime.block_on(async {
                match path {
                    Path::Bare => bare(base, count).await,
                    Path::Memory => memory(base, count, false, Some(BARE_READ_BUFFER)).await,
                    Path::MemoryDefault => memory(base, count, false, None).await,
                    Path::MemoryJson => memory(base, count, true, None).await,
                    Path::Redis => wsm_redis(base, &redis_url, count).await,
                    Path::Naive => naive(base, &redis_url, count).await,
                    Path::Python => match &settings.python {
                        Some(interpreter) => python(interpreter, base, &redis_url, count).await,
                        None => Run::failed("python: BENCH_PYTHON is not set".into()),
                    },
                }
            });
            println!(
                "{:<38} run {}: {:>9} frames in {:>6.3} s = {:>9.0} frames/s{}{}",
                path.label(),
                n + 1,
                run.frames,
                run.elapsed.as_secs_f64(),
                run.rate(),
                if run.degraded > 0 {
                    format!(" ({} degraded: backpressure)", run.degraded)
                } else {
                    String::new()
                },
                if run.problems.is_empty() {
                    String::new()
                } else {
                    format!(" PROBLEMS: {}", run.problems.join("; "))
                }
            );
            run
        })
        .collect()
}

/// The median rate of the runs that lost nothing (of all runs if every one lost something), and how
/// many runs lost something.
fn median(runs: &[Run]) -> (f64, usize) {
    let failed = runs.iter().filter(|r| !r.problems.is_empty()).count();
    let mut rates: Vec<f64> = runs
        .iter()
        .filter(|r| r.problems.is_empty() || failed == runs.len())
        .map(Run::rate)
        .collect();
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], failed)
}

fn main() {
    let settings = Settings::from_env();
    let needs_redis = settings
        .paths
        .iter()
        .any(|p| matches!(p, Path::Redis | Path::Naive));
    let feed = support::Feed::start(FeedConfig {
        rate: 0,
        size: FRAME_SIZE,
        ..FeedConfig::default()
    });
    let base = feed.base.clone();
    let redis = needs_redis.then(RedisServer::start);
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("bench runtime");
    let [bare_n, memory_n, _, _, redis_n, _, python_n] = settings.frames;
    println!(
        "ingest: one connection, ~{FRAME_SIZE}-byte text frames at max rate; frames per run: \
         {bare_n} (bare), {memory_n} (memory), {redis_n} (redis, naive), {python_n} (python: {}); \
         {} run(s) each{}",
        settings
            .python
            .as_ref()
            .map_or("not run, BENCH_PYTHON is not set".to_owned(), |p| p
                .display()
                .to_string()),
        settings.runs,
        if settings.smoke {
            " — smoke run (debug build: the figures mean nothing)"
        } else {
            ""
        }
    );

    let mut rates: [Option<f64>; 7] = [None; 7];
    let mut problems = Vec::new();
    let mut lossy = Vec::new();
    for (n, path) in Path::ALL.into_iter().enumerate() {
        if !settings.paths.contains(&path) {
            continue;
        }
        // The Python bridge gets a redis-server of its own, started for it, so nothing the
        // other paths left behind (memory, fragmentation) weighs on it.
        let own_redis = (path == Path::Python).then(RedisServer::start);
        let runs = measure(
            &runtime,
            path,
            &settings,
            &base,
            own_redis.as_ref().or(redis.as_ref()),
        );
        drop(own_redis);
        problems.extend(runs.iter().flat_map(|r| r.problems.iter().cloned()));
        let (rate, failed) = median(&runs);
        if failed > 0 {
            lossy.push(format!(
                "{}: {failed} of {} runs lost events or failed{}",
                path.label(),
                runs.len(),
                if failed < runs.len() {
                    " (median of the others)"
                } else {
                    ""
                }
            ));
        }
        rates[n] = Some(rate);
    }
    drop(runtime);
    drop(redis);
    feed.stop();

    let [bare, memory, memory_default, memory_json, redis, naive, python] = rates;
    let rows = Rows::from_env("cargo bench -p wsm --bench ingest", settings.smoke);
    println!();
    println!("| figure | ours | baseline, same run | ratio | goal |");
    println!("|---|---:|---:|---:|---|");
    let row = |figure: &str, ours: &str, baseline: &str, ratio: &str, goal: &str| {
        println!("| {figure} | {ours} | {baseline} | {ratio} | {goal} |");
        rows.add(figure, ours, baseline, ratio, goal);
    };
    let pass = |ok: bool| match (settings.smoke, ok) {
        (true, _) => "",
        (false, true) => " ✅",
        (false, false) => " ❌",
    };
    let fps =
        |rate: Option<f64>| rate.map_or("not run".to_owned(), |r| format!("{}/s", grouped(r)));
    let ratio = |value: Option<f64>, base: Option<f64>| value.zip(base).map(|(v, b)| v / b);
    let ratio_text = |r: Option<f64>| r.map_or("—".to_owned(), |r| format!("{r:.2}"));
    let goal = |r: Option<f64>, at_least: f64| {
        format!("≥ {at_least} ×{}", r.map_or("", |r| pass(r >= at_least)))
    };
    let runs = settings.runs;
    let ingest = |what: &str, n: u64| {
        format!(
            "Ingest, one connection, ~{FRAME_SIZE}-byte frames: {what} ({} frames per run, median \
             of {runs})",
            grouped(n as f64)
        )
    };
    let bare_text = format!("bare tokio-tungstenite counting client: {}", fps(bare));
    let r = ratio(memory, bare);
    if memory.is_some() {
        row(
            &ingest(
                "wsm → memory bus, 128 KiB socket reads like the bare client",
                memory_n,
            ),
            &fps(memory),
            &bare_text,
            &ratio_text(r),
            &goal(r, 0.8),
        );
    }
    for (what, rate, n, why) in [
        (
            "wsm → memory bus, wsm's default 8 KiB reads",
            memory_default,
            memory_n,
            "— (small reads keep 10k idle connections cheap)",
        ),
        (
            "wsm → memory bus, 8 KiB reads, a reader taking CloudEvent JSON",
            memory_json,
            settings.frames(Path::MemoryJson),
            "— (the reader encodes)",
        ),
    ] {
        if rate.is_some() {
            row(
                &ingest(what, n),
                &fps(rate),
                &bare_text,
                &ratio_text(ratio(rate, bare)),
                why,
            );
        }
    }
    if redis.is_some() {
        let r = ratio(redis, naive);
        row(
            &ingest("wsm → Redis Streams", redis_n),
            &fps(redis),
            &format!(
                "naive Rust bridge (the bare client, XADD in pipelines ≤ {NAIVE_PIPELINE}): {}",
                fps(naive)
            ),
            &ratio_text(r),
            &goal(r, 0.75),
        );
        let r = ratio(redis, python);
        let absolute = redis.map_or("", |v| pass(v >= 100_000.0));
        row(
            &ingest("wsm → Redis Streams, against the Python bridge", redis_n),
            &fps(redis),
            &match python {
                Some(p) => format!(
                    "hand-written Python bridge (websockets + redis.asyncio, one XADD per \
                     frame; {} frames per run): {}/s",
                    grouped(python_n as f64),
                    grouped(p)
                ),
                None => "Python bridge: not run (set BENCH_PYTHON to a Python with \
                         benches/python_bridge.requirements.txt; scripts/bench.sh does)"
                    .to_owned(),
            },
            &r.map_or("—".to_owned(), |r| format!("{r:.1} ×")),
            &format!(
                "≥ 40 ×{}; ≥ 100,000/s{absolute}",
                r.map_or("", |r| pass(r >= 40.0))
            ),
        );
        // Both with wsm's default read buffer, when measured.
        let memory_8k = memory_default.or(memory);
        let r = ratio(redis, memory_8k);
        row(
            &ingest("wsm → Redis Streams, against wsm → memory bus", redis_n),
            &fps(redis),
            &format!("wsm → memory bus (8 KiB reads): {}", fps(memory_8k)),
            &ratio_text(r),
            &format!(
                "{} (the limit is redis-server's own XADD rate)",
                goal(r, 0.5)
            ),
        );
    } else if python.is_some() {
        row(
            &ingest("the hand-written Python bridge alone", python_n),
            "—",
            &fps(python),
            "—",
            "—",
        );
    }
    println!();
    println!("median of {runs} run(s); command: cargo bench -p wsm --bench ingest");
    for note in &lossy {
        println!("LOSS: {note}");
    }

    if !problems.is_empty() {
        eprintln!("\nLOSS OR FAILURE — these runs do not count:");
        for problem in &problems {
            eprintln!("  {problem}");
        }
        std::process::exit(1);
    }
}
