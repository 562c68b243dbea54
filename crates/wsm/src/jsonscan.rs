//! Finding one value in a JSON text without parsing the rest (a leaf: no imports from the
//! crate). The arbiter looks up a frame's
//! sequence value and key on every frame of two legs, and building a whole `serde_json::Value`
//! for that costs several times what the rest of the path does. The scan walks the bytes once,
//! skipping every value it does not need; malformed input gives `None`, never a panic.

/// One step of a JSON pointer (RFC 6901), unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Steps(Vec<String>);

impl Steps {
    /// `text` is a pointer checked where it was given (`VenueOptions::validate`): `/a/b~1c` →
    /// `a`, `b/c`.
    pub(crate) fn of(text: &str) -> Steps {
        Steps(
            text.split('/')
                .skip(1)
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect(),
        )
    }

    /// The raw bytes of the value the pointer names in `json`, if any.
    pub(crate) fn find<'a>(&self, json: &'a [u8]) -> Option<&'a [u8]> {
        let mut pos = ws(json, 0);
        for step in &self.0 {
            pos = match json.get(pos)? {
                b'{' => member(json, pos + 1, step.as_bytes())?,
                b'[' => element(json, pos + 1, step.parse().ok()?)?,
                _ => return None,
            };
        }
        let end = skip(json, pos)?;
        Some(&json[pos..end])
    }
}

/// A found value as an unsigned number: a JSON integer, or a string of digits.
pub(crate) fn as_u64(raw: &[u8]) -> Option<u64> {
    let digits = match raw.first()? {
        b'"' => raw.get(1..raw.len().checked_sub(1)?)?,
        _ => raw,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A found value as a key: a string's text (unescaped), or any other value's JSON.
pub(crate) fn as_key(raw: &[u8]) -> Option<String> {
    if raw.first() == Some(&b'"') {
        if raw.contains(&b'\\') {
            return serde_json::from_slice(raw).ok();
        }
        return std::str::from_utf8(raw.get(1..raw.len() - 1)?)
            .ok()
            .map(str::to_owned);
    }
    std::str::from_utf8(raw).ok().map(str::to_owned)
}

fn ws(json: &[u8], mut pos: usize) -> usize {
    while json.get(pos).is_some_and(|b| b" \t\r\n".contains(b)) {
        pos += 1;
    }
    pos
}

/// The position of the value of member `key` in the object whose body starts at `pos`.
fn member(json: &[u8], mut pos: usize, key: &[u8]) -> Option<usize> {
    loop {
        pos = ws(json, pos);
        match json.get(pos)? {
            b'}' => return None,
            b'"' => {}
            _ => return None,
        }
        let end = string_end(json, pos)?;
        let name = &json[pos + 1..end - 1];
        let same = if name.contains(&b'\\') {
            serde_json::from_slice::<String>(&json[pos..end])
                .ok()
                .is_some_and(|n| n.as_bytes() == key)
        } else {
            name == key
        };
        pos = ws(json, end);
        if json.get(pos)? != &b':' {
            return None;
        }
        pos = ws(json, pos + 1);
        if same {
            return Some(pos);
        }
        pos = ws(json, skip(json, pos)?);
        match json.get(pos)? {
            b',' => pos += 1,
            _ => return None,
        }
    }
}

/// The position of element `index` in the array whose body starts at `pos`.
fn element(json: &[u8], mut pos: usize, index: usize) -> Option<usize> {
    for i in 0.. {
        pos = ws(json, pos);
        if json.get(pos)? == &b']' {
            return None;
        }
        if i == index {
            return Some(pos);
        }
        pos = ws(json, skip(json, pos)?);
        match json.get(pos)? {
            b',' => pos += 1,
            _ => return None,
        }
    }
    None
}

/// Just past the string starting at `pos` (its opening quote).
fn string_end(json: &[u8], pos: usize) -> Option<usize> {
    let mut i = pos + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[i] == b'\\' {
            i += 2;
        } else {
            return Some(i + 1);
        }
    }
}

/// Just past the value starting at `pos`.
fn skip(json: &[u8], pos: usize) -> Option<usize> {
    match json.get(pos)? {
        b'"' => string_end(json, pos),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = pos;
            loop {
                match json.get(i)? {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = pos;
            while json.get(i).is_some_and(|b| !b",}] \t\r\n".contains(b)) {
                i += 1;
            }
            (i > pos).then_some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(pointer: &str, json: &'a str) -> Option<&'a str> {
        Steps::of(pointer)
            .find(json.as_bytes())
            .map(|b| std::str::from_utf8(b).unwrap())
    }

    #[test]
    fn finds_what_serde_json_finds() {
        let json =
            r#" {"a": {"x": [1, {"y": "}]\"{"}], "u" : 42 }, "s":"BTC", "b/c": 7, "n": null} "#;
        assert_eq!(find("/a/u", json), Some("42"));
        assert_eq!(find("/s", json), Some(r#""BTC""#));
        assert_eq!(find("/a/x/1/y", json), Some(r#""}]\"{""#));
        assert_eq!(find("/b~1c", json), Some("7"));
        assert_eq!(find("/n", json), Some("null"));
        assert_eq!(find("/a/x/5", json), None);
        assert_eq!(find("/missing", json), None);
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v.pointer("/a/u").unwrap(), 42);
        assert_eq!(as_u64(b"42"), Some(42));
        assert_eq!(as_u64(br#""42""#), Some(42));
        assert_eq!(as_u64(b"-1"), None);
        assert_eq!(as_u64(b"4.5"), None);
        assert_eq!(as_key(br#""a\"b""#).as_deref(), Some("a\"b"));
        assert_eq!(as_key(b"17").as_deref(), Some("17"));
    }

    #[test]
    fn malformed_input_is_none_not_a_panic() {
        for bad in [
            "",
            "{",
            "{\"u\"",
            "{\"u\":",
            "{\"u\":1",
            "[",
            "\"",
            "{\"a\":{\"u\":1}",
            "{\"a\" 1}",
            "{\"\\",
            "}}}",
            "{\"s\":\"x\\",
            "[[[[",
        ] {
            let _ = find("/u", bad);
            let _ = find("/a/u", bad);
            let _ = find("/0/1", bad);
        }
        assert_eq!(find("/u", "{\"u\":1"), Some("1"));
    }
}
