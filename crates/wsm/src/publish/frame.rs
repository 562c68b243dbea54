//! A received frame and the batch it is published in. These are the frame types: a [`Frame`] is one
//! message, a [`super::FrameRun`] is frames queued together (holding queue budget), a
//! [`FrameBatch`] is frames handed to the bus in one call, with their connection's metadata.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

/// The CloudEvent `type` of published frames: what Dapr gives events published through it, which is
/// what existing consumers of WSM topics expect.
pub(crate) const FRAME_EVENT_TYPE: &str = "com.dapr.event.sent";

/// Who published a frame: the connection, and the CloudEvent `source` (the app id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSource {
    pub connection_id: Arc<str>,
    pub url: Arc<str>,
    pub source: Arc<str>,
}

/// One received message, numbered for publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub payload: Bytes,
    /// A Text frame (published as `data`); otherwise Binary (published as `data_base64`).
    pub text: bool,
    /// Per-connection publish counter: +1 per published frame, so consumers see gaps.
    pub seq: u64,
    /// +1 on every (re)connect.
    pub epoch: u64,
    pub received_at: SystemTime,
}

impl Frame {
    /// The text of a Text frame. `None` for Binary frames and, defensively, for text that is not
    /// UTF-8: both travel as base64.
    pub fn text(&self) -> Option<&str> {
        if self.text {
            std::str::from_utf8(&self.payload).ok()
        } else {
            None
        }
    }
}

/// Consecutive frames of one connection, published in one bus call.
#[derive(Debug, Clone)]
pub struct FrameBatch {
    pub source: Arc<FrameSource>,
    pub frames: Vec<Frame>,
}
