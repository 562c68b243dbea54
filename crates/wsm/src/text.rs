//! Caller input in errors and logs: never more than a short prefix of it, and no control
//! characters, so a 20 MB URL or a header full of newlines cannot flood a log or forge lines in it.

/// At most `max` bytes of `s` (cut on a character boundary, with the full length said when cut),
/// control characters escaped.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 24);
    for c in s[..end].chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if end < s.len() {
        out.push_str(&format!("… ({} bytes in all)", s.len()));
    }
    out
}

/// How much of a URL, header name or instance id errors and logs show.
pub(crate) const SHORT: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_cut_on_a_character_boundary_and_says_its_length() {
        assert_eq!(excerpt("short", 10), "short");
        let long = "é".repeat(10);
        assert_eq!(excerpt(&long, 5), "éé… (20 bytes in all)");
        assert_eq!(excerpt("a\nb\u{1b}", 10), "a\\nb\\u{1b}");
    }
}
