//! Where publishing goes: the bus, as a trait the backends implement.

use std::sync::Arc;

use async_trait::async_trait;

use super::encode::cloudevent::FrameEncoder;
use super::frame::FrameBatch;
use crate::error::BackendError;

/// Publishes CloudEvents to topics.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `events` (CloudEvent JSON) to `topic`, in order. On error none or some may have
    /// been published; the caller retries the whole batch, so consumers may see a duplicate but
    /// never a gap or a reordering (each event's `seq` tells them).
    async fn publish(&self, topic: &str, events: &[Vec<u8>]) -> Result<(), BackendError>;

    /// Publishes received frames as CloudEvents, with the same ordering and retry rules as
    /// [`Publisher::publish`]. A bus overrides this to encode frames straight into its own wire
    /// format (or not at all); by default each frame becomes [`FrameEncoder`] JSON.
    async fn publish_frames(
        &self,
        topic: &str,
        batch: &Arc<FrameBatch>,
    ) -> Result<(), BackendError> {
        let mut encoder = FrameEncoder::new(&batch.source);
        let events: Vec<Vec<u8>> = batch
            .frames
            .iter()
            .map(|frame| {
                let mut event = Vec::new();
                encoder.encode(frame, &mut event);
                event
            })
            .collect();
        self.publish(topic, &events).await
    }

    /// Whether the bus answers; for `/ready`.
    async fn ping(&self) -> Result<(), BackendError>;
}
