//! The upstream URL, checked once at `Connect` and again at every dial: `ws`/`wss`, a host, a
//! port in range, no fragment, at most [`MAX_URL_BYTES`]. Parsing follows the WHATWG URL rules
//! (the `url` crate): the scheme and host are case-insensitive and come out lowercase, an
//! internationalized host comes out in punycode, the default port is dropped.
//!
//! Every failed check is the caller's mistake, so it is `INVALID_ARGUMENT` (clients retry
//! `UNAVAILABLE`, and retrying a bad URL helps nobody).

use url::{Host, Url};

use crate::security::UrlRedactor;

/// Longest accepted URL. Long stream lists belong in SUBSCRIBE messages (`on_connect`), which
/// venues recommend anyway.
pub(crate) const MAX_URL_BYTES: usize = 8 << 10;

/// A checked upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    url: Url,
}

impl Target {
    /// Checks `url`. The error says what is wrong, showing the URL only redacted and cut short.
    pub fn parse(url: &str, redact: &UrlRedactor) -> Result<Target, String> {
        if url.trim().is_empty() {
            return Err("URL is required".into());
        }
        if url.len() > MAX_URL_BYTES {
            return Err(format!(
                "the URL is {} bytes long; at most {MAX_URL_BYTES} are accepted (put long stream \
                 lists into SUBSCRIBE messages instead)",
                url.len()
            ));
        }
        let shown = || crate::text::excerpt(&redact.redact(url), crate::text::SHORT);
        let invalid = |reason: &str| format!("invalid URL {}: {reason}", shown());
        let parsed = Url::parse(url).map_err(|e| match e {
            url::ParseError::InvalidPort => invalid("the port must be a number from 1 to 65535"),
            url::ParseError::IdnaError => {
                invalid("the host is not a valid internationalized domain name")
            }
            url::ParseError::RelativeUrlWithoutBase => {
                invalid("it is not an absolute URL (ws://host/path or wss://host/path)")
            }
            other => invalid(&other.to_string()),
        })?;
        if !matches!(parsed.scheme(), "ws" | "wss") {
            return Err(format!("URL must use ws:// or wss://, got {}", shown()));
        }
        match parsed.host() {
            None => return Err(invalid("the URL has no host")),
            Some(Host::Domain("")) => return Err(invalid("the URL has no host")),
            Some(_) => {}
        }
        if parsed.port() == Some(0) {
            return Err(invalid("the port must be a number from 1 to 65535"));
        }
        if parsed.fragment().is_some() {
            return Err(invalid(
                "a WebSocket URL has no #fragment (RFC 6455 section 3)",
            ));
        }
        Ok(Target { url: parsed })
    }

    /// The URL, normalized.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.url.scheme() == "wss"
    }

    /// The host as the URL writes it: IPv6 in brackets, IDN in punycode.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The host as a certificate names it: IPv6 without brackets.
    pub(crate) fn tls_name(&self) -> String {
        match self.url.host() {
            Some(Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => String::new(),
        }
    }

    /// The port, or the scheme's default (80, 443).
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }
}

impl From<Target> for String {
    fn from(target: Target) -> String {
        target.url.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_mistakes_are_named() {
        let err = |url: &str| Target::parse(url, &UrlRedactor::default()).expect_err(url);
        assert!(err("ws://h:65616/ws").contains("port"));
        assert!(err("ws://h:0/ws").contains("port"));
        assert_eq!(
            err("http://u:p@h/ws?token=t"),
            "URL must use ws:// or wss://, got http://REDACTED@h/ws?token=REDACTED"
        );
        assert_eq!(
            err("ws://u:p@h:65616/ws"),
            "invalid URL ws://h:65616/REDACTED: the port must be a number from 1 to 65535"
        );
        assert!(err("ws://").contains("host"), "{}", err("ws://"));
        assert!(
            err("ws://:80/ws").contains("host"),
            "{}",
            err("ws://:80/ws")
        );
        assert!(err("wss://xn--ls8h-.com/").contains("internationalized"));
        assert!(err("ws://h/ws#frag").contains("fragment"));
        assert!(err("feed.example/ws").contains("absolute"));
        assert!(err(&format!("ws://h/{}", "a".repeat(MAX_URL_BYTES))).contains("at most 8192"));
        assert!(err("  ").contains("required"));
    }

    fn parse(url: &str) -> Result<Target, String> {
        Target::parse(url, &UrlRedactor::default())
    }

    #[test]
    fn scheme_and_host_case_and_idn_are_normalized() {
        let t = parse("WSS://Feed.Example:9443/ws?Symbol=X").expect("valid");
        assert_eq!(t.as_str(), "wss://feed.example:9443/ws?Symbol=X");
        assert!(t.is_tls());
        assert_eq!((t.host(), t.port()), ("feed.example", 9443));
        let idn = parse("wss://bücher.example/ws").expect("IDN");
        assert_eq!(idn.host(), "xn--bcher-kva.example");
        assert_eq!(idn.port(), 443);
        let v6 = parse("ws://[::1]:9000/ws").expect("IPv6");
        assert_eq!(
            (v6.host(), v6.tls_name(), v6.port()),
            ("[::1]", "::1".into(), 9000)
        );
        assert_eq!(parse("ws://h").expect("no path").as_str(), "ws://h/");
    }
}
