//! Pacing of client messages on one leg: a sliding window (at most `messages` per `per_ms`, as
//! venues count) plus a minimum spacing. A token bucket alone lets a burst through, and a burst is
//! exactly what trips Binance's 5-per-second limit (NautilusTrader spaces Binance messages 300 ms
//! apart for that reason).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::options::OutboundRate;

#[derive(Debug)]
pub(crate) struct Pacer {
    messages: usize,
    per: Duration,
    spacing: Duration,
    count_control: bool,
    max_wait: Duration,
    described: String,
    /// When the last `messages` sends went out, oldest first.
    sent: VecDeque<Instant>,
}

impl Pacer {
    pub(crate) fn new(rate: &OutboundRate) -> Pacer {
        let messages = usize::try_from(rate.messages).unwrap_or(1).max(1);
        Pacer {
            messages,
            per: Duration::from_millis(rate.per_ms),
            spacing: Duration::from_millis(rate.spacing_ms),
            count_control: rate.count_control,
            max_wait: rate.max_wait(),
            described: rate.describe(),
            sent: VecDeque::with_capacity(messages),
        }
    }

    /// The earliest moment the next message may go out.
    pub(crate) fn next_at(&self, now: Instant) -> Instant {
        next_in(&self.sent, self.messages, self.per, self.spacing, now)
    }

    /// When the message behind `queued` others would go out: a deadline check at enqueue, so a
    /// hopeless message fails at once instead of after its whole wait. Simulated on a copy of the
    /// window (the queue is bounded, so this is a few hundred steps at most).
    pub(crate) fn estimate(&self, now: Instant, queued: usize) -> Instant {
        let mut window = self.sent.clone();
        let mut at = now;
        for _ in 0..=queued {
            at = next_in(&window, self.messages, self.per, self.spacing, at);
            if window.len() >= self.messages {
                window.pop_front();
            }
            window.push_back(at);
        }
        at
    }

    /// A message went out at `at`.
    pub(crate) fn record(&mut self, at: Instant) {
        if self.sent.len() >= self.messages {
            self.sent.pop_front();
        }
        self.sent.push_back(at);
    }

    /// Forgets past sends: a new socket is a new window at the venue.
    pub(crate) fn clear(&mut self) {
        self.sent.clear();
    }

    pub(crate) fn counts_control(&self) -> bool {
        self.count_control
    }

    pub(crate) fn max_wait(&self) -> Duration {
        self.max_wait
    }

    pub(crate) fn describe(&self) -> &str {
        &self.described
    }
}

/// The earliest send after `now` that keeps both the spacing and the window of `sent`.
fn next_in(
    sent: &VecDeque<Instant>,
    messages: usize,
    per: Duration,
    spacing: Duration,
    now: Instant,
) -> Instant {
    let mut at = now;
    if let Some(last) = sent.back() {
        at = at.max(*last + spacing);
    }
    if sent.len() >= messages {
        if let Some(oldest) = sent.front() {
            at = at.max(*oldest + per);
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(messages: u32, per_ms: u64, spacing_ms: u64) -> OutboundRate {
        OutboundRate {
            messages,
            per_ms,
            spacing_ms,
            count_control: false,
            max_wait_ms: None,
        }
    }

    #[test]
    fn spacing_and_window_both_hold() {
        let t0 = Instant::now();
        let mut p = Pacer::new(&rate(5, 1000, 100));
        let mut at = t0;
        let mut sends = Vec::new();
        for _ in 0..12 {
            at = p.next_at(at);
            p.record(at);
            sends.push(at - t0);
        }
        for pair in sends.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{sends:?}");
        }
        for window in sends.windows(6) {
            assert!(
                window[5] - window[0] >= Duration::from_millis(1000),
                "{sends:?}"
            );
        }
        // Five go out 100 ms apart, the sixth waits for the window.
        assert_eq!(sends[4], Duration::from_millis(400));
        assert_eq!(sends[5], Duration::from_millis(1000));
    }

    #[test]
    fn the_estimate_grows_with_the_queue() {
        let now = Instant::now();
        let p = Pacer::new(&rate(5, 1000, 300));
        assert_eq!(p.estimate(now, 0), now);
        // 300 ms apart; the sixth waits for the window (1000 ms after the first), and so on.
        assert_eq!(p.estimate(now, 4), now + Duration::from_millis(1200));
        assert_eq!(p.estimate(now, 5), now + Duration::from_millis(1500));
        assert_eq!(p.estimate(now, 10), now + Duration::from_millis(3000));
    }
}
