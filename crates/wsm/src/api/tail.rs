//! What `Subscribe` streams: a topic read back through the configured bus's [`BusTail`] (the
//! embedded memory bus, or the topic's Redis stream), translated to `PublishedEvent`s. Each open
//! stream is fed by the bus's reader through a small bounded channel; a reader that stops reading
//! holds only its own feed, never the publishers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::metrics::ApiMetrics;
use crate::backends::{BusTail, TailError, TailEvent};
use crate::proto::PublishedEvent;

/// Events buffered per open stream between the bus and the gRPC response.
const STREAM_BUFFER: usize = 256;

/// Where `Subscribe` reads a topic from.
#[derive(Clone, Debug)]
pub enum TopicTail {
    /// A bus that can be read back.
    Bus(Arc<dyn BusTail>),
    /// No readable bus (Dapr): the reason, for the caller.
    Unsupported(String),
}

impl TopicTail {
    /// Starts streaming `topic` from now on. The stream ends after an error item, or when the bus
    /// stops; dropping it (the reader left) stops the bus's reader.
    pub async fn open(
        &self,
        topic: String,
        metrics: Arc<ApiMetrics>,
    ) -> Result<impl Stream<Item = Result<PublishedEvent, Status>> + Send + 'static, Status> {
        let bus = match self {
            TopicTail::Bus(bus) => bus,
            TopicTail::Unsupported(reason) => return Err(Status::unimplemented(reason.clone())),
        };
        let (events, read) = mpsc::channel(STREAM_BUFFER);
        bus.tail(&topic, events).await.map_err(status)?;
        let open = Subscriber::new(metrics);
        Ok(ReceiverStream::new(read).map(move |event| {
            let _open = &open;
            event.map(|e| published(&topic, e)).map_err(status)
        }))
    }
}

fn published(topic: &str, event: TailEvent) -> PublishedEvent {
    PublishedEvent {
        topic: topic.to_owned(),
        cloud_event: event.cloud_event,
        connection_id: event.connection_id,
        seq: event.seq,
        epoch: event.epoch,
        id: event.id,
    }
}

fn status(e: TailError) -> Status {
    match e {
        TailError::Lagged(why) => Status::data_loss(why),
        TailError::Unavailable(why) => Status::unavailable(why),
        TailError::Invalid(why) => Status::internal(why),
    }
}

/// Counts the stream as open for as long as it exists.
struct Subscriber(Arc<ApiMetrics>);

impl Subscriber {
    fn new(metrics: Arc<ApiMetrics>) -> Self {
        metrics.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscriber(metrics)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}
