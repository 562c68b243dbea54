//! Go's JSON, as daprd uses it: `encoding/json` decoding into `any`, and the two encoders daprd
//! writes Redis with (`encoding/json` for CloudEvents, `jsoniter.ConfigFastest` for state values).
//!
//! This is the sidecar's own implementation, written separately from the one in `wsm` (a tree
//! here, a streaming re-encoder there) so that comparing what the two leave in Redis tests both.

use std::collections::BTreeMap;

/// A decoded JSON value. Numbers keep their text (Go's `UseNumber`); objects are ordered by key
/// bytes, which is how `encoding/json` writes maps, and a repeated key keeps its last value, as Go's
/// decoder does.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Decodes exactly one JSON value (whitespace around it allowed).
pub fn parse(input: &[u8]) -> Result<Json, String> {
    let mut reader = Reader { s: input, at: 0 };
    let value = reader.value(0)?;
    reader.ws();
    if reader.at < input.len() {
        return Err(format!(
            "invalid character after top-level value at {}",
            reader.at
        ));
    }
    Ok(value)
}

struct Reader<'a> {
    s: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn ws(&mut self) {
        while self.at < self.s.len() && matches!(self.s[self.at], b' ' | b'\n' | b'\r' | b'\t') {
            self.at += 1;
        }
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.at))
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 10_000 {
            return self.fail("exceeded max depth");
        }
        self.ws();
        let Some(&c) = self.s.get(self.at) else {
            return self.fail("unexpected end of JSON input");
        };
        match c {
            b'{' => {
                self.at += 1;
                let mut map = BTreeMap::new();
                self.ws();
                if self.s.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Object(map));
                }
                loop {
                    self.ws();
                    if self.s.get(self.at) != Some(&b'"') {
                        return self.fail("expected string key");
                    }
                    let key = self.string()?;
                    self.ws();
                    if self.s.get(self.at) != Some(&b':') {
                        return self.fail("expected colon");
                    }
                    self.at += 1;
                    let v = self.value(depth + 1)?;
                    map.insert(key, v);
                    self.ws();
                    match self.s.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(map));
                        }
                        _ => return self.fail("expected comma or closing brace"),
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return self.fail("expected comma or closing bracket"),
                    }
                }
            }
            b'"' => Ok(Json::String(self.string()?)),
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.fail("invalid character looking for beginning of value"),
        }
    }

    fn word(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.s[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            self.fail("invalid literal")
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        let digit = |r: &Self| r.s.get(r.at).is_some_and(u8::is_ascii_digit);
        if self.s[self.at] == b'-' {
            self.at += 1;
        }
        if !digit(self) {
            return self.fail("invalid number");
        }
        if self.s[self.at] == b'0' {
            self.at += 1;
        } else {
            while digit(self) {
                self.at += 1;
            }
        }
        if self.s.get(self.at) == Some(&b'.') {
            self.at += 1;
            if !digit(self) {
                return self.fail("invalid number");
            }
            while digit(self) {
                self.at += 1;
            }
        }
        if matches!(self.s.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.s.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !digit(self) {
                return self.fail("invalid number");
            }
            while digit(self) {
                self.at += 1;
            }
        }
        Ok(Json::Number(
            String::from_utf8_lossy(&self.s[start..self.at]).into_owned(),
        ))
    }

    fn hex(&self, at: usize) -> Option<u32> {
        let text = std::str::from_utf8(self.s.get(at..at + 4)?).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(text, 16).ok()
    }

    /// Go's `unquote`: escapes decoded, invalid UTF-8 bytes and unpaired surrogates become U+FFFD.
    fn string(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let Some(&c) = self.s.get(self.at) else {
                return self.fail("unexpected end of string");
            };
            match c {
                b'"' => {
                    self.at += 1;
                    return Ok(out);
                }
                0x00..=0x1f => return self.fail("invalid character in string literal"),
                b'\\' => {
                    let Some(&e) = self.s.get(self.at + 1) else {
                        return self.fail("unexpected end of string");
                    };
                    self.at += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let Some(first) = self.hex(self.at) else {
                                return self.fail("invalid unicode escape");
                            };
                            self.at += 4;
                            if (0xD800..=0xDFFF).contains(&first) {
                                let second = (self.s.get(self.at..self.at + 2) == Some(b"\\u"))
                                    .then(|| self.hex(self.at + 2))
                                    .flatten();
                                match second {
                                    Some(lo)
                                        if first <= 0xDBFF && (0xDC00..=0xDFFF).contains(&lo) =>
                                    {
                                        self.at += 6;
                                        let code =
                                            0x10000 + ((first - 0xD800) << 10) + (lo - 0xDC00);
                                        out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                                    }
                                    _ => out.push('\u{FFFD}'),
                                }
                            } else {
                                out.push(char::from_u32(first).unwrap_or('\u{FFFD}'));
                            }
                        }
                        _ => return self.fail("invalid escape"),
                    }
                }
                0x20..=0x7f => {
                    out.push(c as char);
                    self.at += 1;
                }
                _ => {
                    // One rune or one invalid byte at a time, as Go's utf8.DecodeRune goes.
                    let end = (self.at + 4).min(self.s.len());
                    let chunk = &self.s[self.at..end];
                    let valid = match std::str::from_utf8(chunk) {
                        Ok(s) => s,
                        Err(e) => std::str::from_utf8(&chunk[..e.valid_up_to()]).unwrap_or(""),
                    };
                    match valid.chars().next() {
                        Some(ch) => {
                            out.push(ch);
                            self.at += ch.len_utf8();
                        }
                        None => {
                            out.push('\u{FFFD}');
                            self.at += 1;
                        }
                    }
                }
            }
        }
    }
}

/// Go's `json.Marshal` of a decoded value (`encoding/json`, HTML-safe).
pub fn marshal_go(value: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    write_go(value, &mut out);
    out
}

fn write_go(value: &Json, out: &mut Vec<u8>) {
    match value {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Number(text) => out.extend_from_slice(text.as_bytes()),
        Json::String(s) => go_string(s, out),
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_go(item, out);
            }
            out.push(b']');
        }
        Json::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                go_string(k, out);
                out.push(b':');
                write_go(v, out);
            }
            out.push(b'}');
        }
    }
}

/// `encoding/json`'s string encoder (Go ≥ 1.22, HTML escaping on).
pub fn go_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.extend_from_slice(format!("\\u{:04x}", ch as u32).as_bytes())
            }
            _ => {
                let mut buf = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// `jsoniter.ConfigFastest.Marshal` of a value decoded by `encoding/json` into `any` (numbers as
/// float64). Map keys come out sorted: jsoniter leaves them in Go's random map order, and sorted is
/// one of those orders.
pub fn marshal_jsoniter_fastest(value: &Json) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write_fastest(value, &mut out)?;
    Ok(out)
}

fn write_fastest(value: &Json, out: &mut Vec<u8>) -> Result<(), String> {
    match value {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Number(text) => {
            let v: f64 = text.parse().map_err(|e| format!("number {text}: {e}"))?;
            if !v.is_finite() {
                return Err(format!(
                    "cannot unmarshal number {text} into Go value of type float64"
                ));
            }
            out.extend_from_slice(float64_lossy(v).as_bytes());
        }
        Json::String(s) => fastest_string(s, out),
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_fastest(item, out)?;
            }
            out.push(b']');
        }
        Json::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                fastest_string(k, out);
                out.push(b':');
                write_fastest(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn fastest_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{0}'..='\u{1f}' => out.extend_from_slice(format!("\\u{:04x}", ch as u32).as_bytes()),
            _ => {
                let mut buf = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// jsoniter's `WriteFloat64Lossy`.
fn float64_lossy(v: f64) -> String {
    let (sign, v) = if v < 0.0 { ("-", -v) } else { ("", v) };
    if v > 83_886_079.0 {
        // WriteFloat64: strconv.AppendFloat(v, 'f' or 'e', -1, 64).
        if v >= 1e21 {
            let e = format!("{v:e}");
            let (m, x) = e.split_once('e').unwrap_or((&e, "0"));
            let x = if x.starts_with('-') {
                x.to_owned()
            } else {
                format!("+{x}")
            };
            return format!("{sign}{m}e{x}");
        }
        return format!("{sign}{v}");
    }
    let scaled = (v * 1e6 + 0.5) as u64;
    let (int, frac) = (scaled / 1_000_000, scaled % 1_000_000);
    if frac == 0 {
        format!("{sign}{int}")
    } else {
        let frac = format!("{frac:06}");
        format!("{sign}{int}.{}", frac.trim_end_matches('0'))
    }
}

/// Go's `json.Compact` with HTML escaping, as `encoding/json` applies it to a `json.RawMessage`.
pub fn compact_html(raw: &[u8]) -> Result<Vec<u8>, String> {
    parse(raw)?;
    let text = std::str::from_utf8(raw).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for ch in text.chars() {
        if in_string {
            match ch {
                _ if escaped => {
                    escaped = false;
                    push_char(ch, &mut out);
                }
                '\\' => {
                    escaped = true;
                    out.push(b'\\');
                }
                '"' => {
                    in_string = false;
                    out.push(b'"');
                }
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    out.extend_from_slice(format!("\\u{:04x}", ch as u32).as_bytes())
                }
                _ => push_char(ch, &mut out),
            }
        } else {
            match ch {
                ' ' | '\t' | '\n' | '\r' => {}
                '"' => {
                    in_string = true;
                    out.push(b'"');
                }
                _ => push_char(ch, &mut out),
            }
        }
    }
    Ok(out)
}

fn push_char(ch: char, out: &mut Vec<u8>) {
    let mut buf = [0; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_and_jsoniter_encodings_differ_where_go_says() {
        let v = parse(br#"{"b":"<&>\u2028\b","a":[0.1234567,1e2,12345678901234567890]}"#).unwrap();
        assert_eq!(
            String::from_utf8(marshal_go(&v)).unwrap(),
            r#"{"a":[0.1234567,1e2,12345678901234567890],"b":"\u003c\u0026\u003e\u2028\b"}"#
        );
        assert_eq!(
            String::from_utf8(marshal_jsoniter_fastest(&v).unwrap()).unwrap(),
            "{\"a\":[0.123457,100,12345678901234567000],\"b\":\"<&>\u{2028}\\u0008\"}"
        );
    }

    #[test]
    fn compaction_escapes_html_inside_strings_only() {
        assert_eq!(
            compact_html(b" { \"a\" : \"<x> \\\"&\" , \"b\" : [ 1 , 2 ] } ").unwrap(),
            br#"{"a":"\u003cx\u003e \"\u0026","b":[1,2]}"#.to_vec()
        );
    }
}
