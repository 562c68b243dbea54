//! The socket task's venue protocol (SPEC 9, `crate::venue`): the rules on inbound frames, the
//! keepalive clock, and the outbox that paces every client message under `outbound_rate`.

use super::*;

/// Venue ping answers waiting for the end of the burst; more are dropped (and logged).
pub(super) const MAX_REPLIES: usize = 64;
/// Paced messages waiting for their turn, besides the greeting: Sends beyond it wait in the
/// command channel, so the wait is bounded by both.
pub(super) const MAX_OUTBOX: usize = 64;

/// A client message waiting for its turn under `outbound_rate`.
pub(super) struct Outgoing {
    frame: Message,
    /// The caller of a Send, if any; an abandoned one (closed) is skipped, not sent.
    done: Option<oneshot::Sender<Result<(), SendError>>>,
    /// Kept for replay once sent.
    replay: Option<OutboundMessage>,
    /// Fails with `Paced` when its turn comes later than this; `None`: waits as long as it takes
    /// (the greeting).
    deadline: Option<Instant>,
    queued_at: Instant,
}

impl SocketTask {
    /// The venue rules on one data frame: what is left to publish, or `None` when the rules took it
    /// (a pong, a venue ping, a refused frame).
    pub(super) fn venue_step(&mut self, payload: Bytes, text: bool) -> Option<(Bytes, bool)> {
        let venue = self.leg.venue.as_deref_mut()?;
        match venue.inbound(payload, text, &self.id) {
            Inbound::Publish {
                payload,
                text,
                notice,
                gap,
            } => {
                if let Some(notice) = notice {
                    self.notice(notice);
                }
                if let Some(gap) = gap {
                    self.gap(gap);
                }
                Some((payload, text))
            }
            Inbound::Pong => {
                self.leg.pong_due = None;
                None
            }
            Inbound::Reply(reply) => {
                if self.leg.replies.len() < MAX_REPLIES {
                    self.leg.replies.push(reply);
                } else {
                    tracing::warn!(connection = %self.id, "too many venue pings in one burst; this one is not answered");
                }
                None
            }
            Inbound::Refused(reason) => {
                self.refused(&reason);
                None
            }
        }
    }

    /// Venue state starts over with each socket: a fresh pacing window, keepalive clock and no
    /// pending pong; paced messages of the old socket are gone with it (their callers get
    /// `Closed`).
    pub(super) fn new_socket(&mut self) {
        self.leg.outbox.clear();
        self.leg.replies.clear();
        self.leg.rotate = None;
        self.leg.pong_due = None;
        self.leg.keepalive_at = None;
        if let Some(venue) = self.leg.venue.as_deref_mut() {
            venue.reset();
            if let Some(k) = venue.keepalive() {
                self.leg.keepalive_at = Some(Instant::now() + Duration::from_millis(k.interval_ms));
            }
        }
    }

    /// After inbound frames: an idle-only keepalive waits a whole interval from now.
    pub(super) fn inbound_seen(&mut self) {
        let Some(venue) = self.leg.venue.as_deref() else {
            return;
        };
        if let Some(k) = venue.keepalive().filter(|k| k.idle_only) {
            self.leg.keepalive_at = Some(Instant::now() + Duration::from_millis(k.interval_ms));
        }
    }

    /// Sends the keepalive message (paced, when the leg is) and starts waiting for its pong.
    pub(super) async fn keepalive(&mut self, socket: &mut Socket) -> Option<End> {
        let venue = self.leg.venue.as_deref()?;
        let keepalive = venue.keepalive()?;
        let frame = venue.keepalive_frame()?;
        let now = Instant::now();
        self.leg.keepalive_at = Some(now + Duration::from_millis(keepalive.interval_ms));
        if venue.expects_pong() && self.leg.pong_due.is_none() {
            self.leg.pong_due = Some(now + keepalive.timeout());
        }
        self.send_frame(socket, frame).await
    }

    /// Sends a frame wsm itself originates (a keepalive, a venue ping's answer): at once, or
    /// through the outbox when paced.
    pub(super) async fn send_frame(&mut self, socket: &mut Socket, frame: Message) -> Option<End> {
        if self.leg.venue.as_ref().is_some_and(|v| v.is_paced()) {
            self.enqueue(frame, None, None, None);
            return None;
        }
        match socket.send(frame).await {
            Ok(()) => None,
            Err(e) => Some(End::Dropped(format!("write failed: {e}"))),
        }
    }

    pub(super) fn enqueue(
        &mut self,
        frame: Message,
        done: Option<oneshot::Sender<Result<(), SendError>>>,
        replay: Option<OutboundMessage>,
        deadline: Option<Instant>,
    ) {
        self.leg.outbox.push_back(Outgoing {
            frame,
            done,
            replay,
            deadline,
            queued_at: Instant::now(),
        });
    }

    /// Sends the head of the outbox if its turn has come; fails those whose deadline passed.
    pub(super) async fn send_paced(&mut self, socket: &mut Socket) -> Option<End> {
        let now = Instant::now();
        let queued = self.leg.outbox.len();
        let (rate, ready) = {
            let pacer = self.leg.venue.as_deref_mut()?.pacer()?;
            (pacer.describe().to_owned(), pacer.next_at(now) <= now)
        };
        if !ready {
            return None;
        }
        let next = self.leg.outbox.pop_front()?;
        if next.done.as_ref().is_some_and(|d| d.is_closed()) {
            // Its caller gave up (a Send that timed out, a cancelled call): not sent.
            return None;
        }
        if next.deadline.is_some_and(|d| now > d) {
            if let Some(done) = next.done {
                let _ = done.send(Err(SendError::Paced {
                    rate,
                    waited_ms: now.duration_since(next.queued_at).as_millis() as u64,
                    queued: queued.saturating_sub(1),
                }));
            }
            return None;
        }
        let result = socket.send(next.frame).await;
        if let Some(pacer) = self.leg.venue.as_deref_mut().and_then(Venue::pacer) {
            pacer.record(Instant::now());
        }
        match result {
            Ok(()) => {
                if let Some(message) = next.replay {
                    if let Some(frame) = to_frame(&message)
                        .ok()
                        .filter(|_| self.cont.spare.is_some())
                    {
                        self.copy_to_spare(frame).await;
                    }
                    self.replay.push(message);
                }
                if let Some(done) = next.done {
                    let _ = done.send(Ok(()));
                }
                None
            }
            Err(e) => {
                let reason = format!("write failed: {e}");
                if let Some(done) = next.done {
                    let _ = done.send(Err(SendError::Write(reason.clone())));
                }
                Some(End::Dropped(reason))
            }
        }
    }

    /// What the venue rules asked for during a run: answers to venue pings, then a rotation.
    pub(super) async fn after_venue_frames(&mut self, socket: &mut Socket) -> Option<End> {
        for reply in std::mem::take(&mut self.leg.replies) {
            let frame = Message::Text(reply.into());
            if let Some(end) = self.send_frame(socket, frame).await {
                return Some(end);
            }
        }
        self.leg.rotate.take().map(End::Rotate)
    }

    /// A venue notice: counted, and the socket is rotated once the current run is handed on.
    pub(super) fn notice(&mut self, shown: String) {
        self.ch
            .frames
            .stats()
            .notices
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(connection = %self.id, notice = %shown, "venue announced a planned disconnect");
        self.leg.rotate = Some(format!(
            "the venue announced a planned disconnect ({shown})"
        ));
    }

    pub(super) fn gap(&mut self, gap: crate::venue::Gap) {
        self.ch
            .frames
            .stats()
            .venue_gaps
            .fetch_add(1, Ordering::Relaxed);
        if !every(&mut self.last_gap_event) {
            return;
        }
        let key = if gap.key.is_empty() {
            String::new()
        } else {
            format!(" for {}", gap.key)
        };
        let reason = format!(
            "venue gap{key}: the frame with value {} says the previous was {}, but the last seen was {}; published anyway",
            gap.value, gap.prev, gap.last
        );
        tracing::warn!(connection = %self.id, %reason, "venue sequence gap");
        self.emit(LifecycleKind::Gap, &reason, 0);
    }

    pub(super) fn refused(&mut self, reason: &str) {
        self.ch
            .frames
            .stats()
            .frames_refused
            .fetch_add(1, Ordering::Relaxed);
        if !every(&mut self.last_refused_event) {
            return;
        }
        tracing::warn!(connection = %self.id, reason, "frame refused");
        self.emit(LifecycleKind::Error, reason, 0);
    }
}
