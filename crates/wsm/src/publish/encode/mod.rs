//! Frames into bus wire formats, each written in one pass: the CloudEvent JSON ([`cloudevent`]),
//! and the envelope daprd writes to Redis Streams, for frames ([`envelope`]) and for any CloudEvent
//! ([`daprd`]). Encoding once per bus, and only where bytes are needed, is what keeps a fast feed
//! from being limited by the publisher: the memory bus keeps frames as they are, Redis writes
//! Dapr's envelope directly, the Dapr sidecar is sent the CloudEvent JSON.

pub mod cloudevent;
pub mod daprd;
pub mod envelope;
mod template;

use std::time::{Duration, SystemTime};

use base64::Engine as _;

pub(crate) use crate::gojson::write::push_u64;

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

pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
