//! The connection record: what is persisted in the shared store and listed. It carries what another
//! instance needs to re-open the socket after a failover (handshake headers and subprotocols, the
//! `on_connect` and replay messages, the epoch reached so far).

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Connection status, as listed and persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Connecting,
    Connected,
    Reconnecting,
    Disconnected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Connected => "connected",
            Status::Reconnecting => "reconnecting",
            Status::Disconnected => "disconnected",
        }
    }
}

/// A message sent upstream; Text frame for text/* and application/json, Binary otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub payload: Bytes,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRecord {
    pub id: String,
    pub url: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub auto_reconnect: bool,
    pub created_at: String,
    pub instance_id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Handshake headers. Persisted because a successor instance must re-open the socket with them;
    /// never logged, never returned by `List`. Use a state store with access control.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subprotocols: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_connect: Vec<StoredMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replay: Vec<StoredMessage>,
    /// +1 on every (re)connect, across instances.
    #[serde(default)]
    pub epoch: u64,
    /// The connection's own keepalive interval, when it asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_interval_ms: Option<u64>,
    /// The venue profile it named, and the venue options its request gave (they override the
    /// profile's): kept apart, so an instance that takes it over resolves them the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue: Option<crate::venue::VenueOptions>,
}

/// An [`OutboundMessage`] in record JSON: the payload as base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    pub message: String,
    pub content_type: String,
}

impl From<&OutboundMessage> for StoredMessage {
    fn from(m: &OutboundMessage) -> Self {
        StoredMessage {
            message: base64::engine::general_purpose::STANDARD.encode(&m.payload),
            content_type: m.content_type.clone(),
        }
    }
}

impl StoredMessage {
    /// `None` when the stored payload is not base64 (a record edited by hand).
    pub(crate) fn to_outbound(&self) -> Option<OutboundMessage> {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&self.message)
            .ok()?;
        Some(OutboundMessage {
            payload: Bytes::from(payload),
            content_type: self.content_type.clone(),
        })
    }
}
