//! Sets of ids stored as one JSON array (the indexes, the peer list, revocation notices). The store
//! cannot add to a value in place, so every change is a read-modify-write with compare-and-set:
//! concurrent instances never lose each other's ids.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::backends::{BackendError, Concurrency, StateStore};

/// Compare-and-set attempts before an update gives up (each conflict means another instance just
/// wrote the same set, so this only trips under a pathological write storm).
pub(super) const CAS_ATTEMPTS: u32 = 32;

/// The ids of a set key and its ETag (`None`: the key does not exist). An unreadable value counts
/// as empty and is replaced by the next update, so one bad write cannot wedge a set forever.
pub(super) async fn read(
    state: &dyn StateStore,
    key: &str,
) -> Result<(BTreeSet<String>, Option<String>), BackendError> {
    let Some(stored) = state.get(key).await? else {
        return Ok((BTreeSet::new(), None));
    };
    let ids = serde_json::from_slice::<BTreeSet<String>>(&stored.value).unwrap_or_else(|e| {
        tracing::warn!(key, error = %e, "unreadable index replaced");
        BTreeSet::new()
    });
    Ok((ids, Some(stored.etag)))
}

/// Applies `change` (which says whether it changed anything) and writes the set with `ttl`.
pub(super) async fn update(
    state: &dyn StateStore,
    key: &str,
    ttl: Option<Duration>,
    mut change: impl FnMut(&mut BTreeSet<String>) -> bool,
) -> Result<(), BackendError> {
    for attempt in 0..CAS_ATTEMPTS {
        let (mut ids, etag) = read(state, key).await?;
        if !change(&mut ids) {
            return Ok(());
        }
        let body = serde_json::to_vec(&ids).unwrap_or_else(|_| b"[]".to_vec());
        let concurrency = match &etag {
            Some(etag) => Concurrency::IfMatch(etag),
            None => Concurrency::IfAbsent,
        };
        match state.set(key, &body, concurrency, ttl).await {
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

/// Adds `ids` to the set under `key` (written with `ttl`); no write when all are there already.
pub(super) async fn insert<'a>(
    state: &dyn StateStore,
    key: &str,
    ttl: Option<Duration>,
    ids: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), BackendError> {
    update(state, key, ttl, |set| {
        let before = set.len();
        set.extend(ids.clone().map(str::to_owned));
        set.len() != before
    })
    .await
}

/// Removes `ids` from the set under `key`; no write when none is there.
pub(super) async fn remove<'a>(
    state: &dyn StateStore,
    key: &str,
    ids: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), BackendError> {
    update(state, key, None, |set| {
        let before = set.len();
        for id in ids.clone() {
            set.remove(id);
        }
        set.len() != before
    })
    .await
}
