//! A received frame on its way to the bus, and its CloudEvent JSON.
//!
//! Frames travel in batches that share their connection's metadata ([`FrameBatch`]), and each bus
//! encodes them straight into its own wire format: the memory bus keeps them as they are (readers
//! that want JSON ask for it), Redis writes Dapr's envelope in one pass, the Dapr sidecar is sent
//! the CloudEvent JSON of [`FrameEncoder`]. Encoding once per bus, and only where bytes are needed,
//! is what keeps a fast feed from being limited by the publisher.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;

/// The CloudEvent `type` of published frames: what Dapr gives events published through it, which is
/// what existing consumers of WSM topics expect.
pub const FRAME_EVENT_TYPE: &str = "com.dapr.event.sent";

/// Who published a frame: the connection, and the CloudEvent `source` (the app id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSource {
    pub connection_id: Arc<str>,
    pub url: Arc<str>,
    pub source: Arc<str>,
}

/// One received message, numbered for publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub payload: Bytes,
    /// A Text frame (published as `data`); otherwise Binary (published as `data_base64`).
    pub text: bool,
    /// Per-connection publish counter: +1 per published frame, so consumers see gaps.
    pub seq: u64,
    /// +1 on every (re)connect.
    pub epoch: u64,
    pub received_at: SystemTime,
}

impl Frame {
    /// The text of a Text frame. `None` for Binary frames and, defensively, for text that is not
    /// UTF-8: both travel as base64.
    pub fn text(&self) -> Option<&str> {
        if self.text {
            std::str::from_utf8(&self.payload).ok()
        } else {
            None
        }
    }
}

/// Consecutive frames of one connection, published in one bus call.
#[derive(Debug, Clone)]
pub struct FrameBatch {
    pub source: Arc<FrameSource>,
    pub frames: Vec<Frame>,
}

/// Writes frames' CloudEvent JSON. Text frames carry the frame text as a JSON string in `data`
/// (`datacontenttype` `application/json`, as a Dapr `PublishEvent<string>` does); binary frames carry
/// `data_base64`. The extensions say where the frame came from (`websocketId`, `websocketUrl`), when
/// (`timestamp`), what it was (`contentType`), and where it sits in the connection's stream (`seq`,
/// `epoch`). The event `id` is `<connection>:<epoch>:<seq>`: unique per source, and the same when a
/// batch is retried, so consumers can drop duplicates.
///
/// Everything that is the same for every frame of a connection is rendered once, and the time's
/// date part once per second: this runs for every frame.
#[derive(Debug)]
pub struct FrameEncoder {
    /// `{"specversion":"1.0","id":"<connection>:`
    head: Vec<u8>,
    /// `","source":…,"type":…,"websocketId":…,"websocketUrl":…,"time":"`
    middle: Vec<u8>,
    clock: Clock,
}

impl FrameEncoder {
    pub fn new(from: &FrameSource) -> Self {
        let mut head = b"{\"specversion\":\"1.0\",\"id\":".to_vec();
        json_str(&mut head, &format!("{}:", from.connection_id));
        head.pop(); // reopen the id string: epoch and seq follow
        let mut middle = b"\",\"source\":".to_vec();
        json_str(&mut middle, &from.source);
        middle.extend_from_slice(b",\"type\":\"");
        middle.extend_from_slice(FRAME_EVENT_TYPE.as_bytes());
        middle.extend_from_slice(b"\",\"websocketId\":");
        json_str(&mut middle, &from.connection_id);
        middle.extend_from_slice(b",\"websocketUrl\":");
        json_str(&mut middle, &from.url);
        middle.extend_from_slice(b",\"time\":\"");
        FrameEncoder {
            head,
            middle,
            clock: Clock::default(),
        }
    }

    /// Appends one frame's CloudEvent JSON to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let time = self.clock.format(frame.received_at);
        out.reserve(self.head.len() + self.middle.len() + 200 + frame.payload.len() * 2);
        out.extend_from_slice(&self.head);
        push_u64(out, frame.epoch);
        out.push(b':');
        push_u64(out, frame.seq);
        out.extend_from_slice(&self.middle);
        out.extend_from_slice(&time);
        out.extend_from_slice(b"\",\"timestamp\":\"");
        out.extend_from_slice(&time);
        out.extend_from_slice(b"\",\"seq\":");
        push_u64(out, frame.seq);
        out.extend_from_slice(b",\"epoch\":");
        push_u64(out, frame.epoch);
        match frame.text() {
            Some(text) => {
                out.extend_from_slice(
                    b",\"contentType\":\"text/plain\",\"datacontenttype\":\"application/json\",\"data\":",
                );
                json_str(out, text);
            }
            None => {
                out.extend_from_slice(
                    b",\"contentType\":\"application/octet-stream\",\"datacontenttype\":\"application/octet-stream\",\"data_base64\":\"",
                );
                push_base64(out, &frame.payload);
                out.push(b'"');
            }
        }
        out.push(b'}');
    }
}

/// One frame's CloudEvent JSON (see [`FrameEncoder`]); for callers that encode a single frame.
pub fn encode_frame(frame: &Frame, from: &FrameSource) -> Vec<u8> {
    let mut out = Vec::new();
    FrameEncoder::new(from).encode(frame, &mut out);
    out
}

/// Formats receive times as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (UTC, RFC 3339), the date and time of
/// day rendered once per second.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    secs: u64,
    prefix: [u8; 19],
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            secs: u64::MAX,
            prefix: [b'0'; 19],
        }
    }
}

impl Clock {
    pub(crate) fn format(&mut self, at: SystemTime) -> [u8; 27] {
        let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        if since.as_secs() != self.secs {
            self.secs = since.as_secs();
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(self.secs);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            let n = text.len().min(19);
            self.prefix[..n].copy_from_slice(&text.as_bytes()[..n]);
        }
        let mut out = [0u8; 27];
        out[..19].copy_from_slice(&self.prefix);
        out[19] = b'.';
        let mut micros = since.subsec_micros();
        for slot in out[20..26].iter_mut().rev() {
            *slot = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out[26] = b'Z';
        out
    }
}

pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Standard base64 with padding, appended.
pub(crate) fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

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
