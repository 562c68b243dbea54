//! Ownership between instances, as the service sees it: claiming a connection from another
//! instance (compare-and-set) and reopening its socket, letting go of connections another
//! instance took, and the owner-only writes of a record. The cluster module decides *when*; this
//! decides *how*, with the service's own state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::WebSocketService;
use crate::backends::BackendError;
use crate::connection::{Connection, ConnectionSpec};
use crate::error::ServiceError;
use crate::lifecycle::{LifecycleEvent, LifecycleKind, LifecycleSink};
use crate::model::{ConnectionRecord, OutboundMessage, Status, StoredMessage};
use crate::publish::BusLifecycle;
use crate::store::OwnedWriteError;
use crate::sync::lock;

/// The outcome of [`WebSocketService::take_over`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOver {
    /// This instance owns it now, and its socket is (re)opening.
    Claimed,
    /// This instance held it already.
    AlreadyOurs,
    /// Another instance owns it (it won the claim, or the record had moved before).
    Owner(String),
    /// The record is gone.
    Gone,
}

/// Counts of ownership changes, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct OwnershipCounts {
    /// Connections this instance took over from stale, stopped or unreachable instances.
    pub taken_over: AtomicU64,
    /// Connections another instance took from this one (noticed on waking, by a notice, or at a
    /// record write).
    pub lost: AtomicU64,
}

impl WebSocketService {
    /// The venue options a stored record runs with, resolved against this instance's profiles as
    /// Connect did on the first. A profile this instance does not know (a different `--profiles`
    /// file) leaves the request's own options, and says so.
    fn venue_of(&self, record: &ConnectionRecord) -> crate::venue::VenueOptions {
        let overrides = record.venue.clone().unwrap_or_default();
        match self
            .inner
            .config
            .profiles
            .resolve(record.profile.as_deref(), &overrides)
        {
            Ok(options) => options,
            Err(e) => {
                tracing::warn!(connection = %record.id, profile = ?record.profile, error = %e, "the connection's venue profile cannot be resolved on this instance; running only the options its request gave");
                overrides
            }
        }
    }

    /// Claims `id` from `from` by compare-and-set and reopens its socket in the background: the
    /// winner of a failover (or the owner itself, after a restart, with `from` = this instance).
    /// The socket publishes to the record's topic with the next epoch, after replaying `on_connect`
    /// and the replay messages. With `wait`, returns once the handshake is done (or failed),
    /// bounded by `wait`.
    pub async fn take_over(
        &self,
        id: &str,
        from: &str,
        why: &str,
        wait: Option<Duration>,
    ) -> Result<TakeOver, ServiceError> {
        self.refuse_when_closing()?;
        let me = self.inner.config.instance_id.as_str();
        if lock(&self.inner.live).contains_key(id) {
            return Ok(TakeOver::AlreadyOurs);
        }
        let store = &self.inner.store;
        let Some((record, etag)) = store.load_shared(id).await? else {
            return Ok(TakeOver::Gone);
        };
        if record.instance_id != from && record.instance_id != me {
            return Ok(TakeOver::Owner(record.instance_id));
        }
        if record.instance_id == me && from != me {
            // Another call on this instance claimed it a moment ago; its socket is opening.
            return Ok(TakeOver::AlreadyOurs);
        }
        // Reserved before the claim, as Connect reserves before its dial: concurrent claims
        // (a failover sweep and forwarded calls) cannot all pass the limit.
        let slot = self.inner.slots.reserve().ok_or_else(|| {
            ServiceError::ResourceExhausted(format!(
                "this instance holds its maximum of {} connections (--max-connections); \
                 connection {id} is left for another instance",
                self.inner.slots.max()
            ))
        })?;
        let ended = record.status == Status::Disconnected;
        // The claim carries the epoch the new socket publishes with, so no later reader sees the
        // old one on a record that names the new owner.
        let (status, epoch) = if ended {
            (Status::Disconnected, record.epoch)
        } else {
            (Status::Connecting, record.epoch + 1)
        };
        let claimed = ConnectionRecord {
            instance_id: me.to_owned(),
            status,
            epoch,
            ..record
        };
        match store.claim(&claimed, &etag).await {
            Ok(()) => {}
            Err(BackendError::Conflict { .. }) => {
                // Another instance won this one.
                return Ok(match store.load_shared(id).await? {
                    Some((now, _)) if now.instance_id != me => TakeOver::Owner(now.instance_id),
                    Some(_) => TakeOver::AlreadyOurs,
                    None => TakeOver::Gone,
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.inner.store.hold(claimed.clone());
        if from != me {
            self.inner
                .ownership
                .taken_over
                .fetch_add(1, Ordering::Relaxed);
        }
        if ended {
            tracing::info!(connection = %id, from, why, "took over an ended connection's record; its socket stays closed");
            return Ok(TakeOver::Claimed);
        }
        tracing::info!(connection = %id, from, why, topic = claimed.topic.as_deref().unwrap_or(""), epoch = claimed.epoch, "took the connection over; reopening its socket");
        let connection = self.resume(&claimed, from, why, slot);
        self.catch_up(id, &connection, Status::Connecting, claimed.epoch)
            .await;
        if let Some(wait) = wait {
            let _ =
                tokio::time::timeout(wait, connection.wait_for(|s| s != Status::Connecting)).await;
        }
        Ok(TakeOver::Claimed)
    }

    /// The status writer skips connections not (yet) in `live`, so a change between the record's
    /// write and the insertion would never be persisted: writes it when the connection is no
    /// longer at the `recorded` status and epoch.
    pub(super) async fn catch_up(
        &self,
        id: &str,
        connection: &Connection,
        status: Status,
        epoch: u64,
    ) {
        let now = (connection.status(), connection.epoch());
        if now != (status, epoch) {
            let _ = self
                .persist(id, |r| {
                    r.status = now.0;
                    r.epoch = r.epoch.max(now.1);
                })
                .await;
        }
    }

    /// Reopens a claimed connection's socket in the background, wired like a new one.
    fn resume(
        &self,
        record: &ConnectionRecord,
        from: &str,
        why: &str,
        slot: super::Slot,
    ) -> Connection {
        let decode = |messages: &[StoredMessage]| -> Vec<OutboundMessage> {
            messages
                .iter()
                .filter_map(|m| {
                    let decoded = m.to_outbound();
                    if decoded.is_none() {
                        tracing::warn!(connection = %record.id, "a stored message is not base64 and is not replayed");
                    }
                    decoded
                })
                .collect()
        };
        let spec = ConnectionSpec {
            id: record.id.clone(),
            url: record.url.clone(),
            headers: record.headers.clone().into_iter().collect(),
            subprotocols: record.subprotocols.clone(),
            on_connect: decode(&record.on_connect),
            auto_reconnect: record.auto_reconnect,
            replay: decode(&record.replay),
            // The claim set the epoch of the first connect.
            epoch: record.epoch.saturating_sub(1),
            topic: record.topic.clone(),
            venue: Arc::new(self.venue_of(record)),
        };
        let reason = if from == self.inner.config.instance_id {
            why.to_owned()
        } else {
            format!("taken over from instance {from}: {why}")
        };
        let pipe = self.pipe(
            &spec,
            record.ping_interval_ms.map(Duration::from_millis),
            reason,
        );
        let connection = Connection::resume(
            spec,
            pipe.options.clone(),
            pipe.queue.clone(),
            Arc::clone(&pipe.lifecycle),
        );
        let live = self.start_publisher(connection.clone(), pipe, slot);
        lock(&self.inner.live).insert(record.id.clone(), live);
        connection
    }

    /// After this instance may have been declared dead (its lease lapsed): lets go of every
    /// connection whose record names another owner now, or is gone. Returns how many.
    pub async fn verify_ownership(&self) -> Result<usize, BackendError> {
        let ids: Vec<String> = lock(&self.inner.live).keys().cloned().collect();
        self.let_go_of_lost(&ids).await
    }

    /// Lets go of those of `ids` (from this instance's revocation notice) it no longer owns.
    pub(crate) async fn check_ownership(&self, ids: &[String]) {
        let held: Vec<String> = {
            let live = lock(&self.inner.live);
            ids.iter()
                .filter(|id| live.contains_key(*id))
                .cloned()
                .collect()
        };
        if let Err(e) = self.let_go_of_lost(&held).await {
            tracing::warn!(error = %e, "revocation notice not checked; retrying next time")
        }
    }

    /// Reads the owners of `ids` (in bulk reads of 500) and lets go of every one whose record
    /// names another instance or is gone; returns how many.
    async fn let_go_of_lost(&self, ids: &[String]) -> Result<usize, BackendError> {
        let me = self.inner.config.instance_id.as_str();
        let mut lost = 0;
        for chunk in ids.chunks(500) {
            let owners = self.inner.store.owners(chunk).await?;
            for (id, owner) in chunk.iter().zip(owners) {
                if owner.as_deref() != Some(me) {
                    self.revoke(id, owner).await;
                    lost += 1;
                }
            }
        }
        Ok(lost)
    }

    /// Another instance owns `id` now (or its record is gone): stop publishing it, discard what is
    /// queued, close the socket, forget the record. Nothing is written: the record is not ours.
    pub(super) async fn revoke(&self, id: &str, owner: Option<String>) {
        let live = lock(&self.inner.live).remove(id);
        let record = self.inner.store.get_local(id);
        self.inner.store.forget_local(id);
        let Some(live) = live else { return };
        if owner.is_none() {
            // No other instance reports this connection from now on, so its consumers must hear
            // that it ended here: a record lost with the store's data (a restart without
            // persistence) would otherwise end a feed without a word.
            self.inner.lifecycle.emit(LifecycleEvent {
                kind: LifecycleKind::Disconnected,
                connection_id: id.into(),
                url: record
                    .map(|r| self.redacted_url(&r.url))
                    .unwrap_or_default()
                    .into(),
                reason: "its record is gone from the shared store (disconnected through another \
                         instance, cleared, expired, or lost with the store's data); socket closed"
                    .to_owned(),
                attempt: 0,
                epoch: live.connection.epoch(),
            });
        }
        live.revoked.store(true, Ordering::Release);
        self.inner.ownership.lost.fetch_add(1, Ordering::Relaxed);
        match &owner {
            Some(owner) => {
                tracing::warn!(connection = %id, new_owner = %owner, "another instance took this connection over; closing this instance's socket and discarding its unpublished frames")
            }
            None => {
                tracing::warn!(connection = %id, "this connection's record is gone from the shared store (disconnected through another instance, cleared, or expired); closing its socket")
            }
        }
        // Nothing of this connection is ours to publish any more: the publisher stops now (it may
        // be holding a batch for a lapsed lease, which only renews after this check), and the
        // socket closes in the background, so letting go of many connections takes no longer
        // than letting go of one.
        self.inner
            .metrics
            .fenced
            .fetch_add(live.queue.frames() as u64, Ordering::Relaxed);
        live.publisher.abort();
        let connection = live.connection;
        tokio::spawn(async move {
            connection
                .close(1001, "the connection moved to another instance")
                .await;
        });
    }

    /// Persists a change of a record this instance owns; when the record turns out to be another
    /// instance's now, lets the connection go and answers as a non-owner would.
    pub(super) async fn persist(
        &self,
        id: &str,
        change: impl FnOnce(&mut ConnectionRecord),
    ) -> Result<(), ServiceError> {
        match self.inner.store.update(id, change).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.owner_write_failed(id, e).await),
        }
    }

    /// The error of an owner-only write that did not happen. When the record turned out to be
    /// another instance's (or gone), the connection is let go first, and the caller hears what a
    /// non-owner would.
    pub(super) async fn owner_write_failed(&self, id: &str, e: OwnedWriteError) -> ServiceError {
        match e {
            OwnedWriteError::Backend(e) => e.into(),
            OwnedWriteError::Lost { owner } => {
                self.revoke(id, owner.clone()).await;
                match owner {
                    Some(owner) => ServiceError::NotOwner {
                        id: id.to_owned(),
                        owner,
                    },
                    None => ServiceError::NotFound { id: id.to_owned() },
                }
            }
        }
    }
}

/// One connection's lifecycle events, silenced once another instance took it over (that instance
/// reports the connection from then on).
pub(super) struct OwnedLifecycle {
    pub(super) sink: Arc<BusLifecycle>,
    pub(super) revoked: Arc<AtomicBool>,
}

impl LifecycleSink for OwnedLifecycle {
    fn emit(&self, event: LifecycleEvent) {
        if !self.revoked.load(Ordering::Acquire) {
            self.sink.emit(event);
        }
    }
}
