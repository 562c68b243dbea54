//! In-process backends: the embedded default, nothing to install. State lives in a map with Dapr's
//! ETag and TTL semantics; the bus keeps per-topic broadcast channels that `Subscribe`/`wsm tail` read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::{
    BackendError, BusTail, Concurrency, Publisher, StateStore, TailError, TailEvent, Versioned,
};
use crate::publish::{encode_frame, Frame, FrameBatch, FrameEncoder, FrameSource};

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    version: u64,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

/// State in process memory. Versions count 1, 2, 3, … per key, like Dapr's Redis store.
#[derive(Debug, Default, Clone)]
pub struct MemoryStateStore {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl MemoryStateStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored (live) version of `key`, checked against `concurrency`.
    fn check(
        map: &HashMap<String, Entry>,
        key: &str,
        concurrency: Concurrency<'_>,
        now: Instant,
    ) -> Result<Option<u64>, BackendError> {
        let current = map.get(key).filter(|e| e.live(now)).map(|e| e.version);
        let ok = match concurrency {
            Concurrency::LastWrite => true,
            Concurrency::IfAbsent => current.is_none(),
            Concurrency::IfMatch(etag) => current.map(|v| v.to_string()).as_deref() == Some(etag),
        };
        if ok {
            Ok(current)
        } else {
            Err(BackendError::Conflict {
                key: key.to_owned(),
            })
        }
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, BackendError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| Versioned {
                value: e.value.clone(),
                etag: e.version.to_string(),
            }))
    }

    async fn get_bulk(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, BackendError> {
        let now = Instant::now();
        let map = self.lock();
        Ok(keys
            .iter()
            .map(|key| {
                map.get(key).filter(|e| e.live(now)).map(|e| Versioned {
                    value: e.value.clone(),
                    etag: e.version.to_string(),
                })
            })
            .collect())
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        concurrency: Concurrency<'_>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut map = self.lock();
        let current = Self::check(&map, key, concurrency, now)?;
        map.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                version: current.unwrap_or(0) + 1,
                expires: ttl.map(|ttl| now + ttl),
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str, concurrency: Concurrency<'_>) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut map = self.lock();
        Self::check(&map, key, concurrency, now)?;
        map.remove(key);
        Ok(())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// How many published batches a subscriber may fall behind before publishers wait for it.
pub(crate) const SUBSCRIBER_BATCHES: usize = 1024;
/// How long a publisher waits for a stuck subscriber before it publishes anyway; that subscriber then
/// loses the oldest batches (and is told how many).
pub(crate) const SUBSCRIBER_PATIENCE: Duration = Duration::from_secs(5);

/// One publish call's events, shared by every subscriber.
#[derive(Debug, Clone)]
enum Batch {
    /// Received frames, kept as they are: nothing is encoded unless a reader asks for JSON.
    Frames(Arc<FrameBatch>),
    /// CloudEvent JSON (lifecycle events).
    Encoded(Arc<[Bytes]>),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Frames(batch) => batch.frames.len(),
            Batch::Encoded(events) => events.len(),
        }
    }
}

/// The in-process pub/sub bus. A publish call is one message (the whole batch), so a subscriber costs
/// one channel operation per batch, not per event. Frames travel as they were received, shared, and
/// become CloudEvent JSON only when a reader asks for it ([`Subscription::recv`]). Publishers wait
/// while a subscriber is `SUBSCRIBER_BATCHES` behind, so a subscriber that keeps up loses nothing.
/// Publishing to a topic nobody subscribes to costs a map lookup.
#[derive(Debug, Default, Clone)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Batch>>>>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Receives every event published to `topic` from now on, in publish order.
    pub fn subscribe(&self, topic: &str) -> Subscription {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_BATCHES).0)
            .subscribe();
        Subscription {
            receiver,
            current: None,
            next: 0,
            encoder: None,
        }
    }

    /// The topic's sender, if anyone listens.
    fn listened(&self, topic: &str) -> Option<broadcast::Sender<Batch>> {
        let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        topics
            .get(topic)
            .filter(|sender| sender.receiver_count() > 0)
            .cloned()
    }

    async fn deliver(&self, topic: &str, sender: broadcast::Sender<Batch>, batch: Batch) {
        // Backpressure: wait (bounded) for the slowest subscriber rather than overwrite its backlog.
        let deadline = Instant::now() + SUBSCRIBER_PATIENCE;
        let mut spins = 0u32;
        while sender.len() >= SUBSCRIBER_BATCHES && sender.receiver_count() > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    topic,
                    "a memory-bus subscriber is stuck; it loses its oldest events"
                );
                break;
            }
            spins += 1;
            if spins < 64 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Err only means every subscriber left meanwhile; nothing to deliver to.
        let _ = sender.send(batch);
    }
}

/// One event as a subscriber receives it.
#[derive(Debug, Clone)]
pub enum BusEvent {
    /// A received frame: the `index`th of a shared batch.
    Frame {
        batch: Arc<FrameBatch>,
        index: usize,
    },
    /// An event published as CloudEvent JSON.
    Encoded(Bytes),
}

impl BusEvent {
    /// The frame and its connection, for a frame event.
    pub fn frame(&self) -> Option<(&FrameSource, &Frame)> {
        match self {
            BusEvent::Frame { batch, index } => {
                batch.frames.get(*index).map(|f| (&*batch.source, f))
            }
            BusEvent::Encoded(_) => None,
        }
    }

    /// The event's CloudEvent JSON.
    pub fn to_json(&self) -> Bytes {
        match self {
            BusEvent::Encoded(json) => json.clone(),
            BusEvent::Frame { .. } => match self.frame() {
                Some((source, frame)) => encode_frame(frame, source).into(),
                None => Bytes::new(),
            },
        }
    }
}

/// Events of one publish call, as [`Subscription::recv_batch`] hands them out.
#[derive(Debug, Clone)]
pub struct BusBatch {
    batch: Batch,
    start: usize,
}

/// One event of a [`BusBatch`], borrowed.
#[derive(Debug, Clone, Copy)]
pub enum BusEventRef<'a> {
    Frame(&'a FrameSource, &'a Frame),
    Encoded(&'a Bytes),
}

impl BusBatch {
    pub fn len(&self) -> usize {
        self.batch.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The events in publish order.
    pub fn iter(&self) -> impl Iterator<Item = BusEventRef<'_>> {
        (self.start..self.batch.len()).map(move |i| match &self.batch {
            Batch::Frames(batch) => BusEventRef::Frame(&batch.source, &batch.frames[i]),
            Batch::Encoded(events) => BusEventRef::Encoded(&events[i]),
        })
    }
}

/// One subscriber's view of a topic: events one at a time, in order.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Batch>,
    /// The batch being read, and the index of its next event.
    current: Option<Batch>,
    next: usize,
    /// The encoder of the last connection whose frames `recv` turned into JSON.
    encoder: Option<(Arc<FrameSource>, FrameEncoder)>,
}

impl Subscription {
    /// The next event as CloudEvent JSON. `Lagged(n)`: this subscriber was stuck for longer than
    /// `SUBSCRIBER_PATIENCE` and lost `n` batches.
    pub async fn recv(&mut self) -> Result<Bytes, broadcast::error::RecvError> {
        let event = self.recv_event().await?;
        Ok(self.json(&event))
    }

    /// The next event if one is ready, as CloudEvent JSON.
    pub fn try_recv(&mut self) -> Result<Bytes, broadcast::error::TryRecvError> {
        let event = self.try_recv_event()?;
        Ok(self.json(&event))
    }

    /// The next event as it travels on the bus; frames are not encoded.
    pub(crate) async fn recv_event(&mut self) -> Result<BusEvent, broadcast::error::RecvError> {
        loop {
            if let Some(event) = self.take() {
                return Ok(event);
            }
            self.current = Some(self.receiver.recv().await?);
            self.next = 0;
        }
    }

    /// The next event if one is ready, as it travels on the bus.
    pub(crate) fn try_recv_event(&mut self) -> Result<BusEvent, broadcast::error::TryRecvError> {
        loop {
            if let Some(event) = self.take() {
                return Ok(event);
            }
            self.current = Some(self.receiver.try_recv()?);
            self.next = 0;
        }
    }

    /// The rest of the current batch, or the next whole batch: for readers that go through many
    /// events at once (it costs nothing per event).
    pub async fn recv_batch(&mut self) -> Result<BusBatch, broadcast::error::RecvError> {
        if let Some(rest) = self.rest() {
            return Ok(rest);
        }
        Ok(BusBatch {
            batch: self.receiver.recv().await?,
            start: 0,
        })
    }

    fn rest(&mut self) -> Option<BusBatch> {
        let batch = self.current.take()?;
        let start = std::mem::take(&mut self.next);
        (start < batch.len()).then_some(BusBatch { batch, start })
    }

    fn take(&mut self) -> Option<BusEvent> {
        let batch = self.current.as_ref()?;
        if self.next >= batch.len() {
            self.current = None;
            return None;
        }
        let index = self.next;
        self.next += 1;
        Some(match batch {
            Batch::Frames(batch) => BusEvent::Frame {
                batch: Arc::clone(batch),
                index,
            },
            Batch::Encoded(events) => BusEvent::Encoded(events[index].clone()),
        })
    }

    /// An event's CloudEvent JSON, reusing the encoder of the last connection seen (what `recv` does),
    /// for readers that need the event and its JSON both.
    pub fn json(&mut self, event: &BusEvent) -> Bytes {
        let BusEvent::Frame { batch, index } = event else {
            return event.to_json();
        };
        let Some(frame) = batch.frames.get(*index) else {
            return Bytes::new();
        };
        let encoder = match &mut self.encoder {
            Some((source, encoder)) if Arc::ptr_eq(source, &batch.source) => encoder,
            slot => {
                let encoder = FrameEncoder::new(&batch.source);
                &mut slot.insert((Arc::clone(&batch.source), encoder)).1
            }
        };
        let mut out = Vec::with_capacity(frame.payload.len() + 512);
        encoder.encode(frame, &mut out);
        out.into()
    }
}

#[async_trait]
impl Publisher for MemoryBus {
    async fn publish(&self, topic: &str, events: &[Vec<u8>]) -> Result<(), BackendError> {
        if let Some(sender) = self.listened(topic) {
            let batch: Arc<[Bytes]> = events.iter().map(|e| Bytes::copy_from_slice(e)).collect();
            self.deliver(topic, sender, Batch::Encoded(batch)).await;
        }
        Ok(())
    }

    async fn publish_frames(
        &self,
        topic: &str,
        batch: &Arc<FrameBatch>,
    ) -> Result<(), BackendError> {
        if let Some(sender) = self.listened(topic) {
            self.deliver(topic, sender, Batch::Frames(Arc::clone(batch)))
                .await;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// `Subscribe` on the memory bus: this instance's own publishes, from now on.
#[async_trait]
impl BusTail for MemoryBus {
    async fn tail(
        &self,
        topic: &str,
        events: mpsc::Sender<Result<TailEvent, TailError>>,
    ) -> Result<(), TailError> {
        let subscription = self.subscribe(topic);
        tokio::spawn(tail(topic.to_owned(), subscription, events));
        Ok(())
    }
}

async fn tail(
    topic: String,
    mut subscription: Subscription,
    events: mpsc::Sender<Result<TailEvent, TailError>>,
) {
    loop {
        let event = tokio::select! {
            _ = events.closed() => return,
            event = subscription.recv_event() => event,
        };
        let event = match event {
            Ok(event) => {
                let cloud_event = String::from_utf8_lossy(&subscription.json(&event)).into_owned();
                match event.frame() {
                    Some((source, frame)) => TailEvent {
                        cloud_event,
                        connection_id: source.connection_id.to_string(),
                        seq: frame.seq,
                        epoch: frame.epoch,
                        id: String::new(),
                    },
                    None => TailEvent::from_json(cloud_event, String::new()),
                }
            }
            Err(broadcast::error::RecvError::Lagged(batches)) => {
                let _ = events
                    .send(Err(TailError::Lagged(format!(
                        "this subscriber to {topic} fell behind and lost {batches} batches of events; subscribe again"
                    ))))
                    .await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if events.send(Ok(event)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The state store's tests are the state-store contract (tests/backends_memory.rs); these are
    // the bus's.

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_subscriber_slows_publishers_down_instead_of_losing_events() {
        let bus = MemoryBus::new();
        let mut slow = bus.subscribe("t");
        let total = SUBSCRIBER_BATCHES as u64 * 3;
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..total {
                    bus.publish("t", &[i.to_string().into_bytes()])
                        .await
                        .unwrap();
                }
            })
        };
        for i in 0..total {
            if i % 700 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(slow.recv().await.expect("no lag"), i.to_string());
        }
        publisher.await.unwrap();
    }

    #[tokio::test]
    async fn bus_delivers_in_order_to_every_subscriber() {
        let bus = MemoryBus::new();
        bus.publish("t", &[b"lost".to_vec()]).await.unwrap();
        let mut a = bus.subscribe("t");
        let mut b = bus.subscribe("t");
        bus.publish("t", &[b"1".to_vec(), b"2".to_vec()])
            .await
            .unwrap();
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.recv().await.unwrap(), "1");
            assert_eq!(rx.recv().await.unwrap(), "2");
        }
    }

    fn frames(seqs: std::ops::RangeInclusive<u64>) -> Arc<FrameBatch> {
        Arc::new(FrameBatch {
            source: Arc::new(FrameSource {
                connection_id: "c1".into(),
                url: "ws://feed/ws".into(),
                source: "websocketmanager".into(),
            }),
            frames: seqs
                .map(|seq| Frame {
                    payload: Bytes::from(format!("frame {seq}")),
                    text: true,
                    seq,
                    epoch: 1,
                    received_at: std::time::SystemTime::now(),
                })
                .collect(),
        })
    }

    #[tokio::test]
    async fn frames_travel_unencoded_and_readers_get_them_as_json_events_or_batches() {
        let bus = MemoryBus::new();
        let mut json = bus.subscribe("t");
        let mut events = bus.subscribe("t");
        let mut batches = bus.subscribe("t");
        let batch = frames(1..=3);
        bus.publish_frames("t", &batch).await.unwrap();
        bus.publish("t", &[b"{\"lifecycle\":1}".to_vec()])
            .await
            .unwrap();

        for frame in &batch.frames {
            let expected = encode_frame(frame, &batch.source);
            assert_eq!(json.recv().await.unwrap(), expected);
        }
        assert_eq!(json.recv().await.unwrap(), "{\"lifecycle\":1}");

        let first = events.recv_event().await.unwrap();
        let (source, frame) = first.frame().expect("a frame event");
        assert_eq!((&*source.connection_id, frame.seq), ("c1", 1));
        assert_eq!(
            first.to_json(),
            encode_frame(&batch.frames[0], &batch.source)
        );
        // The rest of a batch that was partly read one event at a time.
        let rest = events.recv_batch().await.unwrap();
        let seqs: Vec<u64> = rest
            .iter()
            .map(|e| match e {
                BusEventRef::Frame(_, f) => f.seq,
                BusEventRef::Encoded(_) => 0,
            })
            .collect();
        assert_eq!(seqs, [2, 3]);
        let encoded = events.recv_batch().await.unwrap();
        assert!(matches!(
            encoded.iter().next(),
            Some(BusEventRef::Encoded(_))
        ));

        assert_eq!(batches.recv_batch().await.unwrap().len(), 3);
        assert_eq!(batches.recv_batch().await.unwrap().len(), 1);
        assert!(batches.try_recv().is_err(), "nothing else was published");
    }
}
