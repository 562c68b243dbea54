//! What an instance writes to say it is alive: its heartbeat, under
//! [`crate::store::keys::heartbeat_key`] with a TTL, plus its id in the peers list
//! ([`crate::store::keys::PEERS_KEY`]: the state store cannot list keys, so peers find each other
//! through it).

use serde::{Deserialize, Serialize};

/// `{instanceId, lastSeenAt, grpcAddress}`, and `stopping` once a graceful shutdown has closed the
/// instance's sockets, so peers take its connections over without waiting for the stale threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Heartbeat {
    pub instance_id: String,
    /// RFC 3339, the writer's clock; for operators. Staleness is judged on the reader's own clock
    /// (when it last saw the heartbeat change), so clock skew between machines does not matter.
    pub last_seen_at: String,
    /// `host:port` of the instance's gRPC port, where peers forward calls.
    pub grpc_address: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
}

impl Heartbeat {
    pub fn now(instance_id: &str, grpc_address: &str, stopping: bool) -> Self {
        Heartbeat {
            instance_id: instance_id.to_owned(),
            last_seen_at: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string(),
            grpc_address: grpc_address.to_owned(),
            stopping,
        }
    }
}
