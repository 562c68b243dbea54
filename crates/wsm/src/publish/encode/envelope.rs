//! Dapr's Redis Streams envelope of a received frame, written in one pass.
//!
//! [`super::daprd::EnvelopeWriter`] turns any CloudEvent into what daprd would write, by
//! parsing and re-encoding it. For frames WSM knows the event's shape, so [`FrameEnvelope`] writes
//! the same bytes directly: the attributes in Go's sorted order, strings escaped as Go's
//! `encoding/json` escapes them, and what daprd fills in (`pubsubname`, `topic`, empty trace
//! attributes). A test holds it to `EnvelopeWriter`'s output byte for byte.

use super::daprd::{always_filled, filled_in};
use super::template::{frame_fields, Escape, Template, Value};
use crate::publish::frame::{Frame, FrameSource};

/// Writes envelopes of one connection's frames for one pub/sub component and topic: the fields of
/// [`frame_fields`] and what daprd fills in ([`filled_in`]), keys sorted by their bytes as Go
/// sorts a map's.
#[derive(Debug)]
pub(crate) struct FrameEnvelope {
    template: Template,
}

impl FrameEnvelope {
    pub(crate) fn new(from: &FrameSource, pubsub_name: &str, topic: &str) -> Self {
        let template = Template::new(Escape::Go, |text| {
            let fields = frame_fields(from, text);
            let has = |name: &str| fields.iter().any(|(field, _)| *field == name);
            // A frame has `time`, so daprd's own time is never used.
            let added: Vec<_> = filled_in(has, pubsub_name, topic, "").collect();
            let mut all: Vec<(&str, Value<'_>)> = fields
                .into_iter()
                .filter(|(name, _)| !always_filled(name))
                .chain(
                    added
                        .into_iter()
                        .map(|(name, value)| (name, Value::Str(value))),
                )
                .collect();
            all.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            all
        });
        FrameEnvelope { template }
    }

    /// Appends the envelope of `frame` to `out`.
    pub(crate) fn write(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        self.template.write(frame, out);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;

    use super::*;
    use crate::publish::encode::cloudevent::encode_frame;
    use crate::publish::encode::daprd::EnvelopeWriter;

    #[test]
    fn writes_what_the_generic_envelope_writer_makes_of_the_cloudevent() {
        let sources = [
            FrameSource {
                connection_id: "0b6f7c1e-1d2a-4f4e-9a55-3c2f1b0d9e8a".into(),
                url: "wss://stream.example.com:9443/ws?streams=btcusdt@depth&x=<1>".into(),
                source: "websocketmanager".into(),
            },
            FrameSource {
                connection_id: "c\"1\\&".into(),
                url: "ws://h/\u{2028}\u{7f}\té".into(),
                source: "app <one>".into(),
            },
        ];
        let payloads: [(&[u8], bool); 8] = [
            (
                br#"{"e":"depthUpdate","E":1,"s":"BTCUSDT","b":[["1.0","2"]]}"#,
                true,
            ),
            (b"", true),
            (
                "<&> \u{2028}\u{2029} \u{0}\u{1f}\u{8}\u{c}\n\r\t\"\\ é 🦀".as_bytes(),
                true,
            ),
            (b"plain", true),
            (&[0, 1, 2, 254, 255], false),
            (b"", false),
            (&[0xff, 0xfe, b'a'], true), // not UTF-8: base64
            (b"text as binary", false),
        ];
        let times = [
            std::time::UNIX_EPOCH + Duration::from_micros(1_795_490_931_000_042),
            std::time::UNIX_EPOCH + Duration::from_micros(1_795_490_931_999_999),
            SystemTime::now(),
        ];
        for source in &sources {
            for topic in ["md.frames", "t<&>\"x"] {
                let mut direct = FrameEnvelope::new(source, "pubsub", topic);
                let mut generic = EnvelopeWriter::new("pubsub");
                for (n, (payload, text)) in payloads.iter().enumerate() {
                    for (k, at) in times.iter().enumerate() {
                        let frame = Frame {
                            payload: Bytes::copy_from_slice(payload),
                            text: *text,
                            seq: (n * 1000 + k) as u64 + 1,
                            epoch: k as u64 + 1,
                            received_at: *at,
                        };
                        let mut expected = Vec::new();
                        generic
                            .write(&encode_frame(&frame, source), topic, &mut expected)
                            .expect("a frame's CloudEvent is an object");
                        let mut got = Vec::new();
                        direct.write(&frame, &mut got);
                        assert_eq!(
                            String::from_utf8_lossy(&got),
                            String::from_utf8_lossy(&expected),
                            "payload {n}, time {k}, topic {topic}"
                        );
                    }
                }
            }
        }
    }
}
