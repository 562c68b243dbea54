//! The rules of the WebSocket Manager API (the original `IWebSocketService`): validation, ownership
//! and the connection records. The wiring of each socket to its publisher is in `wiring.rs`, the
//! status writer in `status.rs`, the operator's rotation in `rotation.rs`. Transport-agnostic: the
//! gRPC and HTTP layers translate to and from these calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backends::watched::{WatchedBus, WatchedState, WriteHealth};
use crate::backends::{BackendError, Publisher, StateStore};
use crate::connection::{headers, Connection, ConnectionOptions, ConnectionSpec, Target};
use crate::error::ServiceError;
use crate::model::{ConnectionRecord, OutboundMessage, Status, StoredMessage};
use crate::publish::{
    BusLifecycle, Lease, PublishMetrics, PublishOptions, QueueDepth, ReceiveStats,
};
use crate::store::{ConnectionStore, Membership};
use crate::sync::lock;
use crate::venue::{Profiles, VenueOptions};

mod checks;
mod ownership;
mod rotation;
mod slots;
mod status;
mod wiring;

use checks::{default_content_type, send_error, validate_tags};
pub(crate) use checks::{send_timeout, MAX_ON_CONNECT, MAX_SEND_TIMEOUT};
pub(crate) use ownership::OwnershipCounts;
pub use ownership::TakeOver;
use slots::{Slot, Slots};
pub(crate) use status::LifecycleCounts;
use status::{write_statuses, StatusObserver};

/// The service's settings; validated by the config layer.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// This instance (`HOSTNAME`, or a random UUID).
    pub instance_id: String,
    /// CloudEvent `source` of published events (the Dapr app id).
    pub app_id: String,
    pub connection: ConnectionOptions,
    pub publish: PublishOptions,
    /// Frames and payload bytes queued per connection between socket and bus.
    pub publish_queue_frames: usize,
    pub publish_queue_bytes: usize,
    /// Record TTL; the owner refreshes it every max(TTL/3, 10 s).
    pub record_ttl: Duration,
    /// `Send` timeout when the request gives 0.
    pub default_send_timeout: Duration,
    /// Most connections this instance holds (0 = no limit).
    pub max_connections: usize,
    /// `CLEAR_ALL_ON_START`.
    pub clear_all_on_start: bool,
    /// Venue profiles Connect may name (the shipped ones, plus `--profiles FILE`).
    pub profiles: Arc<Profiles>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            instance_id: uuid::Uuid::new_v4().to_string(),
            app_id: "websocketmanager".into(),
            connection: ConnectionOptions::default(),
            publish: PublishOptions::default(),
            publish_queue_frames: 4096,
            publish_queue_bytes: 8 << 20,
            record_ttl: Duration::from_secs(300),
            default_send_timeout: Duration::from_secs(5),
            max_connections: 0,
            clear_all_on_start: false,
            profiles: Arc::new(Profiles::shipped()),
        }
    }
}

/// A `Connect` request.
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    pub url: String,
    pub auto_reconnect: bool,
    pub tags: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub subprotocols: Vec<String>,
    pub on_connect: Vec<OutboundMessage>,
    /// This connection's keepalive Ping interval; `None` = the server's.
    pub ping_interval: Option<Duration>,
    /// A venue profile (`wsm profiles`); `None` = none.
    pub profile: Option<String>,
    /// Venue options given in the request; each replaces the profile's option of the same name.
    pub venue: VenueOptions,
}

struct Live {
    connection: Connection,
    /// This connection's share of `--max-connections`, given back when it is dropped.
    _slot: Slot,
    publisher: JoinHandle<()>,
    /// The depth of the connection's publish queue.
    queue: QueueDepth,
    /// Set when another instance took the connection over: its frames and lifecycle events are no
    /// longer this instance's to publish.
    revoked: Arc<AtomicBool>,
}

/// What the service can tell about itself now, for `/metrics`.
#[derive(Debug, Clone)]
pub struct ServiceSnapshot {
    /// This instance's live connections by status, in `Status` order
    /// (connecting, connected, reconnecting, disconnected).
    pub by_status: [(Status, usize); 4],
    /// Frames waiting in publish queues, all connections.
    pub queued_frames: usize,
    /// Correlated `Send` requests waiting for their response, all connections.
    pub pending_requests: usize,
    pub received_frames: u64,
    pub received_bytes: u64,
    /// Venue protocol counts (SPEC 9).
    pub venue_gaps: u64,
    pub frames_refused: u64,
    pub venue_notices: u64,
    pub keepalive_timeouts: u64,
    /// Continuity (SPEC 8).
    pub continuity_gaps: u64,
    pub frames_duplicate: u64,
    pub arbiter_bytes: u64,
    pub rotations: u64,
    pub reconnects: u64,
    pub degraded: u64,
    pub errors: u64,
    /// Lifecycle events dropped because the lifecycle publisher was behind or the bus was down.
    pub lifecycle_dropped: u64,
    pub taken_over: u64,
    pub ownership_lost: u64,
}

struct Inner {
    config: ServiceConfig,
    store: ConnectionStore,
    /// The peer list, heartbeats and revocation notices, for the cluster.
    membership: Membership,
    bus: Arc<dyn Publisher>,
    lifecycle: Arc<BusLifecycle>,
    live: Mutex<HashMap<String, Live>>,
    metrics: Arc<PublishMetrics>,
    received: Arc<ReceiveStats>,
    events: Arc<LifecycleCounts>,
    ownership: OwnershipCounts,
    /// Fences publishing while this instance may have been declared dead (see `publish::fence`).
    lease: Arc<Lease>,
    /// `--max-connections`, reserved before every dial and claim.
    slots: Slots,
    /// Whether the last write to the state store, and to the bus, succeeded.
    state_writes: Arc<WriteHealth>,
    bus_writes: Arc<WriteHealth>,
    /// Set when shutdown begins.
    closing: AtomicBool,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

/// The WebSocket Manager service. Cheap to clone.
#[derive(Clone)]
pub struct WebSocketService {
    inner: Arc<Inner>,
}

impl WebSocketService {
    /// Starts the service: clears the shared records if configured, and starts the TTL refresher
    /// and the status writer.
    pub async fn start(
        config: ServiceConfig,
        state: Arc<dyn StateStore>,
        bus: Arc<dyn Publisher>,
    ) -> Result<WebSocketService, ServiceError> {
        let ttl = config.record_ttl.as_secs();
        if !crate::store::TTL_RANGE.contains(&ttl) {
            return Err(ServiceError::InvalidArgument(format!(
                "the connection record TTL must be {} to {} seconds, got {ttl}",
                crate::store::TTL_RANGE.start(),
                crate::store::TTL_RANGE.end()
            )));
        }
        // Writes are watched for `/ready`: a store that answers PING may still refuse them.
        let state_writes = Arc::new(WriteHealth::default());
        let bus_writes = Arc::new(WriteHealth::default());
        let state: Arc<dyn StateStore> =
            Arc::new(WatchedState::new(state, Arc::clone(&state_writes)));
        let bus: Arc<dyn Publisher> = Arc::new(WatchedBus::new(bus, Arc::clone(&bus_writes)));
        let membership = Membership::new(Arc::clone(&state));
        let store = ConnectionStore::new(state, config.record_ttl);
        if config.clear_all_on_start {
            // Every instance that ever listed itself, so no instance index keeps stale ids.
            let mut instances: Vec<String> = membership.peers().await?.into_iter().collect();
            instances.push(config.instance_id.clone());
            let cleared = store.clear_all(&instances).await?;
            tracing::info!(
                cleared,
                "CLEAR_ALL_ON_START: removed every connection record"
            );
        }
        let (status_tx, status_rx) = mpsc::channel(4096);
        let events = Arc::new(LifecycleCounts::default());
        let lifecycle = BusLifecycle::start(
            Arc::clone(&bus),
            config.instance_id.as_str().into(),
            config.app_id.as_str().into(),
            Some(Arc::new(StatusObserver {
                statuses: status_tx,
                counts: Arc::clone(&events),
            })),
        );
        let slots = Slots::new(config.max_connections);
        let inner = Arc::new(Inner {
            config,
            store,
            membership,
            bus,
            lifecycle,
            live: Mutex::new(HashMap::new()),
            metrics: Arc::new(PublishMetrics::default()),
            received: Arc::default(),
            events,
            ownership: OwnershipCounts::default(),
            lease: Arc::new(Lease::unbounded()),
            slots,
            state_writes,
            bus_writes,
            closing: AtomicBool::new(false),
            refresher: Mutex::new(None),
        });
        tokio::spawn(write_statuses(Arc::downgrade(&inner), status_rx));
        let refresh_every = (inner.config.record_ttl / 3).max(Duration::from_secs(10));
        let weak = Arc::downgrade(&inner);
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let refreshed = inner.store.refresh().await;
                let service = WebSocketService { inner };
                for (id, owner) in refreshed.lost {
                    service.revoke(&id, owner).await;
                }
            }
        });
        *lock(&inner.refresher) = Some(refresher);
        Ok(WebSocketService { inner })
    }

    pub fn instance_id(&self) -> &str {
        &self.inner.config.instance_id
    }

    pub fn metrics(&self) -> &Arc<PublishMetrics> {
        &self.inner.metrics
    }

    pub fn store(&self) -> &ConnectionStore {
        &self.inner.store
    }

    /// What the cluster keeps in the state store besides the records.
    pub(crate) fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    /// The lease fencing this instance's publishing; the cluster renews it with each heartbeat.
    pub fn lease(&self) -> &Arc<Lease> {
        &self.inner.lease
    }

    /// How long a handshake may take.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.config.connection.connect_timeout
    }

    /// Whether the state store and the bus answer and take writes (for `/ready`): each one's
    /// problem, if any.
    pub(crate) async fn readiness(&self) -> [(&'static str, Result<(), String>); 2] {
        let state = self.inner.store.ping().await;
        let pubsub = self.inner.bus.ping().await;
        let check = |ping: Result<(), BackendError>, writes: &WriteHealth| {
            ping.map_err(|e| e.to_string())?;
            writes.failing().map_or(Ok(()), Err)
        };
        [
            ("state", check(state, &self.inner.state_writes)),
            ("pubsub", check(pubsub, &self.inner.bus_writes)),
        ]
    }

    /// Counters and gauges of this instance, for the metrics.
    pub fn snapshot(&self) -> ServiceSnapshot {
        let mut by_status = [
            (Status::Connecting, 0),
            (Status::Connected, 0),
            (Status::Reconnecting, 0),
            (Status::Disconnected, 0),
        ];
        let mut queued_frames = 0;
        let mut pending_requests = 0;
        for live in lock(&self.inner.live).values() {
            pending_requests += live.connection.pending_requests();
            let status = live.connection.status();
            if let Some(slot) = by_status.iter_mut().find(|(s, _)| *s == status) {
                slot.1 += 1;
            }
            queued_frames += live.queue.frames();
        }
        let events = &self.inner.events;
        ServiceSnapshot {
            by_status,
            queued_frames,
            pending_requests,
            received_frames: self.inner.received.frames.load(Ordering::Relaxed),
            received_bytes: self.inner.received.bytes.load(Ordering::Relaxed),
            venue_gaps: self.inner.received.venue_gaps.load(Ordering::Relaxed),
            frames_refused: self.inner.received.frames_refused.load(Ordering::Relaxed),
            venue_notices: self.inner.received.notices.load(Ordering::Relaxed),
            keepalive_timeouts: self
                .inner
                .received
                .keepalive_timeouts
                .load(Ordering::Relaxed),
            continuity_gaps: self.inner.received.continuity_gaps.load(Ordering::Relaxed),
            frames_duplicate: self.inner.received.duplicates.load(Ordering::Relaxed),
            arbiter_bytes: self.inner.received.arbiter_bytes.load(Ordering::Relaxed),
            rotations: events.rotations.load(Ordering::Relaxed),
            reconnects: events.reconnects.load(Ordering::Relaxed),
            degraded: events.degraded.load(Ordering::Relaxed),
            errors: events.errors.load(Ordering::Relaxed),
            lifecycle_dropped: self.inner.lifecycle.dropped(),
            taken_over: self.inner.ownership.taken_over.load(Ordering::Relaxed),
            ownership_lost: self.inner.ownership.lost.load(Ordering::Relaxed),
        }
    }

    /// Opens a connection owned by this instance. A failed handshake leaves no record.
    pub async fn connect(&self, req: ConnectRequest) -> Result<ConnectionRecord, ServiceError> {
        self.refuse_when_closing()?;
        let target = Target::parse(&req.url, &self.inner.config.connection.redact)
            .map_err(ServiceError::InvalidArgument)?;
        headers::validate(req.headers.iter(), &req.subprotocols)
            .map_err(ServiceError::InvalidArgument)?;
        if req.on_connect.len() > MAX_ON_CONNECT {
            return Err(ServiceError::InvalidArgument(format!(
                "at most {MAX_ON_CONNECT} on_connect messages per connection, got {}",
                req.on_connect.len()
            )));
        }
        validate_tags(&req.tags)?;
        let venue = self
            .inner
            .config
            .profiles
            .resolve(req.profile.as_deref(), &req.venue)
            .map_err(ServiceError::InvalidArgument)?;
        // Reserved before the dial, so concurrent Connects cannot all pass a check made before
        // any of them is counted; given back on every failure below by being dropped.
        let slot = self.reserve_slot()?;
        let req = ConnectRequest {
            url: target.into(),
            ..req
        };
        let id = uuid::Uuid::new_v4().to_string();
        let record = ConnectionRecord {
            id: id.clone(),
            url: req.url.clone(),
            status: Status::Connecting,
            topic: None,
            auto_reconnect: req.auto_reconnect,
            created_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            instance_id: self.inner.config.instance_id.clone(),
            tags: req.tags,
            headers: req.headers.clone(),
            subprotocols: req.subprotocols.clone(),
            on_connect: req.on_connect.iter().map(StoredMessage::from).collect(),
            replay: Vec::new(),
            epoch: 0,
            ping_interval_ms: req.ping_interval.map(|d| d.as_millis() as u64),
            profile: req.profile.clone().filter(|p| !p.is_empty()),
            venue: (!req.venue.is_empty()).then(|| req.venue.clone()),
        };
        let spec = ConnectionSpec {
            id: id.clone(),
            url: req.url,
            headers: req.headers.into_iter().collect(),
            subprotocols: req.subprotocols,
            on_connect: req.on_connect,
            auto_reconnect: req.auto_reconnect,
            replay: Vec::new(),
            epoch: 0,
            topic: None,
            venue: Arc::new(venue),
        };
        let live = self.open(spec, req.ping_interval, slot).await?;
        let record = ConnectionRecord {
            status: live.connection.status(),
            epoch: live.connection.epoch(),
            ..record
        };
        // Persisted before the status writer can see the connection (it skips connections not in
        // `live`): a status write racing ahead of the first one would find no record and take the
        // connection for lost.
        if let Err(e) = self.inner.store.put(record.clone()).await {
            // No record, no connection: undo, so a failed Connect leaves nothing behind.
            self.inner.store.forget_local(&id);
            close(live, 1000, "record could not be persisted").await;
            return Err(e.into());
        }
        let connection = live.connection.clone();
        lock(&self.inner.live).insert(id.clone(), live);
        self.catch_up(&id, &connection, record.status, record.epoch)
            .await;
        tracing::info!(connection = %id, url = %self.shown_url(&record.url), "connected");
        Ok(record)
    }

    /// Every connection (all instances' records merged with this one's), filtered by tags (AND),
    /// as callers may see them: URLs redacted (the store keeps the real ones).
    pub async fn list(
        &self,
        filters: &[(String, String)],
    ) -> Result<Vec<ConnectionRecord>, ServiceError> {
        let records = self.inner.store.list().await?;
        let redact = &self.inner.config.connection.redact;
        Ok(records
            .into_iter()
            .filter(|r| filters.iter().all(|(k, v)| r.tags.get(k) == Some(v)))
            .map(|r| ConnectionRecord {
                url: redact.redact(&r.url),
                ..r
            })
            .collect())
    }

    /// A URL as events show it: secrets redacted.
    pub(crate) fn redacted_url(&self, url: &str) -> String {
        self.inner.config.connection.redact.redact(url)
    }

    /// A URL as logs show it: redacted and cut short.
    fn shown_url(&self, url: &str) -> String {
        crate::text::excerpt(&self.redacted_url(url), crate::text::SHORT)
    }

    /// One of `--max-connections`' slots, or RESOURCE_EXHAUSTED naming the limit.
    fn reserve_slot(&self) -> Result<Slot, ServiceError> {
        self.inner.slots.reserve().ok_or_else(|| {
            ServiceError::ResourceExhausted(format!(
                "this instance already holds its maximum of {} connections (--max-connections)",
                self.inner.slots.max()
            ))
        })
    }

    pub async fn disconnect(&self, id: &str) -> Result<(), ServiceError> {
        let record = self.owned(id).await?;
        self.close_live(id, 1000, "disconnect requested").await;
        // Deleted only while the record still names this instance: an owner that was paused
        // must not delete the record of the instance that took the connection over.
        if let Err(e) = self.inner.store.remove_owned(&record).await {
            return Err(self.owner_write_failed(id, e).await);
        }
        tracing::info!(connection = %id, "disconnected on request");
        Ok(())
    }

    pub async fn start_publish(&self, id: &str, topic: &str) -> Result<(), ServiceError> {
        if topic.trim().is_empty() {
            return Err(ServiceError::InvalidArgument("Topic is required".into()));
        }
        self.owned(id).await?;
        let connection = self.connected(id)?;
        connection
            .set_topic(Some(topic))
            .await
            .map_err(|_| ServiceError::not_connected())?;
        self.persist(id, |r| r.topic = Some(topic.to_owned())).await
    }

    pub async fn stop_publish(&self, id: &str) -> Result<(), ServiceError> {
        self.owned(id).await?;
        if let Some(connection) = self.live(id) {
            // A connection that ended has no publishing to stop; the record still changes.
            let _ = connection.set_topic(None).await;
        }
        self.persist(id, |r| r.topic = None).await
    }

    /// A correlated request: waits for the matching response (SPEC 5, "Send").
    pub async fn send(
        &self,
        id: &str,
        payload: Bytes,
        content_type: &str,
        timeout_ms: i32,
    ) -> Result<Bytes, ServiceError> {
        self.owned(id).await?;
        let connection = self.connected(id)?;
        let timeout = send_timeout(timeout_ms, self.inner.config.default_send_timeout)?;
        let content_type = default_content_type(content_type);
        connection
            .send(payload, content_type, timeout)
            .await
            .map_err(send_error)
    }

    /// Sends without waiting for a response; with `replay`, the message is re-sent after every
    /// reconnect (and persisted, so a successor instance replays it too).
    pub async fn send_raw(
        &self,
        id: &str,
        payload: Bytes,
        content_type: &str,
        replay: bool,
    ) -> Result<(), ServiceError> {
        self.owned(id).await?;
        let connection = self.connected(id)?;
        let message = OutboundMessage {
            payload,
            content_type: default_content_type(content_type).to_owned(),
        };
        let stored = replay.then(|| StoredMessage::from(&message));
        connection
            .send_raw(message, replay)
            .await
            .map_err(send_error)?;
        if let Some(stored) = stored {
            self.persist(id, |r| r.replay.push(stored)).await?;
        }
        Ok(())
    }

    pub async fn set_tag(&self, id: &str, key: &str, value: &str) -> Result<(), ServiceError> {
        let mut record = self.owned(id).await?;
        record.tags.insert(key.to_owned(), value.to_owned());
        validate_tags(&record.tags)?;
        self.persist(id, |r| r.tags = record.tags).await
    }

    pub async fn get_tag(&self, id: &str, key: &str) -> Result<String, ServiceError> {
        let record = self.existing(id).await?;
        Ok(record.tags.get(key).cloned().unwrap_or_default())
    }

    pub async fn set_tags(
        &self,
        id: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<(), ServiceError> {
        self.owned(id).await?;
        validate_tags(&tags)?;
        self.persist(id, |r| r.tags = tags).await
    }

    pub async fn get_tags(&self, id: &str) -> Result<BTreeMap<String, String>, ServiceError> {
        Ok(self.existing(id).await?.tags)
    }

    /// Graceful shutdown: closes every socket with 1001 (going away), lets the publishers flush what
    /// is queued, and leaves the records for a successor instance.
    pub async fn shutdown(&self, flush_within: Duration) {
        if let Some(refresher) = lock(&self.inner.refresher).take() {
            refresher.abort();
        }
        // No new connections from here on, neither by Connect nor by taking one over.
        self.inner.closing.store(true, Ordering::Release);
        let live: Vec<(String, Live)> = lock(&self.inner.live).drain().collect();
        futures_util::future::join_all(
            live.iter()
                .map(|(_, l)| l.connection.close(1001, "server shutting down")),
        )
        .await;
        // One deadline for all: the flush must fit the orchestrator's grace period whatever the
        // number of connections. A publisher still busy then stops, so nothing is published after
        // this instance says it has left.
        let deadline = tokio::time::Instant::now() + flush_within;
        for (id, mut l) in live {
            if tokio::time::timeout_at(deadline, &mut l.publisher)
                .await
                .is_err()
            {
                l.publisher.abort();
                tracing::warn!(connection = %id, "publisher did not flush in time; queued frames are lost");
            }
        }
    }

    /// UNAVAILABLE once shutdown has begun.
    fn refuse_when_closing(&self) -> Result<(), ServiceError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(ServiceError::Unavailable(
                "this instance is shutting down; another instance serves the connection".into(),
            ));
        }
        Ok(())
    }

    /// A record that exists (anywhere).
    async fn existing(&self, id: &str) -> Result<ConnectionRecord, ServiceError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound { id: id.to_owned() })
    }

    /// A record this instance owns (ownership check of the original service).
    async fn owned(&self, id: &str) -> Result<ConnectionRecord, ServiceError> {
        let record = self.existing(id).await?;
        if record.instance_id != self.inner.config.instance_id {
            return Err(ServiceError::NotOwner {
                id: id.to_owned(),
                owner: record.instance_id,
            });
        }
        Ok(record)
    }

    fn live(&self, id: &str) -> Option<Connection> {
        lock(&self.inner.live).get(id).map(|l| l.connection.clone())
    }

    fn connected(&self, id: &str) -> Result<Connection, ServiceError> {
        match self.live(id) {
            Some(c) if c.status() == Status::Connected => Ok(c),
            _ => Err(ServiceError::not_connected()),
        }
    }

    async fn close_live(&self, id: &str, code: u16, reason: &'static str) {
        let live = lock(&self.inner.live).remove(id);
        if let Some(live) = live {
            close(live, code, reason).await;
        }
    }
}

/// Closes the socket; the publisher ends once the socket task drops its queue: let it flush
/// briefly.
async fn close(live: Live, code: u16, reason: &'static str) {
    live.connection.close(code, reason).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), live.publisher).await;
}
