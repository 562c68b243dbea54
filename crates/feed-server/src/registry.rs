//! What the server knows about its clients, shared by the accept loop, the sessions, the
//! [`FeedHandle`](crate::FeedHandle) and the HTTP control endpoint: the live sessions and their
//! command channels, the counters, and the log of received messages.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::orders::SessionCommand;

/// How long a control call waits for the sessions to carry it out (guards against a session
/// stuck writing to a client that does not read).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// One message a client sent, with the connection it came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Connection id: 1, 2, 3, ... in the order the WebSocket handshakes completed.
    pub connection: u64,
    pub message: ReceivedMessage,
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
}

struct Session {
    peer: SocketAddr,
    path: String,
    commands: mpsc::UnboundedSender<SessionCommand>,
    subscriptions: Vec<String>,
    frames_sent: Arc<AtomicU64>,
    received: u64,
}

#[derive(Default)]
struct State {
    sessions: BTreeMap<u64, Session>,
    received: VecDeque<Received>,
    received_total: u64,
    close_codes: BTreeMap<u16, u64>,
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

    pub(crate) fn record(&self, connection: u64, message: ReceivedMessage) {
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
                })
                .collect(),
            client_close_codes: state.close_codes.clone(),
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
