//! What the server knows about its clients, shared by the accept loop, the sessions, the
//! [`FeedHandle`](crate::FeedHandle) and the HTTP control endpoint: the live sessions and their
//! command channels, the counters (the venue rules' too), and the log of received messages.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::orders::SessionCommand;
use crate::venue::{Rule, Venue};

/// How long a control call waits for the sessions to carry it out (guards against a session
/// stuck writing to a client that does not read).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// One message a client sent, with the connection it came on and when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Connection id: 1, 2, 3, ... in the order the WebSocket handshakes completed.
    pub connection: u64,
    pub message: ReceivedMessage,
    /// When the server read it (monotonic; for measuring a client's pacing).
    pub received_at: Instant,
    /// The same moment in milliseconds since the Unix epoch (what `GET /received` shows).
    pub unix_ms: u64,
    /// A venue keepalive: a client ping (okx, bybit) or a pong to a server ping (htx). Recorded
    /// so its pacing can be measured, but never taken for a request.
    pub keepalive: bool,
}

/// The content of a received text or binary message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceivedMessage {
    Text(String),
    Binary(Vec<u8>),
}

impl ReceivedMessage {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::Binary(_) => None,
        }
    }

    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Self::Binary(data) => Some(data),
            Self::Text(_) => None,
        }
    }
}

/// A snapshot of the server's counters, also served as JSON by `GET /stats`.
#[derive(Clone, Debug, Serialize)]
pub struct FeedStats {
    /// Open WebSocket connections.
    pub connections: usize,
    /// WebSocket handshakes completed since start.
    pub accepted_total: u64,
    /// TCP connections closed right after accept because the server was refusing.
    pub refused_total: u64,
    /// Whether new connections are being refused.
    pub refusing: bool,
    /// TLS handshakes that failed (a client that does not trust the certificate, speaks another
    /// TLS version, or presents no client certificate where one is required).
    pub tls_handshake_failures_total: u64,
    /// Depth frames written, all connections.
    pub frames_sent_total: u64,
    /// Text and binary messages received, all connections.
    pub received_total: u64,
    /// The open connections, by id.
    pub sessions: Vec<ConnectionStats>,
    /// Close frames clients sent, by close code (1005: a close frame without a code).
    pub client_close_codes: BTreeMap<u16, u64>,
    /// Connections a venue personality closed, by the rule (see [`crate::venue`]).
    pub venue_closes: VenueCloses,
    /// Client keepalives answered (okx `ping`, bybit `{"op":"ping"}`).
    pub venue_pings_answered: u64,
    /// Server pings sent (htx `{"ping":n}`).
    pub venue_pings_sent: u64,
    /// Pongs received for server pings (htx `{"pong":n}`, text or gzip; matching or not).
    pub venue_pongs_received: u64,
    /// `serverShutdown` notices sent (binance lifetime).
    pub venue_notices_sent: u64,
    /// The most client messages seen within one sliding second on any `binance` connection
    /// (every kind counts); above the connection's `limit` it was closed.
    pub max_client_msgs_per_sec: u32,
    /// Connections closed by the generic lifetime (`?lifetime_ms` without the binance
    /// personality, whose lifetime closes count in `venue_closes.lifetime`).
    pub lifetime_closes: u64,
    /// `serverShutdown` notices sent by the generic lifetime (`?notice_ms`).
    pub lifetime_notices_sent: u64,
    /// Broadcast mode: frames each stream's generator has made (= its last `u`), by stream name.
    pub broadcast_frames: BTreeMap<String, u64>,
    /// Broadcast mode: sockets closed (1008 `too slow for the broadcast`) or dropped because
    /// they fell too far behind their stream.
    pub broadcast_lag_closes: u64,
}

/// Connections closed by a venue rule, one counter per rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VenueCloses {
    /// okx, bybit: no keepalive within `deadline_ms` (close 4004).
    pub no_ping: u64,
    /// htx: 2 server pings in a row without their pong (close 4002).
    pub pings_unanswered: u64,
    /// binance: more than `limit` messages within one second (close 1008).
    pub rate_limit: u64,
    /// binance: the connection's lifetime ended (close `close_code`).
    pub lifetime: u64,
}

/// One open connection in [`FeedStats`].
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionStats {
    pub id: u64,
    pub peer: String,
    /// Request path and query.
    pub path: String,
    pub subscriptions: Vec<String>,
    pub frames_sent: u64,
    pub received: u64,
    /// The connection's venue personality (`okx`, `bybit`, `htx`, `binance`), if any.
    pub venue: Option<&'static str>,
    /// `binance`: the most client messages seen within one sliding second.
    pub max_client_msgs_per_sec: u32,
}

struct Session {
    peer: SocketAddr,
    path: String,
    commands: mpsc::UnboundedSender<SessionCommand>,
    subscriptions: Vec<String>,
    frames_sent: Arc<AtomicU64>,
    received: u64,
    venue: Option<Venue>,
    max_msgs_per_sec: u32,
}

/// What the venue rules did, all connections.
#[derive(Default)]
struct VenueCounters {
    closes: VenueCloses,
    pings_answered: u64,
    pings_sent: u64,
    pongs_received: u64,
    notices_sent: u64,
    max_msgs_per_sec: u32,
    plain_lifetime_closes: u64,
    plain_notices_sent: u64,
}

/// One thing a venue rule did, for [`Registry::count_venue`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum VenueEvent {
    Closed(Rule),
    PingAnswered,
    PingSent,
    PongReceived,
    NoticeSent,
    /// A notice of the generic lifetime.
    PlainNoticeSent,
}

#[derive(Default)]
struct State {
    sessions: BTreeMap<u64, Session>,
    received: VecDeque<Received>,
    received_total: u64,
    close_codes: BTreeMap<u16, u64>,
    venue: VenueCounters,
    broadcast_lag_closes: u64,
}

pub(crate) struct Registry {
    state: Mutex<State>,
    accepted_total: AtomicU64,
    refused_total: AtomicU64,
    tls_failures_total: AtomicU64,
    frames_sent_total: AtomicU64,
    refusing: AtomicBool,
    record_limit: usize,
    /// Bumped on every change that a waiter may be interested in.
    version: watch::Sender<u64>,
}

impl Registry {
    pub(crate) fn new(record_limit: usize) -> Self {
        Self {
            state: Mutex::default(),
            accepted_total: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            tls_failures_total: AtomicU64::new(0),
            frames_sent_total: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            record_limit,
            version: watch::Sender::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the maps half-updated in a way that matters here.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Adds a session whose handshake completed; returns its id and its frame counter.
    pub(crate) fn register(
        &self,
        peer: SocketAddr,
        path: String,
        venue: Option<Venue>,
        commands: mpsc::UnboundedSender<SessionCommand>,
    ) -> (u64, Arc<AtomicU64>) {
        let frames_sent = Arc::new(AtomicU64::new(0));
        let id = {
            let mut state = self.state();
            let id = self.accepted_total.fetch_add(1, Ordering::SeqCst) + 1;
            state.sessions.insert(
                id,
                Session {
                    peer,
                    path,
                    commands,
                    subscriptions: Vec::new(),
                    frames_sent: frames_sent.clone(),
                    received: 0,
                    venue,
                    max_msgs_per_sec: 0,
                },
            );
            id
        };
        self.bump();
        (id, frames_sent)
    }

    pub(crate) fn deregister(&self, id: u64) {
        self.state().sessions.remove(&id);
        self.bump();
    }

    /// Records a client's text or binary message, read just now.
    pub(crate) fn record(&self, connection: u64, message: ReceivedMessage, keepalive: bool) {
        let received_at = Instant::now();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        {
            let mut state = self.state();
            state.received_total += 1;
            if let Some(session) = state.sessions.get_mut(&connection) {
                session.received += 1;
            }
            if self.record_limit > 0 {
                if state.received.len() >= self.record_limit {
                    state.received.pop_front();
                }
                state.received.push_back(Received {
                    connection,
                    message,
                    received_at,
                    unix_ms,
                    keepalive,
                });
            }
        }
        self.bump();
    }

    pub(crate) fn set_subscriptions(&self, connection: u64, names: &[String]) {
        if let Some(session) = self.state().sessions.get_mut(&connection) {
            session.subscriptions = names.to_vec();
        }
        self.bump();
    }

    /// A client's close frame, by its code.
    pub(crate) fn record_close(&self, code: u16) {
        *self.state().close_codes.entry(code).or_default() += 1;
        self.bump();
    }

    /// Counts what a venue rule did.
    pub(crate) fn count_venue(&self, event: VenueEvent) {
        {
            let counters = &mut self.state().venue;
            match event {
                VenueEvent::Closed(rule) => {
                    let closes = &mut counters.closes;
                    *match rule {
                        Rule::NoPing => &mut closes.no_ping,
                        Rule::PingsUnanswered => &mut closes.pings_unanswered,
                        Rule::RateLimit => &mut closes.rate_limit,
                        Rule::Lifetime => &mut closes.lifetime,
                        Rule::PlainLifetime => &mut counters.plain_lifetime_closes,
                    } += 1;
                }
                VenueEvent::PingAnswered => counters.pings_answered += 1,
                VenueEvent::PingSent => counters.pings_sent += 1,
                VenueEvent::PongReceived => counters.pongs_received += 1,
                VenueEvent::NoticeSent => counters.notices_sent += 1,
                VenueEvent::PlainNoticeSent => counters.plain_notices_sent += 1,
            }
        }
        self.bump();
    }

    /// A `binance` connection saw `n` client messages within the last second.
    pub(crate) fn note_msgs_per_sec(&self, connection: u64, n: u32) {
        let mut state = self.state();
        state.venue.max_msgs_per_sec = state.venue.max_msgs_per_sec.max(n);
        if let Some(session) = state.sessions.get_mut(&connection) {
            session.max_msgs_per_sec = session.max_msgs_per_sec.max(n);
        }
    }

    /// A broadcast socket fell too far behind (counted once, before it is closed).
    pub(crate) fn count_broadcast_lag(&self) {
        self.state().broadcast_lag_closes += 1;
        self.bump();
    }

    pub(crate) fn add_frames_sent(&self, n: u64) {
        self.frames_sent_total.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn count_refused(&self) {
        self.refused_total.fetch_add(1, Ordering::SeqCst);
        self.bump();
    }

    pub(crate) fn count_tls_failure(&self) {
        self.tls_failures_total.fetch_add(1, Ordering::SeqCst);
        self.bump();
    }

    pub(crate) fn set_refusing(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    pub(crate) fn refusing(&self) -> bool {
        self.refusing.load(Ordering::SeqCst)
    }

    /// The ids of the open connections, in connect order.
    pub(crate) fn live_connections(&self) -> Vec<u64> {
        self.state().sessions.keys().copied().collect()
    }

    pub(crate) fn connections(&self) -> usize {
        self.state().sessions.len()
    }

    pub(crate) fn accepted_total(&self) -> u64 {
        self.accepted_total.load(Ordering::SeqCst)
    }

    pub(crate) fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::SeqCst)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.state().received.iter().cloned().collect()
    }

    pub(crate) fn any_received(&self, matches: impl Fn(&Received) -> bool) -> bool {
        self.state().received.iter().any(matches)
    }

    pub(crate) fn clear_received(&self) {
        self.state().received.clear();
    }

    pub(crate) fn subscriptions(&self) -> BTreeMap<u64, Vec<String>> {
        let state = self.state();
        state
            .sessions
            .iter()
            .map(|(id, s)| (*id, s.subscriptions.clone()))
            .collect()
    }

    pub(crate) fn stats(&self) -> FeedStats {
        let state = self.state();
        FeedStats {
            connections: state.sessions.len(),
            accepted_total: self.accepted_total(),
            refused_total: self.refused_total(),
            refusing: self.refusing(),
            tls_handshake_failures_total: self.tls_failures_total.load(Ordering::SeqCst),
            frames_sent_total: self.frames_sent_total.load(Ordering::Relaxed),
            received_total: state.received_total,
            sessions: state
                .sessions
                .iter()
                .map(|(id, s)| ConnectionStats {
                    id: *id,
                    peer: s.peer.to_string(),
                    path: s.path.clone(),
                    subscriptions: s.subscriptions.clone(),
                    frames_sent: s.frames_sent.load(Ordering::Relaxed),
                    received: s.received,
                    venue: s.venue.map(Venue::name),
                    max_client_msgs_per_sec: s.max_msgs_per_sec,
                })
                .collect(),
            client_close_codes: state.close_codes.clone(),
            venue_closes: state.venue.closes,
            venue_pings_answered: state.venue.pings_answered,
            venue_pings_sent: state.venue.pings_sent,
            venue_pongs_received: state.venue.pongs_received,
            venue_notices_sent: state.venue.notices_sent,
            max_client_msgs_per_sec: state.venue.max_msgs_per_sec,
            lifetime_closes: state.venue.plain_lifetime_closes,
            lifetime_notices_sent: state.venue.plain_notices_sent,
            // Filled in by `Shared::stats`, which knows the generators.
            broadcast_frames: BTreeMap::new(),
            broadcast_lag_closes: state.broadcast_lag_closes,
        }
    }

    /// Sends a command to every open session and waits (bounded) until each has carried it out
    /// or ended. Returns how many sessions were commanded.
    pub(crate) async fn command_all(
        &self,
        make: impl Fn(oneshot::Sender<()>) -> SessionCommand,
    ) -> usize {
        let pending: Vec<oneshot::Receiver<()>> = {
            let state = self.state();
            state
                .sessions
                .values()
                .filter_map(|session| {
                    let (done, wait) = oneshot::channel();
                    session.commands.send(make(done)).ok().map(|()| wait)
                })
                .collect()
        };
        let count = pending.len();
        let all_done = async {
            for wait in pending {
                // An error means the session ended first, which is just as good.
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(COMMAND_TIMEOUT, all_done)
            .await
            .is_err()
        {
            tracing::warn!(
                "some sessions did not carry out the command within {COMMAND_TIMEOUT:?}"
            );
        }
        count
    }

    /// Sends a command to the open session `id` and waits (bounded) until it has carried it out
    /// or ended; `false` when no such session is open.
    pub(crate) async fn command_one(
        &self,
        id: u64,
        make: impl FnOnce(oneshot::Sender<()>) -> SessionCommand,
    ) -> bool {
        let (done, wait) = oneshot::channel();
        let sent = {
            let state = self.state();
            state
                .sessions
                .get(&id)
                .is_some_and(|session| session.commands.send(make(done)).is_ok())
        };
        if !sent {
            return false;
        }
        if tokio::time::timeout(COMMAND_TIMEOUT, wait).await.is_err() {
            tracing::warn!(
                connection = id,
                "the session did not carry out the command within {COMMAND_TIMEOUT:?}"
            );
        }
        true
    }

    /// Waits until `ready` holds for the registry, or `within` passes; returns whether it held.
    pub(crate) async fn wait_until(&self, within: Duration, ready: impl Fn(&Self) -> bool) -> bool {
        let mut changes = self.version.subscribe();
        let wait = async {
            loop {
                if ready(self) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(within, wait).await.is_ok() && ready(self)
    }
}
