//! Reconnect delays: the first attempt after a drop goes out at once (SPEC 8: most drops are a
//! blip, and every millisecond of waiting is lost feed), with at most [`FIRST_JITTER`]; from the
//! second on, `base × 2^(n-2)`, capped, plus jitter so that many connections dropped by one
//! upstream restart do not reconnect in lockstep.

use std::time::Duration;

use rand::Rng;

/// The most the first attempt after a drop waits: enough to spread a mass drop over a few
/// milliseconds, not enough to lose a meaningful stretch of feed.
pub const FIRST_JITTER: Duration = Duration::from_millis(50);

/// A random wait of at most [`FIRST_JITTER`]: the first redial of anything lost, a connection or
/// one of its legs.
pub(crate) fn first_jitter() -> Duration {
    FIRST_JITTER.mul_f64(rand::rng().random_range(0.0..=1.0))
}

/// The reconnect policy of a connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The first delay.
    pub base: Duration,
    /// No delay (before jitter) exceeds this.
    pub cap: Duration,
    /// Attempts per outage; 0 = retry forever.
    pub max_attempts: u32,
    /// Up to this fraction of the delay is added at random (0.0 – 1.0).
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_millis(1000),
            cap: Duration::from_secs(30),
            max_attempts: 5,
            jitter: 0.2,
        }
    }
}

impl BackoffPolicy {
    /// The delays of one outage, attempt 1, 2, … (ends after `max_attempts` unless 0).
    pub fn delays(self) -> Backoff {
        Backoff {
            policy: self,
            attempt: 0,
        }
    }

    /// `base × 2^(n-1)`, capped, without jitter: the wait before attempt `n + 1` of an outage.
    pub(crate) fn nominal(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

/// Iterator over `(attempt, delay)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Iterator for Backoff {
    type Item = (u32, Duration);

    fn next(&mut self) -> Option<(u32, Duration)> {
        if self.policy.max_attempts != 0 && self.attempt >= self.policy.max_attempts {
            return None;
        }
        self.attempt = self.attempt.saturating_add(1);
        let jitter = self.policy.jitter.clamp(0.0, 1.0);
        if self.attempt == 1 {
            let first = if jitter > 0.0 {
                first_jitter()
            } else {
                Duration::ZERO
            };
            return Some((1, first));
        }
        let nominal = self.policy.nominal(self.attempt - 1);
        let extra = if jitter > 0.0 {
            nominal.mul_f64(rand::rng().random_range(0.0..jitter))
        } else {
            Duration::ZERO
        };
        Some((self.attempt, nominal + extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stop_after_max_attempts() {
        let policy = BackoffPolicy {
            base: Duration::from_millis(1000),
            cap: Duration::from_secs(30),
            max_attempts: 7,
            jitter: 0.0,
        };
        let delays: Vec<u64> = policy.delays().map(|(_, d)| d.as_millis() as u64).collect();
        assert_eq!(delays, [0, 1000, 2000, 4000, 8000, 16000, 30000]);
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_zero_attempts_means_forever() {
        let policy = BackoffPolicy {
            max_attempts: 0,
            ..BackoffPolicy::default()
        };
        for (attempt, delay) in policy.delays().take(100) {
            if attempt == 1 {
                assert!(delay <= FIRST_JITTER, "the first attempt waits {delay:?}");
                continue;
            }
            let nominal = policy.nominal(attempt - 1);
            assert!(
                delay >= nominal && delay <= nominal.mul_f64(1.2),
                "{attempt}: {delay:?}"
            );
        }
        assert_eq!(policy.delays().take(1000).count(), 1000);
    }
}
