//! htx: every server message is gzip-compressed and sent as a binary WebSocket message; the
//! server pings with `{"ping":<ms>}` every few seconds and the client must answer
//! `{"pong":<same number>}` (as text, or gzip binary like the server's). After two pings in a
//! row without their pong the connection is closed.
//!
//! HTX (Huobi) API docs, market WebSocket: "all data is GZIP compressed", a heartbeat
//! `{"ping": 1492420473027}` every 5 s, answered `{"pong": 1492420473027}`; after 2 missed
//! pongs the server disconnects.
//!
//! A ping counts as unanswered when its pong has not come by the time the next ping is due. The
//! first ping goes out one interval after the handshake, so with no pongs the close comes three
//! intervals after it.

use std::io::{Read, Write};
use std::time::Duration;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{Action, Inbound, Rule, RuleClose};

/// Close code once two pings went unanswered.
const UNANSWERED_CODE: u16 = 4002;
/// Consecutive unanswered pings that end the connection.
const MAX_UNANSWERED: u32 = 2;
/// Most bytes a client's gzip message may inflate to before it is not taken for a pong: a pong
/// is tiny, and a bound keeps a gzip bomb from costing memory.
const MAX_INFLATED: u64 = 4096;

/// gzip-compresses one server message.
pub(crate) fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 32), Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}

/// Inflates a client's gzip message of at most [`MAX_INFLATED`] bytes; `None` when it is not
/// gzip, is broken, or inflates to more.
fn gunzip_small(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(data)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= MAX_INFLATED).then_some(out)
}

#[derive(Deserialize)]
struct Pong {
    pong: u64,
}

pub(crate) struct ServerPings {
    every: Duration,
    next_ping: Instant,
    /// The value of the last ping, while its pong has not come.
    outstanding: Option<u64>,
    /// Pings in a row that went unanswered.
    unanswered: u32,
    /// The last value sent: values only go up, even within one millisecond.
    last_value: u64,
}

impl ServerPings {
    pub(crate) fn new(every: Duration, now: Instant) -> Self {
        Self {
            every,
            next_ping: now + every,
            outstanding: None,
            unanswered: 0,
            last_value: 0,
        }
    }

    pub(crate) fn inbound(&mut self, message: &Message) -> Inbound {
        let pong = match message {
            Message::Text(text) => parse_pong(text.as_bytes()),
            Message::Binary(data) => gunzip_small(data).and_then(|text| parse_pong(&text)),
            _ => None,
        };
        let Some(value) = pong else {
            return Inbound::Pass;
        };
        if self.outstanding == Some(value) {
            self.outstanding = None;
            self.unanswered = 0;
        }
        Inbound::Pong
    }

    pub(crate) fn next_due(&self) -> Instant {
        self.next_ping
    }

    pub(crate) fn due(&mut self, now: Instant, clock_ms: u64) -> Option<Action> {
        if now < self.next_ping {
            return None;
        }
        if self.outstanding.take().is_some() {
            self.unanswered += 1;
        }
        if self.unanswered >= MAX_UNANSWERED {
            return Some(Action::Close(RuleClose {
                rule: Rule::PingsUnanswered,
                code: UNANSWERED_CODE,
                reason: format!("{MAX_UNANSWERED} pings unanswered"),
            }));
        }
        let value = clock_ms.max(self.last_value + 1);
        self.last_value = value;
        self.outstanding = Some(value);
        // Keep the cadence, but after a late wake-up do not send the missed pings in a burst.
        self.next_ping = (self.next_ping + self.every).max(now);
        Some(Action::Ping(format!("{{\"ping\":{value}}}")))
    }

    pub(crate) fn postpone(&mut self, by: Duration) {
        self.next_ping += by;
    }
}

fn parse_pong(text: &[u8]) -> Option<u64> {
    // serde would also read a struct from a JSON array; only objects are pongs.
    if text.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Pong>(text).ok().map(|p| p.pong)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping_value(action: Option<Action>) -> u64 {
        match action {
            Some(Action::Ping(text)) => {
                let v: serde_json::Value = serde_json::from_str(&text).expect("JSON ping");
                v["ping"].as_u64().expect("a number")
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }

    #[test]
    fn gzip_round_trips_and_big_or_broken_input_is_no_pong() {
        let packed = gzip(br#"{"pong":17}"#).expect("gzip");
        assert_eq!(&packed[..2], [0x1f, 0x8b], "gzip magic");
        assert_eq!(
            gunzip_small(&packed).as_deref(),
            Some(&br#"{"pong":17}"#[..])
        );
        assert_eq!(gunzip_small(b"{\"pong\":17}"), None);
        let bomb = gzip(&vec![b' '; 1 << 20]).expect("gzip");
        assert_eq!(gunzip_small(&bomb), None);
    }

    #[test]
    fn answered_pings_keep_the_connection_and_two_misses_close_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut rules = ServerPings::new(ms(200), t0);
        assert_eq!(rules.due(t0 + ms(199), 1000), None);
        let first = ping_value(rules.due(t0 + ms(200), 1000));
        assert_eq!(first, 1000);
        // A pong as text, then one as gzip binary; a wrong number does not count.
        let pong = |v: u64| format!("{{\"pong\":{v}}}");
        assert_eq!(rules.inbound(&Message::text(pong(first))), Inbound::Pong);
        let second = ping_value(rules.due(t0 + ms(400), 1000));
        assert_eq!(second, 1001, "values go up within one millisecond");
        let packed = gzip(pong(second).as_bytes()).expect("gzip");
        assert_eq!(rules.inbound(&Message::binary(packed)), Inbound::Pong);
        let third = ping_value(rules.due(t0 + ms(600), 5000));
        assert_eq!(
            rules.inbound(&Message::text(pong(third + 1))),
            Inbound::Pong
        );
        // Third unanswered (1), fourth unanswered (2): closed when the fifth is due.
        ping_value(rules.due(t0 + ms(800), 6000));
        match rules.due(t0 + ms(1000), 7000) {
            Some(Action::Close(close)) => {
                assert_eq!(
                    (close.code, close.reason.as_str()),
                    (4002, "2 pings unanswered")
                );
                assert_eq!(close.rule, Rule::PingsUnanswered);
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }

    #[test]
    fn one_miss_between_answers_is_forgiven_and_other_messages_pass() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut rules = ServerPings::new(ms(100), t0);
        let mut at = 100;
        for round in 0..6 {
            let value = ping_value(rules.due(t0 + ms(at), at));
            if round % 2 == 0 {
                rules.inbound(&Message::text(format!("{{\"pong\":{value}}}")));
            }
            at += 100;
        }
        for other in [
            Message::text(r#"{"sub":"market.btcusdt.depth.step0","id":"1"}"#),
            Message::text("[1]"),
            Message::binary(vec![1u8; 20]),
        ] {
            assert_eq!(rules.inbound(&other), Inbound::Pass);
        }
    }
}
