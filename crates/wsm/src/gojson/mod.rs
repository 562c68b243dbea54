//! Go's `encoding/json` and jsoniter, reproduced: the bytes a Dapr sidecar writes to Redis, so the `redis` backend leaves exactly what
//! the `dapr` backend (through a real daprd) leaves and Dapr apps can share the data.
//!
//! daprd never stores the JSON it is handed as-is; it decodes it with Go's `encoding/json` and
//! encodes it again. Two different encoders are involved:
//!
//! - **CloudEvents** (`POST /v1.0/publish` with `Content-Type: application/cloudevents+json`): daprd
//!   decodes the event into a `map[string]any` with `UseNumber` (components-contrib
//!   `pubsub/envelope.go`, `FromCloudEvent`), fills `topic` and `pubsubname` (always), `time` (when
//!   absent), `traceid`/`traceparent`/`tracestate` (when absent or null, since components-contrib
//!   #3080) and `source`/`type`/`specversion` (defaults, when absent or null), and encodes the map
//!   with `encoding/json` (`json.Marshal` in dapr `pkg/api/http/http.go` `onPublish`): object keys
//!   sorted by their bytes at every level, `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`…,
//!   control characters as `\b \f \n \r \t` or `\u00xx`, numbers written back as their original text,
//!   no whitespace. [`crate::publish::encode::daprd::EnvelopeWriter`] does the same.
//! - **State values** (`POST /v1.0/state/{store}`): daprd decodes each item's `value` into `any`
//!   (numbers become `float64`), and the Redis state store encodes it with `jsoniter.ConfigFastest`
//!   (components-contrib `state/redis/redis.go`, `utils.Marshal`): no HTML escaping, only `"`, `\`
//!   and control characters escaped (`\n \r \t`, others `\u00xx`), numbers through `float64` with
//!   jsoniter's 6-decimal writer (`WriteFloat64Lossy`: `0.1234567` → `0.123457`; above 83 886 079
//!   the shortest exact form). `ConfigFastest` does not sort map keys, so daprd writes them in Go's
//!   random map order; we sort them, which is one of the orders daprd may write and the only stable
//!   one. [`canonical_state_value`] does this.
//!
//! Both decoders are Go's: invalid UTF-8 bytes become U+FFFD one byte at a time, unpaired
//! surrogate escapes become U+FFFD, and duplicate object keys keep the last value. Nesting deeper
//! than [`MAX_DEPTH`] is refused (Go allows 10 000; WSM's events and records are a few levels deep).
//!
//! [`parse`] decodes as Go does (into a flat tree); [`write`] encodes in either of Go's two styles.

pub(crate) mod parse;
pub(crate) mod write;

use parse::Tree;
use write::{Encoder, Style};

/// Deepest nesting of arrays and objects accepted; deeper input is refused rather than risking the
/// stack of a tokio worker.
pub(crate) const MAX_DEPTH: usize = 512;

/// Why bytes could not be re-encoded the way daprd would: they are not JSON (Go's grammar), or not
/// the kind of JSON expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub(crate) struct JsonError {
    /// Offset in the input where decoding stopped.
    pub at: usize,
    /// What was wrong there.
    pub what: &'static str,
}

/// Appends to `out` the bytes Dapr's Redis state store keeps as `data` when `value` is posted as an
/// item's JSON `value` to daprd's HTTP state API (see the module docs).
pub(crate) fn canonical_state_value(value: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    let mut tree = Tree::default();
    let root = tree.parse(value)?;
    Encoder::default().node(&tree, value, root, Style::JsoniterFastest, out)
}

#[cfg(test)]
mod tests {
    use super::parse::*;
    use super::write::*;
    use super::*;

    fn state(input: &str) -> String {
        let mut out = Vec::new();
        canonical_state_value(input.as_bytes(), &mut out).expect("valid JSON");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn state_values_get_sorted_keys_and_jsoniter_escaping() {
        assert_eq!(
            state(r#" { "b" : 1, "a" : [ "x<y&z", true, null ], "c": {"z":{}, "y":[]} } "#),
            r#"{"a":["x<y&z",true,null],"b":1,"c":{"y":[],"z":{}}}"#
        );
        assert_eq!(
            state(r#""\u00e9\/\b\f\n\u0001\u2028""#),
            "\"é/\\u0008\\u000c\\n\\u0001\u{2028}\""
        );
        assert_eq!(state(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
        assert_eq!(state(r#"{"\u0062":1,"a":2}"#), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn state_numbers_go_through_float64_with_six_decimals() {
        for (input, want) in [
            ("0", "0"),
            ("-0", "0"),
            ("300", "300"),
            ("1E2", "100"),
            ("0.5", "0.5"),
            ("0.05", "0.05"),
            ("0.1234567", "0.123457"),
            ("1.0000004", "1"),
            ("-2.5", "-2.5"),
            ("-0.0000001", "-0"),
            ("83886079", "83886079"),
            ("83886079.5", "83886079.5"),
            ("1700000000000", "1700000000000"),
            ("12345678901234567890", "12345678901234567000"),
            ("1e21", "1e+21"),
            ("-1.5e300", "-1.5e+300"),
        ] {
            assert_eq!(state(input), want, "{input}");
        }
        assert!(canonical_state_value(b"1e400", &mut Vec::new()).is_err());
    }

    #[test]
    fn strings_decode_like_go() {
        // A surrogate pair, a lone high surrogate, a lone low one, an invalid byte, a truncated
        // sequence (two bytes: two replacement characters, as Go decodes byte by byte).
        let mut out = Vec::new();
        canonical_state_value(
            b"\"\\ud83d\\ude00|\\ud800x|\\udc00|\xff|\xe2\x82\"",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"\u{1F600}|\u{FFFD}x|\u{FFFD}|\u{FFFD}|\u{FFFD}\u{FFFD}\""
        );
        // High surrogate followed by a non-surrogate escape: both survive separately.
        assert_eq!(state(r#""\ud800\u0041""#), "\"\u{FFFD}A\"");
    }

    #[test]
    fn verbatim_copies_write_what_decoding_and_encoding_would() {
        let samples: [&[u8]; 10] = [
            b"\"plain ascii\"",
            b"\"<&>\"",
            "\"raw \u{2028} \u{2029} \u{e9}\"".as_bytes(),
            b"\"\\\"q\\\" \\\\ \\n\\r\\t\"",
            b"\"\\b\\f\"",
            b"\"\\/\\u0041\\u00e9\"",
            b"\"\xff\"",
            b"\"\xe2\x80\xa8x\"",
            b"\"\xe2\x80\xa7x\"",
            b"\"\x7f\"",
        ];
        for sample in samples {
            let raw = &sample[1..sample.len() - 1];
            let mut decoded = Vec::new();
            decode_str(raw, &mut decoded);
            for style in [Style::GoStd, Style::JsoniterFastest] {
                let mut want = Vec::new();
                write_str(&decoded, style, &mut want);
                let mut tree = Tree::default();
                let root = tree.parse(sample).unwrap();
                let mut got = Vec::new();
                Encoder::default()
                    .node(&tree, sample, root, style, &mut got)
                    .unwrap();
                assert_eq!(
                    got,
                    want,
                    "{:?} in {style:?}",
                    String::from_utf8_lossy(sample)
                );
            }
        }
    }

    #[test]
    fn word_scan_agrees_with_the_byte_table() {
        for byte in 0..=255u8 {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = byte;
                assert_eq!(
                    needs_attention(u64::from_le_bytes(word)),
                    SCAN[byte as usize] != 0,
                    "byte {byte:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn invalid_json_is_refused() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "[1,]",
            "01",
            "1.",
            ".5",
            "+1",
            "\"\u{1}\"",
            "\"\\x\"",
            "tru",
            "{} x",
            "[1] [2]",
        ] {
            assert!(
                canonical_state_value(bad.as_bytes(), &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(canonical_state_value(deep.as_bytes(), &mut Vec::new()).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(canonical_state_value(ok.as_bytes(), &mut Vec::new()).is_ok());
    }
}
