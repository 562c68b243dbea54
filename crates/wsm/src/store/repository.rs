//! The shared tier: records under `websocketmanager.connection.<id>` with a TTL the owner refreshes,
//! plus two index keys (all ids; ids per instance) that make listing one bulk read. Index updates are
//! compare-and-set loops, so concurrent instances never lose each other's ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::backends::{BackendError, Concurrency, StateStore};
use crate::model::ConnectionRecord;

use super::keys::{instance_index_key, record_key, CONNECTION_INDEX_KEY};
use super::sets::{self, CAS_ATTEMPTS};

pub struct Repository {
    state: Arc<dyn StateStore>,
    ttl: Duration,
    /// Ids waiting to be added, by index key (see `index_add`).
    adding: Mutex<HashMap<String, Vec<String>>>,
    /// Held by the one caller at a time that writes the waiting ids.
    add_writer: tokio::sync::Mutex<()>,
}

/// Why an owner's write of its record did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OwnedWriteError {
    /// The record names another owner now (`Some`), or is gone (`None`: disconnected through
    /// another instance, cleared, or expired).
    #[error("the connection is no longer this instance's (owner now: {})", owner.as_deref().unwrap_or("none"))]
    Lost { owner: Option<String> },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Repository {
    pub fn new(state: Arc<dyn StateStore>, ttl: Duration) -> Self {
        Repository {
            state,
            ttl,
            adding: Mutex::default(),
            add_writer: tokio::sync::Mutex::new(()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the state store answers (for `/ready`).
    pub(crate) async fn ping(&self) -> Result<(), BackendError> {
        self.state.ping().await
    }

    /// The record and its ETag (for compare-and-set claims).
    pub async fn load(&self, id: &str) -> Result<Option<(ConnectionRecord, String)>, BackendError> {
        let Some(stored) = self.state.get(&record_key(id)).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<ConnectionRecord>(&stored.value) {
            Ok(record) => Ok(Some((record, stored.etag))),
            Err(e) => {
                tracing::warn!(connection = id, error = %e, "unreadable connection record ignored");
                Ok(None)
            }
        }
    }

    /// Writes the record (refreshing its TTL) and makes sure both indexes list it.
    pub async fn save(&self, record: &ConnectionRecord) -> Result<(), BackendError> {
        self.write(record).await?;
        self.index_add(CONNECTION_INDEX_KEY, &record.id).await?;
        self.index_add(&instance_index_key(&record.instance_id), &record.id)
            .await
    }

    /// Writes the record only if its stored ETag is still `etag` (a claim: of all the instances
    /// that read the same version, exactly one wins), then lists it in its new owner's index.
    pub async fn save_if(&self, record: &ConnectionRecord, etag: &str) -> Result<(), BackendError> {
        self.write_with(record, Concurrency::IfMatch(etag)).await?;
        self.index_add(&instance_index_key(&record.instance_id), &record.id)
            .await
    }

    /// Writes the latest copy `latest()` gives, only while the stored record still names its
    /// owner: an owner that was paused or cut off must not overwrite the claim of the instance
    /// that took the connection over. Read-then-compare-and-set, so a claim landing in between
    /// makes the write fail rather than undo the claim.
    pub(crate) async fn write_owned(
        &self,
        id: &str,
        latest: impl Fn() -> Option<ConnectionRecord>,
    ) -> Result<(), OwnedWriteError> {
        let Some(owner) = latest().map(|r| r.instance_id) else {
            return Ok(());
        };
        let latest = &latest;
        let written = self
            .while_owned(id, &owner, |etag| async move {
                match latest() {
                    Some(record) => self.write_with(&record, Concurrency::IfMatch(&etag)).await,
                    None => Ok(()),
                }
            })
            .await?;
        if written {
            Ok(())
        } else {
            Err(OwnedWriteError::Lost { owner: None })
        }
    }

    /// Runs `change` (a write or delete conditional on the ETag it is given) while the stored
    /// record names `owner`; `false` if there is no record. A conflict means another write came
    /// first, ours (a status change and a tag change at once) or a claim: read again and see
    /// which.
    async fn while_owned<F, Fut>(
        &self,
        id: &str,
        owner: &str,
        change: F,
    ) -> Result<bool, OwnedWriteError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), BackendError>>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let etag = match self.load(id).await? {
                None => return Ok(false),
                Some((stored, _)) if stored.instance_id != owner => {
                    return Err(OwnedWriteError::Lost {
                        owner: Some(stored.instance_id),
                    })
                }
                Some((_, etag)) => etag,
            };
            match change(etag).await {
                Ok(()) => return Ok(true),
                Err(BackendError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BackendError::Conflict {
            key: record_key(id),
        }
        .into())
    }

    /// Writes the record (refreshing its TTL) without touching the indexes.
    pub async fn write(&self, record: &ConnectionRecord) -> Result<(), BackendError> {
        self.write_with(record, Concurrency::LastWrite).await
    }

    /// Makes sure both indexes list every one of `records`: one update per index.
    pub(crate) async fn index_all(&self, records: &[ConnectionRecord]) -> Result<(), BackendError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut by_instance: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for record in records {
            by_instance
                .entry(&record.instance_id)
                .or_default()
                .push(&record.id);
        }
        let all = by_instance.values().flatten().copied();
        self.index_insert(CONNECTION_INDEX_KEY, all).await?;
        for (instance, ids) in &by_instance {
            self.index_insert(&instance_index_key(instance), ids.iter().copied())
                .await?;
        }
        Ok(())
    }

    async fn index_insert<'a>(
        &self,
        key: &str,
        ids: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), BackendError> {
        sets::insert(self.state.as_ref(), key, None, ids).await
    }

    async fn write_with(
        &self,
        record: &ConnectionRecord,
        concurrency: Concurrency<'_>,
    ) -> Result<(), BackendError> {
        let body = serde_json::to_vec(record).map_err(|e| BackendError::Rejected {
            backend: "record encoding",
            reason: e.to_string(),
        })?;
        self.state
            .set(&record_key(&record.id), &body, concurrency, Some(self.ttl))
            .await
    }

    /// Deletes the record while it names `record.instance_id`, then its index entries. A record
    /// already gone is fine (the delete is idempotent).
    pub(crate) async fn delete_owned(
        &self,
        record: &ConnectionRecord,
    ) -> Result<(), OwnedWriteError> {
        let key = record_key(&record.id);
        self.while_owned(&record.id, &record.instance_id, |etag| {
            let key = &key;
            async move { self.state.delete(key, Concurrency::IfMatch(&etag)).await }
        })
        .await?;
        self.index_remove(CONNECTION_INDEX_KEY, &[&record.id])
            .await?;
        self.index_remove(&instance_index_key(&record.instance_id), &[&record.id])
            .await?;
        Ok(())
    }

    /// Every live record, in index order; ids whose record expired are pruned from the index.
    pub async fn load_all(&self) -> Result<Vec<ConnectionRecord>, BackendError> {
        let ids: Vec<String> = self
            .index(CONNECTION_INDEX_KEY)
            .await?
            .0
            .into_iter()
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| record_key(id)).collect();
        let stored = self.state.get_bulk(&keys).await?;
        let mut records = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, value) in ids.iter().zip(stored) {
            match value.map(|v| serde_json::from_slice::<ConnectionRecord>(&v.value)) {
                Some(Ok(record)) => records.push(record),
                Some(Err(e)) => {
                    tracing::warn!(connection = %id, error = %e, "unreadable connection record ignored")
                }
                None => gone.push(id.as_str()),
            }
        }
        if !gone.is_empty() {
            // Best effort: a failed prune is retried by the next listing.
            if let Err(e) = self.index_remove(CONNECTION_INDEX_KEY, &gone).await {
                tracing::debug!(error = %e, "pruning expired ids from the index failed");
            }
        }
        Ok(records)
    }

    /// The owner each record names, in the order of `ids` (`None`: gone or unreadable): one bulk
    /// read.
    pub async fn owners(&self, ids: &[String]) -> Result<Vec<Option<String>>, BackendError> {
        let keys: Vec<String> = ids.iter().map(|id| record_key(id)).collect();
        Ok(self
            .state
            .get_bulk(&keys)
            .await?
            .into_iter()
            .map(|stored| {
                stored
                    .and_then(|v| serde_json::from_slice::<ConnectionRecord>(&v.value).ok())
                    .map(|r| r.instance_id)
            })
            .collect())
    }

    /// Ids listed in an instance's index (its connections, as last persisted).
    pub async fn instance_ids(&self, instance_id: &str) -> Result<Vec<String>, BackendError> {
        Ok(self
            .index(&instance_index_key(instance_id))
            .await?
            .0
            .into_iter()
            .collect())
    }

    /// Removes every record listed in the connection index, the index itself, and the instance
    /// indexes of the records' owners and of `instances`.
    pub async fn clear_all(&self, instances: &[String]) -> Result<usize, BackendError> {
        let (ids, _) = self.index(CONNECTION_INDEX_KEY).await?;
        let keys: Vec<String> = ids.iter().map(|id| record_key(id)).collect();
        let mut owners: BTreeSet<String> = instances.iter().cloned().collect();
        if !keys.is_empty() {
            for stored in self.state.get_bulk(&keys).await?.into_iter().flatten() {
                if let Ok(record) = serde_json::from_slice::<ConnectionRecord>(&stored.value) {
                    owners.insert(record.instance_id);
                }
            }
        }
        for key in &keys {
            self.state.delete(key, Concurrency::LastWrite).await?;
        }
        for owner in &owners {
            self.state
                .delete(&instance_index_key(owner), Concurrency::LastWrite)
                .await?;
        }
        self.state
            .delete(CONNECTION_INDEX_KEY, Concurrency::LastWrite)
            .await?;
        Ok(ids.len())
    }

    /// The ids of an index and its ETag.
    pub(crate) async fn index(
        &self,
        key: &str,
    ) -> Result<(BTreeSet<String>, Option<String>), BackendError> {
        sets::read(self.state.as_ref(), key).await
    }

    /// Adds `id` to an index. An index is one value, so every write costs its whole size; written
    /// once per id, 10,000 concurrent Connects took quadratic time (about 50 s). So concurrent adds
    /// are written together: each caller queues its id, and whoever holds the writer lock next writes
    /// every queued id in one read-modify-write. A caller gets `Ok` only after a write that held its
    /// id succeeded: a failed write puts the others' ids back for the callers still waiting.
    async fn index_add(&self, key: &str, id: &str) -> Result<(), BackendError> {
        self.adding()
            .entry(key.to_owned())
            .or_default()
            .push(id.to_owned());
        let _writer = self.add_writer.lock().await;
        let mut ids = self.adding().remove(key).unwrap_or_default();
        if ids.is_empty() {
            // An earlier writer took ours and succeeded.
            return Ok(());
        }
        let result = self.index_insert(key, ids.iter().map(String::as_str)).await;
        if result.is_err() {
            if let Some(ours) = ids.iter().position(|queued| queued == id) {
                ids.swap_remove(ours);
            }
            if !ids.is_empty() {
                self.adding().entry(key.to_owned()).or_default().extend(ids);
            }
        }
        result
    }

    fn adding(&self) -> MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.adding.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn index_remove(&self, key: &str, remove: &[&str]) -> Result<(), BackendError> {
        sets::remove(self.state.as_ref(), key, remove.iter().copied()).await
    }
}
