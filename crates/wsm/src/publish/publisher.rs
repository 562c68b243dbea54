//! The publisher task: one per connection, it drains that connection's queue into the bus. One publisher task per connection drains that connection's
//! bounded queue in batches, so order is kept per connection and one connection is not limited to one
//! bus round trip per frame. A failed batch is retried whole until the bus takes it (consumers may see
//! a duplicate, never a gap: each event carries `seq` and `epoch`); meanwhile the queue fills and the
//! socket stops being read.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::bus::Publisher;
use super::fence::{PublishFence, Unfenced};
use super::frame::{FrameBatch, FrameSource};
use super::queue::{FrameReceiver, FrameRun};
use super::{PublishMetrics, PublishOptions};
use crate::error::BackendError;
use crate::lifecycle::{LifecycleEvent, LifecycleKind, LifecycleSink};

/// Starts the publisher task of one connection; it ends when the connection drops its queue.
pub fn spawn_publisher(
    frames: FrameReceiver,
    from: FrameSource,
    bus: Arc<dyn Publisher>,
    lifecycle: Arc<dyn LifecycleSink>,
    metrics: Arc<PublishMetrics>,
    options: PublishOptions,
) -> JoinHandle<()> {
    spawn_fenced_publisher(
        frames,
        from,
        bus,
        lifecycle,
        metrics,
        options,
        Arc::new(Unfenced),
    )
}

/// [`spawn_publisher`] that asks `fence` before every bus call.
pub(crate) fn spawn_fenced_publisher(
    mut frames: FrameReceiver,
    from: FrameSource,
    bus: Arc<dyn Publisher>,
    lifecycle: Arc<dyn LifecycleSink>,
    metrics: Arc<PublishMetrics>,
    options: PublishOptions,
    fence: Arc<dyn PublishFence>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let from = Arc::new(from);
        // Runs whose frames are in the batch being published: they hold the queue budget until
        // the bus has taken the batch.
        let mut taken: Vec<FrameRun> = Vec::new();
        let mut next: Option<FrameRun> = None;
        loop {
            let first = match next.take() {
                Some(run) => run,
                None => match frames.recv_run().await {
                    Some(run) => run,
                    None => break,
                },
            };
            let topic = Arc::clone(&first.topic);
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut run = Some(first);
            // Take waiting runs for the same topic up to a batch; a topic change (rare) starts
            // the next batch.
            while let Some(mut current) = run.take() {
                if current.topic != topic {
                    next = Some(current);
                    break;
                }
                bytes += current
                    .frames
                    .iter()
                    .map(|f| f.payload.len())
                    .sum::<usize>();
                if batch.is_empty() {
                    batch = std::mem::take(&mut current.frames);
                } else {
                    batch.append(&mut current.frames);
                }
                taken.push(current);
                if batch.len() >= options.max_batch || bytes >= options.max_batch_bytes {
                    break;
                }
                run = frames.try_recv_run();
            }
            let count = batch.len() as u64;
            let batch = Arc::new(FrameBatch {
                source: Arc::clone(&from),
                frames: batch,
            });
            if !fence.admit().await {
                // Another instance owns the connection now and publishes it; these frames were
                // read before that and are not ours to publish.
                metrics.fenced.fetch_add(count, Ordering::Relaxed);
                taken.clear();
                continue;
            }
            let sent = publish_with_retry(
                &*bus,
                &topic,
                &batch,
                &from,
                &*lifecycle,
                &metrics,
                &options,
                &*fence,
            )
            .await;
            if sent == Sent::Fenced {
                metrics.fenced.fetch_add(count, Ordering::Relaxed);
                taken.clear();
                continue;
            }
            if sent == Sent::Published {
                metrics.published.fetch_add(count, Ordering::Relaxed);
                metrics
                    .published_bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
            } else {
                metrics.dropped.fetch_add(count, Ordering::Relaxed);
            }
            // Hands the runs' budget back to the connection.
            taken.clear();
        }
    })
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Published,
    /// The bus refused it as malformed: retrying cannot help, and holding it would stall the
    /// connection for good.
    Refused,
    /// The fence closed while it was being retried: another instance may own the connection now.
    Fenced,
}

#[allow(clippy::too_many_arguments)]
async fn publish_with_retry(
    bus: &dyn Publisher,
    topic: &str,
    batch: &Arc<FrameBatch>,
    from: &FrameSource,
    lifecycle: &dyn LifecycleSink,
    metrics: &PublishMetrics,
    options: &PublishOptions,
    fence: &dyn PublishFence,
) -> Sent {
    let mut delay = options.retry_base;
    let mut failures = 0u32;
    loop {
        // Asked again before every retry: a bus outage long enough for the lease to lapse may
        // have let another instance take the connection over meanwhile.
        if failures > 0 && !fence.admit().await {
            return Sent::Fenced;
        }
        let started = std::time::Instant::now();
        let result = bus.publish_frames(topic, batch).await;
        metrics
            .publish_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        metrics.publish_calls.fetch_add(1, Ordering::Relaxed);
        let error = match result {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(connection = %from.connection_id, topic, failures, "publishing recovered");
                }
                return Sent::Published;
            }
            Err(error) => error,
        };
        metrics.publish_errors.fetch_add(1, Ordering::Relaxed);
        if let BackendError::Rejected { .. } = error {
            let reason = format!(
                "the bus refused {} events for topic {topic}: {error}; they are dropped",
                batch.frames.len()
            );
            tracing::error!(connection = %from.connection_id, %reason);
            emit(lifecycle, from, LifecycleKind::Error, reason);
            return Sent::Refused;
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
