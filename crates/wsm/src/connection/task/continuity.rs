//! Continuity (SPEC 8): changing a connection's socket without losing a venue frame. A rotation
//! opens a new leg make-before-break and closes the old one once the arbiter has seen the two
//! overlap (or at `OVERLAP_BOUND`, announcing a possible gap); `redundancy: 2` keeps a standby
//! leg, redialed by itself when lost; a gap that could not be avoided is announced with the venue
//! values around it, and only then does the epoch change.

use super::legs::{close_in_background, Dialing, Purpose, Spare};
use super::*;

use crate::connection::backoff::first_jitter;
use crate::connection::Rotated;
use crate::publish::arbiter::Verdict;

use crate::connection::OVERLAP_BOUND;
/// The standby leg is dialed this long after the first is up, so both are never in their
/// handshake together.
pub(super) const STAGGER: Duration = Duration::from_millis(250);
/// A leg due for recycling waits while the other is not yet in step, checking this often.
const HOLD: Duration = Duration::from_secs(1);
/// Frames without a venue value looked at after a gap before it is reported by time alone.
const GAP_PATIENCE: u32 = 1024;

pub(super) struct Rotation {
    reason: String,
    started: Instant,
    /// Set once the new leg is up: the old one closes then, overlap or not.
    bound_at: Option<Instant>,
    /// The new leg's greeting still waits in its paced outbox: its subscriptions are not all in
    /// effect, so no overlap counts yet.
    greeting: bool,
    /// Duplicates suppressed before the greeting finished (counted in the total).
    early_duplicates: u64,
    waiter: Option<oneshot::Sender<Result<Rotated, SendError>>>,
}

/// A gap that happened; reported with the first frame after it that says where the feed resumed.
pub(super) struct GapOpen {
    why: String,
    last: Option<(Bytes, SystemTime)>,
    waited: u32,
}

/// Continuity state of a connection.
#[derive(Default)]
pub(super) struct Continuity {
    /// Whether frames go through the arbiter (two legs, or a change under way).
    pub tracking: bool,
    pub legs_wanted: usize,
    pub lifetime: Option<Duration>,
    pub spare: Option<Spare>,
    pub dialing: Option<Dialing>,
    pub rotation: Option<Rotation>,
    pub standby_at: Option<Instant>,
    pub standby_failures: u32,
    pub retry_at: Option<Instant>,
    /// Why the next rotation at `retry_at` happens (a notice the new leg got mid-rotation).
    pub pending: Option<String>,
    pub rotate_failures: u32,
    pub hold_until: Option<Instant>,
    /// After a rotation the new leg may still be behind what the old one published: its frames
    /// go on through the arbiter until then (the overlap window).
    pub tail_until: Option<Instant>,
    pub gap: Option<GapOpen>,
    /// The last frame handed to the publish queue, and when it was received.
    pub last_published: Option<(Bytes, SystemTime)>,
    pub arbiter_bytes: usize,
    pub duplicates_reported: u64,
}

impl SocketTask {
    /// When a continuity clock is next due: the overlap bound, a standby dial, a retry, a lifetime.
    pub(super) fn continuity_at(&self) -> Option<Instant> {
        let c = &self.cont;
        let mut at = c.rotation.as_ref().and_then(|r| r.bound_at);
        if let (Some(tail), None) = (c.tail_until, &c.rotation) {
            at = Some(at.map_or(tail, |a| a.min(tail)));
        }
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        if c.dialing.is_none() {
            earliest(c.standby_at.filter(|_| c.spare.is_none()));
            earliest(c.retry_at);
            if let (Some(life), None, None) = (c.lifetime, &c.rotation, c.retry_at) {
                let hold = |t: Instant| c.hold_until.map_or(t, |h| h.max(t));
                earliest(Some(hold(self.leg.opened_at + life)));
                if let Some(spare) = &c.spare {
                    earliest(Some(hold(spare.state.opened_at + life)));
                }
            }
        }
        at
    }

    /// A continuity clock fired. `Some(End::Promote)`: the spare takes over now.
    pub(super) fn continuity_due(&mut self) -> Option<End> {
        let now = Instant::now();
        if self
            .cont
            .rotation
            .as_ref()
            .and_then(|r| r.bound_at)
            .is_some_and(|b| b <= now)
        {
            return Some(self.settle_rotation(false));
        }
        if self.cont.rotation.is_none() && self.cont.tail_until.is_some_and(|t| t <= now) {
            self.cont.tail_until = None;
            self.track(self.cont.legs_wanted > 1);
        }
        if self.cont.dialing.is_some() {
            return None;
        }
        if self.cont.standby_at.is_some_and(|t| t <= now) && self.cont.spare.is_none() {
            self.cont.standby_at = None;
            self.cont.dialing = Some(Dialing::start(Purpose::Standby, &self.spec, &self.options));
            return None;
        }
        if self.cont.retry_at.is_some_and(|t| t <= now) {
            self.cont.retry_at = None;
            let reason = self
                .cont
                .pending
                .take()
                .unwrap_or_else(|| "retrying the rotation".into());
            return self.begin_rotation(reason, None);
        }
        let life = self.cont.lifetime?;
        if self.cont.rotation.is_some()
            || self.cont.retry_at.is_some()
            || self.cont.hold_until.is_some_and(|h| h > now)
        {
            return None;
        }
        let why = format!("the leg reached max_lifetime_ms ({} ms)", life.as_millis());
        if self.leg.opened_at + life <= now {
            return self.begin_rotation(why, None);
        }
        if self
            .cont
            .spare
            .as_ref()
            .is_some_and(|s| s.state.opened_at + life <= now)
        {
            self.recycle_spare(&why);
        }
        None
    }

    /// Whether the two legs are in step: no new leg is still being watched for its overlap.
    fn in_step(&self) -> bool {
        self.cont.spare.is_some() && self.arbiter.overlap_proven() != Some(false)
    }

    /// Starts a rotation (a lifetime, a notice, an operator). With a standby leg in step, the
    /// primary is simply replaced by it (`Some(End::Promote)`) and redialed as the new standby.
    pub(super) fn begin_rotation(
        &mut self,
        reason: String,
        waiter: Option<oneshot::Sender<Result<Rotated, SendError>>>,
    ) -> Option<End> {
        if self.cont.rotation.is_some() {
            if let Some(waiter) = waiter {
                let _ = waiter.send(Err(SendError::Rotating));
            }
            return None;
        }
        if self.cont.legs_wanted > 1 {
            if !self.in_step() {
                // The standby is not (yet) there to take over: try again shortly.
                self.cont.hold_until = Some(Instant::now() + HOLD);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Err(SendError::RotateFailed(
                        "the standby leg is not in step yet".into(),
                    )));
                }
                return None;
            }
            self.emit(
                LifecycleKind::Rotating,
                &format!("{reason}; the standby leg takes over and a new standby is dialed"),
                0,
            );
            self.emit(
                LifecycleKind::Rotated,
                "overlap proven: the standby leg was in step",
                0,
            );
            if let Some(waiter) = waiter {
                let _ = waiter.send(Ok(Rotated {
                    overlap: true,
                    duplicates: 0,
                    took: Duration::ZERO,
                }));
            }
            return Some(End::Promote);
        }
        tracing::info!(connection = %self.id, url = %self.shown_url(), %reason, "rotating: opening a new leg make-before-break");
        self.emit(
            LifecycleKind::Rotating,
            &format!("{reason}; opening a new leg make-before-break"),
            0,
        );
        if !self.cont.tracking {
            self.cont.tracking = true;
            self.arbiter.leg_up(self.leg.slot);
        }
        if let Some(d) = self.cont.dialing.take() {
            d.handle.abort();
        }
        self.cont.dialing = Some(Dialing::start(Purpose::Rotation, &self.spec, &self.options));
        self.cont.rotation = Some(Rotation {
            reason,
            started: Instant::now(),
            bound_at: None,
            greeting: false,
            early_duplicates: 0,
            waiter,
        });
        None
    }

    /// A background dial finished.
    pub(super) async fn dialed(&mut self, purpose: Purpose, result: Result<Socket, String>) {
        let slot = self.free_slot();
        let opened = match result {
            Ok(socket) => self.open_leg(socket, slot).await,
            Err(e) => Err(e),
        };
        match (purpose, opened) {
            (Purpose::Rotation, Ok(mut spare)) => {
                self.arbiter.leg_up(slot);
                // A paced greeting (a 50-subscription replay at 5/s) takes its time before the
                // bound starts.
                let now = Instant::now();
                let queued = spare.state.outbox.len();
                let greeted_at = match spare.state.venue.as_deref_mut().and_then(Venue::pacer) {
                    Some(pacer) if queued > 0 => pacer.estimate(now, queued).max(now),
                    _ => now,
                };
                self.cont.spare = Some(spare);
                if let Some(r) = &mut self.cont.rotation {
                    r.bound_at = Some(greeted_at + OVERLAP_BOUND);
                    r.greeting = queued > 0;
                }
            }
            (Purpose::Rotation, Err(e)) => self.rotation_failed(e),
            (Purpose::Standby, Ok(spare)) => {
                self.arbiter.leg_up(slot);
                self.cont.spare = Some(spare);
                self.cont.standby_failures = 0;
                tracing::info!(connection = %self.id, "standby leg up: two legs arbitrated live");
            }
            (Purpose::Standby, Err(e)) => {
                self.cont.standby_failures = self.cont.standby_failures.saturating_add(1);
                let delay = self.options.backoff.nominal(self.cont.standby_failures);
                self.cont.standby_at = Some(Instant::now() + delay);
                tracing::warn!(connection = %self.id, error = %e, retry_ms = delay.as_millis() as u64, "the standby leg did not open; the connection runs on one leg until it does");
                self.degraded(&format!(
                    "the standby leg did not open ({e}); one leg serves; retrying in {} ms",
                    delay.as_millis()
                ));
            }
        }
    }

    fn rotation_failed(&mut self, error: String) {
        let Some(rotation) = self.cont.rotation.take() else {
            return;
        };
        // A notice the failed leg got is gone with it.
        self.cont.pending = None;
        self.arbiter.end_overlap();
        self.track(self.cont.legs_wanted > 1 || self.cont.tail_until.is_some());
        let reason = format!(
            "rotation ({}) failed: the new leg did not open ({error}); the old leg goes on serving",
            rotation.reason
        );
        match rotation.waiter {
            Some(waiter) => {
                let _ = waiter.send(Err(SendError::RotateFailed(error)));
                tracing::warn!(connection = %self.id, %reason, "rotation failed");
                self.emit(LifecycleKind::Degraded, &reason, 0);
            }
            None => {
                self.cont.rotate_failures = self.cont.rotate_failures.saturating_add(1);
                let delay = self.options.backoff.nominal(self.cont.rotate_failures);
                self.cont.retry_at = Some(Instant::now() + delay);
                let reason = format!("{reason}; retrying in {} ms", delay.as_millis());
                tracing::warn!(connection = %self.id, %reason, "rotation failed");
                self.emit(LifecycleKind::Degraded, &reason, 0);
            }
        }
    }

    /// After each event: a rotation whose legs were seen to overlap ends now; a standby that came
    /// back in step ends its watch.
    pub(super) fn rotation_settled(&mut self) -> Option<End> {
        if let Some(r) = &mut self.cont.rotation {
            if r.greeting {
                if self
                    .cont
                    .spare
                    .as_ref()
                    .is_some_and(|s| !s.state.outbox.is_empty())
                {
                    return None;
                }
                r.greeting = false;
                r.early_duplicates += self.arbiter.restart_overlap();
                return None;
            }
        }
        if self.arbiter.overlap_proven() != Some(true) {
            return None;
        }
        match &self.cont.rotation {
            Some(r) if r.bound_at.is_some() => Some(self.settle_rotation(true)),
            Some(_) => None,
            None => {
                self.release_held();
                let duplicates = self.arbiter.end_overlap();
                tracing::debug!(connection = %self.id, duplicates, "the legs are in step");
                None
            }
        }
    }

    /// Ends a rotation whose new leg is up: the spare takes over (`End::Promote`).
    pub(super) fn settle_rotation(&mut self, proven: bool) -> End {
        self.release_held();
        let Some(rotation) = self.cont.rotation.take() else {
            self.arbiter.end_overlap();
            return End::Promote;
        };
        let duplicates = self.arbiter.end_overlap() + rotation.early_duplicates;
        let took = rotation.started.elapsed();
        self.cont.rotate_failures = 0;
        if proven {
            self.emit(
                LifecycleKind::Rotated,
                &format!(
                    "overlap proven: {duplicates} duplicate frames suppressed; the old leg closed \
                     {} ms after the trigger",
                    took.as_millis()
                ),
                0,
            );
        } else {
            let why = format!(
                "no overlap between the legs was seen within {} s; the old leg closed anyway \
                 and frames may be missing",
                OVERLAP_BOUND.as_secs()
            );
            self.emit(LifecycleKind::Rotated, &why, 0);
            self.gap_happened(why);
        }
        if let Some(waiter) = rotation.waiter {
            let _ = waiter.send(Ok(Rotated {
                overlap: proven,
                duplicates,
                took,
            }));
        }
        End::Promote
    }

    /// The spare takes over as the primary; the old primary's socket is `old` (`None`: lost).
    pub(super) fn promote(&mut self, old: Option<Socket>) -> Option<Socket> {
        let spare = self.cont.spare.take()?;
        if let Some(old) = old {
            close_in_background(old, 1000, "rotated");
        }
        // A standby still held when the primary is gone: what it holds is all there is.
        self.release_held();
        self.arbiter.leg_down(self.leg.slot);
        self.leg = spare.state;
        // The arbiter still knows what the old leg published: the new one's frames go through it
        // until it is surely past that, so a leg that was behind publishes nothing twice.
        self.cont.tracking = true;
        self.cont.tail_until = Some(Instant::now() + crate::publish::arbiter::PRINT_WINDOW);
        self.cont.hold_until = None;
        if self.cont.pending.is_some() {
            self.cont.retry_at = Some(Instant::now());
        }
        if self.cont.legs_wanted > 1 {
            self.cont.standby_at = Some(Instant::now() + first_jitter());
        }
        self.set_status(Status::Connected);
        Some(spare.socket)
    }

    /// The primary was lost while a spare stands: the spare serves on. A rotation under way ends
    /// with what the arbiter saw.
    pub(super) fn primary_lost(&mut self, reason: &str) -> Option<Socket> {
        self.cont.spare.as_ref()?;
        if self.cont.rotation.is_some() {
            let proven = self.arbiter.overlap_proven() == Some(true);
            self.settle_rotation(proven);
        } else {
            self.leg_lost(reason);
        }
        self.promote(None)
    }

    /// The spare was lost: a rotation under way fails; a standby is redialed at once.
    pub(super) fn spare_lost(
        &mut self,
        spare: Spare,
        reason: String,
        violation: Option<(u16, &'static str)>,
    ) {
        match violation {
            Some((code, why)) => close_in_background(spare.socket, code, why),
            None => drop(spare.socket),
        }
        self.arbiter.leg_down(spare.state.slot);
        if self.cont.rotation.is_some() {
            self.rotation_failed(format!("it was lost: {reason}"));
            return;
        }
        self.leg_lost(&reason);
        self.cont.standby_at = Some(Instant::now() + first_jitter());
    }

    /// Says that one of two legs was lost and the other serves on.
    fn leg_lost(&self, reason: &str) {
        let why = format!(
            "one of two legs was lost ({reason}); the other goes on serving and it is redialed \
             at once"
        );
        tracing::warn!(connection = %self.id, %why, "leg lost");
        self.emit(LifecycleKind::Degraded, &why, 0);
    }

    /// Replaces the standby leg (its lifetime, a notice on it) once the primary is in step.
    pub(super) fn recycle_spare(&mut self, reason: &str) {
        if self.cont.rotation.is_some() && self.cont.legs_wanted == 1 {
            // The rotation's new leg got a notice too (a venue's maintenance reaches every
            // socket): it rotates again as soon as it has taken over.
            tracing::info!(connection = %self.id, reason, "the new leg got a notice during the rotation; it rotates again once it has taken over");
            self.cont.pending = Some(reason.to_owned());
            return;
        }
        if self.cont.rotation.is_some() || !self.in_step() {
            self.cont.hold_until = Some(Instant::now() + HOLD);
            return;
        }
        let Some(spare) = self.cont.spare.take() else {
            return;
        };
        tracing::info!(connection = %self.id, reason, "replacing the standby leg");
        close_in_background(spare.socket, 1000, "rotated");
        self.arbiter.leg_down(spare.state.slot);
        self.cont.standby_at = Some(Instant::now());
    }

    /// Everything in flight ends with the connection.
    pub(super) fn continuity_ended(&mut self) {
        if let Some(d) = self.cont.dialing.take() {
            d.handle.abort();
        }
        if let Some(spare) = self.cont.spare.take() {
            close_in_background(spare.socket, 1000, "closed on request");
        }
        if let Some(rotation) = self.cont.rotation.take() {
            if let Some(waiter) = rotation.waiter {
                let _ = waiter.send(Err(SendError::Closed));
            }
        }
        self.report_arbiter_memory(0);
    }

    /// The only leg was lost, with nothing standing: what follows is a gap, and a new epoch.
    pub(super) fn only_leg_lost(&mut self, reason: &str) {
        if let Some(d) = self.cont.dialing.take() {
            d.handle.abort();
        }
        self.cont.pending = None;
        if let Some(rotation) = self.cont.rotation.take() {
            if let Some(waiter) = rotation.waiter {
                let _ = waiter.send(Err(SendError::RotateFailed(format!(
                    "the old leg was lost before the new one opened ({reason})"
                ))));
            }
        }
        self.arbiter.leg_down(self.leg.slot);
        self.arbiter.end_overlap();
        self.cont.tail_until = None;
        self.track(self.cont.legs_wanted > 1);
        self.cont.standby_at = None;
        // The epoch moves on once the leg is back (`run`), as it always has.
        self.open_gap(format!("the only leg was lost ({reason})"));
    }

    /// A gap may have happened: the epoch moves on, and the gap is reported with the first frame
    /// after it.
    fn gap_happened(&mut self, why: String) {
        self.epoch += 1;
        self.open_gap(why);
    }

    /// The gap is reported with the first frame after it, from the last one before it.
    fn open_gap(&mut self, why: String) {
        self.cont.gap = Some(GapOpen {
            why,
            last: self.cont.last_published.clone(),
            waited: 0,
        });
    }

    /// Frames go through the arbiter (`on`) or pass unchanged; when they stop going through it,
    /// it forgets what it held, so a connection back on one leg holds nothing.
    fn track(&mut self, on: bool) {
        self.cont.tracking = on;
        if !on {
            self.arbiter.forget();
            self.report_arbiter_memory(0);
        }
    }

    /// The first frames after a gap: reports it once a frame says where the feed resumed.
    #[cold]
    pub(super) fn report_gap(&mut self, payload: &[u8], text: bool) {
        let Some(open) = self.cont.gap.as_mut() else {
            return;
        };
        let first = text.then(|| self.arbiter.id_of(payload)).flatten();
        let last = open
            .last
            .as_ref()
            .and_then(|(bytes, _)| self.arbiter.id_of(bytes));
        let detail = match (&last, &first) {
            (Some(last), Some(first)) if last.key == first.key => {
                let key = if first.key.is_empty() {
                    String::new()
                } else {
                    format!(" of {}", first.key)
                };
                if first.value > last.value.saturating_add(1) {
                    format!(
                        "last published value{key} {}, first after {}: {} values missing \
                         ({}..={})",
                        last.value,
                        first.value,
                        first.value - last.value - 1,
                        last.value + 1,
                        first.value - 1
                    )
                } else {
                    format!(
                        "last published value{key} {}, first after {}: none missing",
                        last.value, first.value
                    )
                }
            }
            (Some(_), _) if open.waited < GAP_PATIENCE => {
                open.waited += 1;
                return;
            }
            _ => {
                let now = SystemTime::now();
                match &open.last {
                    Some((_, at)) => format!(
                        "no frame was published for {} ms (from the last before the gap to the \
                         first after it)",
                        now.duration_since(*at).unwrap_or_default().as_millis()
                    ),
                    None => "nothing had been published before it".into(),
                }
            }
        };
        let reason = format!("continuity gap: {}; {detail}", open.why);
        self.cont.gap = None;
        self.ch
            .frames
            .stats()
            .continuity_gaps
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(connection = %self.id, %reason, "continuity gap");
        self.emit(LifecycleKind::Gap, &reason, 0);
    }

    /// Publishes what a joining leg held and the other leg did not deliver, in order, after what
    /// is pending (`serve` flushes it).
    fn release_held(&mut self) {
        for (payload, text) in self.arbiter.release(Instant::now()) {
            self.push_frame(payload, text);
        }
    }

    /// The arbiter's decision on one frame of the leg in `self.leg`.
    #[inline]
    pub(super) fn arbitrate(&mut self, payload: &Bytes, text: bool) -> bool {
        let verdict = self
            .arbiter
            .admit(self.leg.slot, payload, text, self.arb_now);
        verdict == Verdict::Publish
    }

    /// Keeps `/metrics`' `wsm_arbiter_bytes` and `wsm_frames_duplicate_total` up to date (once per
    /// burst).
    pub(super) fn report_arbiter_memory(&mut self, now: usize) {
        let duplicates = self.arbiter.duplicates;
        let new = duplicates.saturating_sub(self.cont.duplicates_reported);
        if new > 0 {
            self.cont.duplicates_reported = duplicates;
            self.ch
                .frames
                .stats()
                .duplicates
                .fetch_add(new, Ordering::Relaxed);
        }
        let was = std::mem::replace(&mut self.cont.arbiter_bytes, now);
        let gauge = &self.ch.frames.stats().arbiter_bytes;
        if now > was {
            gauge.fetch_add((now - was) as u64, Ordering::Relaxed);
        } else if was > now {
            gauge.fetch_sub((was - now) as u64, Ordering::Relaxed);
        }
    }
}
