//! Connection records in two tiers: a local cache of what this instance holds, and the shared
//! repository every instance reads. Listing merges both by id, the shared copy winning.

pub mod keys;
mod membership;
mod repository;
mod sets;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub(crate) use membership::Membership;
pub use repository::{OwnedWriteError, Repository};

use crate::backends::{BackendError, StateStore};
use crate::model::ConnectionRecord;

/// Records TTL: at least 30 s and at most 3600 s (SPEC 5, "State").
pub(crate) const TTL_RANGE: std::ops::RangeInclusive<u64> = 30..=3600;

/// What a TTL refresh did.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Records whose write failed; the next round retries them.
    pub failed: usize,
    /// Records another instance owns now, or that are gone: `(id, new owner)`.
    pub lost: Vec<(String, Option<String>)>,
}

pub struct ConnectionStore {
    local: Mutex<HashMap<String, ConnectionRecord>>,
    repository: Repository,
}

impl ConnectionStore {
    pub fn new(state: Arc<dyn StateStore>, ttl: Duration) -> Self {
        ConnectionStore {
            local: Mutex::new(HashMap::new()),
            repository: Repository::new(state, ttl),
        }
    }

    /// The shared tier alone (the store's own tests read it directly).
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// Whether the state store answers (for `/ready`).
    pub(crate) async fn ping(&self) -> Result<(), BackendError> {
        self.repository.ping().await
    }

    /// The shared copy and its ETag, for a compare-and-set claim.
    pub(crate) async fn load_shared(
        &self,
        id: &str,
    ) -> Result<Option<(ConnectionRecord, String)>, BackendError> {
        self.repository.load(id).await
    }

    /// Writes a claimed record if the shared copy is still at `etag` (exactly one of the instances
    /// that read that version wins), and lists it in its new owner's index.
    pub(crate) async fn claim(
        &self,
        record: &ConnectionRecord,
        etag: &str,
    ) -> Result<(), BackendError> {
        self.repository.save_if(record, etag).await
    }

    /// The owner each shared record names, in the order of `ids` (`None`: gone or unreadable).
    pub(crate) async fn owners(&self, ids: &[String]) -> Result<Vec<Option<String>>, BackendError> {
        self.repository.owners(ids).await
    }

    /// The local copy, else the shared one.
    pub async fn get(&self, id: &str) -> Result<Option<ConnectionRecord>, BackendError> {
        if let Some(record) = self.local().get(id).cloned() {
            return Ok(Some(record));
        }
        Ok(self
            .repository
            .load(id)
            .await?
            .map(|(record, _etag)| record))
    }

    /// The local copy only (records this instance holds).
    pub(crate) fn get_local(&self, id: &str) -> Option<ConnectionRecord> {
        self.local().get(id).cloned()
    }

    /// Updates the local copy and persists it.
    pub async fn put(&self, record: ConnectionRecord) -> Result<(), BackendError> {
        self.local().insert(record.id.clone(), record.clone());
        self.repository.save(&record).await
    }

    /// Changes the local copy with `change` and persists the record while this instance still
    /// owns it; `None` if not held here. `Lost` means another instance took it (or it is gone);
    /// the caller lets it go. The indexes already list it (`put` added it; `refresh` restores lost
    /// entries), so they are not read again: every status change read both whole indexes, which
    /// with 10,000 connections kept a core busy long after they were established.
    pub async fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ConnectionRecord),
    ) -> Result<Option<ConnectionRecord>, OwnedWriteError> {
        let record = {
            let mut local = self.local();
            let Some(record) = local.get_mut(id) else {
                return Ok(None);
            };
            change(record);
            record.clone()
        };
        // The latest local copy is written, so two changes racing each other both land.
        self.repository
            .write_owned(id, || self.get_local(id))
            .await?;
        Ok(Some(record))
    }

    /// Forgets a record in both tiers, deleting the shared copy only while it still names the
    /// record's owner (compare-and-set).
    pub(crate) async fn remove_owned(
        &self,
        record: &ConnectionRecord,
    ) -> Result<(), OwnedWriteError> {
        self.local().remove(&record.id);
        self.repository.delete_owned(record).await
    }

    /// Holds `record` locally without writing it (it was just written by a claim).
    pub fn hold(&self, record: ConnectionRecord) {
        self.local().insert(record.id.clone(), record);
    }

    /// Forgets the local copy only (e.g. ownership passed to another instance).
    pub(crate) fn forget_local(&self, id: &str) {
        self.local().remove(id);
    }

    /// Every record: the shared ones first, then local ones the shared store does not have (not yet
    /// persisted, or written while it was down). When both have an id, the shared copy wins.
    pub async fn list(&self) -> Result<Vec<ConnectionRecord>, BackendError> {
        let mut merged: BTreeMap<String, ConnectionRecord> = BTreeMap::new();
        let remote = self.repository.load_all().await?;
        let mut out: Vec<ConnectionRecord> = Vec::with_capacity(remote.len());
        for record in remote {
            merged.insert(record.id.clone(), record.clone());
            out.push(record);
        }
        let mut local: Vec<ConnectionRecord> = self
            .local()
            .values()
            .filter(|r| !merged.contains_key(&r.id))
            .cloned()
            .collect();
        local.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        out.extend(local);
        Ok(out)
    }

    /// Re-saves every local record this instance still owns, which refreshes its TTL, and makes
    /// sure the indexes list them (one index update for all: saving them one by one read each index
    /// once per record, which kept a core busy for seconds with 10,000 connections).
    pub async fn refresh(&self) -> Refreshed {
        let ids: Vec<String> = self.local().keys().cloned().collect();
        let mut outcome = Refreshed::default();
        let mut written = Vec::with_capacity(ids.len());
        for id in ids {
            match self
                .repository
                .write_owned(&id, || self.get_local(&id))
                .await
            {
                Ok(()) => written.extend(self.get_local(&id)),
                Err(OwnedWriteError::Lost { owner }) => outcome.lost.push((id, owner)),
                Err(OwnedWriteError::Backend(e)) => {
                    outcome.failed += 1;
                    tracing::warn!(connection = %id, error = %e, "record TTL refresh failed; retrying next round");
                }
            }
        }
        if let Err(e) = self.repository.index_all(&written).await {
            outcome.failed += written.len();
            tracing::warn!(records = written.len(), error = %e, "re-indexing the records failed; retrying next round");
        }
        outcome
    }

    /// `CLEAR_ALL_ON_START`: removes every record and index in the shared store (also the indexes
    /// of `instances`) and the local cache.
    pub async fn clear_all(&self, instances: &[String]) -> Result<usize, BackendError> {
        self.local().clear();
        self.repository.clear_all(instances).await
    }

    fn local(&self) -> MutexGuard<'_, HashMap<String, ConnectionRecord>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
