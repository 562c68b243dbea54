//! A frame's fields, listed once ([`frame_fields`]), and the template each wire format builds from
//! them: the CloudEvent JSON keeps the list's order and serde_json's escaping; daprd's envelope
//! adds the attributes daprd fills in, sorts the keys as Go does and escapes as Go does. Everything
//! that is the same for every frame of a connection is rendered into the template once; a frame
//! only fills the holes (its epoch, seq, time and payload).

use std::fmt::Write as _;

use super::{json_str, push_base64, push_u64, Clock};
use crate::gojson::write::write_go_str;
use crate::publish::frame::{Frame, FrameSource, FRAME_EVENT_TYPE};

/// A field's value: the same for every frame of the connection, or one of the frame's own.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    /// `<connection>:<epoch>:<seq>`: unique per source, and the same when a batch is retried.
    Id(&'a str),
    Epoch,
    Seq,
    /// The receive time, RFC 3339 with microseconds.
    Time,
    /// The payload as a JSON string (text frames).
    Text,
    /// The payload as a base64 string (binary frames).
    Base64,
}

/// Every field of a published frame, in the CloudEvent's order. Text frames carry the frame text as
/// a JSON string in `data` (`datacontenttype` `application/json`, as a Dapr `PublishEvent<string>`
/// does); binary frames carry `data_base64`. The extensions say where the frame came from
/// (`websocketId`, `websocketUrl`), when (`timestamp`), what it was (`contentType`), and where it
/// sits in the connection's stream (`seq`, `epoch`).
pub(crate) fn frame_fields(from: &FrameSource, text: bool) -> [(&'static str, Value<'_>); 13] {
    let (content_type, data_content_type, data) = if text {
        ("text/plain", "application/json", ("data", Value::Text))
    } else {
        (
            "application/octet-stream",
            "application/octet-stream",
            ("data_base64", Value::Base64),
        )
    };
    [
        ("specversion", Value::Str("1.0")),
        ("id", Value::Id(&from.connection_id)),
        ("source", Value::Str(&from.source)),
        ("type", Value::Str(FRAME_EVENT_TYPE)),
        ("websocketId", Value::Str(&from.connection_id)),
        ("websocketUrl", Value::Str(&from.url)),
        ("time", Value::Time),
        ("timestamp", Value::Time),
        ("seq", Value::Seq),
        ("epoch", Value::Epoch),
        ("contentType", Value::Str(content_type)),
        ("datacontenttype", Value::Str(data_content_type)),
        data,
    ]
}

/// How strings are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escape {
    /// serde_json: `"`, `\` and control characters.
    Json,
    /// Go's `encoding/json`, as daprd writes: also `<`, `>`, `&`, U+2028 and U+2029.
    Go,
}

impl Escape {
    fn str(self, s: &str, out: &mut Vec<u8>) {
        match self {
            Escape::Json => json_str(out, s),
            Escape::Go => write_go_str(s.as_bytes(), out),
        }
    }
}

/// What a frame fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    Epoch,
    Seq,
    Time,
    Text,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Bytes(Vec<u8>),
    Hole(Hole),
}

/// One wire format of one connection's frames, for text and for binary frames.
#[derive(Debug)]
pub(crate) struct Template {
    text: Vec<Part>,
    binary: Vec<Part>,
    /// The constant bytes of a frame, for reserving room once per frame.
    fixed: usize,
    escape: Escape,
    clock: Clock,
}

impl Template {
    /// A template over `fields(text)` for each kind of frame, escaped with `escape`.
    pub(crate) fn new<'a, I>(escape: Escape, fields: impl Fn(bool) -> I) -> Self
    where
        I: IntoIterator<Item = (&'a str, Value<'a>)>,
    {
        let text = parts(escape, fields(true));
        let fixed = text
            .iter()
            .map(|part| match part {
                Part::Bytes(bytes) => bytes.len(),
                Part::Hole(_) => 0,
            })
            .sum();
        Template {
            text,
            binary: parts(escape, fields(false)),
            fixed,
            escape,
            clock: Clock::default(),
        }
    }

    /// Appends `frame` written in this format to `out`.
    pub(crate) fn write(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let time = self.clock.format(frame.received_at);
        // Numbers and the time take under 100 bytes; an escaped or base64 payload at most twice
        // its length (a few control characters aside).
        out.reserve(self.fixed + 100 + frame.payload.len() * 2);
        let text = frame.text();
        let parts = if text.is_some() {
            &self.text
        } else {
            &self.binary
        };
        for part in parts {
            match part {
                Part::Bytes(bytes) => out.extend_from_slice(bytes),
                Part::Hole(Hole::Epoch) => push_u64(out, frame.epoch),
                Part::Hole(Hole::Seq) => push_u64(out, frame.seq),
                Part::Hole(Hole::Time) => out.extend_from_slice(&time),
                Part::Hole(Hole::Text) => self.escape.str(text.unwrap_or_default(), out),
                Part::Hole(Hole::Base64) => push_base64(out, &frame.payload),
            }
        }
    }
}

/// The object `{"key":value,...}` as constant bytes and holes.
fn parts<'a>(escape: Escape, fields: impl IntoIterator<Item = (&'a str, Value<'a>)>) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut bytes = vec![b'{'];
    let mut hole = |bytes: &mut Vec<u8>, hole: Hole| {
        parts.push(Part::Bytes(std::mem::take(bytes)));
        parts.push(Part::Hole(hole));
    };
    for (n, (key, value)) in fields.into_iter().enumerate() {
        if n > 0 {
            bytes.push(b',');
        }
        escape.str(key, &mut bytes);
        bytes.push(b':');
        match value {
            Value::Str(s) => escape.str(s, &mut bytes),
            Value::Id(connection) => {
                let mut prefix = String::new();
                let _ = write!(prefix, "{connection}:");
                escape.str(&prefix, &mut bytes);
                bytes.pop(); // reopen the string: epoch and seq follow
                hole(&mut bytes, Hole::Epoch);
                bytes.push(b':');
                hole(&mut bytes, Hole::Seq);
                bytes.push(b'"');
            }
            Value::Epoch => hole(&mut bytes, Hole::Epoch),
            Value::Seq => hole(&mut bytes, Hole::Seq),
            Value::Time => {
                bytes.push(b'"');
                hole(&mut bytes, Hole::Time);
                bytes.push(b'"');
            }
            Value::Text => hole(&mut bytes, Hole::Text),
            Value::Base64 => {
                bytes.push(b'"');
                hole(&mut bytes, Hole::Base64);
                bytes.push(b'"');
            }
        }
    }
    bytes.push(b'}');
    parts.push(Part::Bytes(bytes));
    parts.retain(|part| part != &Part::Bytes(Vec::new()));
    parts
}
