//! Opening one WebSocket: the network policy check, the TCP connection to the checked addresses,
//! the handshake request (headers, subprotocols), TLS for `wss`, the read-buffer and message-size
//! limits, and a timeout so a slow resolver or upstream handshake cannot hang a caller.
//!
//! The TCP connection is opened here, to exactly the addresses the policy accepted, and the
//! WebSocket/TLS handshake runs over it (Host header and SNI still from the URL). Letting the
//! WebSocket library resolve the name again would open a window for DNS rebinding: a second answer
//! could point at an address that was never checked.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{ConnectionOptions, ConnectionSpec};
use crate::security::{Refusal, ResolveError};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a handshake failed, for the operator (never includes header values: they may be secrets).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    #[error("invalid url {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
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
    #[error("handshake with {url} failed: {reason}")]
    Failed { url: String, reason: String },
}

/// Socket settings: bounded buffers so 10k mostly idle connections stay cheap, and a message-size
/// limit so one upstream cannot make us allocate without bound.
pub fn socket_config(options: &ConnectionOptions) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(options.read_buffer_size)
        .write_buffer_size(0)
        .max_message_size(Some(options.max_message_size))
        .max_frame_size(Some(options.max_message_size))
}

/// Checks the target against `options.network`, connects to a checked address and handshakes, all
/// within `options.connect_timeout`.
pub async fn dial(spec: &ConnectionSpec, options: &ConnectionOptions) -> Result<Socket, DialError> {
    let request = request(spec)?;
    let (host, port) = host_and_port(&request, &spec.url)?;
    let failed = |reason: String| DialError::Failed {
        url: spec.url.clone(),
        reason,
    };
    let handshake = async {
        let addrs = options
            .network
            .resolve(&host, port)
            .await
            .map_err(|e| match e {
                ResolveError::Refused(refusal) => {
                    DialError::Refused(refusal.with_target(spec.url.as_str()))
                }
                ResolveError::Lookup { host, reason } => DialError::Resolve {
                    url: spec.url.clone(),
                    host,
                    reason,
                },
            })?;
        let stream = connect(&addrs).await.map_err(failed)?;
        // TCP_NODELAY: requests and pongs should not wait for Nagle.
        stream
            .set_nodelay(true)
            .map_err(|e| failed(format!("could not set TCP_NODELAY: {e}")))?;
        tokio_tungstenite::client_async_tls_with_config(
            request,
            stream,
            Some(socket_config(options)),
            None,
        )
        .await
        .map(|(socket, _response)| socket)
        .map_err(|e| failed(handshake_failed(e)))
    };
    match tokio::time::timeout(options.connect_timeout, handshake).await {
        Err(_) => Err(DialError::Timeout {
            url: spec.url.clone(),
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
fn request(spec: &ConnectionSpec) -> Result<Request, DialError> {
    let mut request =
        spec.url
            .as_str()
            .into_client_request()
            .map_err(|e| DialError::InvalidUrl {
                url: spec.url.clone(),
                reason: e.to_string(),
            })?;
    let headers = request.headers_mut();
    for (name, value) in &spec.headers {
        let invalid = |reason: String| DialError::InvalidHeader {
            name: name.clone(),
            reason,
        };
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid("the value is not a valid header value".into()))?;
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

/// The URL's host (IPv6 in brackets, as in the URL) and port (80 for `ws`, 443 for `wss`).
fn host_and_port(request: &Request, url: &str) -> Result<(String, u16), DialError> {
    let invalid = |reason: &str| DialError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri = request.uri();
    let host = uri.host().ok_or_else(|| invalid("the URL has no host"))?;
    let default_port = match uri.scheme_str() {
        Some("ws") => 80,
        Some("wss") => 443,
        _ => return Err(invalid("the scheme must be ws or wss")),
    };
    Ok((host.to_owned(), uri.port_u16().unwrap_or(default_port)))
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
