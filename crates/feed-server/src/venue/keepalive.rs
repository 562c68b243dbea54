//! okx and bybit: the client keeps the connection alive with a text ping of the venue's own
//! shape, and the venue drops a connection that stays quiet past the deadline. The deadline runs
//! from the handshake and again from each ping; any other message does not count.
//!
//! OKX v5 ("WebSocket Overview"): send the string `ping`, get `pong`; without one for 30 s the
//! connection is closed. Bybit v5 ("connect"): send `{"op":"ping"}` every 20 s, get
//! `{"op":"pong","success":true,"ret_msg":"pong",...}` with the `req_id` echoed.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{Action, Inbound, Rule, RuleClose};

/// Close code for a missed keepalive (OKX just drops; a close frame makes the test's diagnosis
/// easier).
const NO_PING_CODE: u16 = 4004;

/// Which keepalive the client must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    /// The text `ping`, exactly.
    Okx,
    /// A JSON object whose `op` is `"ping"`.
    Bybit,
}

pub(crate) struct ClientPings {
    style: Style,
    deadline: Duration,
    /// The connection is closed at this instant unless a ping comes first.
    due: Instant,
}

#[derive(Deserialize)]
struct Op<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    req_id: Option<&'a RawValue>,
}

impl ClientPings {
    pub(crate) fn new(style: Style, deadline: Duration, now: Instant) -> Self {
        Self {
            style,
            deadline,
            due: now + deadline,
        }
    }

    pub(crate) fn inbound(&mut self, message: &Message, now: Instant) -> Inbound {
        let Message::Text(text) = message else {
            return Inbound::Pass;
        };
        let reply = match self.style {
            Style::Okx => (text.as_str() == "ping").then(|| "pong".to_owned()),
            Style::Bybit => bybit_pong(text.as_str()),
        };
        match reply {
            Some(reply) => {
                self.due = now + self.deadline;
                Inbound::Ping { reply }
            }
            None => Inbound::Pass,
        }
    }

    pub(crate) fn next_due(&self) -> Instant {
        self.due
    }

    pub(crate) fn due(&mut self, now: Instant) -> Option<Action> {
        (now >= self.due).then(|| {
            Action::Close(RuleClose {
                rule: Rule::NoPing,
                code: NO_PING_CODE,
                reason: format!("no ping within {} ms", self.deadline.as_millis()),
            })
        })
    }

    pub(crate) fn postpone(&mut self, by: Duration) {
        self.due += by;
    }
}

/// The answer to a Bybit ping, or `None` when `text` is not one.
fn bybit_pong(text: &str) -> Option<String> {
    // serde would also read a struct from a JSON array; only objects are pings.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let op: Op = serde_json::from_str(text).ok()?;
    if op.op != "ping" {
        return None;
    }
    const PONG: &str = r#"{"op":"pong","success":true,"ret_msg":"pong""#;
    Some(match op.req_id {
        Some(id) => format!("{PONG},\"req_id\":{}}}", id.get()),
        None => format!("{PONG}}}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close_reason(action: Option<Action>) -> Option<(u16, String)> {
        match action {
            Some(Action::Close(close)) => {
                assert_eq!(close.rule, Rule::NoPing);
                Some((close.code, close.reason))
            }
            other => {
                assert!(other.is_none(), "unexpected {other:?}");
                None
            }
        }
    }

    #[test]
    fn okx_pings_move_the_deadline_and_other_text_does_not() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut rules = ClientPings::new(Style::Okx, ms(300), t0);
        assert_eq!(rules.next_due(), t0 + ms(300));
        assert_eq!(
            rules.inbound(&Message::text("ping"), t0 + ms(200)),
            Inbound::Ping {
                reply: "pong".to_owned()
            }
        );
        assert_eq!(rules.next_due(), t0 + ms(500));
        for other in [
            Message::text("PING"),
            Message::text(" ping"),
            Message::text(r#"{"op":"ping"}"#),
            Message::binary(b"ping".to_vec()),
            Message::Ping(Default::default()),
        ] {
            assert_eq!(rules.inbound(&other, t0 + ms(400)), Inbound::Pass);
        }
        assert_eq!(close_reason(rules.due(t0 + ms(499))), None);
        assert_eq!(
            close_reason(rules.due(t0 + ms(500))),
            Some((4004, "no ping within 300 ms".to_owned()))
        );
    }

    #[test]
    fn bybit_pings_are_json_ops_answered_with_their_req_id() {
        let t0 = Instant::now();
        let mut rules = ClientPings::new(Style::Bybit, Duration::from_secs(20), t0);
        let answer =
            |rules: &mut ClientPings, text: &str| match rules.inbound(&Message::text(text), t0) {
                Inbound::Ping { reply } => Some(reply),
                _ => None,
            };
        assert_eq!(
            answer(&mut rules, r#"{"op":"ping"}"#).as_deref(),
            Some(r#"{"op":"pong","success":true,"ret_msg":"pong"}"#)
        );
        assert_eq!(
            answer(&mut rules, r#"{ "req_id": "100001", "op": "ping" }"#).as_deref(),
            Some(r#"{"op":"pong","success":true,"ret_msg":"pong","req_id":"100001"}"#)
        );
        for other in [
            "ping",
            r#"{"op":"subscribe","args":["orderbook.1.BTCUSDT"]}"#,
            r#"["op","ping"]"#,
            r#"{"op":1}"#,
        ] {
            assert_eq!(answer(&mut rules, other), None, "{other}");
        }
    }
}
