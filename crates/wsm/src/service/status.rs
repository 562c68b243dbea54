//! The status writer: lifecycle events counted, and status changes persisted, so `List` on any
//! instance shows the owner's last status.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Inner, ServiceError, WebSocketService};
use crate::lifecycle::{LifecycleEvent, LifecycleKind, LifecycleSink};
use crate::model::Status;
use crate::sync::lock;

/// Counts of lifecycle events, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct LifecycleCounts {
    pub reconnects: AtomicU64,
    pub degraded: AtomicU64,
    pub errors: AtomicU64,
    pub rotations: AtomicU64,
}

/// Counts lifecycle events and forwards status-changing ones to the status writer (never blocks the
/// socket task).
pub(super) struct StatusObserver {
    pub(super) statuses: mpsc::Sender<LifecycleEvent>,
    pub(super) counts: Arc<LifecycleCounts>,
}

impl LifecycleSink for StatusObserver {
    fn emit(&self, event: LifecycleEvent) {
        let counter = match event.kind {
            LifecycleKind::Reconnecting => Some(&self.counts.reconnects),
            LifecycleKind::Degraded => Some(&self.counts.degraded),
            LifecycleKind::Error => Some(&self.counts.errors),
            LifecycleKind::Rotating => Some(&self.counts.rotations),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(
            event.kind,
            LifecycleKind::Connected | LifecycleKind::Reconnecting | LifecycleKind::Disconnected
        ) {
            let _ = self.statuses.try_send(event);
        }
    }
}

/// Persists status changes, so `List` on any instance shows the owner's last status.
pub(super) async fn write_statuses(
    inner: std::sync::Weak<Inner>,
    mut events: mpsc::Receiver<LifecycleEvent>,
) {
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        // A connection closed on request is already gone (or going) from the store: writing its
        // last status would bring the record back.
        if !lock(&inner.live).contains_key(&*event.connection_id) {
            continue;
        }
        let status = match event.kind {
            LifecycleKind::Connected => Status::Connected,
            LifecycleKind::Reconnecting => Status::Reconnecting,
            _ => Status::Disconnected,
        };
        let service = WebSocketService { inner };
        let result = service
            .persist(&event.connection_id, |r| {
                r.status = status;
                r.epoch = r.epoch.max(event.epoch);
            })
            .await;
        match result {
            Ok(()) => {}
            Err(ServiceError::NotOwner { .. } | ServiceError::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(connection = %event.connection_id, error = %e, "status not persisted; the next refresh retries")
            }
        }
    }
}
