//! Frame pacing at a fixed rate: how many frames are due now, and when the next one is.
//! Works from the start time rather than per-frame timers, so the average rate is exact even
//! when the timer wakes late (the late frames go out together).

use std::time::Duration;

use tokio::time::Instant;

/// When the pacer is further behind than this (a stall, a slow client), it forgets the backlog
/// instead of bursting it out.
const MAX_BACKLOG: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Pacer {
    rate: f64,
    start: Instant,
    sent: u64,
}

impl Pacer {
    /// `rate` frames per second; must be positive.
    pub(crate) fn new(rate: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            start: now,
            sent: 0,
        }
    }

    /// When the next frame is due.
    pub(crate) fn next_at(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.sent as f64 / self.rate)
    }

    /// How many frames are due at `now` (the first one is due at the start).
    pub(crate) fn due(&mut self, now: Instant) -> u64 {
        if now.saturating_duration_since(self.next_at()) > MAX_BACKLOG {
            self.resume(now);
        }
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        // The tolerance keeps float rounding from leaving a frame undue at its exact due time.
        ((elapsed * self.rate + 1e-6) as u64 + 1).saturating_sub(self.sent)
    }

    pub(crate) fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// Continues from `now` as if no time had passed since the last frame (after a pause).
    pub(crate) fn resume(&mut self, now: Instant) {
        self.start = now
            .checked_sub(Duration::from_secs_f64(self.sent as f64 / self.rate))
            .unwrap_or(now);
        // Rounding must not make a frame due before `now`.
        if self.next_at() < now {
            self.start += now - self.next_at();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fall_due_at_the_rate() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(10, t0);
        assert_eq!(pacer.due(t0), 1);
        pacer.sent(1);
        assert_eq!(pacer.due(t0 + Duration::from_millis(50)), 0);
        assert_eq!(pacer.next_at(), t0 + Duration::from_millis(100));
        assert_eq!(pacer.due(t0 + Duration::from_millis(350)), 3);
    }

    #[test]
    fn a_long_pause_is_not_caught_up() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(100, t0);
        pacer.sent(1);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pacer.due(later), 1);
        pacer.sent(1);
        pacer.resume(later + Duration::from_secs(5));
        assert!(pacer.next_at() >= later + Duration::from_secs(5));
    }
}
