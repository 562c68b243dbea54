//! The correlation echo of SPEC section 5: a text envelope `{"id":"<uuid>","payload":...}` comes
//! back with the same id and payload; a binary frame of at least 16 bytes (UUID prefix + payload)
//! comes back unchanged. A payload of `"no-reply"` (text) or `no-reply` (binary, after the prefix)
//! is recorded but never answered, so clients can test their timeouts.

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Bytes;

/// Length of the raw UUID that prefixes a binary correlated request.
pub const BINARY_PREFIX_LEN: usize = 16;
/// The payload that asks the server not to answer.
pub const NO_REPLY: &str = "no-reply";

/// What to do with one client message.
#[derive(Debug, PartialEq)]
pub(crate) enum Echo<T> {
    /// Send this back.
    Reply(T),
    /// A correlated request that asked not to be answered.
    Withhold,
    /// Not a correlated request.
    NotARequest,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// Answers a text envelope whose top-level `id` is a string, keeping the payload's exact text.
pub(crate) fn text_reply(text: &str) -> Echo<String> {
    // serde would also read a struct from a JSON array; only objects are envelopes.
    if !text.trim_start().starts_with('{') {
        return Echo::NotARequest;
    }
    let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
        return Echo::NotARequest;
    };
    if !envelope.id.get().starts_with('"') {
        return Echo::NotARequest;
    }
    if envelope.payload.get() == concat!("\"", "no-reply", "\"") {
        return Echo::Withhold;
    }
    Echo::Reply(format!(
        "{{\"id\":{},\"payload\":{}}}",
        envelope.id.get(),
        envelope.payload.get()
    ))
}

/// Answers a binary frame that carries at least the 16-byte UUID prefix with the same bytes.
pub(crate) fn binary_reply(data: &Bytes) -> Echo<Bytes> {
    if data.len() < BINARY_PREFIX_LEN {
        Echo::NotARequest
    } else if &data[BINARY_PREFIX_LEN..] == NO_REPLY.as_bytes() {
        Echo::Withhold
    } else {
        Echo::Reply(data.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_envelope_keeps_id_and_exact_payload() {
        let reply = text_reply(r#"{ "payload": {"b":1, "a":[2]}, "id": "u-1", "extra": 3 }"#);
        assert_eq!(
            reply,
            Echo::Reply(r#"{"id":"u-1","payload":{"b":1, "a":[2]}}"#.to_owned())
        );
    }

    #[test]
    fn text_without_string_id_or_payload_is_not_a_request() {
        assert_eq!(text_reply(r#"{"id":1,"payload":2}"#), Echo::NotARequest);
        assert_eq!(text_reply(r#"{"id":"a"}"#), Echo::NotARequest);
        assert_eq!(text_reply("not json"), Echo::NotARequest);
        assert_eq!(text_reply(r#"["id","payload"]"#), Echo::NotARequest);
    }

    #[test]
    fn no_reply_payload_is_withheld() {
        assert_eq!(
            text_reply(r#"{"id":"x","payload":"no-reply"}"#),
            Echo::Withhold
        );
        let mut frame = vec![7u8; 16];
        frame.extend_from_slice(b"no-reply");
        assert_eq!(binary_reply(&Bytes::from(frame)), Echo::Withhold);
    }

    #[test]
    fn binary_needs_the_uuid_prefix() {
        assert_eq!(binary_reply(&Bytes::from(vec![1u8; 15])), Echo::NotARequest);
        let frame = Bytes::from(vec![1u8; 16]);
        assert_eq!(binary_reply(&frame), Echo::Reply(frame.clone()));
    }
}
