//! Failover: the records of stale or stopped instances are claimed by compare-and-set (of all the
//! instances sweeping at once, exactly one wins each record) and their sockets reopened by the
//! winner; and at start, this instance's own records left by a previous run are resumed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::seq::SliceRandom;

use super::heartbeat::{heartbeat_key, PEERS_KEY};
use super::{Cluster, PeerState};
use crate::backends::Concurrency;
use crate::service::TakeOver;

impl Cluster {
    /// Claims the records of each takeable peer, up to a fair share per sweep: the peer's records
    /// divided by the live instances. The first survivor to notice a death would otherwise take
    /// everything within milliseconds and double its load; with a share, the others take theirs
    /// at their next look (a quarter interval later), and whatever is left after a sweep, because
    /// a survivor is slow or gone, is taken by the next sweeps. Each sweeper goes through the ids
    /// in its own random order, so sweeps at the same moment split the work rather than collide.
    pub(super) async fn sweep(self: &Arc<Self>, takeable: Vec<(String, PeerState)>) {
        self.metrics.sweeps.fetch_add(1, Ordering::Relaxed);
        let repository = self.service.store().repository();
        for (peer, state) in takeable {
            let why = match state {
                PeerState::Stopped => format!("instance {peer} shut down"),
                PeerState::Stale { silent_for } => format!(
                    "instance {peer} has not heartbeated for {} ms",
                    silent_for.as_millis()
                ),
                _ => continue,
            };
            let mut ids = match repository.instance_ids(&peer).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(instance = %peer, error = %e, "cannot list a stale instance's connections; retrying on the next sweep");
                    continue;
                }
            };
            ids.shuffle(&mut rand::rng());
            let live = self.registry().live(tokio::time::Instant::now()).max(1);
            let share = ids.len().div_ceil(live);
            let mut claimed = Vec::new();
            let mut settled = Vec::new();
            for id in &ids {
                if claimed.len() >= share {
                    break;
                }
                match self.service.take_over(id, &peer, &why, None).await {
                    Ok(TakeOver::Claimed) => {
                        claimed.push(id.as_str());
                        settled.push(id.as_str());
                    }
                    // Another instance won it, or it is gone: either way no longer the peer's.
                    Ok(TakeOver::Owner(_) | TakeOver::Gone | TakeOver::AlreadyOurs) => {
                        settled.push(id.as_str())
                    }
                    Err(e) => {
                        tracing::warn!(connection = %id, instance = %peer, error = %e, "connection not taken over; retrying on the next sweep")
                    }
                }
            }
            if !claimed.is_empty() {
                tracing::info!(instance = %peer, claimed = claimed.len(), of = ids.len(), %why, "took over connections");
                self.after_claims(&peer, &claimed).await;
            }
            let others: Vec<&str> = settled
                .iter()
                .copied()
                .filter(|id| !claimed.contains(id))
                .collect();
            if !others.is_empty() {
                let _ = repository.index_remove_instance(&peer, &others).await;
            }
            if ids.is_empty() && self.registry().expired(&peer) {
                // Nothing left and its heartbeat gone: the peer leaves the list.
                let _ = repository
                    .set_update(PEERS_KEY, None, |peers| peers.remove(&peer))
                    .await;
                let _ = self
                    .state
                    .delete(&heartbeat_key(&peer), Concurrency::LastWrite)
                    .await;
                tracing::info!(instance = %peer, "removed a departed instance from the peer list");
            }
        }
    }

    /// After claiming `ids` from `owner`: the ids leave its index, and its revocation notice
    /// names them, in case it is alive after all (paused, or cut off from this instance only).
    pub(super) async fn after_claims(&self, owner: &str, ids: &[&str]) {
        let repository = self.service.store().repository();
        if let Err(e) = repository.index_remove_instance(owner, ids).await {
            tracing::debug!(instance = %owner, error = %e, "claimed ids stay in the old owner's index until its next sweep");
        }
        let ttl = self.config.heartbeat_ttl().max(self.config.stale_after * 4);
        if let Err(e) = repository.notify_revoked(owner, ids, ttl).await {
            tracing::warn!(instance = %owner, error = %e, "revocation notice not written; the old owner learns of the move at its next write of those records");
        }
    }

    /// Resumes this instance's own records a previous run (same instance id) left behind and no
    /// peer has taken: after a crash and a quick restart, before the threshold.
    pub(super) async fn adopt_own(self: Arc<Self>) {
        let me = self.service.instance_id().to_owned();
        let repository = self.service.store().repository();
        let ids = match repository.instance_ids(&me).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list this instance's earlier connections; they are taken over by peers once stale");
                return;
            }
        };
        let mut resumed = 0;
        let mut moved = Vec::new();
        for id in &ids {
            match self
                .service
                .take_over(id, &me, "resumed by its owner after a restart", None)
                .await
            {
                Ok(TakeOver::Claimed) => resumed += 1,
                Ok(TakeOver::AlreadyOurs) => {}
                Ok(TakeOver::Owner(_) | TakeOver::Gone) => moved.push(id.as_str()),
                Err(e) => {
                    tracing::warn!(connection = %id, error = %e, "an earlier connection of this instance was not resumed")
                }
            }
        }
        if !moved.is_empty() {
            let _ = repository.index_remove_instance(&me, &moved).await;
        }
        if resumed > 0 {
            tracing::info!(
                resumed,
                "resumed this instance's connections from before its restart"
            );
        }
    }
}
