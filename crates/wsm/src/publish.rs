//! Received frames → CloudEvents → the bus. One publisher task per connection drains that connection's
//! bounded queue in batches, so order is kept per connection and one connection is not limited to one
//! bus round trip per frame. A failed batch is retried whole until the bus takes it (consumers may see
//! a duplicate, never a gap: each event carries `seq` and `epoch`); meanwhile the queue fills and the
//! socket stops being read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backends::{BackendError, Publisher};
use crate::connection::{InboundFrame, LifecycleEvent, LifecycleKind, LifecycleSink};

/// The CloudEvent `type` of published frames: what Dapr gives events published through it, which is
/// what existing consumers of WSM topics expect.
pub const FRAME_EVENT_TYPE: &str = "com.dapr.event.sent";

/// Batching and retry settings.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Most frames per bus call (512).
    pub max_batch: usize,
    /// Most payload bytes per bus call (4 MiB); a single larger frame goes alone.
    pub max_batch_bytes: usize,
    /// First retry delay after a failed publish (50 ms), doubling up to `retry_cap` (2 s).
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            max_batch: 512,
            max_batch_bytes: 4 << 20,
            retry_base: Duration::from_millis(50),
            retry_cap: Duration::from_secs(2),
        }
    }
}

/// Counters for `/metrics`, shared by every publisher task.
#[derive(Debug, Default)]
pub struct PublishMetrics {
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    pub publish_errors: AtomicU64,
    pub dropped: AtomicU64,
    /// Sum of bus-call durations in microseconds, and their count, for an average latency.
    pub publish_micros: AtomicU64,
    pub publish_calls: AtomicU64,
}

/// Who published a frame: the connection, and the CloudEvent `source` (the app id).
#[derive(Debug, Clone)]
pub struct FrameSource {
    pub connection_id: Arc<str>,
    pub url: Arc<str>,
    pub source: Arc<str>,
}

/// Writes one frame's CloudEvent JSON into `out`.
///
/// Text frames carry the frame text as a JSON string in `data` (`datacontenttype`
/// `application/json`, as a Dapr `PublishEvent<string>` does); binary frames carry `data_base64`. The
/// extensions say where the frame came from (`websocketId`, `websocketUrl`), when (`timestamp`), what
/// it was (`contentType`), and where it sits in the connection's stream (`seq`, `epoch`). The event
/// `id` is `<connection>:<epoch>:<seq>`: unique per source, and stable across a retried batch so
/// consumers can drop duplicates.
pub fn encode_frame(frame: &InboundFrame, from: &FrameSource, out: &mut Vec<u8>) {
    let time = humantime::format_rfc3339_micros(frame.received_at).to_string();
    out.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":");
    json_str(
        out,
        &format!("{}:{}:{}", from.connection_id, frame.epoch, frame.seq),
    );
    out.extend_from_slice(b",\"source\":");
    json_str(out, &from.source);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(FRAME_EVENT_TYPE.as_bytes());
    out.extend_from_slice(b"\",\"time\":\"");
    out.extend_from_slice(time.as_bytes());
    let content_type = match std::str::from_utf8(&frame.payload) {
        Ok(text) if frame.text => {
            out.extend_from_slice(b"\",\"datacontenttype\":\"application/json\",\"data\":");
            json_str(out, text);
            "text/plain"
        }
        // Binary frames (and, defensively, text that is not UTF-8) travel as base64.
        _ => {
            out.extend_from_slice(
                b"\",\"datacontenttype\":\"application/octet-stream\",\"data_base64\":\"",
            );
            let engine = &base64::engine::general_purpose::STANDARD;
            let start = out.len();
            out.resize(
                start + base64::encoded_len(frame.payload.len(), true).unwrap_or(0),
                0,
            );
            let written = engine
                .encode_slice(&frame.payload, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
            "application/octet-stream"
        }
    };
    out.extend_from_slice(b",\"websocketId\":");
    json_str(out, &from.connection_id);
    out.extend_from_slice(b",\"websocketUrl\":");
    json_str(out, &from.url);
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b"\",\"contentType\":\"");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(frame.seq.to_string().as_bytes());
    out.extend_from_slice(b",\"epoch\":");
    out.extend_from_slice(frame.epoch.to_string().as_bytes());
    out.push(b'}');
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Starts the publisher task of one connection; it ends when the connection drops its queue.
pub fn spawn_publisher(
    mut frames: mpsc::Receiver<InboundFrame>,
    from: FrameSource,
    bus: Arc<dyn Publisher>,
    lifecycle: Arc<dyn LifecycleSink>,
    metrics: Arc<PublishMetrics>,
    options: PublishOptions,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch: Vec<InboundFrame> = Vec::with_capacity(options.max_batch);
        let mut events: Vec<Vec<u8>> = Vec::with_capacity(options.max_batch);
        while let Some(first) = frames.recv().await {
            let mut bytes = first.payload.len();
            batch.push(first);
            while batch.len() < options.max_batch && bytes < options.max_batch_bytes {
                match frames.try_recv() {
                    Ok(frame) => {
                        bytes += frame.payload.len();
                        batch.push(frame);
                    }
                    Err(_) => break,
                }
            }
            // One bus call per run of frames with the same topic (a topic change mid-batch is rare).
            let mut start = 0;
            while start < batch.len() {
                let topic = Arc::clone(&batch[start].topic);
                let end = batch[start..]
                    .iter()
                    .position(|f| f.topic != topic)
                    .map_or(batch.len(), |n| start + n);
                events.clear();
                for frame in &batch[start..end] {
                    let mut event = Vec::with_capacity(frame.payload.len() + 320);
                    encode_frame(frame, &from, &mut event);
                    events.push(event);
                }
                let sent = publish_with_retry(
                    &*bus,
                    &topic,
                    &events,
                    &from,
                    &*lifecycle,
                    &metrics,
                    &options,
                )
                .await;
                if sent {
                    let payload: usize = batch[start..end].iter().map(|f| f.payload.len()).sum();
                    metrics
                        .published
                        .fetch_add((end - start) as u64, Ordering::Relaxed);
                    metrics
                        .published_bytes
                        .fetch_add(payload as u64, Ordering::Relaxed);
                } else {
                    metrics
                        .dropped
                        .fetch_add((end - start) as u64, Ordering::Relaxed);
                }
                start = end;
            }
            // Dropping the frames hands their byte budget back to the connection.
            batch.clear();
        }
    })
}

/// `true` once published; `false` if the bus refused the batch as malformed (retrying cannot help,
/// and holding it would stall the connection for good).
async fn publish_with_retry(
    bus: &dyn Publisher,
    topic: &str,
    events: &[Vec<u8>],
    from: &FrameSource,
    lifecycle: &dyn LifecycleSink,
    metrics: &PublishMetrics,
    options: &PublishOptions,
) -> bool {
    let mut delay = options.retry_base;
    let mut failures = 0u32;
    loop {
        let started = std::time::Instant::now();
        let result = bus.publish(topic, events).await;
        metrics
            .publish_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        metrics.publish_calls.fetch_add(1, Ordering::Relaxed);
        let error = match result {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(connection = %from.connection_id, topic, failures, "publishing recovered");
                }
                return true;
            }
            Err(error) => error,
        };
        metrics.publish_errors.fetch_add(1, Ordering::Relaxed);
        if let BackendError::Rejected { .. } = error {
            let reason = format!(
                "the bus refused {} events for topic {topic}: {error}; they are dropped",
                events.len()
            );
            tracing::error!(connection = %from.connection_id, %reason);
            emit(lifecycle, from, LifecycleKind::Error, reason);
            return false;
        }
        failures += 1;
        if failures == 1 {
            let reason = format!(
                "publishing to {topic} failed: {error}; retrying every ≤ {} ms, and the socket \
                 pauses once the publish queue is full",
                options.retry_cap.as_millis()
            );
            tracing::warn!(connection = %from.connection_id, %reason);
            emit(lifecycle, from, LifecycleKind::Degraded, reason);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(options.retry_cap);
    }
}

fn emit(lifecycle: &dyn LifecycleSink, from: &FrameSource, kind: LifecycleKind, reason: String) {
    lifecycle.emit(LifecycleEvent {
        kind,
        connection_id: Arc::clone(&from.connection_id),
        url: Arc::clone(&from.url),
        reason,
        attempt: 0,
        epoch: 0,
    });
}

/// For tests of consumers: the receive time of an event built by [`encode_frame`].
pub fn now() -> SystemTime {
    SystemTime::now()
}
