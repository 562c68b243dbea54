//! Starting the server, the accept loop, and [`FeedHandle`]: the running server's addresses,
//! its fault controls and its counters.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::broadcast::Hub;
use crate::config::FeedConfig;
use crate::control;
use crate::orders::SessionCommand;
use crate::registry::{FeedStats, Received, ReceivedMessage, Registry};
use crate::session::{self, Shared};
use crate::shutdown;

/// How long shutdown waits for sessions to finish their closing handshakes before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The market-feed WebSocket server.
pub struct FeedServer;

impl FeedServer {
    /// Binds the listener(s) and starts serving on the current tokio runtime. The server runs
    /// until [`FeedHandle::shutdown`] is called or the handle is dropped.
    pub async fn start(config: FeedConfig) -> io::Result<FeedHandle> {
        config
            .validate()
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidInput, reason))?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let control_listener = match config.control_listen {
            Some(control_addr) => Some(TcpListener::bind(control_addr).await?),
            None => None,
        };
        let control_addr = control_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        let (stop_tx, stop) = watch::channel(false);
        let shared = Arc::new(Shared {
            registry: Registry::new(config.record_limit),
            hub: Hub::new(config.broadcast_buffer_bytes, stop.clone()),
            config,
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        let control_task =
            control_listener.map(|l| tokio::spawn(control::serve(l, shared.clone(), stop.clone())));
        tracing::info!(%addr, ?control_addr, "feed server listening");
        let mut tasks = vec![accept_task];
        tasks.extend(control_task);
        Ok(FeedHandle {
            addr,
            control_addr,
            shared,
            stop: stop_tx,
            tasks,
        })
    }
}

/// Accepts clients until shutdown; each one gets a session task. On shutdown, sessions close
/// with 1001 and get [`SHUTDOWN_GRACE`] to finish.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown::signalled(&mut stop) => break,
            Some(_) = sessions.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => admit(tcp, peer, &shared, &stop, &mut sessions),
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        sessions.abort_all();
    }
}

fn admit(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
    sessions: &mut JoinSet<()>,
) {
    if shared.registry.refusing() {
        tracing::debug!(%peer, "refusing connection");
        shared.registry.count_refused();
        drop(tcp);
        return;
    }
    sessions.spawn(session::run(tcp, peer, shared.clone(), stop.clone()));
}

/// A running feed server. Dropping it stops the server and closes every connection.
pub struct FeedHandle {
    addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl FeedHandle {
    /// The WebSocket listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr><path>` (`wss://` with TLS); `path` may carry a query, e.g.
    /// `/stream?rate=0&count=100`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme(), self.addr, path)
    }

    /// The URL with `host` in place of the IP address (TLS certificates usually name a host).
    pub fn url_for_host(&self, host: &str, path: &str) -> String {
        format!("{}://{host}:{}{}", self.scheme(), self.addr.port(), path)
    }

    /// `wss` when the server speaks TLS, else `ws`.
    pub fn scheme(&self) -> &'static str {
        if self.shared.config.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }

    /// The HTTP control endpoint's address, when configured.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &FeedConfig {
        &self.shared.config
    }

    /// Closes every client socket abruptly: the TCP stream is dropped without a close frame.
    /// Returns once the sockets are gone, with how many there were.
    pub async fn drop_all(&self) -> usize {
        self.shared
            .registry
            .command_all(|done| SessionCommand::Drop { done })
            .await
    }

    /// Sends every client a close frame with `code` and finishes the closing handshake.
    /// Returns once the connections are closed, with how many there were. A client that does
    /// not answer within 2 s, or does not read so the close frame cannot be written, is
    /// dropped instead.
    pub async fn close_all(&self, code: u16) -> usize {
        self.shared
            .registry
            .command_all(|done| SessionCommand::Close { code, done })
            .await
    }

    /// Makes every open connection neither read nor write (so no pongs either) for `duration`.
    /// Returns once every session has the order, with how many there were; each stops after
    /// the step it is in (at most one batch of frames). Connections opened later are not
    /// affected. A drop or shutdown ends a stall early; a close waits for its end.
    pub async fn stall(&self, duration: Duration) -> usize {
        self.shared
            .registry
            .command_all(|done| SessionCommand::Stall { duration, done })
            .await
    }

    /// Drops the one connection `id` (as shown by [`live_connections`](Self::live_connections),
    /// [`received`](Self::received) and [`stats`](Self::stats)) without a close frame, like
    /// [`drop_all`](Self::drop_all); the others are not touched. Returns once its socket is gone;
    /// `false` when no such connection is open.
    pub async fn drop_connection(&self, id: u64) -> bool {
        self.shared
            .registry
            .command_one(id, |done| SessionCommand::Drop { done })
            .await
    }

    /// Closes the one connection `id` with `code`, like [`close_all`](Self::close_all); `false`
    /// when no such connection is open.
    pub async fn close_connection(&self, id: u64, code: u16) -> bool {
        self.shared
            .registry
            .command_one(id, |done| SessionCommand::Close { code, done })
            .await
    }

    /// Stalls the one connection `id` for `duration`, like [`stall`](Self::stall); `false` when
    /// no such connection is open. In broadcast mode the stalled socket's frames wait in its
    /// channel and come after the stall, in order (unless it fell further behind than the
    /// channel holds: then it is closed with 1008).
    pub async fn stall_connection(&self, id: u64, duration: Duration) -> bool {
        self.shared
            .registry
            .command_one(id, |done| SessionCommand::Stall { duration, done })
            .await
    }

    /// The ids of the open connections, in connect order (ids grow with each handshake).
    pub fn live_connections(&self) -> Vec<u64> {
        self.shared.registry.live_connections()
    }

    /// While `true`, every new TCP connection is closed right after accept (the client's
    /// handshake fails), so reconnect backoff can be observed via
    /// [`refused_total`](Self::refused_total). Open connections are not affected.
    pub async fn refuse(&self, on: bool) {
        self.shared.registry.set_refusing(on);
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.shared.registry.connections()
    }

    /// WebSocket handshakes completed since start (connection ids are 1 ..= this).
    pub fn accepted_total(&self) -> u64 {
        self.shared.registry.accepted_total()
    }

    /// TCP connections refused while [`refuse`](Self::refuse) was on.
    pub fn refused_total(&self) -> u64 {
        self.shared.registry.refused_total()
    }

    /// Every text and binary message received (the most recent
    /// [`FeedConfig::record_limit`]), in arrival order, with its connection id, when it was
    /// read, and whether it was a venue keepalive.
    pub fn received(&self) -> Vec<Received> {
        self.shared.registry.received()
    }

    /// The messages received on one connection, in order.
    pub fn received_on(&self, connection: u64) -> Vec<ReceivedMessage> {
        self.received()
            .into_iter()
            .filter(|r| r.connection == connection)
            .map(|r| r.message)
            .collect()
    }

    /// Forgets the received messages recorded so far.
    pub fn clear_received(&self) {
        self.shared.registry.clear_received();
    }

    /// The current subscriptions of every open connection, by connection id.
    pub fn subscriptions(&self) -> BTreeMap<u64, Vec<String>> {
        self.shared.registry.subscriptions()
    }

    /// A snapshot of all counters (what `GET /stats` serves).
    pub fn stats(&self) -> FeedStats {
        self.shared.stats()
    }

    /// Waits until `n` connections are open; `false` if that did not happen `within`.
    pub async fn wait_for_connections(&self, n: usize, within: Duration) -> bool {
        self.shared
            .registry
            .wait_until(within, |r| r.connections() == n)
            .await
    }

    /// Waits until `accepted_total() >= n`; `false` if that did not happen `within`.
    pub async fn wait_for_accepted(&self, n: u64, within: Duration) -> bool {
        self.shared
            .registry
            .wait_until(within, |r| r.accepted_total() >= n)
            .await
    }

    /// Waits until a received message satisfies `matches`; `false` if none did `within`.
    pub async fn wait_for_received(
        &self,
        within: Duration,
        matches: impl Fn(&Received) -> bool,
    ) -> bool {
        self.shared
            .registry
            .wait_until(within, |r| r.any_received(&matches))
            .await
    }

    /// Stops accepting, closes every connection with 1001 (bounded) and waits for the server's
    /// tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for FeedHandle {
    fn drop(&mut self) {
        // The tasks see the signal and end on their own; nothing here can await them.
        let _ = self.stop.send(true);
    }
}
