//! Correlated request/response over one socket (SPEC 5, "Send").
//!
//! Text/JSON requests travel as `{"id":"<uuid>","payload":<payload>}` and are answered by a text frame
//! whose top-level `"id"` is the same; binary requests carry the 16 raw UUID bytes as a prefix and are
//! answered by a binary frame with the same prefix (stripped from the response). Frames are inspected
//! only while a request is pending: with nothing pending the hot path pays one atomic load.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Whether a content type travels as a Text frame (and so uses the JSON envelope).
pub(crate) fn is_text(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/") || essence == "application/json"
}

/// Wraps `payload` for a correlated request with id `id`. Text payloads that are JSON are embedded as
/// JSON; other text is embedded as a JSON string.
pub fn wrap(id: Uuid, payload: &[u8], text: bool) -> Bytes {
    if !text {
        let mut out = Vec::with_capacity(16 + payload.len());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(payload);
        return out.into();
    }
    let mut out = Vec::with_capacity(56 + payload.len());
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"payload\":");
    match std::str::from_utf8(payload) {
        Ok(text) if serde_json::from_str::<&RawValue>(text).is_ok() => {
            out.extend_from_slice(text.trim().as_bytes())
        }
        // Not JSON: embed as a string (lossy only for invalid UTF-8, which a Text frame cannot carry).
        _ => {
            let text = String::from_utf8_lossy(payload);
            // Serializing a &str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &*text);
        }
    }
    out.push(b'}');
    out.into()
}

/// Cancels its request when dropped (a no-op once the request was answered).
pub struct Pending<'a> {
    correlator: &'a Correlator,
    id: Uuid,
}

impl<'a> Pending<'a> {
    pub fn new(correlator: &'a Correlator, id: Uuid) -> Self {
        Pending { correlator, id }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.correlator.cancel(&self.id);
    }
}

/// The requests of one connection that wait for their response.
#[derive(Debug, Default)]
pub struct Correlator {
    pending: Mutex<HashMap<Uuid, oneshot::Sender<Bytes>>>,
    count: AtomicUsize,
}

impl Correlator {
    /// Registers a new request; the receiver resolves with the matched frame.
    pub fn register(&self) -> (Uuid, oneshot::Receiver<Bytes>) {
        let id = Uuid::new_v4();
        let (tx, rx) = oneshot::channel();
        let mut pending = self.lock();
        pending.insert(id, tx);
        self.count.store(pending.len(), Ordering::Release);
        (id, rx)
    }

    /// Forgets a request (timed out or failed to send).
    pub fn cancel(&self, id: &Uuid) {
        let mut pending = self.lock();
        pending.remove(id);
        self.count.store(pending.len(), Ordering::Release);
    }

    /// Number of requests waiting.
    pub fn pending(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Completes the request a text frame answers; `true` if it was one (and must not be published).
    pub fn match_text(&self, frame: &str) -> bool {
        if self.pending() == 0 {
            return false;
        }
        // Only an object has a top-level "id": serde would also read a struct from an array, taking
        // `["<id>"]`'s first element for the id.
        if !frame
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            return false;
        }
        // Only the top-level "id" is read; everything else is skipped without allocating.
        #[derive(Deserialize)]
        struct Envelope<'a> {
            // Borrowed from the frame, unless the upstream wrote it with JSON escapes (`\u0061`),
            // which still spell the same id; a missing id is empty and so names no request.
            #[serde(borrow, default)]
            id: Cow<'a, str>,
        }
        let Ok(Envelope { id }) = serde_json::from_str::<Envelope>(frame) else {
            return false;
        };
        let Ok(uuid) = Uuid::try_parse(&id) else {
            return false;
        };
        // The response's id must equal the one we sent (SPEC 5), which `wrap` writes lowercase and
        // hyphenated: the braced, simple, URN or uppercase spellings the parser also takes name
        // no request.
        if *uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()) != *id {
            return false;
        }
        self.complete(&uuid, Bytes::copy_from_slice(frame.as_bytes()))
    }

    /// Completes the request a binary frame answers, handing over the frame minus its 16-byte prefix.
    pub fn match_binary(&self, frame: &Bytes) -> bool {
        if self.pending() == 0 || frame.len() < 16 {
            return false;
        }
        let Ok(id) = Uuid::from_slice(&frame[..16]) else {
            return false;
        };
        self.complete(&id, frame.slice(16..))
    }

    /// Drops every waiter (the connection ended): their receivers resolve with an error at once.
    pub fn clear(&self) {
        let mut pending = self.lock();
        pending.clear();
        self.count.store(0, Ordering::Release);
    }

    fn complete(&self, id: &Uuid, response: Bytes) -> bool {
        let waiter = {
            let mut pending = self.lock();
            let waiter = pending.remove(id);
            self.count.store(pending.len(), Ordering::Release);
            waiter
        };
        match waiter {
            Some(tx) => {
                // The caller may have timed out this very moment; the frame is consumed either way.
                let _ = tx.send(response);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Bytes>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_envelope_embeds_json_as_json_and_other_text_as_a_string() {
        let id = Uuid::parse_str("6f1c2c1e-0b8e-4d5e-9a4b-2f1d3c4b5a69").unwrap();
        assert_eq!(
            &wrap(id, br#"{"op":"ping"}"#, true)[..],
            br#"{"id":"6f1c2c1e-0b8e-4d5e-9a4b-2f1d3c4b5a69","payload":{"op":"ping"}}"#
        );
        assert_eq!(
            &wrap(id, b"hello \"x\"", true)[..],
            br#"{"id":"6f1c2c1e-0b8e-4d5e-9a4b-2f1d3c4b5a69","payload":"hello \"x\""}"#
        );
        let binary = wrap(id, &[1, 2, 3], false);
        assert_eq!(&binary[..16], id.as_bytes());
        assert_eq!(&binary[16..], &[1, 2, 3]);
    }

    #[test]
    fn frames_match_only_pending_ids_in_their_own_mode() {
        let c = Correlator::default();
        assert!(!c.match_text(r#"{"id":"6f1c2c1e-0b8e-4d5e-9a4b-2f1d3c4b5a69"}"#));
        let (id, mut rx) = c.register();
        assert_eq!(c.pending(), 1);
        assert!(!c.match_text(r#"{"stream":"x","data":{"id":1}}"#));
        assert!(!c.match_text(r#"{"id":"6f1c2c1e-0b8e-4d5e-9a4b-2f1d3c4b5a69"}"#));
        assert!(!c.match_text("not json"));
        let reply = format!(r#"{{"payload":{{"ok":true}},"id":"{id}"}}"#);
        assert!(c.match_text(&reply));
        assert_eq!(rx.try_recv().unwrap(), reply.as_bytes());
        assert_eq!(c.pending(), 0);

        let (id, mut rx) = c.register();
        let mut frame = id.as_bytes().to_vec();
        frame.extend_from_slice(b"resp");
        assert!(!c.match_binary(&Bytes::from_static(b"short")));
        assert!(c.match_binary(&Bytes::from(frame)));
        assert_eq!(rx.try_recv().unwrap(), &b"resp"[..]);
    }

    // Found by the correlation fuzz target (fuzz/corpus/correlation/regression-*).
    #[test]
    fn a_text_id_matches_only_as_sent_but_json_escapes_are_the_same_id() {
        let c = Correlator::default();
        let (id, mut rx) = c.register();
        for other_spelling in [
            id.hyphenated().to_string().to_uppercase(),
            id.braced().to_string(),
            id.simple().to_string(),
            id.urn().to_string(),
        ] {
            assert!(
                !c.match_text(&format!(r#"{{"id":"{other_spelling}"}}"#)),
                "{other_spelling}"
            );
        }
        assert_eq!(c.pending(), 1);
        let escaped: String = id
            .to_string()
            .chars()
            .map(|ch| format!("\\u{:04x}", ch as u32))
            .collect();
        let reply = format!(r#"{{"id":"{escaped}","result":null}}"#);
        assert!(c.match_text(&reply));
        assert_eq!(rx.try_recv().unwrap(), reply.as_bytes());
    }

    #[test]
    fn only_an_object_has_a_top_level_id() {
        let c = Correlator::default();
        let (id, mut rx) = c.register();
        for frame in [
            format!(r#"["{id}"]"#),
            format!(r#" [ "{id}", 1 ]"#),
            format!(r#"{{"data":{{"id":"{id}"}}}}"#),
            format!(r#""{id}""#),
        ] {
            assert!(!c.match_text(&frame), "{frame}");
        }
        let reply = format!("\n\t {{\"id\":\"{id}\"}}");
        assert!(c.match_text(&reply));
        assert_eq!(rx.try_recv().unwrap(), reply.as_bytes());
    }

    #[test]
    fn cancelled_requests_are_not_matched() {
        let c = Correlator::default();
        let (id, _rx) = c.register();
        c.cancel(&id);
        assert_eq!(c.pending(), 0);
        assert!(!c.match_text(&format!(r#"{{"id":"{id}"}}"#)));
    }

    #[test]
    fn content_types_choose_the_frame_kind() {
        for t in [
            "text/plain",
            "application/json",
            "Application/JSON; charset=utf-8",
            "text/csv",
        ] {
            assert!(is_text(t), "{t}");
        }
        for t in ["application/octet-stream", "application/x-protobuf", ""] {
            assert!(!is_text(t), "{t}");
        }
    }
}
