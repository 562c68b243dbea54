//! The venue options of one connection, as Connect, a profile and the stored record carry them.
//! Every field is checked by [`VenueOptions::validate`], which names the field and the rule, so a
//! wrong value is an `INVALID_ARGUMENT` at Connect and never a connection that dies later.

use serde::{Deserialize, Serialize};

use super::pointer::Pointer;
use super::MAX_TEXT;

/// Longest keepalive interval or timeout (an hour); longer is almost certainly a unit mistake.
pub const MAX_KEEPALIVE_MS: u64 = 3_600_000;
/// Most messages a pacing window may allow.
pub const MAX_RATE_MESSAGES: u32 = 10_000;
/// Longest pacing window and spacing (an hour).
pub const MAX_RATE_MS: u64 = 3_600_000;
/// Longest a paced message may wait for its turn (5 minutes, as a Send's timeout).
pub const MAX_WAIT_MS: u64 = 300_000;
/// Shortest `max_lifetime_ms`: a rotation opens a socket and waits for an overlap, so rotating
/// more often than every few seconds would only churn the venue's connection limits.
pub const MIN_LIFETIME_MS: u64 = 1_000;
/// Longest `max_lifetime_ms` (30 days).
pub const MAX_LIFETIME_MS: u64 = 30 * 86_400_000;

/// Everything a venue may need; each `None` is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VenueOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<Keepalive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_rate: Option<OutboundRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decompress: Option<Decompress>,
    /// A frame that announces a planned disconnect: it triggers a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Matcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceRule>,
    /// Standing legs (SPEC 8): 1 (the default) or 2, two sockets arbitrated live so the drop of
    /// either loses nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redundancy: Option<u8>,
    /// Rotate make-before-break this long after a leg opened, ahead of the venue's own limit
    /// (Binance: 24 h, so the profile says 23 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime_ms: Option<u64>,
}

/// An application-level keepalive the client sends (OKX `ping`, Bybit `{"op":"ping"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keepalive {
    /// Sent as a text frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Sent as a binary frame (base64 here), for venues that want bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_base64: Option<String>,
    pub interval_ms: u64,
    /// Send only after `interval_ms` without an inbound frame (BitMEX, OKX), not on a fixed clock.
    #[serde(default)]
    pub idle_only: bool,
    /// What the venue answers; such frames are never published. `None`: no answer is expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pong: Option<Matcher>,
    /// No pong within this long after a keepalive marks the leg dead (default: `interval_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Which frames a rule takes: an exact text, or a JSON pointer that exists (and, with `value`,
/// holds exactly that JSON value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// Answers a venue's own ping (HTX `{"ping":ts}`, Deribit `test_request`). Matched frames are not
/// published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyRule {
    #[serde(rename = "match")]
    pub matches: Matcher,
    /// The answer, as text. `{{value}}` is replaced by the JSON of the matched value, so HTX's
    /// `{"pong":{{value}}}` echoes the ping's timestamp.
    pub with: String,
}

/// Pacing of every client message on one leg: at most `messages` per `per_ms`, and at least
/// `spacing_ms` between two sends. Spacing matters: a bucket's burst still trips Binance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundRate {
    pub messages: u32,
    pub per_ms: u64,
    #[serde(default)]
    pub spacing_ms: u64,
    /// The venue counts WebSocket Pings and Pongs too (Binance): wsm's Pings wait their turn,
    /// and the Pongs it answers with take a turn.
    #[serde(default)]
    pub count_control: bool,
    /// A message that cannot go out within this long fails with `RESOURCE_EXHAUSTED` (default
    /// 10 s; a Send's own timeout when shorter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
}

impl OutboundRate {
    pub const DEFAULT_MAX_WAIT_MS: u64 = 10_000;

    pub fn max_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_wait_ms.unwrap_or(Self::DEFAULT_MAX_WAIT_MS))
    }

    /// The rate as operators read it, for errors: "5 messages per 1000 ms, 300 ms apart".
    pub fn describe(&self) -> String {
        let mut text = format!("{} messages per {} ms", self.messages, self.per_ms);
        if self.spacing_ms > 0 {
            text.push_str(&format!(", {} ms apart", self.spacing_ms));
        }
        text
    }
}

/// How binary frames are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decompress {
    Gzip,
    /// Raw DEFLATE (RFC 1951), no header.
    Deflate,
    /// DEFLATE in a zlib wrapper (RFC 1950).
    Zlib,
}

impl Decompress {
    pub fn as_str(self) -> &'static str {
        match self {
            Decompress::Gzip => "gzip",
            Decompress::Deflate => "deflate",
            Decompress::Zlib => "zlib",
        }
    }

    pub fn parse(name: &str) -> Result<Decompress, String> {
        match name {
            "gzip" => Ok(Decompress::Gzip),
            "deflate" => Ok(Decompress::Deflate),
            "zlib" => Ok(Decompress::Zlib),
            other => Err(format!(
                "decompress must be gzip, deflate or zlib, got {other:?}"
            )),
        }
    }
}

/// Where a frame carries the venue's sequence: JSON pointers to its value, its key (per symbol or
/// stream) and the previous value (Binance futures `pu`), for gap detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceRule {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

impl VenueOptions {
    pub fn is_empty(&self) -> bool {
        self == &VenueOptions::default()
    }

    /// Whether any rule the socket task runs on frames or messages is set. `redundancy` and
    /// `max_lifetime_ms` are not such rules: they say how many legs there are and when they
    /// rotate.
    pub fn has_rules(&self) -> bool {
        self.keepalive.is_some()
            || self.reply.is_some()
            || self.outbound_rate.is_some()
            || self.decompress.is_some()
            || self.notice.is_some()
            || self.sequence.is_some()
    }

    /// `base` with every option `self` sets replacing the base's (an option is replaced whole,
    /// never merged field by field, so what a request gives is exactly what runs).
    pub fn over(&self, base: &VenueOptions) -> VenueOptions {
        VenueOptions {
            keepalive: self.keepalive.clone().or_else(|| base.keepalive.clone()),
            reply: self.reply.clone().or_else(|| base.reply.clone()),
            outbound_rate: self
                .outbound_rate
                .clone()
                .or_else(|| base.outbound_rate.clone()),
            decompress: self.decompress.or(base.decompress),
            notice: self.notice.clone().or_else(|| base.notice.clone()),
            sequence: self.sequence.clone().or_else(|| base.sequence.clone()),
            redundancy: self.redundancy.or(base.redundancy),
            max_lifetime_ms: self.max_lifetime_ms.or(base.max_lifetime_ms),
        }
    }

    /// Standing legs: 1 unless `redundancy` says 2.
    pub fn legs(&self) -> usize {
        usize::from(self.redundancy.unwrap_or(1))
    }

    /// Checks every rule; the error names the field (`keepalive.interval_ms`) and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(k) = &self.keepalive {
            k.validate()?;
        }
        if let Some(r) = &self.reply {
            r.matches.validate("reply.match")?;
            check_text("reply.with", &r.with)?;
            if r.with.is_empty() {
                return Err("reply.with must not be empty".into());
            }
        }
        if let Some(r) = &self.outbound_rate {
            r.validate()?;
        }
        if let Some(n) = &self.notice {
            n.validate("notice")?;
        }
        if let Some(s) = &self.sequence {
            Pointer::parse("sequence.value", &s.value)?;
            if let Some(key) = &s.key {
                Pointer::parse("sequence.key", key)?;
            }
            if let Some(prev) = &s.prev {
                Pointer::parse("sequence.prev", prev)?;
            }
        }
        if let Some(n) = self.redundancy {
            if !(1..=2).contains(&n) {
                return Err(format!(
                    "redundancy must be 1 (one leg) or 2 (two legs arbitrated live), got {n}"
                ));
            }
        }
        if let Some(ms) = self.max_lifetime_ms {
            check_ms("max_lifetime_ms", ms, MIN_LIFETIME_MS, MAX_LIFETIME_MS)?;
        }
        Ok(())
    }
}

impl Keepalive {
    fn validate(&self) -> Result<(), String> {
        match (&self.message, &self.message_base64) {
            (Some(text), None) => {
                check_text("keepalive.message", text)?;
                if text.is_empty() {
                    return Err("keepalive.message must not be empty".into());
                }
            }
            (None, Some(b64)) => {
                let bytes = self
                    .payload_bytes()
                    .ok_or_else(|| "keepalive.message_base64 is not valid base64".to_owned())?;
                if bytes.is_empty() || bytes.len() > MAX_TEXT {
                    return Err(format!(
                        "keepalive.message_base64 must decode to 1 to {MAX_TEXT} bytes, got {}",
                        bytes.len()
                    ));
                }
                let _ = b64;
            }
            (Some(_), Some(_)) => {
                return Err(
                    "keepalive takes message (text) or message_base64 (bytes), not both".into(),
                )
            }
            (None, None) => {
                return Err("keepalive needs message (text) or message_base64 (bytes)".into())
            }
        }
        check_ms(
            "keepalive.interval_ms",
            self.interval_ms,
            1,
            MAX_KEEPALIVE_MS,
        )?;
        if let Some(timeout) = self.timeout_ms {
            check_ms("keepalive.timeout_ms", timeout, 1, MAX_KEEPALIVE_MS)?;
            if self.pong.is_none() {
                return Err(
                    "keepalive.timeout_ms needs keepalive.pong (what answer to wait for)".into(),
                );
            }
        }
        if let Some(pong) = &self.pong {
            pong.validate("keepalive.pong")?;
        }
        Ok(())
    }

    /// The bytes to send and whether they go as text.
    pub(crate) fn payload(&self) -> (bytes::Bytes, bool) {
        match &self.message {
            Some(text) => (bytes::Bytes::from(text.clone()), true),
            None => (
                bytes::Bytes::from(self.payload_bytes().unwrap_or_default()),
                false,
            ),
        }
    }

    fn payload_bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let b64 = self.message_base64.as_deref()?;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    }

    pub(crate) fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(self.interval_ms))
    }
}

impl Matcher {
    pub(crate) fn validate(&self, field: &str) -> Result<(), String> {
        match (&self.text, &self.pointer) {
            (Some(text), None) => {
                check_text(&format!("{field}.text"), text)?;
                if text.is_empty() {
                    return Err(format!("{field}.text must not be empty"));
                }
                if self.value.is_some() {
                    return Err(format!(
                        "{field}.value goes with {field}.pointer, not with {field}.text"
                    ));
                }
                Ok(())
            }
            (None, Some(pointer)) => {
                Pointer::parse(&format!("{field}.pointer"), pointer)?;
                if let Some(value) = &self.value {
                    let len = value.to_string().len();
                    if len > MAX_TEXT {
                        return Err(format!(
                            "{field}.value is {len} bytes of JSON, over the limit of {MAX_TEXT}"
                        ));
                    }
                }
                Ok(())
            }
            (Some(_), Some(_)) => Err(format!(
                "{field} takes text (an exact frame) or pointer (and value), not both"
            )),
            (None, None) => Err(format!(
                "{field} needs text (an exact frame) or pointer (a JSON pointer such as /op)"
            )),
        }
    }
}

impl OutboundRate {
    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_RATE_MESSAGES).contains(&self.messages) {
            return Err(format!(
                "outbound_rate.messages must be 1 to {MAX_RATE_MESSAGES}, got {}",
                self.messages
            ));
        }
        check_ms("outbound_rate.per_ms", self.per_ms, 1, MAX_RATE_MS)?;
        check_ms("outbound_rate.spacing_ms", self.spacing_ms, 0, MAX_RATE_MS)?;
        if let Some(wait) = self.max_wait_ms {
            check_ms("outbound_rate.max_wait_ms", wait, 1, MAX_WAIT_MS)?;
        }
        Ok(())
    }
}

fn check_ms(field: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("{field} must be {min} to {max} ms, got {value}"))
    }
}

fn check_text(field: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_TEXT {
        return Err(format!(
            "{field} is {} bytes, over the limit of {MAX_TEXT}",
            text.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<VenueOptions, String> {
        let options: VenueOptions = serde_json::from_str(json).map_err(|e| e.to_string())?;
        options.validate().map(|()| options)
    }

    #[test]
    fn every_rule_names_its_field() {
        for (json, field) in [
            (
                r#"{"keepalive":{"message":"ping","interval_ms":0}}"#,
                "keepalive.interval_ms",
            ),
            (
                r#"{"keepalive":{"interval_ms":5}}"#,
                "keepalive needs message",
            ),
            (
                r#"{"keepalive":{"message":"ping","interval_ms":5,"timeout_ms":5}}"#,
                "keepalive.pong",
            ),
            (
                r#"{"keepalive":{"message":"ping","interval_ms":5,"pong":{"pointer":"op"}}}"#,
                "keepalive.pong.pointer",
            ),
            (
                r#"{"reply":{"match":{"text":"a","value":1},"with":"b"}}"#,
                "reply.match.value",
            ),
            (
                r#"{"reply":{"match":{"pointer":"/ping"},"with":""}}"#,
                "reply.with",
            ),
            (
                r#"{"outbound_rate":{"messages":0,"per_ms":1000}}"#,
                "outbound_rate.messages",
            ),
            (
                r#"{"outbound_rate":{"messages":5,"per_ms":1000,"max_wait_ms":999999999}}"#,
                "outbound_rate.max_wait_ms",
            ),
            (r#"{"notice":{}}"#, "notice needs text"),
            (r#"{"sequence":{"value":"u"}}"#, "sequence.value"),
            (r#"{"decompress":"brotli"}"#, "unknown variant"),
            (r#"{"redundancy":3}"#, "redundancy must be 1"),
            (r#"{"max_lifetime_ms":10}"#, "max_lifetime_ms must be"),
            (r#"{"keepalives":{}}"#, "unknown field"),
        ] {
            let err = parse(json).expect_err(json);
            assert!(err.contains(field), "{json}: {err}");
        }
    }

    #[test]
    fn request_options_replace_the_profiles_whole() {
        let profile =
            parse(r#"{"keepalive":{"message":"ping","interval_ms":20000},"decompress":"gzip"}"#)
                .unwrap();
        let request = parse(r#"{"keepalive":{"message":"hb","interval_ms":5000}}"#).unwrap();
        let effective = request.over(&profile);
        assert_eq!(
            effective.keepalive.as_ref().unwrap().message.as_deref(),
            Some("hb")
        );
        assert_eq!(effective.keepalive.unwrap().interval_ms, 5000);
        assert_eq!(effective.decompress, Some(Decompress::Gzip));
    }
}
