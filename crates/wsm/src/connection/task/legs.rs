//! Legs (SPEC 8): the sockets that serve one connection. Each has its own venue state (decoder,
//! pacing, keepalive clock) and WebSocket ping clock; the socket task serves one or two of them and
//! swaps the leg it is handling into `SocketTask::leg`, so the per-frame code is the same for both.

use super::*;

use crate::publish::arbiter::Slot;

/// One leg's own state, besides its socket.
pub(super) struct LegState {
    pub slot: Slot,
    /// Venue protocol state; `None` when the connection runs none (the common case, one branch).
    pub venue: Option<Box<Venue>>,
    /// Paced client messages, oldest first (only with `outbound_rate`).
    pub outbox: VecDeque<Outgoing>,
    /// Answers to venue pings found in the current burst, sent after it.
    pub replies: Vec<String>,
    /// A venue notice matched in the current burst: rotate after it.
    pub rotate: Option<String>,
    /// When the next keepalive message goes out, and by when its pong must arrive.
    pub keepalive_at: Option<Instant>,
    pub pong_due: Option<Instant>,
    /// WebSocket Pings, and by when a frame or Pong must follow one.
    pub ping: tokio::time::Interval,
    pub pong_deadline: Option<Instant>,
    /// When its socket opened: `max_lifetime_ms` counts from here.
    pub opened_at: Instant,
}

impl LegState {
    pub fn new(slot: Slot, spec: &ConnectionSpec, options: &ConnectionOptions) -> LegState {
        let mut ping = tokio::time::interval_at(
            Instant::now() + options.ping_interval,
            options.ping_interval,
        );
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        LegState {
            slot,
            venue: Venue::new(&spec.venue, options.max_message_size),
            outbox: VecDeque::new(),
            replies: Vec::new(),
            rotate: None,
            keepalive_at: None,
            pong_due: None,
            ping,
            pong_deadline: None,
            opened_at: Instant::now(),
        }
    }

    /// When the head of the outbox may go out; `None` with nothing waiting.
    pub fn paced_at(&mut self) -> Option<Instant> {
        if self.outbox.is_empty() {
            return None;
        }
        let pacer = self.venue.as_deref_mut()?.pacer()?;
        Some(pacer.next_at(Instant::now()))
    }
}

/// The second leg: a standby (`redundancy: 2`) or a rotation's new leg.
pub(super) struct Spare {
    pub socket: Socket,
    pub state: LegState,
}

/// What woke a leg.
pub(super) enum LegEvent {
    Message(Option<Result<Message, WsError>>),
    Paced,
    Ping,
    PongLate,
    Keepalive,
    KeepaliveLate,
}

/// The next thing one leg needs: a message, or one of its clocks.
pub(super) async fn next_event(socket: &mut Socket, leg: &mut LegState) -> LegEvent {
    let paced_at = leg.paced_at();
    tokio::select! {
        biased;
        message = socket.next() => LegEvent::Message(message),
        _ = sleep_until(paced_at), if paced_at.is_some() => LegEvent::Paced,
        _ = leg.ping.tick() => LegEvent::Ping,
        _ = sleep_until(leg.pong_deadline), if leg.pong_deadline.is_some() => LegEvent::PongLate,
        _ = sleep_until(leg.keepalive_at), if leg.keepalive_at.is_some() => LegEvent::Keepalive,
        _ = sleep_until(leg.pong_due), if leg.pong_due.is_some() => LegEvent::KeepaliveLate,
    }
}

/// The spare's next event; never, without one.
pub(super) async fn spare_event(spare: &mut Option<Spare>) -> LegEvent {
    match spare {
        Some(spare) => next_event(&mut spare.socket, &mut spare.state).await,
        None => std::future::pending().await,
    }
}

/// Why a leg is being dialed in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A rotation's new leg (make-before-break).
    Rotation,
    /// The standing second leg of `redundancy: 2`.
    Standby,
}

pub(super) struct Dialing {
    pub purpose: Purpose,
    pub handle: tokio::task::JoinHandle<Result<Socket, dial::DialError>>,
}

impl Dialing {
    pub fn start(purpose: Purpose, spec: &ConnectionSpec, options: &ConnectionOptions) -> Dialing {
        let spec = spec.clone();
        let options = options.clone();
        Dialing {
            purpose,
            handle: tokio::spawn(async move { dial::dial(&spec, &options).await }),
        }
    }
}

/// The background dial's outcome; never, without one.
pub(super) async fn dialed(dialing: &mut Option<Dialing>) -> (Purpose, Result<Socket, String>) {
    let Some(d) = dialing.as_mut() else {
        return std::future::pending().await;
    };
    let result = match (&mut d.handle).await {
        Ok(Ok(socket)) => Ok(socket),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the dial task failed: {e}")),
    };
    let purpose = d.purpose;
    *dialing = None;
    (purpose, result)
}

/// Closes a leg that is no longer wanted without holding up the others.
pub(super) fn close_in_background(mut socket: Socket, code: u16, reason: &'static str) {
    tokio::spawn(async move { close(&mut socket, code, reason).await });
}

impl SocketTask {
    /// Handles one event of the leg in `self.leg`, whose socket is `socket`.
    pub(super) async fn on_event(&mut self, socket: &mut Socket, event: LegEvent) -> Option<End> {
        match event {
            LegEvent::Message(message) => {
                self.leg.pong_deadline = None;
                let end = self.burst(socket, message).await;
                if end.is_none() {
                    self.inbound_seen();
                }
                end
            }
            LegEvent::Paced => self.send_paced(socket).await,
            LegEvent::Ping => {
                if self.leg.pong_deadline.is_none() {
                    if self.leg.venue.as_ref().is_some_and(|v| v.counts_control()) {
                        // The venue counts Pings: this one waits its turn.
                        self.enqueue(Message::Ping(Bytes::new()), None, None, None);
                    } else if let Err(e) = socket.send(Message::Ping(Bytes::new())).await {
                        return Some(End::Dropped(format!("ping failed: {e}")));
                    }
                    self.leg.pong_deadline = Some(Instant::now() + self.options.ping_timeout);
                }
                None
            }
            LegEvent::PongLate => Some(End::Dropped(format!(
                "no pong or frame within {} ms of a ping",
                self.options.ping_timeout.as_millis()
            ))),
            LegEvent::Keepalive => self.keepalive(socket).await,
            LegEvent::KeepaliveLate => {
                self.ch
                    .frames
                    .stats()
                    .keepalive_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                let timeout = self
                    .leg
                    .venue
                    .as_ref()
                    .and_then(|v| v.keepalive())
                    .map(|k| k.timeout());
                Some(End::Dropped(format!(
                    "no pong to the keepalive message within {} ms; the leg is dead",
                    timeout.unwrap_or_default().as_millis()
                )))
            }
        }
    }

    /// Handles one event of the spare: its state is swapped into `self.leg` meanwhile. `Some` only
    /// when the connection itself ends (a Close served while the spare waited for the queue).
    pub(super) async fn on_spare_event(&mut self, event: LegEvent) -> Option<End> {
        let mut spare = self.cont.spare.take()?;
        std::mem::swap(&mut self.leg, &mut spare.state);
        let end = self.on_event(&mut spare.socket, event).await;
        std::mem::swap(&mut self.leg, &mut spare.state);
        match end {
            None => {
                self.cont.spare = Some(spare);
                None
            }
            Some(End::Closed) => {
                close_in_background(spare.socket, 1000, "closed on request");
                Some(End::Closed)
            }
            Some(End::Rotate(reason)) => {
                self.cont.spare = Some(spare);
                self.recycle_spare(&reason);
                None
            }
            Some(End::Promote) => {
                self.cont.spare = Some(spare);
                Some(End::Promote)
            }
            Some(End::Dropped(reason)) => {
                self.spare_lost(spare, reason, None);
                None
            }
            Some(End::Violation {
                reason,
                code,
                close_reason,
            }) => {
                self.spare_lost(spare, reason, Some((code, close_reason)));
                None
            }
        }
    }

    /// Opens `socket` as a new leg in `slot` and greets it; its state is swapped in meanwhile.
    pub(super) async fn open_leg(
        &mut self,
        mut socket: Socket,
        slot: Slot,
    ) -> Result<Spare, String> {
        let mut state = LegState::new(slot, &self.spec, &self.options);
        std::mem::swap(&mut self.leg, &mut state);
        let greeted = self.greet(&mut socket).await;
        std::mem::swap(&mut self.leg, &mut state);
        greeted.map(|()| Spare { socket, state })
    }

    /// A frame of a replayed message sent on the primary goes to the spare too, so both legs stay
    /// subscribed alike. A spare that cannot take it is lost.
    pub(super) async fn copy_to_spare(&mut self, frame: Message) {
        let Some(mut spare) = self.cont.spare.take() else {
            return;
        };
        std::mem::swap(&mut self.leg, &mut spare.state);
        let end = self.send_frame(&mut spare.socket, frame).await;
        std::mem::swap(&mut self.leg, &mut spare.state);
        match end {
            None => self.cont.spare = Some(spare),
            Some(end) => {
                let reason = match end {
                    End::Dropped(reason) => reason,
                    _ => "the copy of a replayed message failed".into(),
                };
                self.spare_lost(spare, reason, None);
            }
        }
    }

    /// The slot the primary does not use, for a new leg.
    pub(super) fn free_slot(&self) -> Slot {
        1 - self.leg.slot.min(1)
    }
}
