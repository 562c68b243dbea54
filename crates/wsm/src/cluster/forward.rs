//! Calls forwarded to the instance that owns a connection: one gRPC channel per peer address, kept
//! open, and a metadata marker naming the forwarding instance, so a call is forwarded at most once
//! (two instances that each believe the other owns a connection cannot bounce a call forever).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::api::proto::web_socket_manager_client::WebSocketManagerClient;

/// Set on a forwarded call; its value is the forwarding instance's id.
pub const HOP_HEADER: &str = "x-wsm-forwarded-by";

/// How long a peer may take to accept a TCP connection before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub type PeerClient = WebSocketManagerClient<Channel>;

pub struct Forwarder {
    me: AsciiMetadataValue,
    /// Sent as `x-api-key` to peers: instances of one deployment share their keys.
    api_key: Option<AsciiMetadataValue>,
    clients: Mutex<HashMap<String, PeerClient>>,
}

impl Forwarder {
    pub fn new(instance_id: &str, api_key: Option<&str>) -> Self {
        Forwarder {
            me: AsciiMetadataValue::try_from(instance_id)
                .unwrap_or_else(|_| AsciiMetadataValue::from_static("peer")),
            api_key: api_key.and_then(|key| AsciiMetadataValue::try_from(key).ok()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A client of the peer at `address` (`host:port`), connecting on first use.
    pub async fn client(&self, address: &str) -> Result<PeerClient, String> {
        if let Some(client) = self.clients().get(address) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("bad peer address {address:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {address}: {}", error_chain(&e)))?;
        let client = WebSocketManagerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        self.clients().insert(address.to_owned(), client.clone());
        Ok(client)
    }

    /// Drops the channel to `address` after a transport failure; the next call reconnects.
    pub fn forget(&self, address: &str) {
        self.clients().remove(address);
    }

    /// `message` as a forwarded call: the hop marker, the API key, and a deadline.
    pub fn request<T>(&self, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(HOP_HEADER, self.me.clone());
        if let Some(key) = &self.api_key {
            request.metadata_mut().insert("x-api-key", key.clone());
        }
        request.set_timeout(timeout);
        request
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<String, PeerClient>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The instance that forwarded this call, if it was forwarded, cut short for the logs it goes
/// into (any caller can set the header).
pub fn forwarded_by(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get(HOP_HEADER)
        .map(|v| crate::text::excerpt(v.to_str().unwrap_or("a peer"), 64))
}

/// Whether a forwarded call failed for want of a connection to the peer (refused, reset, gone),
/// rather than with an answer from it: only then is the owner unreachable.
pub fn is_unreachable(status: &Status) -> bool {
    status.code() == Code::Unavailable && std::error::Error::source(status).is_some()
}

/// Whether a forwarded call ran out of its deadline here (tonic answers CANCELLED "Timeout
/// expired"), rather than being answered by the peer.
pub fn is_timeout(status: &Status) -> bool {
    status.code() == Code::Cancelled && status.message().contains("Timeout expired")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
