//! Go's JSON decoder: a flat tree of spans into the input, strings decoded the way Go decodes them.

use super::{JsonError, MAX_DEPTH};

/// Byte range of the input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    pub(crate) fn of<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        &input[self.start as usize..self.end as usize]
    }
}

/// One decoded JSON value; containers point into the tree's `kids`/`members`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Node {
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
pub(crate) struct Member {
    pub(crate) key: Span,
    pub(crate) key_plain: bool,
    pub(crate) key_verbatim: u8,
    pub(crate) value: u32,
}

/// The string's raw bytes are exactly what Go's `encoding/json` writes for it.
pub(crate) const VERBATIM_GO: u8 = 1;
/// The string's raw bytes are exactly what `jsoniter.ConfigFastest` writes for it.
pub(crate) const VERBATIM_JSONITER: u8 = 2;

/// What the string scanner must look at: 0 nothing, 1 `"`, 2 `\`, 3 a control character,
/// 4 a character Go escapes for HTML (`<`, `>`, `&`), 5 the start of a multi-byte sequence.
pub(crate) const SCAN: [u8; 256] = {
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
pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
    pub(crate) kids: Vec<u32>,
    pub(crate) members: Vec<Member>,
    pub(crate) kid_stack: Vec<u32>,
    pub(crate) member_stack: Vec<Member>,
}

impl Tree {
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.kids.clear();
        self.members.clear();
        self.kid_stack.clear();
        self.member_stack.clear();
    }

    /// Parses `input` as exactly one JSON value (surrounding whitespace allowed); returns the root.
    pub(crate) fn parse(&mut self, input: &[u8]) -> Result<u32, JsonError> {
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

    pub(crate) fn push(&mut self, node: Node) -> u32 {
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }
}

pub(crate) struct Parser<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) i: usize,
}

impl Parser<'_> {
    pub(crate) fn err(&self, what: &'static str) -> JsonError {
        JsonError { at: self.i, what }
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    pub(crate) fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    pub(crate) fn value(&mut self, tree: &mut Tree, depth: usize) -> Result<u32, JsonError> {
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

    pub(crate) fn literal(
        &mut self,
        tree: &mut Tree,
        text: &[u8],
        node: Node,
    ) -> Result<u32, JsonError> {
        if self.b[self.i..].starts_with(text) {
            self.i += text.len();
            Ok(tree.push(node))
        } else {
            Err(self.err("invalid literal"))
        }
    }

    pub(crate) fn object(&mut self, tree: &mut Tree, depth: usize) -> Result<u32, JsonError> {
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

    pub(crate) fn array(&mut self, tree: &mut Tree, depth: usize) -> Result<u32, JsonError> {
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
    pub(crate) fn string(&mut self) -> Result<(Span, bool, u8), JsonError> {
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
    pub(crate) fn number(&mut self) -> Result<Span, JsonError> {
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

    pub(crate) fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }
}

/// Whether any of the 8 bytes in `word` is one [`SCAN`] flags (exact, no false positives).
#[inline]
pub(crate) fn needs_attention(word: u64) -> bool {
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
pub(crate) fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    let mut value = 0u32;
    for &d in digits {
        value = value * 16 + (d as char).to_digit(16)?;
    }
    Some(value)
}

/// Length of the valid UTF-8 sequence starting at `i`, by Go's `utf8.DecodeRune` rules (no
/// overlongs, surrogates or code points above U+10FFFF); `None` for an invalid byte.
pub(crate) fn utf8_len_at(b: &[u8], i: usize) -> Option<usize> {
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
pub(crate) fn decode_str(raw: &[u8], out: &mut Vec<u8>) {
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
