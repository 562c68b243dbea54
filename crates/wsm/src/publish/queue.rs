//! The bounded queue between a socket and its publisher. The socket task hands frames over in runs
//! (one queue operation per burst, not per frame); each run holds its share of the queue's frame
//! and byte budgets until the bus has taken it, so neither many small frames nor a few huge ones can
//! grow memory without bound while the bus is slow: a full queue stops the socket being read.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::frame::Frame;

/// Most frames the socket task hands over at once; a burst of small frames costs one queue
/// operation per run instead of one per frame.
const RUN_FRAMES: u32 = 1024;
/// Most payload bytes per run, so a run of large frames is handed over early.
const RUN_BYTES: u32 = 256 << 10;

/// Consecutive received frames for one topic, handed from the socket task to the publisher at
/// once. It holds its share of the publish queue's budgets until it is dropped (after publishing).
#[derive(Debug)]
pub struct FrameRun {
    pub topic: Arc<str>,
    pub frames: Vec<Frame>,
    _budget: Budget,
}

/// A run's share of the queue's frame and byte budgets, returned when dropped.
#[derive(Debug)]
struct Budget {
    _frames: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// One frame with its topic, for consumers that take frames one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundFrame {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub text: bool,
    pub seq: u64,
    pub epoch: u64,
    pub received_at: SystemTime,
}

/// Data messages (text and binary) received from upstream, published or not. The socket task adds
/// its counts once per burst, so a fast feed pays nothing per frame.
#[derive(Debug, Default)]
pub(crate) struct ReceiveStats {
    pub frames: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    /// Venue protocol events (SPEC 9), counted even when their lifecycle events are rate-limited.
    pub venue_gaps: std::sync::atomic::AtomicU64,
    pub frames_refused: std::sync::atomic::AtomicU64,
    pub notices: std::sync::atomic::AtomicU64,
    pub keepalive_timeouts: std::sync::atomic::AtomicU64,
    /// Continuity (SPEC 8): gaps announced, and the arbiters' memory (a gauge, in bytes).
    pub continuity_gaps: std::sync::atomic::AtomicU64,
    pub arbiter_bytes: std::sync::atomic::AtomicU64,
    /// Frames the arbiters dropped as already published from another leg.
    pub duplicates: std::sync::atomic::AtomicU64,
}

/// How many frames a publish queue holds now (taken from its budget, not yet published).
#[derive(Debug, Clone)]
pub struct QueueDepth {
    budget: Arc<Semaphore>,
    max: usize,
}

impl QueueDepth {
    pub fn frames(&self) -> usize {
        self.max.saturating_sub(self.budget.available_permits())
    }
}

/// The bounded queue between a socket and its publisher: bounded in frames and in bytes, so neither
/// many small frames nor a few huge ones can grow memory without bound while the bus is slow.
#[derive(Debug, Clone)]
pub struct PublishQueue {
    runs: mpsc::Sender<FrameRun>,
    stats: Arc<ReceiveStats>,
    frame_budget: Arc<Semaphore>,
    byte_budget: Arc<Semaphore>,
    max_frames: u32,
    max_bytes: u32,
}

impl PublishQueue {
    /// A queue of at most `frames` frames and `bytes` payload bytes (a single frame larger than the
    /// whole budget takes all of it).
    pub fn new(frames: usize, bytes: usize) -> (PublishQueue, FrameReceiver) {
        let max_bytes = u32::try_from(bytes.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        let max_frames = u32::try_from(frames.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        // Every run holds at least one frame of the budget, so the channel never fills first.
        let (tx, rx) = mpsc::channel(max_frames as usize);
        let queue = PublishQueue {
            runs: tx,
            stats: Arc::default(),
            frame_budget: Arc::new(Semaphore::new(max_frames as usize)),
            byte_budget: Arc::new(Semaphore::new(max_bytes as usize)),
            max_frames,
            max_bytes,
        };
        (
            queue,
            FrameReceiver {
                runs: rx,
                current: None,
            },
        )
    }

    /// Counts this connection's received messages into `stats` (shared by every connection of a
    /// service, for its metrics).
    pub(crate) fn count_into(&mut self, stats: Arc<ReceiveStats>) {
        self.stats = stats;
    }

    pub(crate) fn stats(&self) -> &ReceiveStats {
        &self.stats
    }

    /// A reader of this queue's depth that does not keep the queue open (the publisher ends when
    /// the last `PublishQueue` is dropped).
    pub fn depth(&self) -> QueueDepth {
        QueueDepth {
            budget: Arc::clone(&self.frame_budget),
            max: self.max_frames as usize,
        }
    }

    /// Most frames and cost of one run.
    pub(crate) fn run_limits(&self) -> (usize, u32) {
        (
            RUN_FRAMES.min(self.max_frames) as usize,
            RUN_BYTES.min(self.max_bytes),
        )
    }

    /// Queues `frames` as one run if both budgets have room now; `cost` is their payload bytes
    /// (each frame at least 1). Hands the frames back when the queue is full.
    pub(crate) fn try_push(&self, topic: Arc<str>, frames: Vec<Frame>, cost: u32) -> Pushed {
        let count = u32::try_from(frames.len()).unwrap_or(u32::MAX);
        let Some(budget) = self.try_budget(count, cost) else {
            return Pushed::Full(topic, frames);
        };
        let run = FrameRun {
            topic,
            frames,
            _budget: budget,
        };
        match self.runs.try_send(run) {
            Ok(()) => Pushed::Queued,
            Err(_) => Pushed::Closed,
        }
    }

    /// Queues `frames` as one run, waiting for budget; `Err` once the publisher is gone.
    pub(crate) async fn push(
        &self,
        topic: Arc<str>,
        frames: Vec<Frame>,
        cost: u32,
    ) -> Result<(), ()> {
        let count = u32::try_from(frames.len()).unwrap_or(u32::MAX);
        let budget = self.budget(count, cost).await.ok_or(())?;
        let run = FrameRun {
            topic,
            frames,
            _budget: budget,
        };
        self.runs.send(run).await.map_err(|_| ())
    }

    fn try_budget(&self, frames: u32, bytes: u32) -> Option<Budget> {
        let bytes = bytes.min(self.max_bytes);
        let frames = frames.min(self.max_frames);
        let frame_permit = Arc::clone(&self.frame_budget)
            .try_acquire_many_owned(frames)
            .ok()?;
        let byte_permit = Arc::clone(&self.byte_budget)
            .try_acquire_many_owned(bytes)
            .ok()?;
        Some(Budget {
            _frames: frame_permit,
            _bytes: byte_permit,
        })
    }

    /// Waits for budget; `None` if the queue was closed.
    async fn budget(&self, frames: u32, bytes: u32) -> Option<Budget> {
        let bytes = bytes.min(self.max_bytes);
        let frames = frames.min(self.max_frames);
        let frame_permit = Arc::clone(&self.frame_budget)
            .acquire_many_owned(frames)
            .await
            .ok()?;
        let byte_permit = Arc::clone(&self.byte_budget)
            .acquire_many_owned(bytes)
            .await
            .ok()?;
        Some(Budget {
            _frames: frame_permit,
            _bytes: byte_permit,
        })
    }
}

/// What [`PublishQueue::try_push`] did.
pub(crate) enum Pushed {
    Queued,
    /// No room now: the run's topic and frames, to be queued with [`PublishQueue::push`].
    Full(Arc<str>, Vec<Frame>),
    /// The publisher is gone.
    Closed,
}

/// The publisher's end of a [`PublishQueue`]: whole runs, or frames one at a time.
#[derive(Debug)]
pub struct FrameReceiver {
    runs: mpsc::Receiver<FrameRun>,
    /// A run being taken apart by `recv`, and what is left of it.
    current: Option<(FrameRun, std::vec::IntoIter<Frame>)>,
}

impl FrameReceiver {
    /// The next run (or what `recv` left of one); `None` once the socket side is gone.
    pub async fn recv_run(&mut self) -> Option<FrameRun> {
        match self.rest() {
            Some(run) => Some(run),
            None => self.runs.recv().await,
        }
    }

    /// The next run if one is waiting.
    pub(crate) fn try_recv_run(&mut self) -> Option<FrameRun> {
        self.rest().or_else(|| self.runs.try_recv().ok())
    }

    /// The next frame; `None` once the socket side is gone.
    pub async fn recv(&mut self) -> Option<InboundFrame> {
        loop {
            if let Some(frame) = self.next_of_current() {
                return Some(frame);
            }
            let mut run = self.runs.recv().await?;
            let frames = std::mem::take(&mut run.frames).into_iter();
            self.current = Some((run, frames));
        }
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&mut self) -> Result<InboundFrame, mpsc::error::TryRecvError> {
        loop {
            if let Some(frame) = self.next_of_current() {
                return Ok(frame);
            }
            let mut run = self.runs.try_recv()?;
            let frames = std::mem::take(&mut run.frames).into_iter();
            self.current = Some((run, frames));
        }
    }

    fn next_of_current(&mut self) -> Option<InboundFrame> {
        let (run, frames) = self.current.as_mut()?;
        match frames.next() {
            Some(frame) => Some(InboundFrame {
                topic: Arc::clone(&run.topic),
                payload: frame.payload,
                text: frame.text,
                seq: frame.seq,
                epoch: frame.epoch,
                received_at: frame.received_at,
            }),
            None => {
                // The run is used up: its budget goes back.
                self.current = None;
                None
            }
        }
    }

    fn rest(&mut self) -> Option<FrameRun> {
        let (mut run, frames) = self.current.take()?;
        run.frames = frames.collect();
        (!run.frames.is_empty()).then_some(run)
    }
}
