//! What the cluster keeps in the state store besides the records: the peer list, each instance's
//! heartbeat, the per-instance indexes a failover reads, and revocation notices. The cluster reaches
//! the store only through this, so the keys and their encoding stay in `store/`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::backends::{BackendError, Concurrency, StateStore, Versioned};

use super::keys::{heartbeat_key, instance_index_key, revoked_key, PEERS_KEY};
use super::sets;

/// One look at the cluster: the heartbeats of the peers asked for, in their order, and the ids other
/// instances took from this one.
pub(crate) struct Look {
    pub heartbeats: Vec<Option<Versioned>>,
    pub revoked: Vec<String>,
}

#[derive(Clone)]
pub(crate) struct Membership {
    state: Arc<dyn StateStore>,
}

impl Membership {
    pub(crate) fn new(state: Arc<dyn StateStore>) -> Self {
        Membership { state }
    }

    /// Every instance that ever joined and has not been removed (the store cannot list keys).
    pub(crate) async fn peers(&self) -> Result<BTreeSet<String>, BackendError> {
        Ok(sets::read(self.state.as_ref(), PEERS_KEY).await?.0)
    }

    /// Lists `instance` among the peers.
    pub(crate) async fn join(&self, instance: &str) -> Result<(), BackendError> {
        sets::insert(self.state.as_ref(), PEERS_KEY, None, [instance].into_iter()).await
    }

    /// Removes a departed instance: from the peer list, and its heartbeat.
    pub(crate) async fn remove(&self, instance: &str) -> Result<(), BackendError> {
        sets::remove(self.state.as_ref(), PEERS_KEY, [instance].into_iter()).await?;
        self.state
            .delete(&heartbeat_key(instance), Concurrency::LastWrite)
            .await
    }

    /// Writes an instance's heartbeat (already encoded), expiring after `ttl`.
    pub(crate) async fn beat(
        &self,
        instance: &str,
        heartbeat: &[u8],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        self.state
            .set(
                &heartbeat_key(instance),
                heartbeat,
                Concurrency::LastWrite,
                Some(ttl),
            )
            .await
    }

    /// One instance's heartbeat, as written.
    pub(crate) async fn heartbeat(&self, instance: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self
            .state
            .get(&heartbeat_key(instance))
            .await?
            .map(|v| v.value))
    }

    /// The heartbeats of `peers` and `me`'s revocation notice, in one bulk read.
    pub(crate) async fn look(&self, peers: &[String], me: &str) -> Result<Look, BackendError> {
        let mut keys: Vec<String> = peers.iter().map(|id| heartbeat_key(id)).collect();
        keys.push(revoked_key(me));
        let mut values = self.state.get_bulk(&keys).await?;
        let notice = if values.len() > peers.len() {
            values.pop().flatten()
        } else {
            None
        };
        values.resize_with(peers.len(), || None);
        let revoked = notice
            .and_then(|n| serde_json::from_slice::<Vec<String>>(&n.value).ok())
            .unwrap_or_default();
        Ok(Look {
            heartbeats: values,
            revoked,
        })
    }

    /// Ids listed in an instance's index (its connections, as last persisted).
    pub(crate) async fn instance_ids(&self, instance: &str) -> Result<Vec<String>, BackendError> {
        let (ids, _) = sets::read(self.state.as_ref(), &instance_index_key(instance)).await?;
        Ok(ids.into_iter().collect())
    }

    /// Removes `ids` from an instance's index (they were claimed from it, or are gone).
    pub(crate) async fn unlist(&self, instance: &str, ids: &[&str]) -> Result<(), BackendError> {
        let key = instance_index_key(instance);
        sets::remove(self.state.as_ref(), &key, ids.iter().copied()).await
    }

    /// Adds `ids` to the revocation notice of `owner`: the instance reads it with its look at the
    /// cluster and closes those sockets at once, instead of at its next write of their records.
    pub(crate) async fn revoke(
        &self,
        owner: &str,
        ids: &[&str],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let key = revoked_key(owner);
        sets::insert(self.state.as_ref(), &key, Some(ttl), ids.iter().copied()).await
    }

    /// Removes `ids` from this instance's revocation notice once they are handled.
    pub(crate) async fn clear_revoked(
        &self,
        owner: &str,
        ids: &[String],
    ) -> Result<(), BackendError> {
        let key = revoked_key(owner);
        sets::remove(self.state.as_ref(), &key, ids.iter().map(String::as_str)).await
    }
}
