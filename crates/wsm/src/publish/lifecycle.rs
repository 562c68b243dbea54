//! Lifecycle events on `websocketmanager.lifecycle`: one task publishes them in the order they were
//! emitted, so each connection's events arrive in causal order. Best effort by design: the socket task
//! must never wait for the bus, so when the bounded queue is full an event is dropped and counted; an
//! event the bus does not take after one retry (the bus is down) is dropped and counted too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::bus::Publisher;
use crate::lifecycle::{LifecycleEvent, LifecycleSink, LIFECYCLE_TOPIC, LIFECYCLE_TYPE_PREFIX};

/// Events waiting for the bus before new ones are dropped.
const QUEUE: usize = 4096;

/// Publishes lifecycle events to the bus, and hands each one to `observer` first (the service uses
/// it to persist status changes).
pub(crate) struct BusLifecycle {
    queue: mpsc::Sender<LifecycleEvent>,
    observer: Option<Arc<dyn LifecycleSink>>,
    dropped: Arc<AtomicU64>,
}

impl BusLifecycle {
    pub fn start(
        bus: Arc<dyn Publisher>,
        instance_id: Arc<str>,
        source: Arc<str>,
        observer: Option<Arc<dyn LifecycleSink>>,
    ) -> Arc<BusLifecycle> {
        let (queue, mut events) = mpsc::channel::<LifecycleEvent>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let given_up = Arc::clone(&dropped);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let body = encode(&event, &instance_id, &source);
                // Best effort: one retry, then the event is logged and skipped.
                for attempt in 0..2 {
                    match bus
                        .publish(LIFECYCLE_TOPIC, std::slice::from_ref(&body))
                        .await
                    {
                        Ok(()) => break,
                        Err(e) if attempt == 1 => {
                            // Counted, so an outage of the bus shows in the metrics even though
                            // the events describing it could not be published.
                            given_up.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(connection = %event.connection_id, kind = event.kind.as_str(), error = %e, "lifecycle event not published; dropped");
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                }
            }
        });
        Arc::new(BusLifecycle {
            queue,
            observer,
            dropped,
        })
    }

    /// Events dropped because the queue was full or the bus did not take them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl LifecycleSink for BusLifecycle {
    fn emit(&self, event: LifecycleEvent) {
        if let Some(observer) = &self.observer {
            observer.emit(event.clone());
        }
        if self.queue.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The CloudEvent of one lifecycle event: data `{connection_id, url, instance_id, reason, attempt}`.
pub fn encode(event: &LifecycleEvent, instance_id: &str, source: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": uuid::Uuid::new_v4().to_string(),
        "source": source,
        "type": format!("{LIFECYCLE_TYPE_PREFIX}{}", event.kind.as_str()),
        "time": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "datacontenttype": "application/json",
        "data": {
            "connection_id": &*event.connection_id,
            "url": &*event.url,
            "instance_id": instance_id,
            "reason": event.reason,
            "attempt": event.attempt,
            "epoch": event.epoch,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}
