//! What happens to a connection, as events: the kinds, the event, and the sink a connection reports
//! to. Only types: the socket task emits them, the service counts them, and
//! [`crate::publish::lifecycle`] publishes them on [`LIFECYCLE_TOPIC`].

use std::sync::Arc;

/// The topic lifecycle events are published to, and their CloudEvent `type` prefix.
pub const LIFECYCLE_TOPIC: &str = "websocketmanager.lifecycle";
pub(crate) const LIFECYCLE_TYPE_PREFIX: &str = "com.virtufin.websocketmanager.lifecycle.";

/// Lifecycle kinds, in `com.virtufin.websocketmanager.lifecycle.<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    Connecting,
    Connected,
    Reconnecting,
    Disconnected,
    Degraded,
    Error,
    /// A new leg opens to replace the socket on purpose (a lifetime, a notice, an operator); SPEC 8.
    Rotating,
    /// The rotation ended: the reason says whether an overlap of the legs was proven.
    Rotated,
    /// Frames may be missing: the venue's own sequence skipped (SPEC 9), or continuity was lost.
    Gap,
}

impl LifecycleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleKind::Connecting => "connecting",
            LifecycleKind::Connected => "connected",
            LifecycleKind::Reconnecting => "reconnecting",
            LifecycleKind::Disconnected => "disconnected",
            LifecycleKind::Degraded => "degraded",
            LifecycleKind::Error => "error",
            LifecycleKind::Rotating => "rotating",
            LifecycleKind::Rotated => "rotated",
            LifecycleKind::Gap => "gap",
        }
    }
}

/// A lifecycle event of one connection, emitted in causal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub kind: LifecycleKind,
    pub connection_id: Arc<str>,
    pub url: Arc<str>,
    pub reason: String,
    pub attempt: u32,
    pub epoch: u64,
}

/// Where a connection reports its lifecycle. Must not block: it is called from the socket task.
pub trait LifecycleSink: Send + Sync + 'static {
    fn emit(&self, event: LifecycleEvent);
}
