//! A frame's CloudEvent JSON, as consumers of WSM topics read it.

use super::template::{frame_fields, Escape, Template};
use crate::publish::frame::{Frame, FrameSource};

/// Writes frames' CloudEvent JSON: the fields of [`frame_fields`], in that order. The event `id` is
/// `<connection>:<epoch>:<seq>`: unique per source, and the same when a batch is retried, so
/// consumers can drop duplicates.
#[derive(Debug)]
pub(crate) struct FrameEncoder {
    template: Template,
}

impl FrameEncoder {
    pub fn new(from: &FrameSource) -> Self {
        FrameEncoder {
            template: Template::new(Escape::Json, |text| frame_fields(from, text)),
        }
    }

    /// Appends one frame's CloudEvent JSON to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        self.template.write(frame, out);
    }
}

/// One frame's CloudEvent JSON (see [`FrameEncoder`]); for callers that encode a single frame.
pub(crate) fn encode_frame(frame: &Frame, from: &FrameSource) -> Vec<u8> {
    let mut out = Vec::new();
    FrameEncoder::new(from).encode(frame, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::{Duration, SystemTime};

    fn source() -> FrameSource {
        FrameSource {
            connection_id: "c-1".into(),
            url: "wss://x/\"ws\"".into(),
            source: "websocketmanager".into(),
        }
    }

    fn frame(payload: &'static [u8], text: bool, seq: u64, at: SystemTime) -> Frame {
        Frame {
            payload: Bytes::from_static(payload),
            text,
            seq,
            epoch: 3,
            received_at: at,
        }
    }

    #[test]
    fn text_frames_become_cloudevents_with_every_extension() {
        let at = std::time::UNIX_EPOCH + Duration::from_micros(1_795_490_931_000_042);
        let f = frame(br#"{"e":"depthUpdate","s":"<&>"}"#, true, 17, at);
        let out = encode_frame(&f, &source());
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        let expected_time = humantime::format_rfc3339_micros(at).to_string();
        assert_eq!(
            v,
            serde_json::json!({
                "specversion": "1.0", "id": "c-1:3:17", "source": "websocketmanager",
                "type": "com.dapr.event.sent", "time": expected_time, "timestamp": expected_time,
                "datacontenttype": "application/json", "data": r#"{"e":"depthUpdate","s":"<&>"}"#,
                "websocketId": "c-1", "websocketUrl": "wss://x/\"ws\"", "contentType": "text/plain",
                "seq": 17, "epoch": 3,
            })
        );
        assert_eq!(expected_time, "2026-11-24T03:28:51.000042Z");
    }

    #[test]
    fn binary_frames_carry_data_base64_and_the_clock_follows_seconds() {
        let mut encoder = FrameEncoder::new(&source());
        for (secs, micros) in [(1_000u64, 999_999u64), (1_001, 0), (86_400 * 400, 5)] {
            let at = std::time::UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + micros);
            let f = frame(&[0, 1, 254, 255], false, 1, at);
            let mut out = Vec::new();
            encoder.encode(&f, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["data_base64"], "AAH+/w==");
            assert_eq!(v["contentType"], "application/octet-stream");
            assert!(v.get("data").is_none());
            assert_eq!(v["time"], humantime::format_rfc3339_micros(at).to_string());
        }
    }

    #[test]
    fn text_that_is_not_utf8_travels_as_base64() {
        let f = frame(&[0xff, b'a'], true, 1, SystemTime::now());
        assert_eq!(f.text(), None);
        let v: serde_json::Value = serde_json::from_slice(&encode_frame(&f, &source())).unwrap();
        assert_eq!(v["data_base64"], "/2E=");
    }
}
