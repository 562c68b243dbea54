//! Dapr's Redis Streams envelope of a received frame, written in one pass.
//!
//! [`super::daprd::EnvelopeWriter`] turns any CloudEvent into what daprd would write, by
//! parsing and re-encoding it. For frames WSM knows the event's shape, so [`FrameEnvelope`] writes
//! the same bytes directly: the attributes in Go's sorted order, strings escaped as Go's
//! `encoding/json` escapes them, and what daprd fills in (`pubsubname`, `topic`, empty trace
//! attributes). A test holds it to `EnvelopeWriter`'s output byte for byte.

use super::{push_base64, push_u64, Clock};
use crate::gojson::write::write_go_str;
use crate::publish::frame::{Frame, FrameSource, FRAME_EVENT_TYPE};

/// Writes envelopes of one connection's frames for one pub/sub component and topic.
#[derive(Debug)]
pub(crate) struct FrameEnvelope {
    /// `,"datacontenttype":"application/json","epoch":` (text) or the same with
    /// `application/octet-stream` (binary) follow `data`/`data_base64`.
    /// `,"id":"<connection>:` follows the epoch.
    id_head: Vec<u8>,
    /// `","pubsubname":<ps>,"seq":` follows the id.
    after_id: Vec<u8>,
    /// `,"source":<source>,"specversion":"1.0","time":"` follows the seq.
    after_seq: Vec<u8>,
    /// `","topic":<topic>,"traceid":"",…,"websocketUrl":<url>}` follows the timestamp.
    tail: Vec<u8>,
    clock: Clock,
}

impl FrameEnvelope {
    pub(crate) fn new(from: &FrameSource, pubsub_name: &str, topic: &str) -> Self {
        let mut id_head = b",\"id\":".to_vec();
        write_go_str(format!("{}:", from.connection_id).as_bytes(), &mut id_head);
        id_head.pop(); // reopen the id string: epoch and seq follow
        let mut after_id = b"\",\"pubsubname\":".to_vec();
        write_go_str(pubsub_name.as_bytes(), &mut after_id);
        after_id.extend_from_slice(b",\"seq\":");
        let mut after_seq = b",\"source\":".to_vec();
        write_go_str(from.source.as_bytes(), &mut after_seq);
        after_seq.extend_from_slice(b",\"specversion\":\"1.0\",\"time\":\"");
        let mut tail = b"\",\"topic\":".to_vec();
        write_go_str(topic.as_bytes(), &mut tail);
        tail.extend_from_slice(
            b",\"traceid\":\"\",\"traceparent\":\"\",\"tracestate\":\"\",\"type\":",
        );
        write_go_str(FRAME_EVENT_TYPE.as_bytes(), &mut tail);
        tail.extend_from_slice(b",\"websocketId\":");
        write_go_str(from.connection_id.as_bytes(), &mut tail);
        tail.extend_from_slice(b",\"websocketUrl\":");
        write_go_str(from.url.as_bytes(), &mut tail);
        tail.push(b'}');
        FrameEnvelope {
            id_head,
            after_id,
            after_seq,
            tail,
            clock: Clock::default(),
        }
    }

    /// Appends the envelope of `frame` to `out`.
    pub(crate) fn write(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let time = self.clock.format(frame.received_at);
        match frame.text() {
            Some(text) => {
                out.extend_from_slice(b"{\"contentType\":\"text/plain\",\"data\":");
                write_go_str(text.as_bytes(), out);
                out.extend_from_slice(b",\"datacontenttype\":\"application/json\"");
            }
            None => {
                out.extend_from_slice(
                    b"{\"contentType\":\"application/octet-stream\",\"data_base64\":\"",
                );
                push_base64(out, &frame.payload);
                out.extend_from_slice(b"\",\"datacontenttype\":\"application/octet-stream\"");
            }
        }
        out.extend_from_slice(b",\"epoch\":");
        push_u64(out, frame.epoch);
        out.extend_from_slice(&self.id_head);
        push_u64(out, frame.epoch);
        out.push(b':');
        push_u64(out, frame.seq);
        out.extend_from_slice(&self.after_id);
        push_u64(out, frame.seq);
        out.extend_from_slice(&self.after_seq);
        out.extend_from_slice(&time);
        out.extend_from_slice(b"\",\"timestamp\":\"");
        out.extend_from_slice(&time);
        out.extend_from_slice(&self.tail);
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
