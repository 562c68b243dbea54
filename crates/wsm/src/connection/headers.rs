//! The caller's handshake headers and subprotocols: bounded in number and size (a handshake is one
//! HTTP request, and an unbounded map would be an unbounded allocation on the caller's say), valid
//! as HTTP, and not one of the headers the WebSocket handshake itself writes.

use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

/// Most handshake headers per connection.
pub(crate) const MAX_HEADERS: usize = 100;
/// Most bytes of header names, values and subprotocols together.
pub(crate) const MAX_HEADER_BYTES: usize = 16 << 10;
/// Most subprotocols offered.
pub(crate) const MAX_SUBPROTOCOLS: usize = 32;

/// Headers the handshake writes itself: a caller's copy would break it or contradict it.
const RESERVED: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "content-length",
    "transfer-encoding",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
];

/// Checks a Connect request's headers and subprotocols; the error names the offending header
/// (cut short), never a value (values may be secrets).
pub fn validate<'a>(
    headers: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
    subprotocols: &[String],
) -> Result<(), String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!(
            "at most {MAX_HEADERS} handshake headers per connection, got {}",
            headers.len()
        ));
    }
    if subprotocols.len() > MAX_SUBPROTOCOLS {
        return Err(format!(
            "at most {MAX_SUBPROTOCOLS} subprotocols per connection, got {}",
            subprotocols.len()
        ));
    }
    let mut total: usize = subprotocols.iter().map(String::len).sum();
    for (name, value) in headers {
        total = total.saturating_add(name.len() + value.len());
        header(name, value)
            .map_err(|reason| format!("header {}: {reason}", crate::text::excerpt(name, 64)))?;
    }
    if total > MAX_HEADER_BYTES {
        return Err(format!(
            "handshake headers and subprotocols have at most {MAX_HEADER_BYTES} bytes in all"
        ));
    }
    for protocol in subprotocols {
        let token = !protocol.is_empty()
            && protocol
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !token {
            return Err(format!(
                "subprotocol {:?} is not a valid token",
                crate::text::excerpt(protocol, 64)
            ));
        }
    }
    Ok(())
}

/// One header as sent, or why it cannot be.
pub(super) fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "the name is not a valid HTTP header name".to_owned())?;
    if RESERVED.contains(&header.as_str()) {
        return Err(if header.as_str() == "sec-websocket-protocol" {
            "set subprotocols with the subprotocols field".to_owned()
        } else {
            "the WebSocket handshake sets this header itself".to_owned()
        });
    }
    let value = HeaderValue::from_str(value)
        .map_err(|_| "the value is not a valid header value".to_owned())?;
    Ok((header, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn check(headers: &BTreeMap<String, String>, protocols: &[&str]) -> Result<(), String> {
        let protocols: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
        validate(headers.iter(), &protocols)
    }

    #[test]
    fn headers_are_bounded_in_number_and_bytes() {
        let many: BTreeMap<String, String> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-h{i}"), "v".into()))
            .collect();
        assert!(check(&many, &[]).expect_err("101").contains("at most 100"));
        let big: BTreeMap<String, String> =
            [("x-big".to_owned(), "v".repeat(MAX_HEADER_BYTES))].into();
        assert!(check(&big, &[])
            .expect_err("16 KiB")
            .contains("16384 bytes"));
        let fine: BTreeMap<String, String> = (0..MAX_HEADERS)
            .map(|i| (format!("x-h{i}"), "v".into()))
            .collect();
        check(&fine, &["v1"]).expect("100 small headers");
    }

    #[test]
    fn invalid_and_reserved_headers_are_named_without_their_value() {
        let bad: BTreeMap<String, String> = [("bad name".to_owned(), "secret".to_owned())].into();
        let err = check(&bad, &[]).expect_err("space in the name");
        assert!(err.contains("bad name") && !err.contains("secret"), "{err}");
        let host: BTreeMap<String, String> = [("Host".to_owned(), "evil".to_owned())].into();
        assert!(check(&host, &[])
            .expect_err("Host")
            .contains("sets this header itself"));
        let newline: BTreeMap<String, String> = [("X-A".to_owned(), "a\nb".to_owned())].into();
        assert!(check(&newline, &[])
            .expect_err("newline")
            .contains("not a valid header value"));
        assert!(check(&BTreeMap::new(), &["a b"]).is_err());
    }
}
