//! One outbound WebSocket's life: dial, the read task, the write path, correlation, reconnect and
//! keepalive. A [`Connection`] is a cheap handle; one task owns the socket, and everything else talks
//! to it through a bounded command channel.

mod backoff;
pub mod correlation;
mod dial;
pub mod headers;
pub mod target;
mod task;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

pub use backoff::{Backoff, BackoffPolicy};
pub use dial::DialError;
pub use target::Target;
pub use tls::{TlsClient, TlsMinVersion, TlsSettings};

use crate::lifecycle::LifecycleSink;
use crate::model::{OutboundMessage, Status};
use crate::publish::PublishQueue;
use crate::security::{NetworkPolicy, UrlRedactor};

use correlation::Correlator;

/// Per-connection behaviour, with documented defaults.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Handshake timeout (10 s): a slow or silent upstream gives `UNAVAILABLE`, never a hang.
    pub connect_timeout: Duration,
    /// WebSocket Ping every this long (20 s).
    pub ping_interval: Duration,
    /// No Pong or frame within this long after a Ping → the connection is dead (10 s).
    pub ping_timeout: Duration,
    /// Reconnect delays and attempts (base 1 s, cap 30 s, 5 attempts).
    pub backoff: BackoffPolicy,
    /// Largest message accepted from upstream, after reassembly (16 MiB).
    pub max_message_size: usize,
    /// Socket read buffer (8 KiB): small, so idle connections stay cheap.
    pub read_buffer_size: usize,
    /// Commands (sends, topic changes) queued for the socket task (256).
    pub command_queue: usize,
    /// Most `replay_on_reconnect` messages kept per connection (1024).
    pub max_replay: usize,
    /// Which addresses may be dialed, checked on every dial including reconnects. Strict by
    /// default (public addresses only): callers choose the URLs, so reaching loopback or the
    /// private network must be the operator's explicit choice.
    pub network: NetworkPolicy,
    /// TLS for `wss://`: trust, client certificate, versions.
    pub tls: TlsClient,
    /// How the URL is shown in events, errors and logs (secrets redacted).
    pub redact: UrlRedactor,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(10),
            backoff: BackoffPolicy::default(),
            max_message_size: 16 << 20,
            read_buffer_size: 8 << 10,
            command_queue: 256,
            max_replay: 1024,
            network: NetworkPolicy::strict(),
            tls: TlsClient::default(),
            redact: UrlRedactor::default(),
        }
    }
}

/// What to connect to and what to re-send after every (re)connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSpec {
    pub id: String,
    pub url: String,
    /// Handshake headers; may hold credentials, so they are never logged.
    pub headers: Vec<(String, String)>,
    pub subprotocols: Vec<String>,
    pub on_connect: Vec<OutboundMessage>,
    pub auto_reconnect: bool,
    /// Messages flagged `replay_on_reconnect` so far (non-empty when a connection is re-opened by
    /// another instance).
    pub replay: Vec<OutboundMessage>,
    /// The epoch before this connection's first connect: the first connect publishes `epoch + 1`.
    pub epoch: u64,
    /// The topic to publish to from the first frame on (a connection taken over keeps publishing
    /// where its previous owner did); `None` until `set_topic`.
    pub topic: Option<String>,
    /// The venue protocol this connection runs (profile and request resolved); empty = none.
    pub venue: Arc<crate::venue::VenueOptions>,
}

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("WebSocket is not connected")]
    NotConnected,
    #[error("Request timeout")]
    Timeout,
    #[error("the connection is closed")]
    Closed,
    #[error("a text content type needs a UTF-8 payload")]
    NotUtf8,
    #[error("too many replay_on_reconnect messages (at most {0})")]
    ReplayFull(usize),
    #[error("write failed: {0}")]
    Write(String),
    /// Pacing (`outbound_rate`) could not send it within its wait.
    #[error("not sent within {waited_ms} ms at the connection's outbound rate ({rate}); {queued} messages were ahead of it")]
    Paced {
        rate: String,
        waited_ms: u64,
        queued: usize,
    },
    /// A rotation's new leg did not open; the old leg goes on serving.
    #[error("the rotation's new leg did not open ({0}); the old leg goes on serving")]
    RotateFailed(String),
    #[error("a rotation is already under way")]
    Rotating,
}

/// The longest a rotation waits for its two legs to overlap before it closes the old one anyway
/// and announces a possible gap (SPEC 8).
pub const OVERLAP_BOUND: Duration = Duration::from_secs(10);

/// How a make-before-break rotation ended (SPEC 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The arbiter saw the two legs deliver the same frames before the old leg closed: nothing
    /// was lost, and the epoch is unchanged. `false`: the old leg was closed at the bound, a gap
    /// was announced and the epoch moved on.
    pub overlap: bool,
    /// Frames the arbiter dropped as already published during the overlap.
    pub duplicates: u64,
    /// From the trigger to the old leg's close.
    pub took: Duration,
}

enum Command {
    Send {
        message: OutboundMessage,
        replay: bool,
        done: oneshot::Sender<Result<(), SendError>>,
    },
    SetTopic(Option<Arc<str>>),
    /// Rotate make-before-break now (an operator's `Rotate`).
    Rotate {
        reason: String,
        done: oneshot::Sender<Result<Rotated, SendError>>,
    },
    Close {
        code: u16,
        reason: &'static str,
        done: oneshot::Sender<()>,
    },
}

/// A handle to one connection's socket task. Cloning is cheap; dropping every handle does not close
/// the socket (call [`Connection::close`]).
#[derive(Clone)]
pub struct Connection {
    id: Arc<str>,
    commands: mpsc::Sender<Command>,
    correlator: Arc<Correlator>,
    state: watch::Receiver<(Status, u64)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl Connection {
    /// Dials, and on success starts the socket task. A failed handshake leaves nothing running.
    /// Received frames go to `frames` while a topic is set (`set_topic`); when `frames` is full the
    /// socket is not read (backpressure to the upstream) and a `degraded` event is emitted.
    pub async fn open(
        spec: ConnectionSpec,
        options: ConnectionOptions,
        frames: PublishQueue,
        lifecycle: Arc<dyn LifecycleSink>,
    ) -> Result<Connection, DialError> {
        let socket = dial::dial(&spec, &options).await?;
        Ok(Connection::start(
            spec,
            options,
            frames,
            lifecycle,
            Some(socket),
        ))
    }

    /// Starts a connection whose socket is dialed in the background: one taken over from a stale
    /// instance, which must not hold up the takeover of the others. Status starts `connecting`; a
    /// failed first dial reconnects with backoff (or ends, without `auto_reconnect`).
    pub fn resume(
        spec: ConnectionSpec,
        options: ConnectionOptions,
        frames: PublishQueue,
        lifecycle: Arc<dyn LifecycleSink>,
    ) -> Connection {
        Connection::start(spec, options, frames, lifecycle, None)
    }

    /// Spawns the socket task: on `socket` (connected), or dialing first (connecting).
    fn start(
        spec: ConnectionSpec,
        options: ConnectionOptions,
        frames: PublishQueue,
        lifecycle: Arc<dyn LifecycleSink>,
        socket: Option<dial::Socket>,
    ) -> Connection {
        let (commands_tx, commands_rx) = mpsc::channel(options.command_queue.max(1));
        let correlator = Arc::new(Correlator::default());
        let status = if socket.is_some() {
            Status::Connected
        } else {
            Status::Connecting
        };
        let (state_tx, state_rx) = watch::channel((status, spec.epoch + 1));
        let id: Arc<str> = spec.id.as_str().into();
        let task = task::SocketTask::new(
            spec,
            options,
            task::Channels {
                commands: commands_rx,
                frames,
                lifecycle,
                state: state_tx,
            },
            Arc::clone(&correlator),
        );
        tokio::spawn(task.run(socket));
        Connection {
            id,
            commands: commands_tx,
            correlator,
            state: state_rx,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn status(&self) -> Status {
        self.state.borrow().0
    }

    /// The current epoch: 1 after the first connect, +1 per reconnect.
    pub fn epoch(&self) -> u64 {
        self.state.borrow().1
    }

    /// Waits until the status satisfies `pred` (for tests and graceful shutdown).
    pub async fn wait_for(&self, pred: impl Fn(Status) -> bool) -> Status {
        let mut state = self.state.clone();
        let reached = state.wait_for(|(s, _)| pred(*s)).await.map(|s| s.0);
        reached.unwrap_or_else(|_| self.status())
    }

    /// Sends one message; with `replay`, it is also re-sent after every reconnect.
    pub async fn send_raw(&self, message: OutboundMessage, replay: bool) -> Result<(), SendError> {
        if self.status() != Status::Connected {
            return Err(SendError::NotConnected);
        }
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Send {
                message,
                replay,
                done,
            })
            .await
            .map_err(|_| SendError::Closed)?;
        result.await.unwrap_or(Err(SendError::Closed))
    }

    /// Sends a correlated request and waits up to `timeout` for its response (SPEC 5, "Send").
    pub async fn send(
        &self,
        payload: Bytes,
        content_type: &str,
        timeout: Duration,
    ) -> Result<Bytes, SendError> {
        let text = correlation::is_text(content_type);
        let (request_id, response) = self.correlator.register();
        // Forgets the request however this call ends: answered, timed out, failed, or abandoned
        // by its caller (a cancelled RPC drops this future mid-wait).
        let _pending = correlation::Pending::new(&self.correlator, request_id);
        let message = OutboundMessage {
            payload: correlation::wrap(request_id, &payload, text),
            content_type: content_type.to_owned(),
        };
        let outcome = async {
            self.send_raw(message, false).await?;
            response.await.map_err(|_| SendError::Closed)
        };
        match tokio::time::timeout(timeout, outcome).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout),
        }
    }

    /// Correlated requests waiting for their response.
    pub(crate) fn pending_requests(&self) -> usize {
        self.correlator.pending()
    }

    /// Starts (`Some`) or stops (`None`) publishing received frames.
    pub async fn set_topic(&self, topic: Option<&str>) -> Result<(), SendError> {
        self.commands
            .send(Command::SetTopic(topic.map(Arc::from)))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Replaces the connection's socket make-before-break (SPEC 8): a new leg opens and replays,
    /// and the old one closes once the two overlap (or at the bound). Returns when the old leg
    /// closed; fails when the new leg did not open (the old one goes on serving).
    pub async fn rotate(&self, reason: &str) -> Result<Rotated, SendError> {
        if self.status() != Status::Connected {
            return Err(SendError::NotConnected);
        }
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Rotate {
                reason: reason.to_owned(),
                done,
            })
            .await
            .map_err(|_| SendError::Closed)?;
        result.await.unwrap_or(Err(SendError::Closed))
    }

    /// Closes the socket with `code` (1000 normal, 1001 going away) and ends the task; idempotent.
    pub async fn close(&self, code: u16, reason: &'static str) {
        let (done, closed) = oneshot::channel();
        if self
            .commands
            .send(Command::Close { code, reason, done })
            .await
            .is_ok()
        {
            let _ = closed.await;
        }
    }
}
