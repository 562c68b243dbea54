//! Go's JSON encoders (`encoding/json` and jsoniter's `ConfigFastest`), writing a parsed tree.

use super::parse::*;
use super::JsonError;

pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

/// Which of Go's two encoders writes the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// `encoding/json`: HTML-safe strings, numbers as their text.
    GoStd,
    /// `jsoniter.ConfigFastest`: minimal escaping, numbers through float64 with 6 decimals.
    JsoniterFastest,
}

impl Style {
    pub(crate) fn verbatim_flag(self) -> u8 {
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
pub(crate) fn write_str(s: &[u8], style: Style, out: &mut Vec<u8>) {
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
pub(crate) fn write_lossy_f64(mut v: f64, out: &mut Vec<u8>) {
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
pub(crate) enum Key {
    /// The input's bytes, with the styles they are verbatim in.
    Input(Span, u8),
    Decoded(Span),
}

pub(crate) fn key_bytes<'a>(key: Key, input: &'a [u8], decoded: &'a [u8]) -> &'a [u8] {
    match key {
        Key::Input(span, _) => span.of(input),
        Key::Decoded(span) => span.of(decoded),
    }
}

/// The first 8 bytes of a key as a big-endian number (zero-padded): comparing these orders keys by
/// their bytes except among keys sharing 8 bytes (or ending in NULs), which then compare in full.
pub(crate) fn prefix(key: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = key.len().min(8);
    word[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(word)
}

/// An object member while writing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) prefix: u64,
    pub(crate) key: Key,
    pub(crate) value: u32,
}

/// Re-encodes parsed values; keeps its buffers between calls, so steady-state writing allocates
/// nothing but the output.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    /// Members of the objects being written, innermost last.
    pub(crate) entries: Vec<Entry>,
    /// Decoded keys that had escapes, innermost last.
    pub(crate) keys: Vec<u8>,
    /// Decoded text of a string that had escapes.
    pub(crate) text: Vec<u8>,
}

impl Encoder {
    pub(crate) fn cmp_keys(
        &self,
        a: &Entry,
        b_prefix: u64,
        b: &[u8],
        input: &[u8],
    ) -> std::cmp::Ordering {
        a.prefix
            .cmp(&b_prefix)
            .then_with(|| key_bytes(a.key, input, &self.keys).cmp(b))
    }

    /// Pushes an object's members sorted by key bytes, keeping only the last of equal keys (Go's
    /// decoder overwrites); returns where they start in `entries`.
    pub(crate) fn push_members(
        &mut self,
        tree: &Tree,
        input: &[u8],
        first: u32,
        len: u32,
    ) -> usize {
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

    pub(crate) fn write_key(&self, entry: &Entry, input: &[u8], style: Style, out: &mut Vec<u8>) {
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
    pub(crate) fn write_members(
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

    pub(crate) fn node(
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

/// `n` in decimal, appended.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
