//! JSON pointers (RFC 6901) into frames, with a byte pre-check: a frame that does not contain the
//! pointer's last key as a quoted string cannot match, so most frames of a busy feed are never
//! parsed at all.

use memchr::memmem;

use super::MAX_TEXT;

#[derive(Debug, Clone)]
pub(crate) struct Pointer {
    text: String,
    /// `"key"` of the last segment, when it is a name (not an array index).
    needle: Option<memmem::Finder<'static>>,
}

impl Pointer {
    /// `field` names the option in the error (`keepalive.pong.pointer`).
    pub(crate) fn parse(field: &str, text: &str) -> Result<Pointer, String> {
        if text.len() > MAX_TEXT {
            return Err(format!(
                "{field} is {} bytes, over the limit of {MAX_TEXT}",
                text.len()
            ));
        }
        if !text.starts_with('/') {
            return Err(format!(
                "{field} must be a JSON pointer starting with '/' (e.g. /op), got {text:?}"
            ));
        }
        let last = text.rsplit('/').next().unwrap_or_default();
        let mut escapes = last.split('~').skip(1);
        if escapes.any(|rest| !(rest.starts_with('0') || rest.starts_with('1'))) {
            return Err(format!(
                "{field}: '~' must be followed by 0 or 1 in a JSON pointer, got {text:?}"
            ));
        }
        let name = last.replace("~1", "/").replace("~0", "~");
        let is_index = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
        // A name with characters JSON escapes could be spelled differently in the frame.
        let plain = name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        let needle = (!is_index && plain)
            .then(|| memmem::Finder::new(format!("\"{name}\"").as_bytes()).into_owned());
        Ok(Pointer {
            text: text.to_owned(),
            needle,
        })
    }

    /// Whether `bytes` may hold the pointer (false means it certainly does not).
    #[inline]
    pub(crate) fn may_match(&self, bytes: &[u8]) -> bool {
        self.needle.as_ref().is_none_or(|n| n.find(bytes).is_some())
    }

    pub(crate) fn get<'v>(&self, value: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        value.pointer(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_check_and_lookup_agree() {
        let p = Pointer::parse("x", "/event/e").unwrap();
        let frame = br#"{"event":{"e":"serverShutdown","E":1}}"#;
        assert!(p.may_match(frame));
        assert!(!p.may_match(br#"{"u":1}"#));
        let v: serde_json::Value = serde_json::from_slice(frame).unwrap();
        assert_eq!(p.get(&v).unwrap(), "serverShutdown");
        let escaped = Pointer::parse("x", "/a~1b").unwrap();
        assert!(escaped.may_match(br#"{"a/b":1}"#));
        assert!(Pointer::parse("x", "/data/0")
            .unwrap()
            .may_match(b"anything"));
        assert!(Pointer::parse("x", "op")
            .unwrap_err()
            .contains("starting with '/'"));
        assert!(Pointer::parse("x", "/a~2").is_err());
    }
}
