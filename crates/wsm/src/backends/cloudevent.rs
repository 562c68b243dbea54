//! The bytes a Dapr sidecar writes to Redis, reproduced, so the `redis` backend leaves exactly what
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
//!   no whitespace. [`EnvelopeWriter`] does the same.
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

use crate::frames::push_u64;

/// Deepest nesting of arrays and objects accepted; deeper input is refused rather than risking the
/// stack of a tokio worker.
pub const MAX_DEPTH: usize = 512;

/// Why bytes could not be re-encoded the way daprd would: they are not JSON (Go's grammar), or not
/// the kind of JSON expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct JsonError {
    /// Offset in the input where decoding stopped.
    pub at: usize,
    /// What was wrong there.
    pub what: &'static str,
}

/// Byte range of the input.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        &input[self.start as usize..self.end as usize]
    }
}

/// One decoded JSON value; containers point into the tree's `kids`/`members`.
#[derive(Debug, Clone, Copy)]
enum Node {
    Null,
    True,
    False,
    /// The number's text.
    Num(Span),
    /// The string's content between the quotes; `plain` = no escapes and valid UTF-8, so the raw
    /// bytes are the decoded string; `verbatim` = the styles whose output for it is the raw bytes
    /// ([`VERBATIM_GO`], [`VERBATIM_JSONITER`]), so writing it is a copy.
    Str {
        raw: Span,
        plain: bool,
        verbatim: u8,
    },
    /// Range of `kids`.
    Arr {
        first: u32,
        len: u32,
    },
    /// Range of `members`.
    Obj {
        first: u32,
        len: u32,
    },
}

/// An object member: its key (a string's content) and its value node.
#[derive(Debug, Clone, Copy)]
struct Member {
    key: Span,
    key_plain: bool,
    key_verbatim: u8,
    value: u32,
}

/// The string's raw bytes are exactly what Go's `encoding/json` writes for it.
const VERBATIM_GO: u8 = 1;
/// The string's raw bytes are exactly what `jsoniter.ConfigFastest` writes for it.
const VERBATIM_JSONITER: u8 = 2;

/// What the string scanner must look at: 0 nothing, 1 `"`, 2 `\`, 3 a control character,
/// 4 a character Go escapes for HTML (`<`, `>`, `&`), 5 the start of a multi-byte sequence.
const SCAN: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            b'"' => 1,
            b'\\' => 2,
            0x00..=0x1f => 3,
            b'<' | b'>' | b'&' => 4,
            0x80..=0xff => 5,
            _ => 0,
        };
        c += 1;
    }
    table
};

/// A parsed document: nodes in an arena, children stored contiguously per container. Kept between
/// calls so a batch of events allocates only once.
#[derive(Debug, Default)]
struct Tree {
    nodes: Vec<Node>,
    kids: Vec<u32>,
    members: Vec<Member>,
    kid_stack: Vec<u32>,
    member_stack: Vec<Member>,
}

impl Tree {
    fn clear(&mut self) {
        self.nodes.clear();
        self.kids.clear();
        self.members.clear();
        self.kid_stack.clear();
        self.member_stack.clear();
    }

    /// Parses `input` as exactly one JSON value (surrounding whitespace allowed); returns the root.
    fn parse(&mut self, input: &[u8]) -> Result<u32, JsonError> {
        self.clear();
        if input.len() > u32::MAX as usize {
            return Err(JsonError {
                at: 0,
                what: "document larger than 4 GiB",
            });
        }
        let mut p = Parser { b: input, i: 0 };
        let root = p.value(self, 0)?;
        p.skip_ws();
        if p.i != input.len() {
            return Err(p.err("unexpected data after the JSON value"));
        }
        Ok(root)
    }

    fn push(&mut self, node: Node) -> u32 {
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError { at: self.i, what }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    fn value(&mut self, tree: &mut Tree, depth: usize) -> Result<u32, JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(tree, depth + 1),
            Some(b'[') => self.array(tree, depth + 1),
            Some(b'"') => {
                let (raw, plain, verbatim) = self.string()?;
                Ok(tree.push(Node::Str {
                    raw,
                    plain,
                    verbatim,
                }))
            }
            Some(b't') => self.literal(tree, b"true", Node::True),
            Some(b'f') => self.literal(tree, b"false", Node::False),
            Some(b'n') => self.literal(tree, b"null", Node::Null),
            Some(b'-' | b'0'..=b'9') => {
                let span = self.number()?;
                Ok(tree.push(Node::Num(span)))
            }
            Some(_) => Err(self.err("expected a JSON value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn literal(&mut self, tree: &mut Tree, text: &[u8], node: Node) -> Result<u32, JsonError> {
        if self.b[self.i..].starts_with(text) {
            self.i += text.len();
            Ok(tree.push(node))
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn object(&mut self, tree: &mut Tree, depth: usize) -> Result<u32, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.i += 1; // '{'
        let mark = tree.member_stack.len();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                self.skip_ws();
                if self.peek() != Some(b'"') {
                    return Err(self.err("expected an object key"));
                }
                let (key, key_plain, key_verbatim) = self.string()?;
                self.skip_ws();
                self.expect(b':', "expected ':' after an object key")?;
                let value = self.value(tree, depth)?;
                tree.member_stack.push(Member {
                    key,
                    key_plain,
                    key_verbatim,
                    value,
                });
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(self.err("expected ',' or '}' in an object")),
                }
            }
        }
        let first = tree.members.len() as u32;
        let len = (tree.member_stack.len() - mark) as u32;
        let Tree {
            members,
            member_stack,
            ..
        } = tree;
        members.extend(member_stack.drain(mark..));
        Ok(tree.push(Node::Obj { first, len }))
    }

    fn array(&mut self, tree: &mut Tree, depth: usize) -> Result<u32, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.i += 1; // '['
        let mark = tree.kid_stack.len();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
        } else {
            loop {
                let kid = self.value(tree, depth)?;
                tree.kid_stack.push(kid);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(self.err("expected ',' or ']' in an array")),
                }
            }
        }
        let first = tree.kids.len() as u32;
        let len = (tree.kid_stack.len() - mark) as u32;
        let Tree {
            kids, kid_stack, ..
        } = tree;
        kids.extend(kid_stack.drain(mark..));
        Ok(tree.push(Node::Arr { first, len }))
    }

    /// A string at `"`: returns the span of its content, whether it is plain, and in which styles
    /// its raw bytes are already the output.
    fn string(&mut self) -> Result<(Span, bool, u8), JsonError> {
        self.i += 1; // '"'
        let start = self.i;
        let mut plain = true;
        let mut verbatim = VERBATIM_GO | VERBATIM_JSONITER;
        loop {
            // Fast scan over bytes that need no attention, a word at a time, then byte by byte.
            while let Some(word) = self.b.get(self.i..self.i + 8) {
                let word = u64::from_le_bytes([
                    word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
                ]);
                if needs_attention(word) {
                    break;
                }
                self.i += 8;
            }
            while let Some(&c) = self.b.get(self.i) {
                if SCAN[c as usize] != 0 {
                    break;
                }
                self.i += 1;
            }
            let Some(&c) = self.b.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            match SCAN[c as usize] {
                1 => {
                    let span = Span {
                        start: start as u32,
                        end: self.i as u32,
                    };
                    self.i += 1;
                    return Ok((span, plain, verbatim));
                }
                2 => {
                    plain = false;
                    match self.b.get(self.i + 1) {
                        // What both encoders write for these characters.
                        Some(b'"' | b'\\' | b'n' | b'r' | b't') => self.i += 2,
                        // Go writes \b and \f; jsoniter writes \u0008 and \u000c.
                        Some(b'b' | b'f') => {
                            verbatim &= !VERBATIM_JSONITER;
                            self.i += 2
                        }
                        Some(b'/') => {
                            verbatim = 0;
                            self.i += 2
                        }
                        Some(b'u') => {
                            if hex4(self.b, self.i + 2).is_none() {
                                return Err(self.err("invalid \\u escape"));
                            }
                            verbatim = 0;
                            self.i += 6;
                        }
                        _ => return Err(self.err("invalid escape in a string")),
                    }
                }
                3 => return Err(self.err("control character in a string")),
                4 => {
                    verbatim &= !VERBATIM_GO;
                    self.i += 1;
                }
                _ => match utf8_len_at(self.b, self.i) {
                    Some(n) => {
                        // U+2028 and U+2029, which Go escapes.
                        if n == 3
                            && self.b[self.i + 1] == 0x80
                            && c == 0xE2
                            && (self.b[self.i + 2] | 1) == 0xA9
                        {
                            verbatim &= !VERBATIM_GO;
                        }
                        self.i += n;
                    }
                    None => {
                        // Go keeps going and writes U+FFFD for this byte.
                        plain = false;
                        verbatim = 0;
                        self.i += 1;
                    }
                },
            }
        }
    }

    /// Go's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Result<Span, JsonError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number: no digit after '.'"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number: no digit in the exponent"));
            }
            self.digits();
        }
        Ok(Span {
            start: start as u32,
            end: self.i as u32,
        })
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }
}

/// Whether any of the 8 bytes in `word` is one [`SCAN`] flags (exact, no false positives).
#[inline]
fn needs_attention(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let equal = |c: u8| zero_byte(word ^ (ONES * c as u64));
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    (word & HIGH)
        | below_space
        | equal(b'"')
        | equal(b'\\')
        | equal(b'<')
        | equal(b'>')
        | equal(b'&')
        != 0
}

/// The four hex digits of a `\u` escape starting at `at`.
fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    let mut value = 0u32;
    for &d in digits {
        value = value * 16 + (d as char).to_digit(16)?;
    }
    Some(value)
}

/// Length of the valid UTF-8 sequence starting at `i`, by Go's `utf8.DecodeRune` rules (no
/// overlongs, surrogates or code points above U+10FFFF); `None` for an invalid byte.
fn utf8_len_at(b: &[u8], i: usize) -> Option<usize> {
    let (n, lo, hi) = match b[i] {
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        _ => return None,
    };
    let seq = b.get(i..i + n)?;
    if !(lo..=hi).contains(&seq[1]) || !seq[2..].iter().all(|c| (0x80..=0xBF).contains(c)) {
        return None;
    }
    Some(n)
}

/// Decodes a string's raw content the way Go's `encoding/json` does, appending UTF-8 to `out`.
/// The content was validated by the parser.
fn decode_str(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c == b'\\' {
            let esc = raw[i + 1];
            i += 2;
            let byte = match esc {
                b'"' => b'"',
                b'\\' => b'\\',
                b'/' => b'/',
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                _ => {
                    // 'u': validated by the parser.
                    let unit = hex4(raw, i).unwrap_or(0xFFFD);
                    i += 4;
                    let ch = if (0xD800..0xE000).contains(&unit) {
                        // A surrogate: only a high one directly followed by a low `\u` escape is a
                        // character; anything else is U+FFFD and the next escape stands alone.
                        let low = (raw.get(i..i + 2) == Some(b"\\u"))
                            .then(|| hex4(raw, i + 2))
                            .flatten();
                        match low {
                            Some(lo) if unit < 0xDC00 && (0xDC00..0xE000).contains(&lo) => {
                                i += 6;
                                char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (lo - 0xDC00))
                                    .unwrap_or('\u{FFFD}')
                            }
                            _ => '\u{FFFD}',
                        }
                    } else {
                        char::from_u32(unit).unwrap_or('\u{FFFD}')
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
            };
            out.push(byte);
        } else if c < 0x80 {
            let run = raw[i..]
                .iter()
                .position(|&b| b == b'\\' || b >= 0x80)
                .map_or(raw.len(), |n| i + n);
            out.extend_from_slice(&raw[i..run]);
            i = run;
        } else if let Some(n) = utf8_len_at(raw, i) {
            out.extend_from_slice(&raw[i..i + n]);
            i += n;
        } else {
            out.extend_from_slice("\u{FFFD}".as_bytes());
            i += 1;
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Which of Go's two encoders writes the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `encoding/json`: HTML-safe strings, numbers as their text.
    GoStd,
    /// `jsoniter.ConfigFastest`: minimal escaping, numbers through float64 with 6 decimals.
    JsoniterFastest,
}

impl Style {
    fn verbatim_flag(self) -> u8 {
        match self {
            Style::GoStd => VERBATIM_GO,
            Style::JsoniterFastest => VERBATIM_JSONITER,
        }
    }
}

/// Appends `s` (valid UTF-8) as a JSON string the way Go's `encoding/json` writes it.
pub(crate) fn write_go_str(s: &[u8], out: &mut Vec<u8>) {
    write_str(s, Style::GoStd, out);
}

/// Appends `s` (valid UTF-8) as a JSON string in `style`.
fn write_str(s: &[u8], style: Style, out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let escape: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 if style == Style::GoStd => Some(b"\\b"),
            0x0c if style == Style::GoStd => Some(b"\\f"),
            0x00..=0x1f => Some(b""), // \u00xx below
            b'<' | b'>' | b'&' if style == Style::GoStd => Some(b""),
            0xE2 if style == Style::GoStd
                && s.get(i + 1) == Some(&0x80)
                && matches!(s.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(b"\\u202");
                out.push(if s[i + 2] == 0xA8 { b'8' } else { b'9' });
                i += 3;
                start = i;
                continue;
            }
            _ => None,
        };
        match escape {
            None => i += 1,
            Some(text) => {
                out.extend_from_slice(&s[start..i]);
                if text.is_empty() {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(c >> 4) as usize]);
                    out.push(HEX[(c & 0xF) as usize]);
                } else {
                    out.extend_from_slice(text);
                }
                i += 1;
                start = i;
            }
        }
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// jsoniter's `WriteFloat64Lossy`: at most 6 decimals, trailing zeros dropped; values above
/// 0x4ffffff through `WriteFloat64` (shortest exact form, exponent from 1e21).
fn write_lossy_f64(mut v: f64, out: &mut Vec<u8>) {
    if v < 0.0 {
        out.push(b'-');
        v = -v;
    }
    if v > 0x4ff_ffff as f64 {
        if v >= 1e21 {
            // Go's 'e' format: mantissa digits, then e+NN.
            let text = format!("{v:e}");
            let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
            out.extend_from_slice(mantissa.as_bytes());
            out.push(b'e');
            if !exp.starts_with('-') {
                out.push(b'+');
            }
            out.extend_from_slice(exp.as_bytes());
        } else {
            out.extend_from_slice(format!("{v}").as_bytes());
        }
        return;
    }
    const EXP: u64 = 1_000_000;
    let lval = (v * EXP as f64 + 0.5) as u64;
    push_u64(out, lval / EXP);
    let mut fval = lval % EXP;
    if fval == 0 {
        return;
    }
    out.push(b'.');
    // Six digits with leading zeros, then the trailing zeros dropped.
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (fval % 10) as u8;
        fval /= 10;
    }
    let len = digits.iter().rposition(|&d| d != b'0').map_or(0, |p| p + 1);
    out.extend_from_slice(&digits[..len]);
}

/// An object member's key while writing: the input's bytes (plain), or decoded bytes kept in the
/// encoder.
#[derive(Debug, Clone, Copy)]
enum Key {
    /// The input's bytes, with the styles they are verbatim in.
    Input(Span, u8),
    Decoded(Span),
}

fn key_bytes<'a>(key: Key, input: &'a [u8], decoded: &'a [u8]) -> &'a [u8] {
    match key {
        Key::Input(span, _) => span.of(input),
        Key::Decoded(span) => span.of(decoded),
    }
}

/// The first 8 bytes of a key as a big-endian number (zero-padded): comparing these orders keys by
/// their bytes except among keys sharing 8 bytes (or ending in NULs), which then compare in full.
fn prefix(key: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = key.len().min(8);
    word[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(word)
}

/// An object member while writing.
#[derive(Debug, Clone, Copy)]
struct Entry {
    prefix: u64,
    key: Key,
    value: u32,
}

/// Re-encodes parsed values; keeps its buffers between calls, so steady-state writing allocates
/// nothing but the output.
#[derive(Debug, Default)]
struct Encoder {
    /// Members of the objects being written, innermost last.
    entries: Vec<Entry>,
    /// Decoded keys that had escapes, innermost last.
    keys: Vec<u8>,
    /// Decoded text of a string that had escapes.
    text: Vec<u8>,
}

impl Encoder {
    fn cmp_keys(&self, a: &Entry, b_prefix: u64, b: &[u8], input: &[u8]) -> std::cmp::Ordering {
        a.prefix
            .cmp(&b_prefix)
            .then_with(|| key_bytes(a.key, input, &self.keys).cmp(b))
    }

    /// Pushes an object's members sorted by key bytes, keeping only the last of equal keys (Go's
    /// decoder overwrites); returns where they start in `entries`.
    fn push_members(&mut self, tree: &Tree, input: &[u8], first: u32, len: u32) -> usize {
        let mark = self.entries.len();
        for m in &tree.members[first as usize..(first + len) as usize] {
            let key = if m.key_plain {
                Key::Input(m.key, m.key_verbatim)
            } else {
                let start = self.keys.len() as u32;
                decode_str(m.key.of(input), &mut self.keys);
                Key::Decoded(Span {
                    start,
                    end: self.keys.len() as u32,
                })
            };
            let prefix = prefix(key_bytes(key, input, &self.keys));
            self.entries.push(Entry {
                prefix,
                key,
                value: m.value,
            });
        }
        let keys = &self.keys;
        let same = |a: &Entry, b: &Entry| {
            a.prefix == b.prefix && key_bytes(a.key, input, keys) == key_bytes(b.key, input, keys)
        };
        // Stable: among equal keys the input order stays, so the last one is the input's last.
        self.entries[mark..].sort_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| key_bytes(a.key, input, keys).cmp(key_bytes(b.key, input, keys)))
        });
        let end = self.entries.len();
        let mut kept = mark;
        for n in mark..end {
            if n + 1 < end && same(&self.entries[n], &self.entries[n + 1]) {
                continue;
            }
            self.entries[kept] = self.entries[n];
            kept += 1;
        }
        self.entries.truncate(kept);
        mark
    }

    fn write_key(&self, entry: &Entry, input: &[u8], style: Style, out: &mut Vec<u8>) {
        match entry.key {
            Key::Input(span, verbatim) if verbatim & style.verbatim_flag() != 0 => {
                out.push(b'"');
                out.extend_from_slice(span.of(input));
                out.push(b'"');
            }
            key => write_str(key_bytes(key, input, &self.keys), style, out),
        }
        out.push(b':');
    }

    /// Writes the members `entries[mark..]` as an object and pops them.
    fn write_members(
        &mut self,
        tree: &Tree,
        input: &[u8],
        mark: usize,
        style: Style,
        out: &mut Vec<u8>,
    ) -> Result<(), JsonError> {
        out.push(b'{');
        for n in mark..self.entries.len() {
            if n > mark {
                out.push(b',');
            }
            let entry = self.entries[n];
            self.write_key(&entry, input, style, out);
            self.node(tree, input, entry.value, style, out)?;
        }
        out.push(b'}');
        self.entries.truncate(mark);
        Ok(())
    }

    fn node(
        &mut self,
        tree: &Tree,
        input: &[u8],
        id: u32,
        style: Style,
        out: &mut Vec<u8>,
    ) -> Result<(), JsonError> {
        match tree.nodes[id as usize] {
            Node::Null => out.extend_from_slice(b"null"),
            Node::True => out.extend_from_slice(b"true"),
            Node::False => out.extend_from_slice(b"false"),
            Node::Num(span) => match style {
                Style::GoStd => out.extend_from_slice(span.of(input)),
                Style::JsoniterFastest => {
                    // The parser checked the grammar, so this is ASCII and parses; Go's ParseFloat
                    // refuses what overflows float64, and so do we.
                    let v = std::str::from_utf8(span.of(input))
                        .ok()
                        .and_then(|text| text.parse::<f64>().ok())
                        .filter(|v| v.is_finite())
                        .ok_or(JsonError {
                            at: span.start as usize,
                            what: "number out of float64 range",
                        })?;
                    write_lossy_f64(v, out);
                }
            },
            Node::Str {
                raw,
                plain,
                verbatim,
            } => {
                if verbatim & style.verbatim_flag() != 0 {
                    out.push(b'"');
                    out.extend_from_slice(raw.of(input));
                    out.push(b'"');
                } else if plain {
                    write_str(raw.of(input), style, out);
                } else {
                    let mut text = std::mem::take(&mut self.text);
                    text.clear();
                    decode_str(raw.of(input), &mut text);
                    write_str(&text, style, out);
                    self.text = text;
                }
            }
            Node::Arr { first, len } => {
                out.push(b'[');
                for n in 0..len {
                    if n > 0 {
                        out.push(b',');
                    }
                    let kid = tree.kids[(first + n) as usize];
                    self.node(tree, input, kid, style, out)?;
                }
                out.push(b']');
            }
            Node::Obj { first, len } => {
                let keys_mark = self.keys.len();
                let mark = self.push_members(tree, input, first, len);
                self.write_members(tree, input, mark, style, out)?;
                self.keys.truncate(keys_mark);
            }
        }
        Ok(())
    }
}

/// Appends to `out` the bytes Dapr's Redis state store keeps as `data` when `value` is posted as an
/// item's JSON `value` to daprd's HTTP state API (see the module docs).
pub fn canonical_state_value(value: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    let mut tree = Tree::default();
    let root = tree.parse(value)?;
    Encoder::default().node(&tree, value, root, Style::JsoniterFastest, out)
}

/// Dapr's defaults for attributes an event lacks (components-contrib `pubsub/envelope.go`).
const DEFAULT_SOURCE: &str = "Dapr";
const DEFAULT_TYPE: &str = "com.dapr.event.sent";
const DEFAULT_SPECVERSION: &str = "1.0";

/// When daprd fills an attribute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// If the event lacks it.
    Absent,
    /// If the event lacks it or has `null`.
    Nil,
    /// Always, replacing the event's.
    Always,
}

/// What daprd fills in, sorted by name (the order they merge into the sorted attributes).
const FILLED: [(&str, When); 9] = [
    ("pubsubname", When::Always),
    ("source", When::Nil),
    ("specversion", When::Nil),
    ("time", When::Absent),
    ("topic", When::Always),
    ("traceid", When::Nil),
    ("traceparent", When::Nil),
    ("tracestate", When::Nil),
    ("type", When::Nil),
];

/// Turns complete CloudEvents (as WSM builds them) into the envelope daprd would write to the bus
/// for one pub/sub component, reusing its buffers across a batch.
#[derive(Debug)]
pub struct EnvelopeWriter {
    /// For each of [`FILLED`]: its name's prefix, `"name":`, and the value filled in, encoded
    /// (the topic's is set per call).
    filled: [(u64, Vec<u8>, Vec<u8>); 9],
    /// The topic whose encoding `filled` holds.
    topic: String,
    tree: Tree,
    encoder: Encoder,
}

/// Index of `topic` in [`FILLED`].
const TOPIC: usize = 4;

impl EnvelopeWriter {
    /// A writer for events published through the pub/sub component `pubsub_name`. Events without
    /// `time` get the time of this call (daprd's `time.Now().Format(time.RFC3339)`, taken once per
    /// writer, i.e. per batch).
    pub fn new(pubsub_name: &str) -> Self {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let filled = FILLED.map(|(name, _)| {
            let mut key = Vec::with_capacity(name.len() + 3);
            write_str(name.as_bytes(), Style::GoStd, &mut key);
            key.push(b':');
            let value: &str = match name {
                "pubsubname" => pubsub_name,
                "source" => DEFAULT_SOURCE,
                "specversion" => DEFAULT_SPECVERSION,
                "time" => &now,
                "type" => DEFAULT_TYPE,
                // The topic is set per call; WSM has no trace span of its own.
                _ => "",
            };
            let mut encoded = Vec::new();
            write_str(value.as_bytes(), Style::GoStd, &mut encoded);
            (prefix(name.as_bytes()), key, encoded)
        });
        let mut writer = Self {
            filled,
            topic: String::new(),
            tree: Tree::default(),
            encoder: Encoder::default(),
        };
        writer.set_topic("");
        writer
    }

    fn set_topic(&mut self, topic: &str) {
        self.topic.clear();
        self.topic.push_str(topic);
        let encoded = &mut self.filled[TOPIC].2;
        encoded.clear();
        write_str(topic.as_bytes(), Style::GoStd, encoded);
    }

    /// Appends to `out` the envelope daprd writes for `event` published to `topic`: `topic` and
    /// `pubsubname` set, `time` added when absent, `traceid`/`traceparent`/`tracestate` added when
    /// absent or null, `source`/`type`/`specversion` defaulted when absent or null. WSM has no trace
    /// span of its own, so the trace attributes it fills are empty strings, as daprd writes for a
    /// request without span context; trace attributes the event carries are kept.
    pub fn write(&mut self, event: &[u8], topic: &str, out: &mut Vec<u8>) -> Result<(), JsonError> {
        if topic != self.topic {
            self.set_topic(topic);
        }
        let root = self.tree.parse(event)?;
        let Node::Obj { first, len } = self.tree.nodes[root as usize] else {
            return Err(JsonError {
                at: 0,
                what: "a CloudEvent must be a JSON object",
            });
        };
        let tree = &self.tree;
        let enc = &mut self.encoder;
        enc.keys.clear();
        enc.entries.clear();
        enc.push_members(tree, event, first, len);
        let end = enc.entries.len();

        // Merge the event's sorted attributes with the sorted ones daprd fills in.
        out.push(b'{');
        let (mut i, mut j) = (0, 0);
        let mut comma = false;
        while i < end || j < FILLED.len() {
            let order = match (i < end, j < FILLED.len()) {
                (true, true) => {
                    let (fill_prefix, _, _) = &self.filled[j];
                    enc.cmp_keys(&enc.entries[i], *fill_prefix, FILLED[j].0.as_bytes(), event)
                }
                (true, false) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            if comma {
                out.push(b',');
            }
            comma = true;
            match order {
                std::cmp::Ordering::Less => {
                    let entry = enc.entries[i];
                    enc.write_key(&entry, event, Style::GoStd, out);
                    enc.node(tree, event, entry.value, Style::GoStd, out)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let (_, key, value) = &self.filled[j];
                    out.extend_from_slice(key);
                    out.extend_from_slice(value);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let entry = enc.entries[i];
                    let is_null = matches!(tree.nodes[entry.value as usize], Node::Null);
                    let fill = match FILLED[j].1 {
                        When::Always => true,
                        When::Nil => is_null,
                        When::Absent => false,
                    };
                    if fill {
                        let (_, key, value) = &self.filled[j];
                        out.extend_from_slice(key);
                        out.extend_from_slice(value);
                    } else {
                        enc.write_key(&entry, event, Style::GoStd, out);
                        enc.node(tree, event, entry.value, Style::GoStd, out)?;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(input: &str) -> String {
        let mut out = Vec::new();
        canonical_state_value(input.as_bytes(), &mut out).expect("valid JSON");
        String::from_utf8(out).expect("UTF-8")
    }

    fn envelope(input: &[u8]) -> String {
        let mut out = Vec::new();
        EnvelopeWriter::new("ps")
            .write(input, "tp", &mut out)
            .expect("valid event");
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

    #[test]
    fn envelopes_are_go_marshalled_with_dapr_fields_filled() {
        let event = br#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"T",
            "datacontenttype":"text/plain","data":"<b>&\u2028\/","websocketid":"w","seq":1.50}"#;
        assert_eq!(
            envelope(event),
            concat!(
                r#"{"data":"\u003cb\u003e\u0026\u2028/","datacontenttype":"text/plain","id":"1","#,
                r#""pubsubname":"ps","seq":1.50,"source":"s","specversion":"1.0","time":"T","#,
                r#""topic":"tp","traceid":"","traceparent":"","tracestate":"","type":"t","#,
                r#""websocketid":"w"}"#
            )
        );
    }

    #[test]
    fn envelopes_keep_trace_fields_and_override_topic() {
        let event = br#"{"id":"1","topic":"other","pubsubname":"x","traceparent":"00-ab-cd-01",
            "source":null,"data":{"b":[1e2,{"d":0,"c":0}],"a":"\b\f"}}"#;
        let got = envelope(event);
        let time_start = got.find(r#""time":""#).expect("time filled") + 8;
        let time = &got[time_start..time_start + 20];
        assert!(time.ends_with('Z') && time.len() == 20, "{time}");
        assert_eq!(
            got.replace(time, "NOW"),
            concat!(
                r#"{"data":{"a":"\b\f","b":[1e2,{"c":0,"d":0}]},"id":"1","pubsubname":"ps","#,
                r#""source":"Dapr","specversion":"1.0","time":"NOW","topic":"tp","traceid":"","#,
                r#""traceparent":"00-ab-cd-01","tracestate":"","type":"com.dapr.event.sent"}"#
            )
        );
    }

    #[test]
    fn envelopes_must_be_objects() {
        let mut writer = EnvelopeWriter::new("ps");
        for bad in [&b"[1]"[..], b"\"x\"", b"null", b"{"] {
            assert!(writer.write(bad, "tp", &mut Vec::new()).is_err());
        }
        // The writer is still usable after errors.
        let mut out = Vec::new();
        writer.write(b"{}", "tp", &mut out).unwrap();
        assert!(out.starts_with(br#"{"pubsubname":"ps","source":"Dapr""#));
    }
}
