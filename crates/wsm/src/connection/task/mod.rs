//! The socket task: the only owner of a connection's socket. It reads frames (matching correlated
//! responses, handing the rest to the publish queue), performs writes in the order commands arrive,
//! pings, and on a drop reconnects with backoff and replays `on_connect` and the replay messages
//! before it reports the connection active again.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

mod continuity;
mod legs;
mod redial;
mod venue;
mod wire;

use continuity::Continuity;
use legs::LegState;
use venue::{Outgoing, MAX_OUTBOX};
use wire::{close, every, read_failed, sleep_until, to_frame, BurstClock};

use super::correlation::{self, Correlator};
use super::dial::{self, Socket};
use super::{Command, ConnectionOptions, ConnectionSpec, SendError};
use crate::lifecycle::{LifecycleEvent, LifecycleKind, LifecycleSink};
use crate::model::{OutboundMessage, Status};
use crate::publish::arbiter::Arbiter;
use crate::publish::queue::{PublishQueue, Pushed};
use crate::publish::Frame;
use crate::venue::{Inbound, Venue};

/// How long a close handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Runs at least this long make the socket task yield (see `flush`); a slow feed never does.
const YIELD_AFTER: usize = 64;
/// At most one `degraded` event per connection per this long (likewise `gap` and refused frames).
const DEGRADED_EVERY: Duration = Duration::from_secs(1);
pub(super) struct Channels {
    pub commands: mpsc::Receiver<Command>,
    pub frames: PublishQueue,
    pub lifecycle: Arc<dyn LifecycleSink>,
    pub state: watch::Sender<(Status, u64)>,
}

/// Where [`SocketTask::take_ready`] stopped.
enum Taken {
    /// The run is full; more may be readable.
    Full,
    /// Nothing more is readable now.
    WouldBlock,
    End(End),
}

/// How serving a socket ended.
enum End {
    /// Closed on request (or every handle dropped): stop for good.
    Closed,
    /// Lost: the upstream closed, a read or write failed, or keepalive timed out.
    Dropped(String),
    /// The upstream broke the protocol (a message over the size limit, a text message that is not
    /// UTF-8). The socket is closed with the code RFC 6455 gives that case, so the upstream's
    /// operator can see why, and then it is handled like a drop.
    Violation {
        reason: String,
        code: u16,
        close_reason: &'static str,
    },
    /// Replace the socket on purpose (a venue notice): make-before-break.
    Rotate(String),
    /// The spare takes over as the primary, and the old primary closes (a rotation that ended,
    /// a primary replaced by its standby).
    Promote,
}

/// Full runs handled before the socket task looks at its commands again.
const RUNS_PER_BURST: u32 = 8;

pub(super) struct SocketTask {
    id: Arc<str>,
    url: Arc<str>,
    spec: ConnectionSpec,
    options: ConnectionOptions,
    ch: Channels,
    correlator: Arc<Correlator>,
    topic: Option<Arc<str>>,
    /// Frames received in the current burst, not yet handed to the publish queue, their topic and
    /// their byte-budget cost.
    pending: Vec<Frame>,
    pending_topic: Option<Arc<str>>,
    pending_cost: u32,
    burst_clock: BurstClock,
    seq: u64,
    epoch: u64,
    replay: Vec<OutboundMessage>,
    last_degraded: Option<Instant>,
    /// Data messages and bytes received in the current burst, added to the shared stats at its end.
    received_frames: u64,
    received_bytes: u64,
    /// The leg being handled now: the primary, or the spare swapped in (see `legs`).
    leg: LegState,
    /// Legs, the arbiter and rotations (SPEC 8).
    cont: Continuity,
    arbiter: Arbiter,
    /// The arbiter's clock for the current run.
    arb_now: Instant,
    last_gap_event: Option<Instant>,
    last_refused_event: Option<Instant>,
}

impl SocketTask {
    pub fn new(
        mut spec: ConnectionSpec,
        options: ConnectionOptions,
        ch: Channels,
        correlator: Arc<Correlator>,
    ) -> Self {
        let replay = std::mem::take(&mut spec.replay);
        let topic = spec.topic.as_deref().map(Arc::from);
        let leg = LegState::new(0, &spec, &options);
        let cont = Continuity {
            legs_wanted: spec.venue.legs(),
            tracking: spec.venue.legs() > 1,
            lifetime: spec.venue.max_lifetime_ms.map(Duration::from_millis),
            ..Continuity::default()
        };
        let arbiter = Arbiter::new(
            spec.venue
                .sequence
                .as_ref()
                .map(|s| (s.value.as_str(), s.key.as_deref())),
        );
        SocketTask {
            id: spec.id.as_str().into(),
            // Events and logs show the URL redacted; only the dial sees the real one.
            url: options.redact.redact(&spec.url).into(),
            epoch: spec.epoch + 1,
            spec,
            options,
            ch,
            correlator,
            topic,
            pending: Vec::new(),
            pending_topic: None,
            pending_cost: 0,
            burst_clock: BurstClock::default(),
            seq: 0,
            replay,
            last_degraded: None,
            received_frames: 0,
            received_bytes: 0,
            leg,
            cont,
            arbiter,
            arb_now: Instant::now(),
            last_gap_event: None,
            last_refused_event: None,
        }
    }

    /// Serves `socket`, or with `None` (a connection taken over from another instance) dials at
    /// once first: a failed first dial is a drop like any other.
    pub async fn run(mut self, socket: Option<Socket>) {
        let mut socket = match socket {
            Some(socket) => socket,
            None => match self.first_dial().await {
                Some(socket) => socket,
                None => return,
            },
        };
        let mut attempt = 0;
        let mut greeted = false;
        loop {
            let end = if greeted {
                self.serve(&mut socket).await
            } else {
                match self.greet(&mut socket).await {
                    Ok(()) => {
                        greeted = true;
                        self.leg_up();
                        self.set_status(Status::Connected);
                        self.emit(LifecycleKind::Connected, "connected", attempt);
                        self.serve(&mut socket).await
                    }
                    Err(reason) => End::Dropped(reason),
                }
            };
            let reason = match end {
                End::Closed => {
                    self.continuity_ended();
                    self.finish("closed on request");
                    return;
                }
                End::Promote => match self.promote(Some(socket)) {
                    Some(next) => {
                        socket = next;
                        continue;
                    }
                    None => {
                        // Unreachable (a promotion needs a spare); end cleanly rather than panic.
                        self.continuity_ended();
                        self.finish("the rotation lost both legs");
                        return;
                    }
                },
                End::Rotate(reason) => {
                    // Handled in `serve`; a notice never ends serving.
                    tracing::debug!(connection = %self.id, %reason, "rotation requested");
                    continue;
                }
                End::Dropped(reason) => reason,
                End::Violation {
                    reason,
                    code,
                    close_reason,
                } => {
                    close(&mut socket, code, close_reason).await;
                    reason
                }
            };
            drop(socket);
            if let Some(next) = self.primary_lost(&reason) {
                socket = next;
                continue;
            }
            self.only_leg_lost(&reason);
            let Some((next, attempts)) = self.after_drop(reason).await else {
                self.continuity_ended();
                return;
            };
            socket = next;
            attempt = attempts;
            greeted = false;
            self.epoch += 1;
        }
    }

    /// The primary leg is up (first, or again after a drop of the only leg).
    fn leg_up(&mut self) {
        self.leg.opened_at = Instant::now();
        if self.cont.legs_wanted > 1 {
            self.arbiter.leg_up(self.leg.slot);
            self.cont.standby_at = Some(Instant::now() + continuity::STAGGER);
        }
    }

    /// Sends `on_connect`, then every replay message, in order, before the connection counts as up.
    async fn greet(&mut self, socket: &mut Socket) -> Result<(), String> {
        self.new_socket();
        if self.leg.venue.as_ref().is_some_and(|v| v.is_paced()) {
            // Paced: the greeting waits its turns in the outbox, in order, ahead of any Send, while
            // the socket is read (a 50-message replay at 5/s takes 10 s).
            let frames = self
                .spec
                .on_connect
                .iter()
                .chain(self.replay.iter())
                .map(to_frame)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            for frame in frames {
                self.enqueue(frame, None, None, None);
            }
            return Ok(());
        }
        let messages = self.spec.on_connect.iter().chain(self.replay.iter());
        for message in messages {
            let frame = to_frame(message).map_err(|e| e.to_string())?;
            socket
                .send(frame)
                .await
                .map_err(|e| format!("sending on_connect/replay messages failed: {e}"))?;
        }
        Ok(())
    }

    /// Serves the primary `socket`, the spare if there is one, a background dial and the
    /// continuity clocks, until the primary's serving ends.
    async fn serve(&mut self, socket: &mut Socket) -> End {
        loop {
            // Frames a joining leg held, released by the last event.
            if let Some(end) = self.flush(socket).await {
                return end;
            }
            let continuity_at = self.continuity_at();
            tokio::select! {
                biased;
                command = self.ch.commands.recv(), if self.leg.outbox.len() < MAX_OUTBOX => {
                    if let Some(end) = self.command(command, Some(&mut *socket)).await {
                        return end;
                    }
                }
                event = legs::next_event(&mut *socket, &mut self.leg) => {
                    match self.on_event(&mut *socket, event).await {
                        Some(End::Rotate(reason)) => {
                            if let Some(end) = self.begin_rotation(reason, None) {
                                return end;
                            }
                        }
                        Some(end) => return end,
                        None => {}
                    }
                }
                event = legs::spare_event(&mut self.cont.spare) => {
                    if let Some(end) = self.on_spare_event(event).await {
                        return end;
                    }
                }
                (purpose, result) = legs::dialed(&mut self.cont.dialing) => {
                    self.dialed(purpose, result).await;
                }
                _ = sleep_until(continuity_at), if continuity_at.is_some() => {
                    if let Some(end) = self.continuity_due() {
                        return end;
                    }
                }
            }
            if let Some(end) = self.rotation_settled() {
                return end;
            }
        }
    }

    /// Handles `first` and then every message that is already readable, handing the frames to the
    /// publish queue in runs: a fast feed costs one queue operation per run, not per frame.
    /// Nothing stays pending when this returns.
    async fn burst(
        &mut self,
        socket: &mut Socket,
        first: Option<Result<Message, WsError>>,
    ) -> Option<End> {
        let end = self.burst_runs(socket, first).await;
        if self.received_frames > 0 {
            let stats = self.ch.frames.stats();
            stats
                .frames
                .fetch_add(self.received_frames, Ordering::Relaxed);
            stats
                .bytes
                .fetch_add(self.received_bytes, Ordering::Relaxed);
            self.received_frames = 0;
            self.received_bytes = 0;
        }
        if self.cont.tracking {
            let memory = self.arbiter.memory();
            self.report_arbiter_memory(memory);
        }
        end
    }

    async fn burst_runs(
        &mut self,
        socket: &mut Socket,
        first: Option<Result<Message, WsError>>,
    ) -> Option<End> {
        self.burst_clock = BurstClock::default();
        let mut next = Some(first);
        let mut runs = 0;
        loop {
            let taken = self.take_ready(socket, next.take());
            if let Some(end) = self.flush(socket).await {
                return Some(end);
            }
            if self.leg.venue.is_some() {
                if let Some(end) = self.after_venue_frames(socket).await {
                    return Some(end);
                }
            }
            runs += 1;
            match taken {
                // A feed that is always readable must not starve commands (Send, a topic change,
                // Disconnect): back to the select, which looks at commands first, now and then.
                Taken::Full if runs >= RUNS_PER_BURST => return None,
                Taken::Full => continue,
                Taken::WouldBlock => return None,
                Taken::End(end) => return Some(end),
            }
        }
    }

    /// Handles `first` (if given) and the messages readable without waiting, until the run is full,
    /// a read would block, or the connection ends. Synchronous, so the per-frame loop of a fast
    /// feed stays out of the task's state machine. (A read that would block registers this task's
    /// waker again in the caller's select.)
    fn take_ready(
        &mut self,
        socket: &mut Socket,
        mut first: Option<Option<Result<Message, WsError>>>,
    ) -> Taken {
        let (max_frames, max_bytes) = self.ch.frames.run_limits();
        if self.cont.tracking {
            self.arb_now = Instant::now();
        }
        loop {
            let next = match first.take() {
                Some(next) => next,
                None => match socket.next().now_or_never() {
                    Some(next) => next,
                    None => return Taken::WouldBlock,
                },
            };
            match next {
                None => {
                    return Taken::End(End::Dropped(
                        "the upstream closed the TCP connection".into(),
                    ))
                }
                Some(Err(e)) => return Taken::End(read_failed(e)),
                Some(Ok(message)) => {
                    if let Some(end) = self.received(message) {
                        return Taken::End(end);
                    }
                }
            }
            if self.pending.len() >= max_frames || self.pending_cost >= max_bytes {
                return Taken::Full;
            }
        }
    }

    /// One received message: a correlated response goes to its waiter; a data frame joins the
    /// pending run while a topic is set; `Some` when the message ends the connection.
    #[inline]
    fn received(&mut self, message: Message) -> Option<End> {
        let (payload, text) = match message {
            Message::Text(text) => (Bytes::from(text), true),
            Message::Binary(bytes) => (bytes, false),
            Message::Close(frame) => {
                let why = frame
                    .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                    .unwrap_or_else(|| "no close code".into());
                return Some(End::Dropped(format!(
                    "the upstream closed the connection ({why})"
                )));
            }
            // Pongs are queued by tungstenite and flushed with the next read or write; where the
            // venue counts them, each takes a turn of the pacing.
            Message::Ping(_) => {
                if let Some(venue) = self.leg.venue.as_deref_mut() {
                    venue.pong_sent();
                }
                return None;
            }
            Message::Pong(_) | Message::Frame(_) => return None,
        };
        let (payload, text) = match self.leg.venue.as_deref_mut() {
            None => (payload, text),
            Some(_) => self.venue_step(payload, text)?,
        };
        self.received_frames += 1;
        self.received_bytes += payload.len() as u64;
        // Frames are inspected only while a correlated request is pending.
        let matched = if self.correlator.pending() == 0 {
            false
        } else if text {
            std::str::from_utf8(&payload)
                .map(|t| self.correlator.match_text(t))
                .unwrap_or(false)
        } else {
            self.correlator.match_binary(&payload)
        };
        if matched {
            return None;
        }
        // Two legs, or a change of leg under way: each frame is published once (SPEC 8).
        if self.cont.tracking && !self.arbitrate(&payload, text) {
            return None;
        }
        if self.cont.gap.is_some() {
            self.report_gap(&payload, text);
        }
        self.push_frame(payload, text);
        None
    }

    /// Numbers one frame to publish and adds it to the pending run (while a topic is set).
    #[inline]
    fn push_frame(&mut self, payload: Bytes, text: bool) {
        let Some(topic) = self.topic.as_ref() else {
            return;
        };
        if !self
            .pending_topic
            .as_ref()
            .is_some_and(|pending| Arc::ptr_eq(pending, topic))
        {
            // A run has one topic; the socket task flushes before any command, so a pending run
            // always has the current topic.
            self.pending_topic = Some(Arc::clone(topic));
        }
        self.seq += 1;
        self.pending_cost = self
            .pending_cost
            .saturating_add(u32::try_from(payload.len()).unwrap_or(u32::MAX).max(1));
        self.pending.push(Frame {
            payload,
            text,
            seq: self.seq,
            epoch: self.epoch,
            received_at: self.burst_clock.now(),
        });
    }

    /// Hands the pending run to the publish queue. When the queue is full, the socket is not read
    /// until it drains (commands are still served meanwhile).
    async fn flush(&mut self, socket: &mut Socket) -> Option<End> {
        if self.pending.is_empty() {
            return None;
        }
        let (max_frames, _) = self.ch.frames.run_limits();
        let frames = std::mem::replace(&mut self.pending, Vec::with_capacity(max_frames));
        let cost = std::mem::take(&mut self.pending_cost);
        // What a gap report starts from: one clone per run, not per frame.
        self.cont.last_published = frames.last().map(|f| (f.payload.clone(), f.received_at));
        let topic = self.pending_topic.clone()?;
        let count = frames.len();
        let queue = self.ch.frames.clone();
        // Fast path: room in both budgets.
        let (topic, frames) = match queue.try_push(topic, frames, cost) {
            Pushed::Queued => {
                // A busy feed yields after each large run. The publisher runs now on this
                // worker, and an idle worker may take this task, so reading and publishing
                // overlap on two cores instead of taking turns on one.
                if count >= YIELD_AFTER {
                    tokio::task::yield_now().await;
                }
                return None;
            }
            Pushed::Closed => return self.queue_closed(),
            Pushed::Full(topic, frames) => (topic, frames),
        };
        self.degraded(
            "the publish queue is full; not reading from upstream until the bus catches up",
        );
        let wait = queue.push(topic, frames, cost);
        let mut wait = std::pin::pin!(wait);
        loop {
            tokio::select! {
                sent = &mut wait => {
                    return match sent {
                        Ok(()) => None,
                        Err(()) => self.queue_closed(),
                    };
                }
                command = self.ch.commands.recv() => {
                    if let Some(end) = self.command(command, Some(&mut *socket)).await {
                        return Some(end);
                    }
                }
            }
        }
    }

    fn queue_closed(&mut self) -> Option<End> {
        tracing::error!(connection = %self.id, "publish queue closed; frames are no longer published");
        self.topic = None;
        None
    }

    /// Handles one command; `Some` ends serving. Without a socket (reconnecting) sends fail fast.
    async fn command(
        &mut self,
        command: Option<Command>,
        socket: Option<&mut Socket>,
    ) -> Option<End> {
        match command {
            // Every handle is gone: nobody can reach this connection any more.
            None => {
                if let Some(socket) = socket {
                    close(socket, 1001, "connection released").await;
                }
                Some(End::Closed)
            }
            Some(Command::Close { code, reason, done }) => {
                if let Some(socket) = socket {
                    close(socket, code, reason).await;
                }
                let _ = done.send(());
                Some(End::Closed)
            }
            Some(Command::SetTopic(topic)) => {
                self.topic = topic;
                None
            }
            Some(Command::Rotate { reason, done }) => {
                if socket.is_none() {
                    let _ = done.send(Err(SendError::NotConnected));
                    return None;
                }
                self.begin_rotation(reason, Some(done))
            }
            Some(Command::Send {
                message,
                replay,
                done,
            }) => {
                let Some(socket) = socket else {
                    let _ = done.send(Err(SendError::NotConnected));
                    return None;
                };
                if replay && self.replay.len() >= self.options.max_replay {
                    let _ = done.send(Err(SendError::ReplayFull(self.options.max_replay)));
                    return None;
                }
                let frame = match to_frame(&message) {
                    Ok(frame) => frame,
                    Err(e) => {
                        let _ = done.send(Err(e));
                        return None;
                    }
                };
                if let Some(pacer) = self.leg.venue.as_deref_mut().and_then(Venue::pacer) {
                    let now = Instant::now();
                    let deadline = now + pacer.max_wait();
                    let queued = self.leg.outbox.len();
                    if pacer.estimate(now, queued) > deadline {
                        let _ = done.send(Err(SendError::Paced {
                            rate: pacer.describe().to_owned(),
                            waited_ms: 0,
                            queued,
                        }));
                        return None;
                    }
                    let replay = replay.then_some(message);
                    self.enqueue(frame, Some(done), replay, Some(deadline));
                    return None;
                }
                let copy = (replay && self.cont.spare.is_some()).then(|| frame.clone());
                match socket.send(frame).await {
                    Ok(()) => {
                        if replay {
                            self.replay.push(message);
                        }
                        if let Some(copy) = copy {
                            self.copy_to_spare(copy).await;
                        }
                        let _ = done.send(Ok(()));
                        None
                    }
                    Err(e) => {
                        let reason = format!("write failed: {e}");
                        let _ = done.send(Err(SendError::Write(reason.clone())));
                        Some(End::Dropped(reason))
                    }
                }
            }
        }
    }

    /// The URL as logs show it: redacted and cut short.
    fn shown_url(&self) -> String {
        crate::text::excerpt(&self.url, crate::text::SHORT)
    }

    fn set_status(&self, status: Status) {
        let _ = self.ch.state.send((status, self.epoch));
    }

    fn degraded(&mut self, reason: &str) {
        if !every(&mut self.last_degraded) {
            return;
        }
        tracing::warn!(connection = %self.id, reason, "connection degraded");
        self.emit(LifecycleKind::Degraded, reason, 0);
    }

    fn emit(&self, kind: LifecycleKind, reason: &str, attempt: u32) {
        self.ch.lifecycle.emit(LifecycleEvent {
            kind,
            connection_id: Arc::clone(&self.id),
            url: Arc::clone(&self.url),
            reason: reason.to_owned(),
            attempt,
            epoch: self.epoch,
        });
    }
}
