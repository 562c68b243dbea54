//! The shared tier: records under `websocketmanager.connection.<id>` with a TTL the owner refreshes,
//! plus two index keys (all ids; ids per instance) that make listing one bulk read. Index updates are
//! compare-and-set loops, so concurrent instances never lose each other's ids.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::backends::{BackendError, Concurrency, StateStore};
use crate::model::ConnectionRecord;

pub const CONNECTION_KEY_PREFIX: &str = "websocketmanager.connection.";
pub const CONNECTION_INDEX_KEY: &str = "websocketmanager.connection.index";
pub const INSTANCE_INDEX_PREFIX: &str = "websocketmanager.instance.index.";

/// Compare-and-set attempts before an index update gives up (each conflict means another instance
/// just wrote the same index, so this only trips under a pathological write storm).
const CAS_ATTEMPTS: u32 = 32;

pub struct Repository {
    state: Arc<dyn StateStore>,
    ttl: Duration,
}

pub fn record_key(id: &str) -> String {
    format!("{CONNECTION_KEY_PREFIX}{id}")
}

pub fn instance_index_key(instance_id: &str) -> String {
    format!("{INSTANCE_INDEX_PREFIX}{instance_id}")
}

impl Repository {
    pub fn new(state: Arc<dyn StateStore>, ttl: Duration) -> Self {
        Repository { state, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
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
        self.write(record, Concurrency::LastWrite).await?;
        self.index_add(CONNECTION_INDEX_KEY, &record.id).await?;
        self.index_add(&instance_index_key(&record.instance_id), &record.id)
            .await
    }

    /// Writes the record only if its stored ETag is still `etag` (a claim by another instance).
    pub async fn save_if(&self, record: &ConnectionRecord, etag: &str) -> Result<(), BackendError> {
        self.write(record, Concurrency::IfMatch(etag)).await?;
        self.index_add(&instance_index_key(&record.instance_id), &record.id)
            .await
    }

    async fn write(
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

    pub async fn delete(&self, id: &str, instance_id: &str) -> Result<(), BackendError> {
        self.state
            .delete(&record_key(id), Concurrency::LastWrite)
            .await?;
        self.index_remove(CONNECTION_INDEX_KEY, &[id]).await?;
        self.index_remove(&instance_index_key(instance_id), &[id])
            .await
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

    /// Ids listed in an instance's index (its connections, as last persisted).
    pub async fn instance_ids(&self, instance_id: &str) -> Result<Vec<String>, BackendError> {
        Ok(self
            .index(&instance_index_key(instance_id))
            .await?
            .0
            .into_iter()
            .collect())
    }

    /// Removes every record listed in the connection index, and the index itself.
    pub async fn clear_all(&self) -> Result<usize, BackendError> {
        let (ids, _) = self.index(CONNECTION_INDEX_KEY).await?;
        for id in &ids {
            self.state
                .delete(&record_key(id), Concurrency::LastWrite)
                .await?;
        }
        self.state
            .delete(CONNECTION_INDEX_KEY, Concurrency::LastWrite)
            .await?;
        Ok(ids.len())
    }

    pub async fn index_remove_instance(
        &self,
        instance_id: &str,
        ids: &[&str],
    ) -> Result<(), BackendError> {
        self.index_remove(&instance_index_key(instance_id), ids)
            .await
    }

    async fn index(&self, key: &str) -> Result<(BTreeSet<String>, Option<String>), BackendError> {
        let Some(stored) = self.state.get(key).await? else {
            return Ok((BTreeSet::new(), None));
        };
        let ids = serde_json::from_slice::<BTreeSet<String>>(&stored.value).unwrap_or_else(|e| {
            tracing::warn!(key, error = %e, "unreadable index replaced");
            BTreeSet::new()
        });
        Ok((ids, Some(stored.etag)))
    }

    async fn index_add(&self, key: &str, id: &str) -> Result<(), BackendError> {
        self.index_update(key, |ids| ids.insert(id.to_owned()))
            .await
    }

    async fn index_remove(&self, key: &str, remove: &[&str]) -> Result<(), BackendError> {
        self.index_update(key, |ids| {
            let before = ids.len();
            for id in remove {
                ids.remove(*id);
            }
            ids.len() != before
        })
        .await
    }

    /// Read-modify-write of an index with compare-and-set; `change` says whether it changed anything.
    async fn index_update(
        &self,
        key: &str,
        mut change: impl FnMut(&mut BTreeSet<String>) -> bool,
    ) -> Result<(), BackendError> {
        for attempt in 0..CAS_ATTEMPTS {
            let (mut ids, etag) = self.index(key).await?;
            if !change(&mut ids) {
                return Ok(());
            }
            let body = serde_json::to_vec(&ids).unwrap_or_else(|_| b"[]".to_vec());
            let concurrency = match &etag {
                Some(etag) => Concurrency::IfMatch(etag),
                None => Concurrency::IfAbsent,
            };
            match self.state.set(key, &body, concurrency, None).await {
                Ok(()) => return Ok(()),
                Err(BackendError::Conflict { .. }) => {
                    let pause = 1 + u64::from(attempt) * 2 + rand::random::<u64>() % 5;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(BackendError::Conflict {
            key: key.to_owned(),
        })
    }
}
