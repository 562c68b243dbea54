//! A socket and its publisher, wired: the publish queue between them, the lifecycle sink (muted once
//! the connection is taken over), and the fence the publisher asks before every bus call.

use super::slots::Slot;
use super::{Live, ServiceError, WebSocketService};
use crate::connection::{Connection, ConnectionOptions, ConnectionSpec};
use crate::lifecycle::{LifecycleEvent, LifecycleKind, LifecycleSink};
use crate::publish::{self, FrameReceiver, FrameSource, OwnershipFence, PublishQueue};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::ownership::OwnedLifecycle;

impl WebSocketService {
    /// Dials and wires the socket to a fresh publisher task.
    pub(super) async fn open(
        &self,
        spec: ConnectionSpec,
        ping_interval: Option<Duration>,
        slot: Slot,
    ) -> Result<Live, ServiceError> {
        let pipe = self.pipe(&spec, ping_interval, "connect requested".into());
        let lifecycle = Arc::clone(&pipe.lifecycle);
        let connection = Connection::open(
            spec,
            pipe.options.clone(),
            pipe.queue.clone(),
            Arc::clone(&lifecycle),
        )
        .await
        .map_err(|e| {
            lifecycle.emit(LifecycleEvent {
                kind: LifecycleKind::Error,
                connection_id: Arc::clone(&pipe.from.connection_id),
                url: Arc::clone(&pipe.from.url),
                reason: e.to_string(),
                attempt: 0,
                epoch: 0,
            });
            // A target the network policy refuses, or a header that cannot be sent: the
            // caller's request is at fault, and retrying will not help.
            if e.is_callers_mistake() {
                ServiceError::InvalidArgument(e.to_string())
            } else {
                ServiceError::Unavailable(e.to_string())
            }
        })?;
        Ok(self.start_publisher(connection, pipe, slot))
    }

    /// What a socket needs before it opens: its publish queue, its lifecycle sink (muted once the
    /// connection is taken over), and its options. Emits `connecting`.
    pub(super) fn pipe(
        &self,
        spec: &ConnectionSpec,
        ping_interval: Option<Duration>,
        reason: String,
    ) -> Pipe {
        let from = FrameSource {
            connection_id: spec.id.as_str().into(),
            // Published frames carry the URL as it may be shown (secrets redacted).
            url: self.inner.config.connection.redact.redact(&spec.url).into(),
            source: self.inner.config.app_id.as_str().into(),
        };
        let revoked = Arc::new(AtomicBool::new(false));
        let lifecycle: Arc<dyn LifecycleSink> = Arc::new(OwnedLifecycle {
            sink: self.inner.lifecycle.clone(),
            revoked: Arc::clone(&revoked),
        });
        lifecycle.emit(LifecycleEvent {
            kind: LifecycleKind::Connecting,
            connection_id: Arc::clone(&from.connection_id),
            url: Arc::clone(&from.url),
            reason,
            attempt: 0,
            epoch: spec.epoch,
        });
        let (mut queue, frames) = PublishQueue::new(
            self.inner.config.publish_queue_frames,
            self.inner.config.publish_queue_bytes,
        );
        queue.count_into(Arc::clone(&self.inner.received));
        let mut options = self.inner.config.connection.clone();
        if let Some(interval) = ping_interval {
            options.ping_interval = interval;
        }
        Pipe {
            from,
            queue,
            frames,
            lifecycle,
            options,
            revoked,
        }
    }

    pub(super) fn start_publisher(&self, connection: Connection, pipe: Pipe, slot: Slot) -> Live {
        let depth = pipe.queue.depth();
        // The socket task holds the only queue sender: the publisher ends when the task does.
        drop(pipe.queue);
        let fence = Arc::new(OwnershipFence {
            lease: Arc::clone(&self.inner.lease),
            revoked: Arc::clone(&pipe.revoked),
        });
        let publisher = publish::spawn_fenced_publisher(
            pipe.frames,
            pipe.from,
            Arc::clone(&self.inner.bus),
            pipe.lifecycle,
            Arc::clone(&self.inner.metrics),
            self.inner.config.publish.clone(),
            fence,
        );
        Live {
            connection,
            _slot: slot,
            publisher,
            queue: depth,
            revoked: pipe.revoked,
        }
    }
}

/// The pieces of a connection before its socket opens.
pub(super) struct Pipe {
    pub(super) from: FrameSource,
    pub(super) queue: PublishQueue,
    pub(super) frames: FrameReceiver,
    pub(super) lifecycle: Arc<dyn LifecycleSink>,
    pub(super) options: ConnectionOptions,
    pub(super) revoked: Arc<AtomicBool>,
}
