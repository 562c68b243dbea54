//! A connection's bounded lifetime: an optional `serverShutdown` notice
//! (`{"event":{"e":"serverShutdown","E":<ms>}}`, Binance's "Connection events") some time before
//! the end, then a close with the lifetime's code. The binance personality runs one as part of its
//! rules; a connection without that personality gets one from `?lifetime_ms` alone (the generic
//! lifetime, see `ConnectionParams::lifetime`).

use std::time::Duration;

use tokio::time::Instant;

use super::{Action, Lifetime, Rule, RuleClose};

/// The reason of the close at the end of a lifetime.
pub(crate) const LIFETIME_REASON: &str = "connection lifetime reached";

pub(crate) struct Clock {
    notice_at: Instant,
    end_at: Instant,
    close_code: u16,
    /// The notice went out, or none is due.
    noticed: bool,
    /// The rule the close is counted under.
    rule: Rule,
}

impl Clock {
    /// Starts at the handshake (`now`). Without `notify`, no notice comes, only the close.
    pub(crate) fn new(lifetime: Lifetime, notify: bool, rule: Rule, now: Instant) -> Self {
        Self {
            notice_at: now + lifetime.after.saturating_sub(lifetime.notice),
            end_at: now + lifetime.after,
            close_code: lifetime.close_code,
            noticed: !notify,
            rule,
        }
    }

    pub(crate) fn next_due(&self) -> Instant {
        if self.noticed {
            self.end_at
        } else {
            self.notice_at
        }
    }

    pub(crate) fn due(&mut self, now: Instant, clock_ms: u64) -> Option<Action> {
        if !self.noticed && now >= self.notice_at {
            self.noticed = true;
            return Some(Action::Notice(format!(
                "{{\"event\":{{\"e\":\"serverShutdown\",\"E\":{clock_ms}}}}}"
            )));
        }
        (self.noticed && now >= self.end_at).then(|| {
            Action::Close(RuleClose {
                rule: self.rule,
                code: self.close_code,
                reason: LIFETIME_REASON.to_owned(),
            })
        })
    }

    pub(crate) fn postpone(&mut self, by: Duration) {
        self.notice_at += by;
        self.end_at += by;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_notice_only_the_close_comes() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let lifetime = Lifetime {
            after: ms(500),
            notice: ms(100),
            close_code: 1000,
        };
        let mut clock = Clock::new(lifetime, false, Rule::PlainLifetime, t0);
        assert_eq!(clock.next_due(), t0 + ms(500));
        assert_eq!(clock.due(t0 + ms(450), 1), None);
        match clock.due(t0 + ms(500), 2) {
            Some(Action::Close(close)) => {
                assert_eq!((close.code, close.rule), (1000, Rule::PlainLifetime));
                assert_eq!(close.reason, LIFETIME_REASON);
            }
            other => panic!("expected a close, got {other:?}"),
        }
        clock.postpone(ms(100));
        assert_eq!(clock.next_due(), t0 + ms(600));
    }
}
