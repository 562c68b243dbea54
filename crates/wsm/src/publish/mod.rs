//! Publishing: every received frame from its socket to the bus, in order. The path of a frame:
//! the socket task ([`crate::connection`]) passes it through its connection's [`arbiter`] when two
//! legs deliver the same feed, numbers it ([`Frame`]) and hands it over in runs through
//! the bounded [`queue`]; the connection's [`publisher`] task takes runs into batches, asks the
//! [`fence`] whether this instance may still publish, and hands each batch to the [`bus`], retrying
//! until it is taken; each bus [`encode`]s frames into its own wire format. [`lifecycle`] publishes
//! the connections' lifecycle events.

pub mod arbiter;
pub mod bus;
pub mod encode;
pub(crate) mod fence;
pub mod frame;
pub mod lifecycle;
pub mod publisher;
pub mod queue;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub use bus::Publisher;
pub use fence::Lease;
pub use frame::{Frame, FrameBatch, FrameSource};
pub use publisher::spawn_publisher;
pub use queue::{FrameReceiver, FrameRun, InboundFrame, PublishQueue, QueueDepth};

pub(crate) use encode::cloudevent::{encode_frame, FrameEncoder};
pub(crate) use fence::OwnershipFence;
pub(crate) use lifecycle::BusLifecycle;
pub(crate) use publisher::spawn_fenced_publisher;
pub(crate) use queue::ReceiveStats;

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
    /// Frames not published because another instance took the connection over meanwhile.
    pub fenced: AtomicU64,
    /// Sum of bus-call durations in microseconds, and their count, for an average latency.
    pub publish_micros: AtomicU64,
    pub publish_calls: AtomicU64,
}
