//! Failover: the records of stale or stopped instances are claimed by compare-and-set (of all the
//! instances sweeping at once, exactly one wins each record) and their sockets reopened by the
//! winner; and at start, this instance's own records left by a previous run are resumed.

use std::sync::Arc;

use futures_util::StreamExt as _;
use rand::seq::SliceRandom;

use super::{Cluster, PeerState};
use crate::service::TakeOver;
use crate::sync::lock;

/// Claims in flight at once.
const CLAIMS_IN_FLIGHT: usize = 32;

/// What became of the ids a round of claims tried.
#[derive(Default)]
struct Claims {
    /// Now this instance's.
    claimed: Vec<String>,
    /// No longer the old owner's: another instance won them, or they are gone.
    moved: Vec<String>,
}

impl Cluster {
    /// Claims the records of each takeable peer. At first, each survivor claims only the records
    /// rendezvous hashing gives it among the live instances, so a dead instance's load spreads
    /// evenly instead of landing on whichever survivor looked first (it would take everything
    /// within milliseconds). The survivors see a death within one look of each other; after two
    /// looks, whatever is still unclaimed (its survivor is slow or gone) is taken by any sweeper.
    pub(super) async fn sweep(self: &Arc<Self>, takeable: Vec<(String, PeerState)>) {
        let membership = self.service.membership();
        for (peer, state) in takeable {
            let why = match state {
                PeerState::Stopped => format!("instance {peer} shut down"),
                PeerState::Stale { silent_for } => format!(
                    "instance {peer} has not heartbeated for {} ms",
                    silent_for.as_millis()
                ),
                _ => continue,
            };
            let mut ids = match membership.instance_ids(&peer).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(instance = %peer, error = %e, "cannot list a stale instance's connections; retrying on the next sweep");
                    continue;
                }
            };
            ids.shuffle(&mut rand::rng());
            let now = tokio::time::Instant::now();
            let since = *lock(&self.stale_since).entry(peer.clone()).or_insert(now);
            let live = lock(&self.registry).live_ids(now);
            let me = self.service.instance_id();
            let anyone = now.saturating_duration_since(since) >= self.config.observe_every() * 2;
            let mine: Vec<String> = ids
                .iter()
                .filter(|id| anyone || preferred(id, &live).is_none_or(|p| p == me))
                .cloned()
                .collect();
            let claims = self.claim_all(&peer, mine, &why).await;
            if !claims.claimed.is_empty() {
                tracing::info!(instance = %peer, claimed = claims.claimed.len(), of = ids.len(), %why, "took over connections");
            }
            self.after_claims(&peer, &claims).await;
            if ids.is_empty() && lock(&self.registry).expired(&peer) {
                // Nothing left and its heartbeat gone: the peer leaves the list.
                let _ = membership.remove(&peer).await;
                lock(&self.stale_since).remove(&peer);
                tracing::info!(instance = %peer, "removed a departed instance from the peer list");
            }
        }
    }

    /// Claims `ids` from `from`, side by side: each claim is a few store round trips, and
    /// concurrent claims share their index writes (one write of this instance's index per batch,
    /// not per id, which made a sequential takeover of thousands of connections quadratic). From
    /// another instance, an id is skipped once that instance is live again: a sweep can take a
    /// while, and a peer that came back meanwhile (woke from a pause, restarted under its id)
    /// keeps what is still its own.
    async fn claim_all(&self, from: &str, ids: Vec<String>, why: &str) -> Claims {
        let me = self.service.instance_id();
        let outcomes: Vec<(String, Option<_>)> = futures_util::stream::iter(ids)
            .map(|id| async move {
                let back = from != me
                    && matches!(
                        lock(&self.registry).state(from, tokio::time::Instant::now()),
                        PeerState::Live { .. }
                    );
                if back {
                    return (id, None);
                }
                let outcome = self.service.take_over(&id, from, why, None).await;
                (id, Some(outcome))
            })
            .buffer_unordered(CLAIMS_IN_FLIGHT)
            .collect()
            .await;
        let mut claims = Claims::default();
        for (id, outcome) in outcomes {
            match outcome {
                None => {}
                Some(Ok(TakeOver::Claimed)) => claims.claimed.push(id),
                // Claimed a moment ago by a call on this instance: no longer the other's.
                Some(Ok(TakeOver::AlreadyOurs)) if from != me => claims.moved.push(id),
                Some(Ok(TakeOver::AlreadyOurs)) => {}
                Some(Ok(TakeOver::Owner(_) | TakeOver::Gone)) => claims.moved.push(id),
                Some(Err(e)) => {
                    tracing::warn!(connection = %id, instance = %from, error = %e, "connection not taken over; a later sweep, here or on a peer, retries it")
                }
            }
        }
        claims
    }

    /// After claims from `owner`: every id that is no longer its own leaves its index (one
    /// write), and its revocation notice names the claimed ones, in case it is alive after all
    /// (paused, or cut off from this instance only). Claims from this instance itself (resumed
    /// after a restart) stay in its index and need no notice.
    async fn after_claims(&self, owner: &str, claims: &Claims) {
        let membership = self.service.membership();
        let from_peer = owner != self.service.instance_id();
        let claimed: &[String] = if from_peer { &claims.claimed } else { &[] };
        let gone: Vec<&str> = claimed
            .iter()
            .chain(&claims.moved)
            .map(String::as_str)
            .collect();
        if gone.is_empty() {
            return;
        }
        if let Err(e) = membership.unlist(owner, &gone).await {
            tracing::debug!(instance = %owner, error = %e, "claimed ids stay in the old owner's index until its next sweep");
        }
        if claimed.is_empty() {
            return;
        }
        let claimed: Vec<&str> = claimed.iter().map(String::as_str).collect();
        let ttl = self.config.heartbeat_ttl().max(self.config.stale_after * 4);
        if let Err(e) = membership.revoke(owner, &claimed, ttl).await {
            tracing::warn!(instance = %owner, error = %e, "revocation notice not written; the old owner learns of the move at its next write of those records");
        }
    }

    /// Claims `id` from `owner` for a call that could not be forwarded, and reopens its socket
    /// (waiting for the handshake, so the call can be served). `owner` may still be alive, only
    /// unreachable from here: its revocation notice tells it to close its socket at once.
    pub(super) async fn claim_for_call(
        &self,
        id: &str,
        owner: &str,
        why: &str,
    ) -> Result<TakeOver, crate::ServiceError> {
        let wait = self.service.connect_timeout() + std::time::Duration::from_secs(1);
        let outcome = self.service.take_over(id, owner, why, Some(wait)).await?;
        if let TakeOver::Claimed = outcome {
            let claims = Claims {
                claimed: vec![id.to_owned()],
                moved: Vec::new(),
            };
            self.after_claims(owner, &claims).await;
        }
        Ok(outcome)
    }

    /// Resumes this instance's own records a previous run (same instance id) left behind and no
    /// peer has taken: after a crash and a quick restart, before the threshold.
    pub(super) async fn adopt_own(self: Arc<Self>) {
        let me = self.service.instance_id().to_owned();
        let ids = match self.service.membership().instance_ids(&me).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list this instance's earlier connections; they are taken over by peers once stale");
                return;
            }
        };
        let claims = self
            .claim_all(&me, ids, "resumed by its owner after a restart")
            .await;
        self.after_claims(&me, &claims).await;
        if !claims.claimed.is_empty() {
            tracing::info!(
                resumed = claims.claimed.len(),
                "resumed this instance's connections from before its restart"
            );
        }
    }
}

/// Rendezvous (highest random weight) hashing: the instance of `live` that takes `id` first. Every
/// survivor computes the same answer from the same live set, and a change of the set moves only the
/// ids of the instances that came or went. FNV-1a, so it is the same in every build.
fn preferred<'a>(id: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .max_by_key(|instance| weight(id, instance))
        .map(String::as_str)
}

fn weight(id: &str, instance: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes().chain([0xff]).chain(instance.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs; a final avalanche spreads them.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::preferred;

    #[test]
    fn each_survivor_is_preferred_for_about_its_share_and_all_agree() {
        let live: Vec<String> = ["wsm-b", "wsm-c", "wsm-d"].map(String::from).to_vec();
        let mut counts = std::collections::BTreeMap::new();
        for n in 0..3000 {
            let id = format!("{n:08x}-0000-4000-8000-000000000000");
            let first = preferred(&id, &live).unwrap();
            assert_eq!(preferred(&id, &live), Some(first), "deterministic");
            *counts.entry(first).or_insert(0) += 1;
        }
        for (instance, n) in &counts {
            assert!((800..=1200).contains(n), "{instance}: {n} of 3000");
        }
        // One survivor fewer: only the ids of the one that went move.
        let fewer: Vec<String> = live[..2].to_vec();
        for n in 0..300 {
            let id = format!("id-{n}");
            let before = preferred(&id, &live).unwrap();
            if before != "wsm-d" {
                assert_eq!(preferred(&id, &fewer), Some(before));
            }
        }
        assert_eq!(preferred("x", &[]), None);
    }
}
