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

/// Writes frames' CloudEvent JSON. Text frames carry the frame text as a JSON string in `data`
/// (`datacontenttype` `application/json`, as a Dapr `PublishEvent<string>` does); binary frames carry
/// `data_base64`. The extensions say where the frame came from (`websocketId`, `websocketUrl`), when
/// (`timestamp`), what it was (`contentType`), and where it sits in the connection's stream (`seq`,
/// `epoch`). The event `id` is `<connection>:<epoch>:<seq>`: unique per source, and the same when a
/// batch is retried, so consumers can drop duplicates.
///
/// Everything that is the same for every frame of a connection is rendered once, and the time's
/// date part once per second: this runs for every frame.
pub struct FrameEncoder {
    /// `{"specversion":"1.0","id":"<connection>:`
    head: Vec<u8>,
    /// `","source":…,"type":…,"websocketId":…,"websocketUrl":…,"time":"`
    middle: Vec<u8>,
    clock_secs: u64,
    clock_prefix: [u8; 19],
}

impl FrameEncoder {
    pub fn new(from: &FrameSource) -> Self {
        let mut head = b"{\"specversion\":\"1.0\",\"id\":".to_vec();
        json_str(&mut head, &format!("{}:", from.connection_id));
        head.pop(); // reopen the id string: epoch and seq follow
        let mut middle = b"\",\"source\":".to_vec();
        json_str(&mut middle, &from.source);
        middle.extend_from_slice(b",\"type\":\"");
        middle.extend_from_slice(FRAME_EVENT_TYPE.as_bytes());
        middle.extend_from_slice(b"\",\"websocketId\":");
        json_str(&mut middle, &from.connection_id);
        middle.extend_from_slice(b",\"websocketUrl\":");
        json_str(&mut middle, &from.url);
        middle.extend_from_slice(b",\"time\":\"");
        FrameEncoder {
            head,
            middle,
            clock_secs: u64::MAX,
            clock_prefix: [b'0'; 19],
        }
    }

    /// Appends one frame's CloudEvent JSON to `out`.
    pub fn encode(&mut self, frame: &InboundFrame, out: &mut Vec<u8>) {
        let mut time = [0u8; 27];
        self.format_time(frame.received_at, &mut time);
        out.extend_from_slice(&self.head);
        push_u64(out, frame.epoch);
        out.push(b':');
        push_u64(out, frame.seq);
        out.extend_from_slice(&self.middle);
        out.extend_from_slice(&time);
        out.extend_from_slice(b"\",\"timestamp\":\"");
        out.extend_from_slice(&time);
        out.extend_from_slice(b"\",\"seq\":");
        push_u64(out, frame.seq);
        out.extend_from_slice(b",\"epoch\":");
        push_u64(out, frame.epoch);
        match std::str::from_utf8(&frame.payload) {
            Ok(text) if frame.text => {
                out.extend_from_slice(
                    b",\"contentType\":\"text/plain\",\"datacontenttype\":\"application/json\",\"data\":",
                );
                json_str(out, text);
            }
            // Binary frames (and, defensively, text that is not UTF-8) travel as base64.
            _ => {
                out.extend_from_slice(
                    b",\"contentType\":\"application/octet-stream\",\"datacontenttype\":\"application/octet-stream\",\"data_base64\":\"",
                );
                let start = out.len();
                let len = base64::encoded_len(frame.payload.len(), true).unwrap_or(0);
                out.resize(start + len, 0);
                let written = base64::engine::general_purpose::STANDARD
                    .encode_slice(&frame.payload, &mut out[start..])
                    .unwrap_or(0);
                out.truncate(start + written);
                out.push(b'"');
            }
        }
        out.push(b'}');
    }

    /// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (UTC).
    fn format_time(&mut self, at: SystemTime, out: &mut [u8; 27]) {
        let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        if since.as_secs() != self.clock_secs {
            self.clock_secs = since.as_secs();
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(self.clock_secs);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            let n = text.len().min(19);
            self.clock_prefix[..n].copy_from_slice(&text.as_bytes()[..n]);
        }
        out[..19].copy_from_slice(&self.clock_prefix);
        out[19] = b'.';
        let mut micros = since.subsec_micros();
        for slot in out[20..26].iter_mut().rev() {
            *slot = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out[26] = b'Z';
    }
}

/// One frame's CloudEvent JSON (see [`FrameEncoder`]); for callers that encode a single frame.
pub fn encode_frame(frame: &InboundFrame, from: &FrameSource, out: &mut Vec<u8>) {
    FrameEncoder::new(from).encode(frame, out);
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
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
        let mut encoder = FrameEncoder::new(&from);
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
                    let mut event = Vec::with_capacity(frame.payload.len() * 2 + 400);
                    encoder.encode(frame, &mut event);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::PublishQueue;

    /// A frame as the socket task would queue it (the queue only supplies the byte budget).
    async fn frame(payload: &'static [u8], text: bool, seq: u64, at: SystemTime) -> InboundFrame {
        let (queue, mut rx) = PublishQueue::new(4, 1 << 20);
        queue
            .test_push(
                Arc::from("t"),
                bytes::Bytes::from_static(payload),
                text,
                seq,
                3,
                at,
            )
            .await;
        rx.recv().await.expect("queued")
    }

    fn source() -> FrameSource {
        FrameSource {
            connection_id: "c-1".into(),
            url: "wss://x/\"ws\"".into(),
            source: "websocketmanager".into(),
        }
    }

    #[tokio::test]
    async fn text_frames_become_cloudevents_with_every_extension() {
        let at = std::time::UNIX_EPOCH + Duration::from_micros(1_795_490_931_000_042);
        let f = frame(br#"{"e":"depthUpdate","s":"<&>"}"#, true, 17, at).await;
        let mut encoder = FrameEncoder::new(&source());
        let mut out = Vec::new();
        encoder.encode(&f, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        let expected_time = humantime::format_rfc3339_micros(at).to_string();
        assert_eq!(
            v,
            serde_json::json!({
                "specversion": "1.0", "id": "c-1:3:17", "source": "websocketmanager",
                "type": "com.dapr.event.sent", "time": expected_time, "timestamp": expected_time,
                "datacontenttype": "application/json", "data": r#"{"e":"depthUpdate","s":"<&>"}"#,
                "websocketId": "c-1", "websocketUrl": "wss://x/\"ws\"", "contentType": "text/plain",
                "seq": 17, "epoch": 3,
            })
        );
        assert_eq!(expected_time, "2026-11-24T03:28:51.000042Z");
    }

    #[tokio::test]
    async fn binary_frames_carry_data_base64_and_the_clock_follows_seconds() {
        let mut encoder = FrameEncoder::new(&source());
        for (secs, micros) in [(1_000u64, 999_999u64), (1_001, 0), (86_400 * 400, 5)] {
            let at = std::time::UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + micros);
            let f = frame(&[0, 1, 254, 255], false, 1, at).await;
            let mut out = Vec::new();
            encoder.encode(&f, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["data_base64"], "AAH+/w==");
            assert_eq!(v["contentType"], "application/octet-stream");
            assert!(v.get("data").is_none());
            assert_eq!(v["time"], humantime::format_rfc3339_micros(at).to_string());
        }
    }
}
