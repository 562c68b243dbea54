//! Calls forwarded to the instance that owns a connection: one gRPC channel per peer address, kept
//! open, and a metadata marker naming the forwarding instance, so a call is forwarded at most once
//! (two instances that each believe the other owns a connection cannot bounce a call forever).
//!
//! A forwarded call carries the instances' own credential, the peer key (`--peer-key`), never the
//! caller's API key. Peer addresses come from heartbeats in the shared store, so with
//! `--peer-allowed-cidrs` an address is resolved and checked before any call goes to it: a forged
//! heartbeat cannot send calls (and the peer key) elsewhere.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::proto::web_socket_manager_client::WebSocketManagerClient;
use crate::security::AllowEntry;

/// The header an instance puts the peer key in when it forwards a call.
pub(crate) const PEER_KEY_HEADER: &str = "x-wsm-peer-key";

/// Set on a forwarded call; its value is the forwarding instance's id.
pub const HOP_HEADER: &str = "x-wsm-forwarded-by";

/// How long a peer may take to accept a TCP connection before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) type PeerClient = WebSocketManagerClient<Channel>;

pub(crate) struct Forwarder {
    me: AsciiMetadataValue,
    /// Sent as `x-wsm-peer-key`: the instances' shared credential.
    peer_key: Option<AsciiMetadataValue>,
    /// Where peers may be (`--peer-allowed-cidrs`); empty = anywhere.
    allowed: Vec<AllowEntry>,
    clients: Mutex<HashMap<String, PeerClient>>,
}

/// Why a call cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The peer did not take the connection: it may be dead, so its connection may be claimed.
    #[error("{0}")]
    Unreachable(String),
    /// The advertised address is not one peers may have: nothing is sent, nothing is claimed.
    #[error("{0}")]
    NotAllowed(String),
}

impl Forwarder {
    pub fn new(instance_id: &str, peer_key: Option<&str>, allowed: Vec<AllowEntry>) -> Self {
        Forwarder {
            me: AsciiMetadataValue::try_from(instance_id)
                .unwrap_or_else(|_| AsciiMetadataValue::from_static("peer")),
            peer_key: peer_key.and_then(|key| AsciiMetadataValue::try_from(key).ok()),
            allowed,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A client of the peer at `address` (`host:port`), connecting on first use, to an address
    /// `--peer-allowed-cidrs` allows.
    pub async fn client(&self, address: &str) -> Result<PeerClient, ForwardError> {
        if let Some(client) = self.clients().get(address) {
            return Ok(client.clone());
        }
        let shown = crate::text::excerpt(address, 128);
        let target = self.checked(address, &shown).await?;
        let endpoint = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| ForwardError::NotAllowed(format!("bad peer address {shown:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            ForwardError::Unreachable(format!("cannot connect to {shown}: {}", error_chain(&e)))
        })?;
        let client = WebSocketManagerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        self.clients().insert(address.to_owned(), client.clone());
        Ok(client)
    }

    /// Where to connect for `address`: itself without an allow list; else its host resolved, every
    /// address checked, and the first one, so a later answer of the resolver cannot differ.
    async fn checked(&self, address: &str, shown: &str) -> Result<String, ForwardError> {
        if self.allowed.is_empty() {
            return Ok(address.to_owned());
        }
        let not_allowed = |why: String| {
            ForwardError::NotAllowed(format!(
                "peer address {shown} {why}, outside --peer-allowed-cidrs; the call is not \
                 forwarded (a heartbeat in the store names an address no instance may have)"
            ))
        };
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or_else(|| not_allowed("is not host:port".into()))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| {
                    ForwardError::Unreachable(format!("cannot resolve peer {shown}: {e}"))
                })?
                .collect(),
        };
        let first = addrs
            .first()
            .copied()
            .ok_or_else(|| ForwardError::Unreachable(format!("peer {shown} has no address")))?;
        for addr in &addrs {
            if !self.allowed.iter().any(|entry| entry.contains(addr.ip())) {
                return Err(not_allowed(format!("resolves to {}", addr.ip())));
            }
        }
        Ok(first.to_string())
    }

    /// Drops the channel to `address` after a transport failure; the next call reconnects.
    pub fn forget(&self, address: &str) {
        self.clients().remove(address);
    }

    /// `message` as a forwarded call: the hop marker, the peer key (never the caller's key), and
    /// a deadline.
    pub fn request<T>(&self, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(HOP_HEADER, self.me.clone());
        if let Some(key) = &self.peer_key {
            request.metadata_mut().insert(PEER_KEY_HEADER, key.clone());
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
pub(crate) fn is_unreachable(status: &Status) -> bool {
    status.code() == Code::Unavailable && std::error::Error::source(status).is_some()
}

/// Whether a forwarded call ran out of its deadline here (tonic answers CANCELLED "Timeout
/// expired"), rather than being answered by the peer.
pub(crate) fn is_timeout(status: &Status) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::parse_allowed_hosts;

    #[test]
    fn a_forwarded_call_carries_the_peer_key_and_the_hop_marker_only() {
        let forwarder = Forwarder::new("wsm-a", Some("peer-secret"), Vec::new());
        let request = forwarder.request((), Duration::from_secs(1));
        let metadata = request.metadata();
        assert_eq!(
            metadata.get(PEER_KEY_HEADER).map(|v| v.as_bytes()),
            Some(&b"peer-secret"[..])
        );
        assert_eq!(
            metadata.get(HOP_HEADER).map(|v| v.as_bytes()),
            Some(&b"wsm-a"[..])
        );
        assert!(
            metadata.get("x-api-key").is_none(),
            "no client key is forwarded"
        );
    }

    #[tokio::test]
    async fn peer_addresses_outside_the_allowed_cidrs_are_refused_before_any_connect() {
        let allowed = parse_allowed_hosts("10.0.0.0/8,fd00::/8").expect("cidrs");
        let forwarder = Forwarder::new("wsm-a", None, allowed);
        for address in [
            "127.0.0.1:5002",
            "[::1]:5002",
            "localhost:5002",
            "192.0.2.1:1",
        ] {
            match forwarder.client(address).await {
                Err(ForwardError::NotAllowed(why)) => {
                    assert!(why.contains("--peer-allowed-cidrs"), "{why}")
                }
                Err(other) => panic!("{address}: {other}"),
                Ok(_) => panic!("{address}: allowed"),
            }
        }
        assert_eq!(
            forwarder.checked("10.1.2.3:5002", "x").await,
            Ok("10.1.2.3:5002".to_owned())
        );
        let err = forwarder
            .checked("no-port", "no-port")
            .await
            .expect_err("no port");
        assert!(matches!(err, ForwardError::NotAllowed(_)), "{err}");
    }
}
