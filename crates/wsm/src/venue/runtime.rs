//! The per-leg state of the venue options, consulted by the socket task for every inbound frame
//! and on its keepalive clock. Frames are parsed as JSON only when a rule's byte pre-check says it
//! may match, and at most once whatever the number of rules.

use bytes::Bytes;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::decompress::{Inflater, Refused};
use super::options::{Decompress, Keepalive, Matcher, VenueOptions};
use super::pacing::Pacer;
use super::pointer::Pointer;
use super::sequence::{Gap, Gaps};

/// What became of one inbound frame.
pub(crate) enum Inbound {
    /// Publish it (decompressed where configured). `notice`: it announced a planned disconnect;
    /// `gap`: the venue's own sequence skipped before it.
    Publish {
        payload: Bytes,
        text: bool,
        notice: Option<String>,
        gap: Option<Gap>,
    },
    /// The venue's answer to a keepalive: not published.
    Pong,
    /// A venue ping: answer it with this text; not published.
    Reply(String),
    /// A binary frame that could not be decompressed: dropped, the connection stays up.
    Refused(String),
}

enum Rule {
    Text(Bytes),
    /// Boxed: a memmem finder is large, and rules are few.
    Pointer(Box<Pointer>, Option<Value>),
}

impl Rule {
    fn new(m: &Matcher, field: &str) -> Option<Rule> {
        match (&m.text, &m.pointer) {
            (Some(text), _) => Some(Rule::Text(Bytes::from(text.clone()))),
            (None, Some(p)) => Some(Rule::Pointer(
                Box::new(Pointer::parse(field, p).ok()?),
                m.value.clone(),
            )),
            (None, None) => None,
        }
    }

    /// The matched value (`Null` for a text match), parsing `frame` into `parsed` at most once.
    fn matches(&self, bytes: &[u8], parsed: &mut Parsed) -> Option<Value> {
        match self {
            Rule::Text(text) => (bytes == text.as_ref()).then_some(Value::Null),
            Rule::Pointer(pointer, want) => {
                if !pointer.may_match(bytes) {
                    return None;
                }
                let found = pointer.get(parsed.get(bytes)?)?;
                match want {
                    Some(want) if found != want => None,
                    _ => Some(found.clone()),
                }
            }
        }
    }
}

/// A frame parsed lazily: not at all when no pre-check passes.
enum Parsed {
    Unparsed,
    Json(Value),
    NotJson,
}

impl Parsed {
    fn get(&mut self, bytes: &[u8]) -> Option<&Value> {
        if let Parsed::Unparsed = self {
            *self = match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => Parsed::Json(v),
                Err(_) => Parsed::NotJson,
            };
        }
        match self {
            Parsed::Json(v) => Some(v),
            _ => None,
        }
    }
}

pub(crate) struct Venue {
    keepalive: Option<Keepalive>,
    /// The keepalive message as the frame it is sent as, built once.
    keepalive_frame: Option<Message>,
    pong: Option<Rule>,
    reply: Option<(Rule, String)>,
    notice: Option<(Rule, String)>,
    decompress: Option<(Decompress, Inflater)>,
    gaps: Option<Gaps>,
    pacer: Option<Pacer>,
    max_message_size: usize,
}

impl Venue {
    /// `None` when no option is set: the socket task then skips every venue step.
    pub(crate) fn new(options: &VenueOptions, max_message_size: usize) -> Option<Box<Venue>> {
        if !options.has_rules() {
            return None;
        }
        let keepalive = options.keepalive.clone();
        let keepalive_frame = keepalive.as_ref().and_then(|k| match k.payload() {
            (payload, true) => Utf8Bytes::try_from(payload).ok().map(Message::Text),
            (payload, false) => Some(Message::Binary(payload)),
        });
        let pong = keepalive
            .as_ref()
            .and_then(|k| k.pong.as_ref())
            .and_then(|m| Rule::new(m, "keepalive.pong"));
        let reply = options
            .reply
            .as_ref()
            .and_then(|r| Some((Rule::new(&r.matches, "reply.match")?, r.with.clone())));
        let notice = options.notice.as_ref().and_then(|m| {
            let shown = match (&m.text, &m.pointer, &m.value) {
                (Some(t), _, _) => format!("text {t:?}"),
                (None, Some(p), Some(v)) => format!("{p} = {v}"),
                (None, Some(p), None) => format!("{p} present"),
                _ => String::new(),
            };
            Some((Rule::new(m, "notice")?, shown))
        });
        Some(Box::new(Venue {
            keepalive,
            keepalive_frame,
            pong,
            reply,
            notice,
            decompress: options.decompress.map(|kind| (kind, Inflater::new(kind))),
            gaps: options.sequence.as_ref().and_then(Gaps::new),
            pacer: options.outbound_rate.as_ref().map(Pacer::new),
            max_message_size,
        }))
    }

    pub(crate) fn keepalive(&self) -> Option<&Keepalive> {
        self.keepalive.as_ref()
    }

    /// The keepalive message, ready to send (a cheap clone: the payload is shared).
    pub(crate) fn keepalive_frame(&self) -> Option<Message> {
        self.keepalive_frame.clone()
    }

    pub(crate) fn expects_pong(&self) -> bool {
        self.pong.is_some()
    }

    pub(crate) fn pacer(&mut self) -> Option<&mut Pacer> {
        self.pacer.as_mut()
    }

    /// Whether the venue counts WebSocket Pings and Pongs against the pacing.
    pub(crate) fn counts_control(&self) -> bool {
        self.pacer.as_ref().is_some_and(|p| p.counts_control())
    }

    /// tungstenite answered a venue Ping with a Pong (on its next read or write): where the venue
    /// counts it, it took a turn.
    pub(crate) fn pong_sent(&mut self) {
        if let Some(p) = self.pacer.as_mut().filter(|p| p.counts_control()) {
            p.record(tokio::time::Instant::now());
        }
    }

    pub(crate) fn is_paced(&self) -> bool {
        self.pacer.is_some()
    }

    /// A fresh pacing window, for a new socket.
    pub(crate) fn reset(&mut self) {
        if let Some(p) = &mut self.pacer {
            p.clear();
        }
    }

    /// Runs the rules on one inbound data frame.
    pub(crate) fn inbound(&mut self, payload: Bytes, text: bool, connection: &str) -> Inbound {
        let (payload, text) = match (&mut self.decompress, text) {
            (Some((kind, inflater)), false) => {
                let size = payload.len();
                match inflater.inflate(payload, self.max_message_size) {
                    Ok(inflated) => {
                        let is_text = std::str::from_utf8(&inflated).is_ok();
                        (Bytes::from(inflated), is_text)
                    }
                    Err(refused) => return Inbound::Refused(refused_reason(*kind, size, refused)),
                }
            }
            (_, text) => (payload, text),
        };
        let mut parsed = Parsed::Unparsed;
        if let Some(pong) = &self.pong {
            if pong.matches(&payload, &mut parsed).is_some() {
                return Inbound::Pong;
            }
        }
        if let Some((rule, with)) = &self.reply {
            if let Some(value) = rule.matches(&payload, &mut parsed) {
                return Inbound::Reply(with.replace("{{value}}", &value.to_string()));
            }
        }
        let notice = self
            .notice
            .as_ref()
            .and_then(|(rule, shown)| rule.matches(&payload, &mut parsed).map(|_| shown.clone()));
        let gap = match &mut self.gaps {
            Some(gaps) if gaps.may_match(&payload) => match parsed.get(&payload) {
                Some(frame) => gaps.observe(frame, connection),
                None => None,
            },
            _ => None,
        };
        Inbound::Publish {
            payload,
            text,
            notice,
            gap,
        }
    }
}

fn refused_reason(kind: Decompress, size: usize, refused: Refused) -> String {
    format!(
        "a binary frame of {size} bytes was dropped: its {} data {refused}; the connection stays up",
        kind.as_str()
    )
}
