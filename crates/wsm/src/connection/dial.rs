//! Opening one WebSocket: the URL and network policy checks, the TCP connection to the checked
//! addresses, TLS for `wss` (see [`super::tls`]), the handshake request (headers, subprotocols),
//! the read-buffer and message-size limits, and a timeout over all of it, so a slow resolver, TLS
//! peer or upstream handshake cannot hang a caller.
//!
//! The TCP connection is opened here, to exactly the addresses the policy accepted, and TLS and the
//! WebSocket handshake run over it (Host header and SNI still from the URL). Letting the WebSocket
//! library resolve the name again would open a window for DNS rebinding: a second answer could
//! point at an address that was never checked.
//!
//! Errors show the URL redacted and cut short (see [`crate::security::redact`]): they reach
//! callers, lifecycle events and logs.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::target::Target;
use super::{ConnectionOptions, ConnectionSpec};
use crate::security::{Refusal, ResolveError};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a handshake failed, for the operator (never includes header values: they may be secrets).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    /// The caller's URL is not one a WebSocket can be opened to.
    #[error("{0}")]
    InvalidUrl(String),
    /// A caller's handshake header or subprotocol cannot be sent.
    #[error("invalid header {name}: {reason}")]
    InvalidHeader { name: String, reason: String },
    /// The network policy refuses the target: the caller's request, not the upstream, is at fault.
    #[error(transparent)]
    Refused(Refusal),
    /// The host name did not resolve; it may later, so this is an upstream failure.
    #[error("could not resolve {host} for {url}: {reason}")]
    Resolve {
        url: String,
        host: String,
        reason: String,
    },
    #[error("handshake with {url} timed out after {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u128 },
    /// TLS failed: a certificate the trust store refuses, a wrong name, an expired certificate,
    /// no common TLS version, or no TLS at all on the port.
    #[error("TLS handshake with {url} failed: {reason}")]
    Tls { url: String, reason: String },
    #[error("handshake with {url} failed: {reason}")]
    Failed { url: String, reason: String },
}

impl DialError {
    /// Whether the caller's request is at fault (INVALID_ARGUMENT), rather than the upstream
    /// (UNAVAILABLE, worth retrying).
    pub(crate) fn is_callers_mistake(&self) -> bool {
        matches!(
            self,
            DialError::InvalidUrl(_) | DialError::InvalidHeader { .. } | DialError::Refused(_)
        )
    }
}

/// Socket settings: bounded buffers so 10k mostly idle connections stay cheap, and a message-size
/// limit so one upstream cannot make us allocate without bound.
pub(crate) fn socket_config(options: &ConnectionOptions) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(options.read_buffer_size)
        .write_buffer_size(0)
        .max_message_size(Some(options.max_message_size))
        .max_frame_size(Some(options.max_message_size))
}

/// Checks the target against `options.network`, connects to a checked address, runs TLS for
/// `wss` and the WebSocket handshake, all within `options.connect_timeout`.
pub async fn dial(spec: &ConnectionSpec, options: &ConnectionOptions) -> Result<Socket, DialError> {
    let shown = crate::text::excerpt(&options.redact.redact(&spec.url), crate::text::SHORT);
    let target = Target::parse(&spec.url, &options.redact).map_err(DialError::InvalidUrl)?;
    let request = request(&target, spec, &shown)?;
    let failed = |reason: String| DialError::Failed {
        url: shown.clone(),
        reason,
    };
    let handshake = async {
        let addrs = options
            .network
            .resolve(target.host(), target.port())
            .await
            .map_err(|e| match e {
                ResolveError::Refused(refusal) => DialError::Refused(refusal.with_target(&*shown)),
                ResolveError::Lookup { host, reason } => DialError::Resolve {
                    url: shown.clone(),
                    host,
                    reason,
                },
            })?;
        let tcp = connect(&addrs).await.map_err(failed)?;
        // TCP_NODELAY: requests and pongs should not wait for Nagle.
        tcp.set_nodelay(true)
            .map_err(|e| failed(format!("could not set TCP_NODELAY: {e}")))?;
        let stream = if target.is_tls() {
            let tls = options
                .tls
                .handshake(&target.tls_name(), tcp)
                .await
                .map_err(|reason| DialError::Tls {
                    url: shown.clone(),
                    reason,
                })?;
            MaybeTlsStream::Rustls(tls)
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        tokio_tungstenite::client_async_with_config(request, stream, Some(socket_config(options)))
            .await
            .map(|(socket, _response)| socket)
            .map_err(|e| match &e {
                // A TLS alert after the TLS handshake (TLS 1.3: a refused client certificate).
                WsError::Io(io) => match options.tls.explain(&target.tls_name(), io) {
                    Some(reason) => DialError::Tls {
                        url: shown.clone(),
                        reason,
                    },
                    None => failed(handshake_failed(e)),
                },
                _ => failed(handshake_failed(e)),
            })
    };
    match tokio::time::timeout(options.connect_timeout, handshake).await {
        Err(_) => Err(DialError::Timeout {
            url: shown.clone(),
            timeout_ms: options.connect_timeout.as_millis(),
        }),
        Ok(result) => result,
    }
}

/// Why the WebSocket handshake failed, in words an operator can act on.
fn handshake_failed(e: WsError) -> String {
    match e {
        // Tungstenite's guard against a slowloris upstream; its own text ("Attack attempt
        // detected") says neither what was seen nor that the upstream is at fault.
        WsError::AttackAttempt => "the upstream's handshake response came in too many small \
            pieces or was too large (over 64 reads averaging under 128 bytes, over 512 reads or \
            over 64 KiB), which is refused as a slowloris pattern"
            .to_owned(),
        other => other.to_string(),
    }
}

/// The handshake request: the URL (which sets Host), the caller's headers and subprotocols.
fn request(target: &Target, spec: &ConnectionSpec, shown: &str) -> Result<Request, DialError> {
    let mut request = target
        .as_str()
        .into_client_request()
        .map_err(|e| DialError::InvalidUrl(format!("invalid URL {shown}: {e}")))?;
    let headers = request.headers_mut();
    for (name, value) in &spec.headers {
        let (header, value) =
            super::headers::header(name, value).map_err(|reason| DialError::InvalidHeader {
                name: crate::text::excerpt(name, 64),
                reason,
            })?;
        headers.append(header, value);
    }
    if !spec.subprotocols.is_empty() {
        let offer = spec.subprotocols.join(", ");
        let value = HeaderValue::from_str(&offer).map_err(|_| DialError::InvalidHeader {
            name: "Sec-WebSocket-Protocol".into(),
            reason: "a subprotocol is not a valid token".into(),
        })?;
        headers.insert("Sec-WebSocket-Protocol", value);
    }
    Ok(request)
}

/// Connects to the first of `addrs` that accepts, in the resolver's order.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut failures = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    Err(format!("could not connect to {}", failures.join("; ")))
}
