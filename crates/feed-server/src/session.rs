//! One client connection: the WebSocket handshake, then a single task that owns the socket and
//! reads requests, writes depth frames and replies, and obeys control commands.
//!
//! One owner (no split halves, no channel in the frame path) keeps the fast path short. Depth
//! frames are encoded whole into one reused batch buffer and written to the stream directly
//! (see `frames`), after flushing what tungstenite has queued (replies, pongs); a batch is
//! written completely before the socket is touched again, so frames never interleave. That also
//! gives the backpressure the server promises: the write waits while the socket is full, so a
//! client that stops reading makes its session wait instead of buffering. While the session
//! waits to write it does not read either; every buffer stays bounded.
//!
//! A connection with a venue personality (see `venue`) shows every client message to it first
//! and wakes it when it is due; htx's gzip frames take a slower per-message path instead of the
//! batch of raw text frames.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::broadcast::{Feeds, Hub, Incoming, Variant, LAG_REASON};
use crate::config::{ConnectionParams, FeedConfig, Rejection};
use crate::echo::{self, Echo};
use crate::frames::DepthFrames;
use crate::orders::{self, End, Orders, CLOSE_TIMEOUT};
use crate::pacer::Pacer;
use crate::registry::{FeedStats, ReceivedMessage, Registry, VenueEvent};
use crate::shutdown;
use crate::subscribe::Subscriptions;
use crate::venue::lifetime::Clock;
use crate::venue::{htx, Action, Inbound, Personality, Rule, RuleClose};

/// Bytes of frames per socket write; between two batches the session looks at requests and
/// control commands.
const BATCH_BYTES: usize = 128 * 1024;
/// Largest message the server reads (echo requests); bounds memory per connection.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// What the server passes to every session.
pub(crate) struct Shared {
    pub config: FeedConfig,
    pub registry: Registry,
    /// The broadcast generators, by stream.
    pub hub: Hub,
}

impl Shared {
    /// All counters, the broadcast generators' too.
    pub(crate) fn stats(&self) -> FeedStats {
        let mut stats = self.registry.stats();
        stats.broadcast_frames = self.hub.generated();
        stats
    }
}

/// Runs one accepted TCP connection to its end: TLS first when configured, then the WebSocket.
/// Both handshakes together get [`FeedConfig::handshake_timeout`].
pub(crate) async fn run(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let Some(tls) = shared.config.tls.clone() else {
        return serve(tcp, peer, deadline, shared, stop).await;
    };
    let stream = tokio::select! {
        result = timeout_at(deadline, TlsAcceptor::from(tls).accept(tcp)) => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed; connection dropped");
                shared.registry.count_tls_failure();
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out; connection dropped");
                shared.registry.count_tls_failure();
                return;
            }
        },
        _ = shutdown::signalled(&mut stop) => return,
    };
    serve(stream, peer, deadline, shared, stop).await;
}

/// The WebSocket handshake and the session, over plain TCP or TLS. Generic, so each stream type
/// gets its own copy: the plain path pays nothing for TLS.
async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    deadline: Instant,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut accepted: Option<(String, ConnectionParams)> = None;
    let config = &shared.config;
    // The error type is tungstenite's `Callback` contract; it is built once per rejection.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        let uri = request.uri();
        let target = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        match ConnectionParams::from_request(config, uri.path(), uri.query()) {
            Ok(params) => {
                accepted = Some((target, params));
                Ok(response)
            }
            Err(rejection) => Err(reject(rejection)),
        }
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config));
    let ws = tokio::select! {
        result = timeout_at(deadline, handshake) => match result {
            Ok(Ok(ws)) => ws,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "handshake failed; connection dropped");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "handshake timed out; connection dropped");
                return;
            }
        },
        _ = shutdown::signalled(&mut stop) => return,
    };
    let Some((path, params)) = accepted else {
        return;
    };

    let (commands_tx, commands) = mpsc::unbounded_channel();
    let venue = params.venue.as_ref().map(|rules| rules.venue());
    let (id, frames_sent) = shared
        .registry
        .register(peer, path.clone(), venue, commands_tx);
    tracing::info!(connection = id, %peer, %path, "client connected");
    let mut session = Session::new(id, ws, params, shared.clone(), frames_sent);
    let end = session.serve(Orders::new(commands, stop)).await;
    drop(session); // the socket goes first, then whoever ordered the end hears of it
    shared.registry.deregister(id);
    tracing::info!(connection = id, end = end.describe(), "client gone");
    end.acknowledge();
}

fn reject(rejection: Rejection) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(rejection.reason));
    *response.status_mut() =
        StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::BAD_REQUEST);
    response
}

struct Session<S> {
    id: u64,
    ws: WebSocketStream<S>,
    params: ConnectionParams,
    shared: Arc<Shared>,
    frames: DepthFrames,
    subscriptions: Subscriptions,
    /// `Some` while frames are paced at a fixed rate and streaming.
    pacer: Option<Pacer>,
    streaming: bool,
    sent: u64,
    frames_sent: Arc<AtomicU64>,
    /// Reused buffer of encoded frames.
    batch: Vec<u8>,
    /// Frames per batch: about [`BATCH_BYTES`] worth.
    batch_frames: u64,
    /// The client started the closing handshake: no more frames.
    closing: bool,
    /// Echo replies waiting for their delay, in due order (the delay is the same for all).
    delayed: VecDeque<(Instant, Message)>,
    /// The venue's rules, when the connection has a personality.
    venue: Option<Personality>,
    /// Server text goes out gzip-compressed as binary messages (htx).
    gzip: bool,
    /// A close a venue rule asked for; carried out right after the current step.
    rule_close: Option<RuleClose>,
    /// The generic lifetime (`?lifetime_ms` without the binance personality).
    lifetime: Option<Clock>,
    /// Broadcast mode: the socket's subscriptions to the streams' generators.
    feeds: Option<Feeds>,
    /// Broadcast frames taken from the feeds for the current batch.
    pending: Vec<crate::broadcast::Frame>,
    /// The socket fell behind its broadcast: close with 1008 right after the current step.
    lagged: bool,
    /// ... and its write could not even finish: drop it.
    lag_dropped: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    fn new(
        id: u64,
        ws: WebSocketStream<S>,
        params: ConnectionParams,
        shared: Arc<Shared>,
        frames_sent: Arc<AtomicU64>,
    ) -> Self {
        let mut session = Self {
            id,
            ws,
            frames: DepthFrames::new(params.form, params.size),
            params,
            shared,
            subscriptions: Subscriptions::default(),
            pacer: None,
            streaming: false,
            sent: 0,
            frames_sent,
            batch: Vec::with_capacity(BATCH_BYTES + 1024),
            batch_frames: 1,
            closing: false,
            delayed: VecDeque::new(),
            venue: None,
            gzip: false,
            rule_close: None,
            lifetime: None,
            feeds: None,
            pending: Vec::new(),
            lagged: false,
            lag_dropped: false,
        };
        let now = Instant::now();
        if let Some(lifetime) = session.params.lifetime {
            let notify = session.params.lifetime_notice;
            session.lifetime = Some(Clock::new(lifetime, notify, Rule::PlainLifetime, now));
        }
        if session.params.broadcast {
            let variant = Variant {
                form: session.params.form,
                size: session.params.size,
                ids: session.params.ids,
            };
            session.feeds = Some(Feeds::new(variant, session.params.rate));
        }
        if let Some(rules) = session.params.venue.as_ref() {
            let venue = Personality::new(rules, now);
            session.gzip = venue.gzip();
            session.venue = Some(venue);
        }
        // Natural frames are about 150 bytes.
        let frame_len = if session.params.size == 0 {
            150
        } else {
            session.params.size
        };
        session.batch_frames = (BATCH_BYTES / frame_len).max(1) as u64;
        session.update_streams();
        session
    }

    /// The session loop: carry out filed orders, wait for the next thing to do, do it.
    async fn serve(&mut self, mut orders: Orders) -> End {
        loop {
            if let Some(close) = orders.take_close() {
                self.close(close.code, close.reason).await;
                return close.end();
            }
            if let Some(until) = orders.take_stall() {
                tracing::info!(connection = self.id, "stalling");
                let stalled = Instant::now();
                if let Err(end) = orders.stall(until).await {
                    return end;
                }
                tracing::info!(connection = self.id, "stall over");
                if let Some(pacer) = self.pacer.as_mut() {
                    pacer.resume(Instant::now());
                }
                if let Some(venue) = self.venue.as_mut() {
                    venue.postpone(stalled.elapsed());
                }
                if let Some(lifetime) = self.lifetime.as_mut() {
                    lifetime.postpone(stalled.elapsed());
                }
                continue;
            }

            let frame_due = self.pacer.as_ref().map(Pacer::next_at);
            let reply_due = self.delayed.front().map(|(at, _)| *at);
            let can_take_request = self.delayed.len() < self.shared.config.delayed_reply_limit;
            let venue_due = if self.closing {
                None
            } else {
                let venue = self.venue.as_ref().and_then(Personality::next_due);
                let lifetime = self.lifetime.as_ref().map(Clock::next_due);
                venue.into_iter().chain(lifetime).min()
            };
            let broadcasting = self.streaming && self.feeds.is_some();
            let streaming = self.streaming && self.feeds.is_none();
            let step = tokio::select! {
                biased;
                end = orders.next() => match end {
                    Some(end) => return end,
                    None => continue,
                },
                inbound = self.ws.next(), if can_take_request => Step::Inbound(inbound),
                _ = orders::sleep_until_opt(venue_due), if venue_due.is_some() => Step::Venue,
                _ = orders::sleep_until_opt(reply_due), if reply_due.is_some() => Step::Replies,
                _ = orders::sleep_until_opt(frame_due), if streaming => Step::Frames,
                incoming = recv_feeds(&mut self.feeds), if broadcasting => Step::Broadcast(incoming),
            };
            match orders.during(self.execute(step)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return End::Client(error.to_string()),
                Err(end) => return end,
            }
            if self.lag_dropped {
                tracing::info!(
                    connection = self.id,
                    "too slow for the broadcast and not reading: dropped"
                );
                return End::Rule(format!("{LAG_REASON} (dropped: not reading)"));
            }
            if self.lagged {
                tracing::info!(connection = self.id, "too slow for the broadcast: closing");
                self.close(CloseCode::Policy, LAG_REASON).await;
                return End::Rule(LAG_REASON.to_owned());
            }
            if let Some(rule) = self.rule_close.take() {
                // Counted before the close frame goes out: a client that reads the stats after
                // seeing it must find the count.
                self.shared
                    .registry
                    .count_venue(VenueEvent::Closed(rule.rule));
                tracing::info!(
                    connection = self.id,
                    code = rule.code,
                    reason = %rule.reason,
                    "venue rule closes the connection"
                );
                self.close(CloseCode::from(rule.code), rule.reason.clone())
                    .await;
                return End::Rule(rule.reason);
            }
        }
    }

    async fn execute(&mut self, step: Step) -> Result<(), WsError> {
        match step {
            Step::Inbound(None) => Err(WsError::ConnectionClosed),
            Step::Inbound(Some(inbound)) => self.on_message(inbound?).await,
            Step::Venue => self.venue_due().await,
            Step::Replies => self.send_due_replies().await,
            Step::Frames => self.send_frames().await,
            Step::Broadcast(incoming) => self.send_broadcast(incoming).await,
        }
    }

    /// Does what the venue (or the generic lifetime) has due: server pings, a shutdown notice,
    /// a close.
    async fn venue_due(&mut self) -> Result<(), WsError> {
        let now = Instant::now();
        loop {
            let (action, plain) = match self
                .venue
                .as_mut()
                .and_then(|venue| venue.due(now, unix_millis()))
            {
                Some(action) => (action, false),
                None => match self
                    .lifetime
                    .as_mut()
                    .and_then(|lifetime| lifetime.due(now, unix_millis()))
                {
                    Some(action) => (action, true),
                    None => return Ok(()),
                },
            };
            let (text, event) = match action {
                Action::Ping(text) => (text, VenueEvent::PingSent),
                Action::Notice(text) if plain => (text, VenueEvent::PlainNoticeSent),
                Action::Notice(text) => (text, VenueEvent::NoticeSent),
                Action::Close(close) => {
                    self.rule_close = Some(close);
                    return Ok(());
                }
            };
            let message = self.text_message(text)?;
            self.ws.send(message).await?;
            self.shared.registry.count_venue(event);
        }
    }

    /// A server text message as this connection sends it: text, or gzip binary for htx.
    fn text_message(&self, text: String) -> Result<Message, WsError> {
        if self.gzip {
            Ok(Message::Binary(htx::gzip(text.as_bytes())?.into()))
        } else {
            Ok(Message::text(text))
        }
    }

    /// Handles one client message: show it to the venue rules, record it, then answer keepalives,
    /// SUBSCRIBE-style calls and echo correlated requests.
    async fn on_message(&mut self, message: Message) -> Result<(), WsError> {
        let inbound = match self.venue.as_mut() {
            Some(venue) => venue.inbound(&message, Instant::now()),
            None => Inbound::Pass,
        };
        let registry = &self.shared.registry;
        let keepalive = matches!(inbound, Inbound::Ping { .. } | Inbound::Pong);
        match &message {
            Message::Text(text) => {
                registry.record(
                    self.id,
                    ReceivedMessage::Text(text.as_str().to_owned()),
                    keepalive,
                );
            }
            Message::Binary(data) => {
                registry.record(self.id, ReceivedMessage::Binary(data.to_vec()), keepalive);
            }
            _ => {}
        }
        if let Some(n) = self
            .venue
            .as_ref()
            .and_then(Personality::msgs_in_last_second)
        {
            registry.note_msgs_per_sec(self.id, n);
        }
        match inbound {
            Inbound::Pass => {}
            Inbound::Ping { reply } => {
                let reply = self.text_message(reply)?;
                self.ws.send(reply).await?;
                self.shared.registry.count_venue(VenueEvent::PingAnswered);
                return Ok(());
            }
            Inbound::Pong => {
                registry.count_venue(VenueEvent::PongReceived);
                return Ok(());
            }
            Inbound::Close(close) => {
                self.rule_close = Some(close);
                return Ok(());
            }
        }
        match message {
            Message::Text(text) => {
                if let Some(answer) = self.subscriptions.handle(text.as_str()) {
                    // In effect before the client hears so: one that reads the stats or the
                    // subscriptions after the reply must find them.
                    if answer.changed {
                        self.shared
                            .registry
                            .set_subscriptions(self.id, self.subscriptions.names());
                        self.update_streams();
                    }
                    let reply = self.text_message(answer.reply)?;
                    self.ws.send(reply).await?;
                } else if self.params.echo {
                    if let Echo::Reply(reply) = echo::text_reply(text.as_str()) {
                        let reply = self.text_message(reply)?;
                        self.reply(reply).await?;
                    }
                }
            }
            Message::Binary(data) => {
                if self.params.echo {
                    if let Echo::Reply(reply) = echo::binary_reply(&data) {
                        self.reply(Message::Binary(reply)).await?;
                    }
                }
            }
            Message::Close(frame) => {
                self.shared
                    .registry
                    .record_close(frame.map_or(1005, |f| u16::from(f.code)));
                // tungstenite answers the close; nothing may follow that answer.
                self.closing = true;
                self.update_streams();
            }
            // tungstenite answers pings by itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
        Ok(())
    }

    async fn reply(&mut self, message: Message) -> Result<(), WsError> {
        if self.params.echo_delay.is_zero() {
            self.ws.send(message).await
        } else {
            let due = Instant::now() + self.params.echo_delay;
            self.delayed.push_back((due, message));
            Ok(())
        }
    }

    async fn send_due_replies(&mut self) -> Result<(), WsError> {
        let now = Instant::now();
        while self.delayed.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, message)) = self.delayed.pop_front() {
                self.ws.feed(message).await?;
            }
        }
        self.ws.flush().await
    }

    /// Writes the frames that are due (fixed rate) or one batch (max rate).
    async fn send_frames(&mut self) -> Result<(), WsError> {
        let mut n = match self.pacer.as_mut() {
            // More than a batch due (a very high rate): the rest go out on the next turn.
            Some(pacer) => pacer.due(Instant::now()).min(self.batch_frames),
            None => self.batch_frames,
        };
        if let Some(count) = self.params.count {
            n = n.min(count.saturating_sub(self.sent));
        }
        self.frames.set_time_ms(unix_millis());
        let written = if self.gzip {
            self.send_gzip_frames(n).await?
        } else {
            self.send_text_frames(n).await?
        };
        self.sent += written;
        if let Some(pacer) = self.pacer.as_mut() {
            pacer.sent(written);
        }
        self.frames_sent.fetch_add(written, Ordering::Relaxed);
        self.shared.registry.add_frames_sent(written);
        if self.params.count.is_some_and(|count| self.sent >= count) {
            self.update_streams();
        }
        Ok(())
    }

    /// Broadcast: writes `first` and whatever else the feeds already hold, up to a batch (and the
    /// connection's `count`), as the generators encoded them. A socket that fell behind is marked
    /// for the 1008 close instead.
    async fn send_broadcast(&mut self, first: Incoming) -> Result<(), WsError> {
        let Some(feeds) = self.feeds.as_mut() else {
            return Ok(());
        };
        let limit = match self.params.count {
            Some(count) => count.saturating_sub(self.sent),
            None => u64::MAX,
        };
        self.pending.clear();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(incoming) = next.take() {
            match incoming {
                Incoming::Frame(frame) => {
                    bytes += frame.bytes.len();
                    self.pending.push(frame);
                }
                Incoming::Lagged => {
                    self.pending.clear();
                    self.fell_behind();
                    return Ok(());
                }
                Incoming::Closed => {}
            }
            if (self.pending.len() as u64) < limit && bytes < BATCH_BYTES {
                next = feeds.try_recv();
            }
        }
        if self.pending.is_empty() {
            // Only the server's stop ends a generator under its sockets: nothing more to send.
            self.streaming = !feeds.is_empty();
            return Ok(());
        }
        let written = self.pending.len() as u64;
        let Some(feeds) = self.feeds.as_ref() else {
            return Ok(());
        };
        let gzip = self.gzip;
        let (ws, pending) = (&mut self.ws, &self.pending);
        let write = async {
            if gzip {
                for frame in pending {
                    let packed = htx::gzip(frame.payload())?;
                    ws.feed(Message::Binary(packed.into())).await?;
                }
                ws.flush().await
            } else {
                // Whatever tungstenite holds (a reply, a pong) goes first, and whole.
                ws.flush().await?;
                let stream = ws.get_mut();
                for frame in pending {
                    stream.write_all(&frame.bytes).await?;
                }
                stream.flush().await?;
                Ok(())
            }
        };
        // Counted when noticed, before the close frame can go out.
        let (lagged, registry) = (&mut self.lagged, &self.shared.registry);
        let on_behind = || fell_behind(lagged, registry);
        match feeds.watch_lag(write, on_behind).await {
            Ok(result) => result?,
            Err(()) => {
                self.lag_dropped = true;
                return Ok(());
            }
        }
        self.pending.clear();
        self.sent += written;
        self.frames_sent.fetch_add(written, Ordering::Relaxed);
        self.shared.registry.add_frames_sent(written);
        if self.params.count.is_some_and(|count| self.sent >= count) {
            self.update_streams();
        }
        Ok(())
    }

    /// Marks the socket as too slow for its broadcast (counted once).
    fn fell_behind(&mut self) {
        fell_behind(&mut self.lagged, &self.shared.registry);
    }

    /// The fast path: up to `n` raw text frames in one batch, written to the stream directly.
    async fn send_text_frames(&mut self, n: u64) -> Result<u64, WsError> {
        self.batch.clear();
        let mut written = 0;
        while written < n && self.frames.encode_next(&mut self.batch) {
            written += 1;
        }
        // Whatever tungstenite holds (a reply, a pong) goes first, and whole.
        self.ws.flush().await?;
        let stream = self.ws.get_mut();
        stream.write_all(&self.batch).await?;
        // TLS may keep the tail of the batch in its buffer when the socket was full; push it out
        // now rather than at tungstenite's next read. A no-op on plain TCP.
        stream.flush().await?;
        Ok(written)
    }

    /// htx: up to `n` frames, each payload gzip-compressed into its own binary message and
    /// queued in tungstenite (which writes when its buffer fills), then flushed.
    async fn send_gzip_frames(&mut self, n: u64) -> Result<u64, WsError> {
        let mut written = 0;
        while written < n {
            self.batch.clear();
            if !self.frames.encode_payload_next(&mut self.batch) {
                break;
            }
            let packed = htx::gzip(&self.batch)?;
            self.ws.feed(Message::Binary(packed.into())).await?;
            written += 1;
        }
        self.ws.flush().await?;
        Ok(written)
    }

    /// Recomputes what to stream after a subscription change or when the count is reached:
    /// the subscribed streams, else the default streams when streaming without a subscription.
    fn update_streams(&mut self) {
        let names = if !self.subscriptions.names().is_empty() {
            self.subscriptions.names().to_vec()
        } else if self.params.auto_stream {
            self.params.default_streams.clone()
        } else {
            Vec::new()
        };
        let done = self.closing || self.params.count.is_some_and(|count| self.sent >= count);
        if let Some(feeds) = self.feeds.as_mut() {
            let names = if done { &[][..] } else { &names[..] };
            feeds.set_streams(&self.shared.hub, names, self.id);
            self.streaming = !feeds.is_empty();
            self.pacer = None;
            return;
        }
        self.frames.set_streams(&names);
        let was_streaming = self.streaming;
        self.streaming = self.frames.has_streams() && !done;
        if self.params.rate == 0 || !self.streaming {
            self.pacer = None;
        } else if !was_streaming || self.pacer.is_none() {
            self.pacer = Some(Pacer::new(self.params.rate, Instant::now()));
        }
    }

    /// Sends a close frame and waits (bounded) for the client's answer.
    async fn close(&mut self, code: CloseCode, reason: impl Into<Utf8Bytes>) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let closing = async {
            self.ws.close(Some(frame)).await?;
            while let Some(message) = self.ws.next().await {
                message?;
            }
            Ok::<(), WsError>(())
        };
        match timeout(CLOSE_TIMEOUT, closing).await {
            Ok(Ok(())) | Ok(Err(WsError::ConnectionClosed)) => {}
            Ok(Err(error)) => tracing::debug!(connection = self.id, %error, "close failed"),
            Err(_) => tracing::debug!(connection = self.id, "client did not finish closing"),
        }
    }
}

/// One step of the session loop.
enum Step {
    Inbound(Option<Result<Message, WsError>>),
    Venue,
    Replies,
    Frames,
    Broadcast(Incoming),
}

/// Marks a socket as too slow for its broadcast, counting it the first time.
fn fell_behind(lagged: &mut bool, registry: &Registry) {
    if !*lagged {
        *lagged = true;
        registry.count_broadcast_lag();
    }
}

/// The next broadcast frame (never, without feeds); cancel safe.
async fn recv_feeds(feeds: &mut Option<Feeds>) -> Incoming {
    match feeds {
        Some(feeds) => feeds.recv().await,
        None => std::future::pending().await,
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
