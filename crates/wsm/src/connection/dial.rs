//! Opening one WebSocket: the handshake request (headers, subprotocols), TLS for `wss`, the
//! read-buffer and message-size limits, and a timeout so a slow upstream handshake cannot hang a caller.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{ConnectionOptions, ConnectionSpec};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a handshake failed, for the operator (never includes header values: they may be secrets).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    #[error("invalid url {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid header {name}: {reason}")]
    InvalidHeader { name: String, reason: String },
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

pub async fn dial(spec: &ConnectionSpec, options: &ConnectionOptions) -> Result<Socket, DialError> {
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
    let handshake = tokio_tungstenite::connect_async_with_config(
        request,
        Some(socket_config(options)),
        true, // TCP_NODELAY: requests and pongs should not wait for Nagle
    );
    match tokio::time::timeout(options.connect_timeout, handshake).await {
        Err(_) => Err(DialError::Timeout {
            url: spec.url.clone(),
            timeout_ms: options.connect_timeout.as_millis(),
        }),
        Ok(Err(e)) => Err(DialError::Failed {
            url: spec.url.clone(),
            reason: e.to_string(),
        }),
        Ok(Ok((socket, _response))) => Ok(socket),
    }
}
