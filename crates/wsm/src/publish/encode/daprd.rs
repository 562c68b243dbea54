//! The envelope daprd writes to Redis Streams for any CloudEvent published through it (see
//! `gojson`): parsed and re-encoded the way Go does, with Dapr's attributes filled in.

use crate::gojson::parse::{Node, Tree};
use crate::gojson::write::{prefix, write_str, Encoder, Style};
use crate::gojson::JsonError;

/// Dapr's defaults for attributes an event lacks (components-contrib `pubsub/envelope.go`).
const DEFAULT_SOURCE: &str = "Dapr";
const DEFAULT_TYPE: &str = "com.dapr.event.sent";
const DEFAULT_SPECVERSION: &str = "1.0";

/// When daprd fills an attribute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// If the event lacks it.
    Absent,
    /// If the event lacks it or has `null`.
    Nil,
    /// Always, replacing the event's.
    Always,
}

/// What daprd fills in, sorted by name (the order they merge into the sorted attributes).
const FILLED: [(&str, When); 9] = [
    ("pubsubname", When::Always),
    ("source", When::Nil),
    ("specversion", When::Nil),
    ("time", When::Absent),
    ("topic", When::Always),
    ("traceid", When::Nil),
    ("traceparent", When::Nil),
    ("tracestate", When::Nil),
    ("type", When::Nil),
];

/// The value daprd fills `name` (one of [`FILLED`]) in with. WSM has no trace span of its own, so
/// the trace attributes are empty strings, as daprd writes for a request without span context.
fn fill_value<'a>(name: &str, pubsub_name: &'a str, topic: &'a str, now: &'a str) -> &'a str {
    match name {
        "pubsubname" => pubsub_name,
        "topic" => topic,
        "source" => DEFAULT_SOURCE,
        "specversion" => DEFAULT_SPECVERSION,
        "time" => now,
        "type" => DEFAULT_TYPE,
        _ => "",
    }
}

/// The attributes daprd writes for an event that has (non-null) attributes `has`, published through
/// `pubsub_name` to `topic`: those it fills in, with their values. An attribute filled in always
/// replaces the event's own.
pub(crate) fn filled_in<'a>(
    has: impl Fn(&str) -> bool,
    pubsub_name: &'a str,
    topic: &'a str,
    now: &'a str,
) -> impl Iterator<Item = (&'static str, &'a str)> {
    FILLED
        .into_iter()
        .filter(move |(name, when)| *when == When::Always || !has(name))
        .map(move |(name, _)| (name, fill_value(name, pubsub_name, topic, now)))
}

/// Whether daprd replaces the event's own `name` with its value.
pub(crate) fn always_filled(name: &str) -> bool {
    FILLED
        .iter()
        .any(|(filled, when)| *filled == name && *when == When::Always)
}

/// Turns complete CloudEvents (as WSM builds them) into the envelope daprd would write to the bus
/// for one pub/sub component, reusing its buffers across a batch.
#[derive(Debug)]
pub(crate) struct EnvelopeWriter {
    /// For each of [`FILLED`]: its name's prefix, `"name":`, and the value filled in, encoded
    /// (the topic's is set per call).
    filled: [(u64, Vec<u8>, Vec<u8>); 9],
    /// The topic whose encoding `filled` holds.
    topic: String,
    tree: Tree,
    encoder: Encoder,
}

/// Index of `topic` in [`FILLED`].
const TOPIC: usize = 4;

impl EnvelopeWriter {
    /// A writer for events published through the pub/sub component `pubsub_name`. Events without
    /// `time` get the time of this call (daprd's `time.Now().Format(time.RFC3339)`, taken once per
    /// writer, i.e. per batch).
    pub fn new(pubsub_name: &str) -> Self {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let filled = FILLED.map(|(name, _)| {
            let mut key = Vec::with_capacity(name.len() + 3);
            write_str(name.as_bytes(), Style::GoStd, &mut key);
            key.push(b':');
            // The topic is set per call.
            let value = fill_value(name, pubsub_name, "", &now);
            let mut encoded = Vec::new();
            write_str(value.as_bytes(), Style::GoStd, &mut encoded);
            (prefix(name.as_bytes()), key, encoded)
        });
        let mut writer = Self {
            filled,
            topic: String::new(),
            tree: Tree::default(),
            encoder: Encoder::default(),
        };
        writer.set_topic("");
        writer
    }

    fn set_topic(&mut self, topic: &str) {
        self.topic.clear();
        self.topic.push_str(topic);
        let encoded = &mut self.filled[TOPIC].2;
        encoded.clear();
        write_str(topic.as_bytes(), Style::GoStd, encoded);
    }

    /// Appends to `out` the envelope daprd writes for `event` published to `topic`: `topic` and
    /// `pubsubname` set, `time` added when absent, `traceid`/`traceparent`/`tracestate` added when
    /// absent or null, `source`/`type`/`specversion` defaulted when absent or null. WSM has no trace
    /// span of its own, so the trace attributes it fills are empty strings, as daprd writes for a
    /// request without span context; trace attributes the event carries are kept.
    pub fn write(&mut self, event: &[u8], topic: &str, out: &mut Vec<u8>) -> Result<(), JsonError> {
        if topic != self.topic {
            self.set_topic(topic);
        }
        let root = self.tree.parse(event)?;
        let Node::Obj { first, len } = self.tree.nodes[root as usize] else {
            return Err(JsonError {
                at: 0,
                what: "a CloudEvent must be a JSON object",
            });
        };
        let tree = &self.tree;
        let enc = &mut self.encoder;
        enc.keys.clear();
        enc.entries.clear();
        enc.push_members(tree, event, first, len);
        let end = enc.entries.len();

        // Merge the event's sorted attributes with the sorted ones daprd fills in.
        out.push(b'{');
        let (mut i, mut j) = (0, 0);
        let mut comma = false;
        while i < end || j < FILLED.len() {
            let order = match (i < end, j < FILLED.len()) {
                (true, true) => {
                    let (fill_prefix, _, _) = &self.filled[j];
                    enc.cmp_keys(&enc.entries[i], *fill_prefix, FILLED[j].0.as_bytes(), event)
                }
                (true, false) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            if comma {
                out.push(b',');
            }
            comma = true;
            match order {
                std::cmp::Ordering::Less => {
                    let entry = enc.entries[i];
                    enc.write_key(&entry, event, Style::GoStd, out);
                    enc.node(tree, event, entry.value, Style::GoStd, out)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let (_, key, value) = &self.filled[j];
                    out.extend_from_slice(key);
                    out.extend_from_slice(value);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let entry = enc.entries[i];
                    let is_null = matches!(tree.nodes[entry.value as usize], Node::Null);
                    let fill = match FILLED[j].1 {
                        When::Always => true,
                        When::Nil => is_null,
                        When::Absent => false,
                    };
                    if fill {
                        let (_, key, value) = &self.filled[j];
                        out.extend_from_slice(key);
                        out.extend_from_slice(value);
                    } else {
                        enc.write_key(&entry, event, Style::GoStd, out);
                        enc.node(tree, event, entry.value, Style::GoStd, out)?;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(input: &[u8]) -> String {
        let mut out = Vec::new();
        EnvelopeWriter::new("ps")
            .write(input, "tp", &mut out)
            .expect("valid event");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn envelopes_are_go_marshalled_with_dapr_fields_filled() {
        let event = br#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"T",
            "datacontenttype":"text/plain","data":"<b>&\u2028\/","websocketid":"w","seq":1.50}"#;
        assert_eq!(
            envelope(event),
            concat!(
                r#"{"data":"\u003cb\u003e\u0026\u2028/","datacontenttype":"text/plain","id":"1","#,
                r#""pubsubname":"ps","seq":1.50,"source":"s","specversion":"1.0","time":"T","#,
                r#""topic":"tp","traceid":"","traceparent":"","tracestate":"","type":"t","#,
                r#""websocketid":"w"}"#
            )
        );
    }

    #[test]
    fn envelopes_keep_trace_fields_and_override_topic() {
        let event = br#"{"id":"1","topic":"other","pubsubname":"x","traceparent":"00-ab-cd-01",
            "source":null,"data":{"b":[1e2,{"d":0,"c":0}],"a":"\b\f"}}"#;
        let got = envelope(event);
        let time_start = got.find(r#""time":""#).expect("time filled") + 8;
        let time = &got[time_start..time_start + 20];
        assert!(time.ends_with('Z') && time.len() == 20, "{time}");
        assert_eq!(
            got.replace(time, "NOW"),
            concat!(
                r#"{"data":{"a":"\b\f","b":[1e2,{"c":0,"d":0}]},"id":"1","pubsubname":"ps","#,
                r#""source":"Dapr","specversion":"1.0","time":"NOW","topic":"tp","traceid":"","#,
                r#""traceparent":"00-ab-cd-01","tracestate":"","type":"com.dapr.event.sent"}"#
            )
        );
    }

    #[test]
    fn envelopes_must_be_objects() {
        let mut writer = EnvelopeWriter::new("ps");
        for bad in [&b"[1]"[..], b"\"x\"", b"null", b"{"] {
            assert!(writer.write(bad, "tp", &mut Vec::new()).is_err());
        }
        // The writer is still usable after errors.
        let mut out = Vec::new();
        writer.write(b"{}", "tp", &mut out).unwrap();
        assert!(out.starts_with(br#"{"pubsubname":"ps","source":"Dapr""#));
    }
}
