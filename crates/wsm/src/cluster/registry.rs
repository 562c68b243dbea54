//! The peer registry: which instances are alive, judged on this instance's own monotonic clock. A
//! peer is stale once its heartbeat has not changed for the stale threshold *as observed here*, so
//! neither clock skew between machines nor a newly started observer can make a live peer look dead:
//! a heartbeat seen for the first time counts as fresh, and after this instance could not read the
//! store every window starts again (an outage of the store is not a death of every peer).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::heartbeat::Heartbeat;

/// What this instance knows about another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    /// Heartbeating: calls for its connections are forwarded to `address`.
    Live { address: String },
    /// No heartbeat change for `silent_for` (at least the stale threshold); or listed with its
    /// heartbeat key gone (expired: it stopped writing long ago), whatever `silent_for` says.
    Stale { silent_for: Duration },
    /// Shut down gracefully: its sockets are closed, its connections are free to take.
    Stopped,
    /// Not in the registry (never seen, or its heartbeat expired long ago).
    Unknown,
}

#[derive(Debug)]
struct Seen {
    /// The heartbeat's ETag: a new one means a new write.
    version: Option<String>,
    changed_at: Instant,
    heartbeat: Option<Heartbeat>,
}

#[derive(Debug)]
pub struct Registry {
    me: String,
    stale_after: Duration,
    seen: HashMap<String, Seen>,
    /// Reads of the store failed since the last observation.
    blind: bool,
}

impl Registry {
    pub fn new(me: &str, stale_after: Duration) -> Self {
        Registry {
            me: me.to_owned(),
            stale_after,
            seen: HashMap::new(),
            blind: false,
        }
    }

    /// Records one read of every listed peer's heartbeat (`None`: absent or expired).
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        peers: Vec<(String, Option<(Heartbeat, String)>)>,
    ) {
        let restart = std::mem::take(&mut self.blind);
        let mut listed = HashMap::with_capacity(peers.len());
        for (id, heartbeat) in peers {
            let (heartbeat, version) = match heartbeat {
                Some((heartbeat, etag)) => (Some(heartbeat), Some(etag)),
                None => (None, None),
            };
            let seen = self.seen.remove(&id);
            let seen = match seen {
                Some(mut seen) => {
                    if seen.version != version || restart {
                        seen.changed_at = now;
                    }
                    seen.version = version;
                    if heartbeat.is_some() {
                        seen.heartbeat = heartbeat;
                    }
                    seen
                }
                None => Seen {
                    version,
                    changed_at: now,
                    heartbeat,
                },
            };
            listed.insert(id, seen);
        }
        self.seen = listed;
    }

    /// The store could not be read: the next observation starts every peer's window again.
    pub(crate) fn read_failed(&mut self) {
        self.blind = true;
    }

    pub fn state(&self, id: &str, now: Instant) -> PeerState {
        let Some(seen) = self.seen.get(id) else {
            return PeerState::Unknown;
        };
        if seen.version.is_some() && seen.heartbeat.as_ref().is_some_and(|h| h.stopping) {
            return PeerState::Stopped;
        }
        let silent_for = now.saturating_duration_since(seen.changed_at);
        if silent_for >= self.stale_after {
            return PeerState::Stale { silent_for };
        }
        match (&seen.version, &seen.heartbeat) {
            (Some(_), Some(heartbeat)) => PeerState::Live {
                address: heartbeat.grpc_address.clone(),
            },
            // Listed but without a heartbeat, not yet for the threshold: not known to be dead.
            _ => PeerState::Stale { silent_for },
        }
    }

    /// Other instances whose connections may be taken: stale or stopped.
    pub(crate) fn takeable(&self, now: Instant) -> Vec<(String, PeerState)> {
        let mut out: Vec<(String, PeerState)> = self
            .seen
            .keys()
            .filter(|id| **id != self.me)
            .map(|id| (id.clone(), self.state(id, now)))
            .filter(|(_, state)| match state {
                PeerState::Stopped => true,
                PeerState::Stale { silent_for } => *silent_for >= self.stale_after,
                _ => false,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Instances heartbeating now, this one included.
    pub fn live(&self, now: Instant) -> usize {
        self.live_ids(now).len()
    }

    /// The ids of the instances heartbeating now, this one included, sorted.
    pub(crate) fn live_ids(&self, now: Instant) -> Vec<String> {
        let mut ids: Vec<String> = self
            .seen
            .keys()
            .filter(|id| matches!(self.state(id, now), PeerState::Live { .. }))
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Whether `id`'s heartbeat key is gone (its TTL ran out): with an empty index, the peer can
    /// leave the list.
    pub fn expired(&self, id: &str) -> bool {
        self.seen.get(id).is_some_and(|seen| seen.version.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, stopping: bool) -> Heartbeat {
        Heartbeat {
            instance_id: id.into(),
            last_seen_at: "2026-11-24T00:00:00Z".into(),
            grpc_address: format!("{id}:5002"),
            stopping,
        }
    }

    fn read(peers: &[(&str, Option<&str>)]) -> Vec<(String, Option<(Heartbeat, String)>)> {
        peers
            .iter()
            .map(|(id, etag)| {
                (
                    id.to_string(),
                    etag.map(|etag| (beat(id, false), etag.to_string())),
                )
            })
            .collect()
    }

    const STALE: Duration = Duration::from_secs(3);

    #[test]
    fn a_peer_is_stale_once_its_heartbeat_has_not_changed_for_the_threshold_here() {
        let t0 = Instant::now();
        let mut registry = Registry::new("a", STALE);
        registry.observe(t0, read(&[("a", Some("1")), ("b", Some("7"))]));
        // First seen: fresh, however old its lastSeenAt.
        assert_eq!(
            registry.state("b", t0),
            PeerState::Live {
                address: "b:5002".into()
            }
        );
        registry.observe(t0 + Duration::from_secs(1), read(&[("b", Some("8"))]));
        registry.observe(t0 + Duration::from_secs(3), read(&[("b", Some("8"))]));
        assert!(matches!(
            registry.state("b", t0 + Duration::from_secs(3)),
            PeerState::Live { .. }
        ));
        let later = t0 + Duration::from_secs(4);
        assert_eq!(
            registry.state("b", later),
            PeerState::Stale { silent_for: STALE }
        );
        assert_eq!(registry.takeable(later).len(), 1);
        assert_eq!(registry.state("zz", later), PeerState::Unknown);
    }

    #[test]
    fn failed_reads_restart_every_window() {
        let t0 = Instant::now();
        let mut registry = Registry::new("a", STALE);
        registry.observe(t0, read(&[("b", Some("1"))]));
        registry.read_failed();
        // The store was unreadable for 10 s; b could not write either. Not stale on return.
        let back = t0 + Duration::from_secs(10);
        registry.observe(back, read(&[("b", Some("1"))]));
        assert!(matches!(registry.state("b", back), PeerState::Live { .. }));
        assert!(registry.takeable(back).is_empty());
    }

    #[test]
    fn a_stopping_peer_is_takeable_at_once_and_this_instance_never() {
        let t0 = Instant::now();
        let mut registry = Registry::new("a", STALE);
        registry.observe(
            t0,
            vec![
                ("a".into(), None),
                ("b".into(), Some((beat("b", true), "3".into()))),
            ],
        );
        assert_eq!(registry.state("b", t0), PeerState::Stopped);
        let takeable = registry.takeable(t0 + Duration::from_secs(60));
        assert_eq!(takeable, vec![("b".to_string(), PeerState::Stopped)]);
    }
}
