//! Secrets out of sight: what a URL shows wherever it leaves the trusted side (List, published
//! frames' `websocketUrl`, lifecycle events, errors, logs). The dial uses the real URL, and the
//! record in the shared store keeps it: the store is the trusted side, which a successor instance
//! needs to reopen the socket.
//!
//! The rule, one for every place:
//! - userinfo (`user:password@`) is always replaced by `REDACTED@`;
//! - a query value is replaced by `REDACTED` when its key names a secret: the default list below,
//!   plus `--redact-query-params`; keys match case-insensitively, ignoring `_`, `-` and `.`;
//! - a path segment that looks like a key (32 or more letters, digits, `-` or `_`, with both
//!   letters and digits, as Binance's `/ws/<listenKey>`) is replaced by `REDACTED`.

use std::sync::Arc;

/// What redacted parts read as.
pub const REDACTED: &str = "REDACTED";

/// Query keys that are redacted when they equal one of these (normalized).
const SECRET_KEYS: &[&str] = &[
    "key",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "listenkey",
    "token",
    "accesstoken",
    "refreshtoken",
    "authtoken",
    "idtoken",
    "jwt",
    "bearer",
    "auth",
    "authorization",
    "signature",
    "sig",
    "sign",
    "secret",
    "clientsecret",
    "password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "session",
    "sessionid",
    "sessiontoken",
    "credential",
    "credentials",
    "ticket",
    "otp",
];

/// Query keys that are redacted when they contain one of these (normalized).
const SECRET_PARTS: &[&str] = &[
    "token",
    "secret",
    "signature",
    "password",
    "passphrase",
    "apikey",
    "listenkey",
    "credential",
];

/// The redaction rule, with the operator's extra keys. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct UrlRedactor {
    extra: Arc<[String]>,
}

impl UrlRedactor {
    /// The default rule plus `extra` query keys (`--redact-query-params`).
    pub fn new<I, S>(extra: I) -> UrlRedactor
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let extra: Vec<String> = extra
            .into_iter()
            .map(|k| normalize(k.as_ref()))
            .filter(|k| !k.is_empty())
            .collect();
        UrlRedactor {
            extra: extra.into(),
        }
    }

    /// Whether a query value under `key` is redacted.
    pub(crate) fn is_secret_key(&self, key: &str) -> bool {
        let key = normalize(key);
        SECRET_KEYS.contains(&key.as_str())
            || SECRET_PARTS.iter().any(|part| key.contains(part))
            || self.extra.contains(&key)
    }

    /// `url` as it may be shown. A string that is not a URL is shown only up to its authority,
    /// without userinfo, since nothing in it can be told apart.
    pub fn redact(&self, url: &str) -> String {
        let Ok(mut parsed) = url::Url::parse(url) else {
            return self.redact_unparsed(url);
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // Cannot fail for a URL with a host, which a userinfo needs.
            let _ = parsed.set_password(None);
            let _ = parsed.set_username(REDACTED);
        }
        let path = parsed.path();
        if path.split('/').any(looks_like_key) {
            let redacted: Vec<&str> = path
                .split('/')
                .map(|segment| {
                    if looks_like_key(segment) {
                        REDACTED
                    } else {
                        segment
                    }
                })
                .collect();
            let redacted = redacted.join("/");
            parsed.set_path(&redacted);
        }
        if let Some(query) = parsed.query() {
            let query = self.redact_query(query);
            parsed.set_query(Some(&query));
        }
        parsed.into()
    }

    fn redact_query(&self, query: &str) -> String {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if self.is_secret_key(&decode(key)) => format!("{key}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        pairs.join("&")
    }

    /// Scheme and host only, without userinfo: for strings the URL parser refused.
    fn redact_unparsed(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        let shown = if scheme.is_empty() {
            host.to_owned()
        } else {
            format!("{scheme}://{host}")
        };
        let shown = crate::text::excerpt(&shown, crate::text::SHORT);
        if authority_end < rest.len() {
            format!("{shown}/{REDACTED}")
        } else {
            shown
        }
    }
}

/// Lowercase, without `_`, `-` and `.`: `api_key`, `X-MBX-APIKEY` and `apiKey` all match.
fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// A query key as written, decoded (`+` is a space in a query).
fn decode(key: &str) -> String {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// A path segment that is a key rather than a name: long, of key characters only, mixing letters
/// and digits (stream names such as `btcusdt@depth` have an `@`, `ws` and `stream` are short).
fn looks_like_key(segment: &str) -> bool {
    segment.len() >= 32
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && segment.bytes().any(|b| b.is_ascii_digit())
        && segment.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_always_redacted() {
        let r = UrlRedactor::default();
        assert_eq!(
            r.redact("wss://user:secret@feed.example:9443/ws"),
            "wss://REDACTED@feed.example:9443/ws"
        );
        assert_eq!(
            r.redact("wss://justuser@feed.example/ws"),
            "wss://REDACTED@feed.example/ws"
        );
    }

    #[test]
    fn secret_looking_query_values_are_redacted_and_others_kept() {
        let r = UrlRedactor::default();
        assert_eq!(
            r.redact("wss://h/ws?apiKey=abc&listenKey=def&symbol=BTCUSDT&token=x&api_key=y"),
            "wss://h/ws?apiKey=REDACTED&listenKey=REDACTED&symbol=BTCUSDT&token=REDACTED&api_key=REDACTED"
        );
        assert_eq!(
            r.redact("wss://h/ws?signature=s&X-Amz-Signature=t&timestamp=1&flag"),
            "wss://h/ws?signature=REDACTED&X-Amz-Signature=REDACTED&timestamp=1&flag"
        );
        assert_eq!(
            r.redact("wss://h/ws?%74oken=x"),
            "wss://h/ws?%74oken=REDACTED"
        );
    }

    #[test]
    fn the_operator_extends_the_list() {
        let r = UrlRedactor::new(["venue_id"]);
        assert_eq!(
            r.redact("wss://h/ws?venueId=7&symbol=X"),
            "wss://h/ws?venueId=REDACTED&symbol=X"
        );
        assert!(!UrlRedactor::default().is_secret_key("venueId"));
    }

    #[test]
    fn key_like_path_segments_are_redacted() {
        let r = UrlRedactor::default();
        let key = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1";
        assert_eq!(
            r.redact(&format!("wss://stream.binance.com:9443/ws/{key}")),
            "wss://stream.binance.com:9443/ws/REDACTED"
        );
        assert_eq!(
            r.redact("wss://stream.binance.com:9443/stream?streams=btcusdt@depth"),
            "wss://stream.binance.com:9443/stream?streams=btcusdt@depth"
        );
    }

    #[test]
    fn strings_that_are_not_urls_show_only_their_host() {
        let r = UrlRedactor::default();
        assert_eq!(
            r.redact("ws://u:p@host:99999/ws?token=x"),
            "ws://host:99999/REDACTED"
        );
        assert_eq!(r.redact("not a url"), "not a url");
    }
}
