//! binance: a limit on incoming messages and a bounded connection lifetime.
//!
//! Binance spot API docs, "WebSocket Streams": a connection may receive at most 5 messages per
//! second from its client, where PING frames, PONG frames and JSON control messages (subscribe,
//! unsubscribe) all count, and one over the limit is disconnected; a connection lives at most
//! 24 hours, and a `serverShutdown` event (`{"event":{"e":"serverShutdown","E":<ms>}}`, "Connection
//! events") comes before a planned disconnect.
//!
//! Every client message counts, of every kind (text, binary, WebSocket Ping and Pong); the
//! window slides: more than `limit` messages within any 1 s ends the connection with 1008. The
//! window holds at most `limit + 1` arrival times, since the next one after that closes.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::lifetime::Clock;
use super::{Action, Inbound, Lifetime, Rule, RuleClose};

const WINDOW: Duration = Duration::from_secs(1);
/// Policy violation: Binance's answer to a client over the message limit.
const RATE_LIMIT_CODE: u16 = 1008;

pub(crate) struct Limits {
    limit: u32,
    /// Arrival times of the client's messages within the last [`WINDOW`], oldest first.
    window: VecDeque<Instant>,
    lifetime: Option<Clock>,
}

impl Limits {
    pub(crate) fn new(limit: u32, lifetime: Option<Lifetime>, now: Instant) -> Self {
        Self {
            limit,
            window: VecDeque::with_capacity(limit.saturating_add(1).min(64) as usize),
            lifetime: lifetime.map(|l| Clock::new(l, true, Rule::Lifetime, now)),
        }
    }

    pub(crate) fn inbound(&mut self, message: &Message, now: Instant) -> Inbound {
        if matches!(message, Message::Close(_) | Message::Frame(_)) {
            return Inbound::Pass;
        }
        while self
            .window
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= WINDOW)
        {
            self.window.pop_front();
        }
        self.window.push_back(now);
        if self.in_last_second() > self.limit {
            return Inbound::Close(RuleClose {
                rule: Rule::RateLimit,
                code: RATE_LIMIT_CODE,
                reason: "too many requests".to_owned(),
            });
        }
        Inbound::Pass
    }

    /// The messages counted within the last second (as of the latest one).
    pub(crate) fn in_last_second(&self) -> u32 {
        u32::try_from(self.window.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.lifetime.as_ref().map(Clock::next_due)
    }

    pub(crate) fn due(&mut self, now: Instant, clock_ms: u64) -> Option<Action> {
        self.lifetime.as_mut()?.due(now, clock_ms)
    }

    pub(crate) fn postpone(&mut self, by: Duration) {
        if let Some(lifetime) = self.lifetime.as_mut() {
            lifetime.postpone(by);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_message_counts_and_one_over_the_limit_closes() {
        let t0 = Instant::now();
        let mut limits = Limits::new(5, None, t0);
        let messages = [
            Message::text("{}"),
            Message::binary(vec![1u8]),
            Message::Ping(Default::default()),
            Message::Pong(Default::default()),
            Message::text("x"),
        ];
        for (n, message) in messages.iter().enumerate() {
            assert_eq!(
                limits.inbound(message, t0 + Duration::from_millis(n as u64)),
                Inbound::Pass
            );
            assert_eq!(limits.in_last_second(), n as u32 + 1);
        }
        assert_eq!(limits.inbound(&Message::Close(None), t0), Inbound::Pass);
        assert_eq!(limits.in_last_second(), 5, "a close frame does not count");
        match limits.inbound(
            &Message::Ping(Default::default()),
            t0 + Duration::from_millis(999),
        ) {
            Inbound::Close(close) => {
                assert_eq!((close.code, close.rule), (1008, Rule::RateLimit));
                assert_eq!(close.reason, "too many requests");
            }
            other => panic!("expected a close, got {other:?}"),
        }
        assert_eq!(limits.next_due(), None);
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let mut limits = Limits::new(5, None, t0);
        // 4 a second for 5 seconds: never more than 5 within one second.
        for i in 0..20u64 {
            let at = t0 + Duration::from_millis(i * 250);
            assert_eq!(
                limits.inbound(&Message::text("m"), at),
                Inbound::Pass,
                "message {i}"
            );
            assert!(limits.in_last_second() <= 5);
        }
        assert!(limits.window.len() <= 5);
    }

    #[test]
    fn the_lifetime_sends_its_notice_then_closes_with_its_code() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let lifetime = Lifetime {
            after: ms(1000),
            notice: ms(300),
            close_code: 1012,
        };
        let mut limits = Limits::new(5, Some(lifetime), t0);
        assert_eq!(limits.next_due(), Some(t0 + ms(700)));
        assert_eq!(limits.due(t0 + ms(699), 1), None);
        assert_eq!(
            limits.due(t0 + ms(700), 1_700_000_000_000),
            Some(Action::Notice(
                r#"{"event":{"e":"serverShutdown","E":1700000000000}}"#.to_owned()
            ))
        );
        assert_eq!(limits.next_due(), Some(t0 + ms(1000)));
        assert_eq!(limits.due(t0 + ms(999), 2), None);
        match limits.due(t0 + ms(1000), 3) {
            Some(Action::Close(close)) => {
                assert_eq!((close.code, close.rule), (1012, Rule::Lifetime))
            }
            other => panic!("expected a close, got {other:?}"),
        }
        // A notice as long as the lifetime comes at the handshake.
        let whole = Lifetime {
            notice: ms(1000),
            ..lifetime
        };
        let mut limits = Limits::new(5, Some(whole), t0);
        assert!(matches!(limits.due(t0, 1), Some(Action::Notice(_))));
    }
}
