//! Several instances on one state store (SPEC 5, "Several instances"): heartbeats and the peer
//! registry, the lease that fences publishing, forwarding to a connection's owner, and failover,
//! where the records of a stale owner are claimed by compare-and-set and their sockets reopened.
//!
//! Two loops per instance: the heartbeat (writes `websocketmanager.heartbeat.<id>` every interval
//! and renews the lease), and the observer (reads every peer's heartbeat a few times per interval,
//! handles this instance's revocation notice, and starts a sweep when a peer is stale). They are
//! separate so a long sweep never delays a heartbeat.

mod failover;
pub mod forward;
pub mod heartbeat;
pub mod registry;
mod serve;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::backends::BackendError;
use crate::service::WebSocketService;
use crate::sync::lock;

pub use forward::{forwarded_by, HOP_HEADER};
pub(crate) use forward::{Forwarder, PeerClient};
pub(crate) use heartbeat::Heartbeat;
pub use registry::{PeerState, Registry};
pub use serve::Outcome;

/// Heartbeat and failover settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `INSTANCE_HEARTBEAT_INTERVAL_SECONDS` (10 s).
    pub heartbeat_interval: Duration,
    /// `INSTANCE_STALE_THRESHOLD_SECONDS` (30 s): a peer silent this long is taken over.
    pub stale_after: Duration,
    /// `host:port` where peers reach this instance's gRPC port.
    pub advertised_address: String,
    /// The peer key forwarded calls carry (`--peer-key`).
    pub peer_key: Option<String>,
    /// Where peers may be (`--peer-allowed-cidrs`); empty = anywhere.
    pub peer_allowed: Vec<crate::security::AllowEntry>,
}

impl ClusterConfig {
    /// How often peers' heartbeats are read: a few times per interval, so a death is noticed
    /// soon after the threshold, not up to a whole interval later.
    pub(crate) fn observe_every(&self) -> Duration {
        (self.heartbeat_interval / 4).clamp(Duration::from_millis(50), Duration::from_millis(2500))
    }

    /// The lease ends this long before peers may consider the instance stale: room for a
    /// publish already under way when it ends.
    fn lease_margin(&self) -> Duration {
        self.heartbeat_interval.min(self.stale_after / 4)
    }

    /// Heartbeat keys outlive the threshold, so a reader sees a dead peer's last heartbeat go
    /// unchanged (stale) before the key disappears.
    fn heartbeat_ttl(&self) -> Duration {
        (self.stale_after * 2).max(self.heartbeat_interval * 3)
    }
}

/// Where a call for another instance's connection goes.
enum Route {
    /// The owner is alive at this address.
    Forward(String),
    /// The owner is stale, stopped or gone: claim the connection, with this reason.
    Claim(String),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    pub heartbeat_failures: std::sync::atomic::AtomicU64,
}

/// This instance's membership. Cheap to share (`Arc`).
pub struct Cluster {
    config: ClusterConfig,
    service: WebSocketService,
    registry: Mutex<Registry>,
    forwarder: Forwarder,
    sweeping: AtomicBool,
    /// When this instance first found each takeable peer so (see `sweep`).
    stale_since: Mutex<HashMap<String, Instant>>,
    metrics: ClusterMetrics,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    /// Joins: writes the first heartbeat (failing start if the store refuses it), lists this
    /// instance among the peers, starts both loops, and resumes this instance's own connections a
    /// previous run left behind (same `HOSTNAME`, not yet taken by a peer).
    pub async fn start(
        service: WebSocketService,
        config: ClusterConfig,
    ) -> Result<Arc<Cluster>, BackendError> {
        let me = service.instance_id().to_owned();
        let cluster = Arc::new(Cluster {
            registry: Mutex::new(Registry::new(&me, config.stale_after)),
            forwarder: Forwarder::new(&me, config.peer_key.as_deref(), config.peer_allowed.clone()),
            config,
            service,
            sweeping: AtomicBool::new(false),
            stale_since: Mutex::default(),
            metrics: ClusterMetrics::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let started = Instant::now();
        cluster.write_heartbeat(false).await?;
        cluster.renew_lease(started);
        cluster.service.membership().join(&me).await?;
        cluster.observe().await;

        let heartbeat = tokio::spawn(Arc::clone(&cluster).heartbeat_loop());
        let observer = tokio::spawn(Arc::clone(&cluster).observer_loop());
        let adopt = tokio::spawn(Arc::clone(&cluster).adopt_own());
        lock(&cluster.tasks).extend([heartbeat, observer, adopt]);
        tracing::info!(
            instance = %me,
            address = %cluster.config.advertised_address,
            heartbeat_ms = cluster.config.heartbeat_interval.as_millis() as u64,
            stale_ms = cluster.config.stale_after.as_millis() as u64,
            "joined the cluster"
        );
        Ok(cluster)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn metrics(&self) -> &ClusterMetrics {
        &self.metrics
    }

    fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// Instances heartbeating now, as this one sees them (itself included).
    pub(crate) fn live_peers(&self) -> usize {
        lock(&self.registry).live(Instant::now())
    }

    /// Where a call for a connection `owner` holds should go.
    async fn route(&self, owner: &str) -> Route {
        let state = lock(&self.registry).state(owner, Instant::now());
        match state {
            PeerState::Live { address } => Route::Forward(address),
            PeerState::Stopped => Route::Claim(format!("instance {owner} has shut down")),
            PeerState::Stale { silent_for } => Route::Claim(format!(
                "instance {owner} has not heartbeated for {} ms",
                silent_for.as_millis()
            )),
            // Not seen yet: perhaps it started since the last look. Its own heartbeat decides.
            PeerState::Unknown => match self.read_heartbeat(owner).await {
                Ok(Some(h)) if !h.stopping => Route::Forward(h.grpc_address),
                Ok(Some(_)) => Route::Claim(format!("instance {owner} has shut down")),
                Ok(None) => Route::Claim(format!("instance {owner} has no heartbeat in the store")),
                // The store is down: the claim fails too, and its error says so.
                Err(_) => Route::Claim(format!("instance {owner}'s heartbeat cannot be read")),
            },
        }
    }

    /// Stops the loops and tells peers this instance is gone, so they take its connections over at
    /// once (called after the sockets were closed and the queues flushed).
    pub async fn leave(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        // Nothing more is published from here: peers take over as soon as they read `stopping`.
        self.service.lease().renew(Instant::now());
        match self.write_heartbeat(true).await {
            Ok(()) => {
                tracing::info!("left the cluster; peers take over this instance's connections")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not announce leaving; peers take over once this instance is stale")
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failing = false;
        loop {
            tick.tick().await;
            let started = Instant::now();
            if let Err(e) = self.write_heartbeat(false).await {
                self.metrics
                    .heartbeat_failures
                    .fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(error = %e, "heartbeat not written; retrying every interval. Publishing pauses once the lease runs out, as peers may then take this instance's connections");
                }
                failing = true;
                continue;
            }
            if failing {
                tracing::info!("heartbeat written again");
                failing = false;
            }
            // Only this loop renews the lease, so it is invalid now if it lapsed at any time
            // since the last renewal, including while this write was under way (a slow store).
            if !self.service.lease().is_valid() {
                // Paused or cut off long enough that peers may have taken connections: find out
                // which are still ours before publishing anything again.
                tracing::warn!("the lease had lapsed (this instance was paused or could not reach the store); checking which connections are still ours before publishing again");
                match self.service.verify_ownership().await {
                    Ok(lost) => {
                        if lost > 0 {
                            tracing::warn!(lost, "connections were taken over by other instances while this one was away; their sockets are closed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ownership check failed; publishing stays paused until it succeeds");
                        continue;
                    }
                }
            }
            self.renew_lease(started);
        }
    }

    async fn observer_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.observe_every());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.observe().await;
            let takeable = lock(&self.registry).takeable(Instant::now());
            // A peer that came back starts afresh if it goes stale again.
            lock(&self.stale_since).retain(|peer, _| takeable.iter().any(|(p, _)| p == peer));
            if !takeable.is_empty() && !self.sweeping.swap(true, Ordering::AcqRel) {
                let cluster = Arc::clone(&self);
                tokio::spawn(async move {
                    cluster.sweep(takeable).await;
                    cluster.sweeping.store(false, Ordering::Release);
                });
            }
        }
    }

    /// Reads the peer list, every peer's heartbeat and this instance's revocation notice.
    async fn observe(&self) {
        // A change counts from when this look began: a look exactly one threshold after the
        // last change then sees the peer stale, instead of missing it by the reads' duration.
        // (Earlier by at most one read, well inside the lease margin.)
        let looked = Instant::now();
        let me = self.service.instance_id().to_owned();
        let membership = self.service.membership();
        let peers = match membership.peers().await {
            Ok(peers) => peers,
            Err(e) => {
                lock(&self.registry).read_failed();
                tracing::debug!(error = %e, "peer list not readable");
                return;
            }
        };
        if !peers.contains(&me) {
            // Cleared (CLEAR_ALL, a flushed store): list this instance again.
            let _ = membership.join(&me).await;
        }
        let ids: Vec<String> = peers.into_iter().collect();
        let look = match membership.look(&ids, &me).await {
            Ok(look) => look,
            Err(e) => {
                lock(&self.registry).read_failed();
                tracing::debug!(error = %e, "heartbeats not readable");
                return;
            }
        };
        let observed: Vec<(String, Option<(Heartbeat, String)>)> = ids
            .into_iter()
            .zip(look.heartbeats)
            .map(|(id, value)| {
                let heartbeat = value.and_then(|v| {
                    serde_json::from_slice::<Heartbeat>(&v.value)
                        .ok()
                        .map(|h| (h, v.etag))
                });
                (id, heartbeat)
            })
            .collect();
        lock(&self.registry).observe(looked, observed);
        if !look.revoked.is_empty() {
            self.service.check_ownership(&look.revoked).await;
            if let Err(e) = membership.clear_revoked(&me, &look.revoked).await {
                tracing::debug!(error = %e, "revocation notice not cleared; handled again next time");
            }
        }
    }

    async fn write_heartbeat(&self, stopping: bool) -> Result<(), BackendError> {
        let me = self.service.instance_id();
        let heartbeat = Heartbeat::now(me, &self.config.advertised_address, stopping);
        let body = serde_json::to_vec(&heartbeat).unwrap_or_default();
        let ttl = if stopping {
            self.config.stale_after
        } else {
            self.config.heartbeat_ttl()
        };
        self.service.membership().beat(me, &body, ttl).await
    }

    async fn read_heartbeat(&self, id: &str) -> Result<Option<Heartbeat>, BackendError> {
        Ok(self
            .service
            .membership()
            .heartbeat(id)
            .await?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn renew_lease(&self, heartbeat_started: Instant) {
        let until = heartbeat_started + self.config.stale_after - self.config.lease_margin();
        self.service.lease().renew(until);
    }
}
