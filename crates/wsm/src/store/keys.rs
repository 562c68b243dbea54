//! Every key WSM writes to the state store, in one place: records, their indexes, revocation
//! notices, heartbeats and the peers list. Other Dapr apps may read these keys, so they are part of
//! the contract (SPEC 5, "State") and change only with it.

/// A connection record: `websocketmanager.connection.<id>`.
pub const CONNECTION_KEY_PREFIX: &str = "websocketmanager.connection.";
/// Every connection id (one bulk read lists them all).
pub const CONNECTION_INDEX_KEY: &str = "websocketmanager.connection.index";
/// The ids one instance owns: `websocketmanager.instance.index.<instanceId>`.
pub(crate) const INSTANCE_INDEX_PREFIX: &str = "websocketmanager.instance.index.";
/// Ids another instance took from this one: `websocketmanager.revoked.<instanceId>`.
pub(crate) const REVOKED_PREFIX: &str = "websocketmanager.revoked.";
/// An instance's heartbeat: `websocketmanager.heartbeat.<instanceId>`.
pub(crate) const HEARTBEAT_PREFIX: &str = "websocketmanager.heartbeat.";
/// Every instance that ever joined (the store cannot list keys).
pub(crate) const PEERS_KEY: &str = "websocketmanager.heartbeat.peers";

pub fn record_key(id: &str) -> String {
    format!("{CONNECTION_KEY_PREFIX}{id}")
}

pub(crate) fn instance_index_key(instance_id: &str) -> String {
    format!("{INSTANCE_INDEX_PREFIX}{instance_id}")
}

/// The key of an instance's revocation notice: ids of connections another instance took from it.
pub(crate) fn revoked_key(instance_id: &str) -> String {
    format!("{REVOKED_PREFIX}{instance_id}")
}

pub(crate) fn heartbeat_key(instance_id: &str) -> String {
    format!("{HEARTBEAT_PREFIX}{instance_id}")
}
