//! wsm's own paths: into the memory bus (three ways) and into Redis Streams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;
use wsm::backends::memory::{BusEventRef, MemoryBus, Subscription};
use wsm::backends::redis::{RedisConfig, RedisPublisher};
use wsm::backends::Publisher;
use wsm::connection::{Connection, ConnectionOptions, ConnectionSpec};
use wsm::lifecycle::{LifecycleEvent, LifecycleKind, LifecycleSink};
use wsm::model::OutboundMessage;
use wsm::publish::PublishQueue;
use wsm::publish::{spawn_publisher, FrameSource, PublishMetrics, PublishOptions};
use wsm::security::NetworkPolicy;

use super::common::{feed_url, flush, redis_conn, seq_of, xlen, Run, HANG, SUBSCRIBE, TOPIC};

/// The publish queue between socket and publisher: frames and payload bytes.
const QUEUE_FRAMES: usize = 8192;
const QUEUE_BYTES: usize = 8 << 20;
/// Stream entries read back from each end of a Redis stream to check `seq`.
const SAMPLE: usize = 1000;

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

pub(crate) async fn memory(base: &str, count: u64, json: bool, read_buffer: Option<usize>) -> Run {
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

pub(crate) async fn wsm_redis(base: &str, redis_url: &str, count: u64) -> Run {
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
