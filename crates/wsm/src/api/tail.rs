//! The events `Subscribe` streams: from the embedded memory bus, or read from the topic's Redis
//! stream when the redis pub/sub is configured (any instance's publishes, not only this one's).
//! Each open stream runs one task feeding a small bounded channel; a reader that stops reading
//! holds that task, never the publishers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Status;

use super::metrics::ApiMetrics;
use crate::backends::memory::{BusEvent, MemoryBus};
use crate::proto::PublishedEvent;

/// Events buffered per open stream between the source and the gRPC response.
const STREAM_BUFFER: usize = 256;
/// Entries one `XREAD` returns at most, and how long it blocks.
const XREAD_COUNT: usize = 512;
const XREAD_BLOCK_MS: u64 = 1000;

type Events = mpsc::Receiver<Result<PublishedEvent, Status>>;

/// Where `Subscribe` reads a topic from.
#[derive(Clone, Debug)]
pub enum TopicTail {
    /// The in-process bus this instance publishes to.
    Memory(MemoryBus),
    /// A Redis stream per topic (`XREAD` from the newest entry on).
    Redis { url: String },
    /// No readable bus (Dapr): the reason, for the caller.
    Unsupported(String),
}

impl TopicTail {
    /// Starts streaming `topic` from now on.
    pub async fn open(&self, topic: String, metrics: Arc<ApiMetrics>) -> Result<Events, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        match self {
            TopicTail::Memory(bus) => {
                let subscription = bus.subscribe(&topic);
                tokio::spawn(Subscriber::new(metrics).run(tail_memory(topic, subscription, tx)));
            }
            TopicTail::Redis { url } => {
                let con = redis_connection(url).await?;
                tokio::spawn(Subscriber::new(metrics).run(tail_redis(topic, con, tx)));
            }
            TopicTail::Unsupported(reason) => return Err(Status::unimplemented(reason.clone())),
        }
        Ok(rx)
    }
}

/// Counts the stream as open for as long as its task runs.
struct Subscriber(Arc<ApiMetrics>);

impl Subscriber {
    fn new(metrics: Arc<ApiMetrics>) -> Self {
        metrics.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscriber(metrics)
    }

    async fn run(self, task: impl std::future::Future<Output = ()>) {
        task.await;
        drop(self);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn tail_memory(
    topic: String,
    mut subscription: crate::backends::memory::Subscription,
    tx: mpsc::Sender<Result<PublishedEvent, Status>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = tokio::select! {
            _ = tx.closed() => return,
            event = subscription.recv_event() => event,
        };
        let event = match event {
            Ok(event) => {
                let json = subscription.json(&event);
                published(&topic, &event, &json)
            }
            Err(RecvError::Lagged(batches)) => {
                let _ = tx
                    .send(Err(Status::data_loss(format!(
                        "this subscriber to {topic} fell behind and lost {batches} batches of events; subscribe again"
                    ))))
                    .await;
                return;
            }
            Err(RecvError::Closed) => return,
        };
        if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
}

fn published(topic: &str, event: &BusEvent, json: &[u8]) -> PublishedEvent {
    let cloud_event = String::from_utf8_lossy(json).into_owned();
    match event.frame() {
        Some((source, frame)) => PublishedEvent {
            topic: topic.to_owned(),
            cloud_event,
            connection_id: source.connection_id.to_string(),
            seq: frame.seq,
            epoch: frame.epoch,
            id: String::new(),
        },
        None => from_json(topic, cloud_event, String::new()),
    }
}

/// An event known only by its JSON (lifecycle events, Redis entries): the fields read back from it.
fn from_json(topic: &str, cloud_event: String, id: String) -> PublishedEvent {
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Fields {
        websocket_id: String,
        seq: serde_json::Value,
        epoch: serde_json::Value,
    }
    let fields: Fields = serde_json::from_str(&cloud_event).unwrap_or_default();
    let number = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    };
    PublishedEvent {
        topic: topic.to_owned(),
        connection_id: fields.websocket_id,
        seq: number(&fields.seq),
        epoch: number(&fields.epoch),
        cloud_event,
        id,
    }
}

async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection, Status> {
    let client = redis::Client::open(url)
        .map_err(|e| Status::internal(format!("the configured Redis URL is invalid: {e}")))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_millis(XREAD_BLOCK_MS) * 5));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| Status::unavailable(format!("Redis unreachable for Subscribe: {e}")))
}

async fn tail_redis(
    topic: String,
    mut con: redis::aio::MultiplexedConnection,
    tx: mpsc::Sender<Result<PublishedEvent, Status>>,
) {
    // Start after the newest entry now. Not `$` on every call: entries added between two reads
    // would be skipped.
    let newest = redis::cmd("XREVRANGE")
        .arg(&topic)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async::<redis::streams::StreamRangeReply>(&mut con)
        .await;
    let mut last = match newest {
        Ok(range) => range
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()),
        Err(e) => return read_failed(&tx, &topic, &e).await,
    };
    loop {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("BLOCK")
            .arg(XREAD_BLOCK_MS)
            .arg("STREAMS")
            .arg(&topic)
            .arg(&last);
        let read = xread.query_async::<Option<redis::streams::StreamReadReply>>(&mut con);
        let reply = tokio::select! {
            _ = tx.closed() => return,
            reply = read => reply,
        };
        let reply = match reply {
            Ok(reply) => reply.unwrap_or_default(),
            Err(e) => return read_failed(&tx, &topic, &e).await,
        };
        for key in reply.keys {
            for entry in key.ids {
                let data: Option<String> = entry.get("data");
                last = entry.id.clone();
                let event = from_json(&topic, data.unwrap_or_default(), entry.id);
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Ends a Redis tail with the reason, for the reader.
async fn read_failed(
    tx: &mpsc::Sender<Result<PublishedEvent, Status>>,
    topic: &str,
    error: &redis::RedisError,
) {
    let status = Status::unavailable(format!(
        "reading the Redis stream {topic} failed: {error}; subscribe again"
    ));
    let _ = tx.send(Err(status)).await;
}
