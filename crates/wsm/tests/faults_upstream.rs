//! Hostile and broken upstreams: a 100 MB frame, invalid UTF-8 in a text frame, handshakes that
//! dribble in a byte at a time or never come, and a thousand connects to a refusing port. Each test
//! asserts how wsm recovers and counts what was lost; the leak tests count tokio tasks and open file
//! descriptors before and after.
//!
//! The upstreams are written here as raw bytes over a tokio `TcpListener` ([`Hostile`]), so a test
//! can send what no well-behaved WebSocket library would.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tonic::transport::Channel;
use tonic::Streaming;
use wsm::backends::memory::{MemoryBus, MemoryStateStore, Subscription};
use wsm::connection::BackoffPolicy;
use wsm::lifecycle::LIFECYCLE_TOPIC;
use wsm::proto::web_socket_manager_client::WebSocketManagerClient;
use wsm::proto::{
    ConnectRequest, DisconnectRequest, ListRequest, PublishedEvent, StartPublishRequest,
    SubscribeRequest, WebSocketConnection,
};
use wsm::security::NetworkPolicy;
use wsm::{ServiceConfig, WebSocketService};

use support::process::WsmProcess;
use support::server::{bounded, dead_port, Poll, Wsm, HANG};

type Client = WebSocketManagerClient<Channel>;

/// The tests that count this process's file descriptors run alone ([`alone`]); every other test
/// holds a shared guard for its whole run ([`shared`]), so its sockets are never counted by mistake.
static GATE: RwLock<()> = RwLock::new(());

/// Runs a test beside the other shared ones, on its own runtime.
fn shared(test: impl Future<Output = ()>) {
    let _gate = GATE.read().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(bounded(test));
}

/// Runs a test while no other test of this file runs. Its runtime is built after the gate is
/// taken and dropped before it is released: another test's runtime (its epoll and event fds),
/// sockets and tasks never overlap the counts.
fn alone(test: impl Future<Output = ()>) {
    let _gate = GATE.write().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(bounded(test));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

const MB_100: u64 = 100 * 1000 * 1000;

// ---------------------------------------------------------------------------------------------
// A hand-written upstream.

/// What the upstream saw, over all its connections.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    /// Accepted connections the client has closed (EOF or reset seen by the reader).
    closed_by_client: AtomicUsize,
    /// Close codes the client sent, in order.
    close_codes: Mutex<Vec<u16>>,
}

/// An upstream that accepts TCP, reads the client's handshake request and then runs a script on
/// the connection (the 101 answer and frames, or hostile bytes), while a reader takes the client's
/// frames and notes its close codes. [`Hostile::stop`] (or dropping it) closes the listener and
/// every connection.
struct Hostile {
    addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
}

impl Hostile {
    async fn start<F, Fut>(script: F) -> Hostile
    where
        F: Fn(Accepted) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the upstream");
        let addr = listener.local_addr().expect("the upstream's address");
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        let script = Arc::new(script);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let accept = tokio::spawn(async move {
            // Owned here, so ending this task closes every connection too.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { break };
                        let index = shared.accepted.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(serve(tcp, index, Arc::clone(&script), Arc::clone(&shared)));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    _ = &mut stopped => break,
                }
            }
            drop(listener);
            connections.shutdown().await;
        });
        Hostile {
            addr,
            seen,
            stop: Some(stop),
            accept,
        }
    }

    /// Closes the listener (the port refuses from now on) and every connection, and returns once
    /// they are closed and their tasks gone: a count taken next sees none of them.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.accept).await;
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.seen.accepted.load(Ordering::SeqCst)
    }

    fn close_codes(&self) -> Vec<u16> {
        self.seen.close_codes.lock().unwrap().clone()
    }

    /// Waits until the client has closed every connection this upstream accepted.
    async fn wait_all_closed_by_client(&self) {
        let poll = Poll::new("the client to close every connection the upstream accepted");
        while self.seen.closed_by_client.load(Ordering::SeqCst) < self.accepted() {
            poll.tick().await;
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve<F, Fut>(tcp: TcpStream, index: usize, script: Arc<F>, seen: Arc<Seen>)
where
    F: Fn(Accepted) -> Fut,
    Fut: Future<Output = ()>,
{
    let _ = tcp.set_nodelay(true);
    let (read, out) = tcp.into_split();
    let mut read = BufReader::new(read);
    let Some(key) = read_request(&mut read).await else {
        seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let client = read_client(read, Arc::clone(&seen));
    tokio::pin!(client);
    // A script that returns closes our side (its write half is dropped); the connection counts as
    // closed by the client only once the reader sees the client's EOF or reset.
    let client_first = tokio::select! {
        () = script(Accepted { index, key, out }) => false,
        () = &mut client => true,
    };
    if !client_first {
        client.await;
    }
    seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
}

/// Reads the handshake request's head; its `Sec-WebSocket-Key`, or `None` if the client left.
async fn read_request(read: &mut BufReader<OwnedReadHalf>) -> Option<String> {
    let mut key = String::new();
    for _ in 0..100 {
        let mut line = String::new();
        if read.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some(key);
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("sec-websocket-key") {
                key = value.trim().to_owned();
            }
        }
    }
    None
}

/// Reads the client's (masked) frames until it closes the connection, noting close codes.
async fn read_client(mut read: BufReader<OwnedReadHalf>, seen: Arc<Seen>) {
    loop {
        let mut head = [0u8; 2];
        if read.read_exact(&mut head).await.is_err() {
            return;
        }
        let opcode = head[0] & 0x0f;
        let len = match head[1] & 0x7f {
            126 => match read.read_u16().await {
                Ok(n) => u64::from(n),
                Err(_) => return,
            },
            127 => match read.read_u64().await {
                Ok(n) => n,
                Err(_) => return,
            },
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 && read.read_exact(&mut mask).await.is_err() {
            return;
        }
        if len > 1 << 20 {
            // Not a frame these tests expect from wsm: wait for the client to leave.
            let _ = tokio::io::copy(&mut read, &mut tokio::io::sink()).await;
            return;
        }
        let mut payload = vec![0u8; len as usize];
        if read.read_exact(&mut payload).await.is_err() {
            return;
        }
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        if opcode == 0x8 {
            let code = match payload[..] {
                [hi, lo, ..] => u16::from_be_bytes([hi, lo]),
                _ => 1005,
            };
            seen.close_codes.lock().unwrap().push(code);
        }
    }
}

/// A server frame header (FIN set, unmasked) for a payload of `len` bytes.
fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut head = vec![0x80 | opcode];
    if len < 126 {
        head.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        head.push(126);
        head.extend_from_slice(&len.to_be_bytes());
    } else {
        head.push(127);
        head.extend_from_slice(&len.to_be_bytes());
    }
    head
}

/// One accepted connection whose handshake request was read.
struct Accepted {
    /// 0 for the first connection the upstream accepted, 1 for the next, …
    index: usize,
    key: String,
    out: OwnedWriteHalf,
}

impl Accepted {
    /// Completes the handshake.
    async fn accept(&mut self) -> std::io::Result<()> {
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(self.key.as_bytes())
        );
        self.out.write_all(response.as_bytes()).await
    }

    async fn frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut bytes = frame_header(opcode, payload.len() as u64);
        bytes.extend_from_slice(payload);
        self.out.write_all(&bytes).await
    }

    /// `{"n":<n>}` as a text frame: the frames tests count.
    async fn numbered(&mut self, n: u64) -> std::io::Result<()> {
        self.frame(0x1, format!(r#"{{"n":{n}}}"#).as_bytes()).await
    }

    /// Announces a binary frame of `len` bytes and streams its payload until all is sent or the
    /// client goes away; `streamed` counts the payload bytes the socket took.
    async fn stream_huge_frame(&mut self, len: u64, streamed: &AtomicU64) {
        if self.out.write_all(&frame_header(0x2, len)).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0u64;
        while sent < len {
            let n = chunk.len().min((len - sent) as usize);
            if self.out.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            sent += n as u64;
            streamed.store(sent, Ordering::SeqCst);
        }
    }

    /// Keeps the connection open, saying nothing more, until the client leaves.
    async fn hold(self) {
        std::future::pending::<()>().await;
        drop(self);
    }

    /// Answers the handshake one byte every `every`, and never finishes: the status line, then
    /// header bytes forever.
    async fn dribble(mut self, every: Duration) {
        let status = b"HTTP/1.1 101 Switching Protocols\r\n".iter();
        let padding = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n".iter().cycle();
        for &byte in status.chain(padding) {
            if self.out.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to wsm.

async fn connect(client: &mut Client, url: &str, auto_reconnect: bool) -> String {
    let response = client
        .connect(ConnectRequest {
            url: url.to_owned(),
            auto_reconnect,
            ..ConnectRequest::default()
        })
        .await
        .expect("Connect")
        .into_inner();
    assert_eq!(response.status, "connected");
    response.id
}

async fn subscribe(client: &mut Client, topic: &str) -> Streaming<PublishedEvent> {
    client
        .subscribe(SubscribeRequest {
            topic: topic.to_owned(),
        })
        .await
        .expect("Subscribe")
        .into_inner()
}

async fn start_publish(client: &mut Client, id: &str, topic: &str) {
    client
        .start_publish(StartPublishRequest {
            id: id.to_owned(),
            topic: topic.to_owned(),
        })
        .await
        .expect("StartPublish");
}

async fn listed(client: &mut Client) -> Vec<WebSocketConnection> {
    client
        .list(ListRequest::default())
        .await
        .expect("List")
        .into_inner()
        .connections
}

async fn next_event(events: &mut Streaming<PublishedEvent>) -> PublishedEvent {
    tokio::time::timeout(HANG, events.message())
        .await
        .expect("an event within the hang bound")
        .expect("the stream stays open")
        .expect("an event")
}

/// A published frame: its seq, epoch, and `n` for a `{"n":…}` text frame or its bytes otherwise.
#[derive(Debug, PartialEq)]
struct Published {
    seq: u64,
    epoch: u64,
    body: Body,
}

#[derive(Debug, PartialEq)]
enum Body {
    Numbered(u64),
    Binary(Vec<u8>),
}

fn published(event: &PublishedEvent) -> Published {
    use base64::Engine;
    let cloud: Value = serde_json::from_str(&event.cloud_event).expect("CloudEvent JSON");
    let body = match (&cloud["data"], &cloud["data_base64"]) {
        (Value::String(text), Value::Null) => {
            assert_eq!(cloud["contentType"], "text/plain", "{cloud}");
            let frame: Value = serde_json::from_str(text).unwrap_or_else(|e| {
                panic!("a published text frame is one the upstream sent ({e}): {text:?}")
            });
            Body::Numbered(frame["n"].as_u64().expect("a numbered frame"))
        }
        (Value::Null, Value::String(b64)) => {
            assert_eq!(cloud["contentType"], "application/octet-stream");
            Body::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64"),
            )
        }
        other => panic!("a frame event carries data or data_base64: {other:?}"),
    };
    Published {
        seq: event.seq,
        epoch: event.epoch,
        body,
    }
}

/// The next `count` frames published on `events`.
async fn frames(events: &mut Streaming<PublishedEvent>, count: usize) -> Vec<Published> {
    let mut frames = Vec::with_capacity(count);
    while frames.len() < count {
        let Ok(event) = tokio::time::timeout(HANG, events.message()).await else {
            panic!(
                "only {} of {count} frames were published within {HANG:?}; the last: {:?}",
                frames.len(),
                frames.last()
            );
        };
        let event = event.expect("the stream stays open").expect("an event");
        frames.push(published(&event));
    }
    frames
}

/// A lifecycle event, as published.
#[derive(Debug, Clone)]
struct Life {
    kind: String,
    reason: String,
    attempt: u64,
    epoch: u64,
}

fn life(json: &[u8]) -> (String, Life) {
    let cloud: Value = serde_json::from_slice(json).expect("lifecycle CloudEvent JSON");
    let kind = cloud["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("com.virtufin.websocketmanager.lifecycle."))
        .expect("a lifecycle type")
        .to_owned();
    let data = &cloud["data"];
    let id = data["connection_id"]
        .as_str()
        .expect("connection_id")
        .to_owned();
    let event = Life {
        kind,
        reason: data["reason"].as_str().expect("reason").to_owned(),
        attempt: data["attempt"].as_u64().expect("attempt"),
        epoch: data["epoch"].as_u64().expect("epoch"),
    };
    (id, event)
}

/// `id`'s lifecycle events from a Subscribe stream, up to and including the first of `kind`.
async fn lifecycle_until(
    events: &mut Streaming<PublishedEvent>,
    id: &str,
    kind: &str,
) -> Vec<Life> {
    let mut seen = Vec::new();
    loop {
        let (of, event) = life(next_event(events).await.cloud_event.as_bytes());
        if of != id {
            continue;
        }
        let done = event.kind == kind;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// The same, from the memory bus of an in-process service.
async fn bus_lifecycle_until(events: &mut Subscription, id: &str, kind: &str) -> Vec<Life> {
    let mut seen = Vec::new();
    loop {
        let json = tokio::time::timeout(HANG, events.recv())
            .await
            .expect("a lifecycle event within the hang bound")
            .expect("the subscriber keeps up");
        let (of, event) = life(&json);
        if of != id {
            continue;
        }
        let done = event.kind == kind;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

fn kinds(events: &[Life]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// A process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in kB");
    kb * 1024
}

// ---------------------------------------------------------------------------------------------
// Counting what is left behind.

/// Alive tokio tasks of this test's runtime and open file descriptors of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resources {
    tasks: usize,
    fds: usize,
}

fn resources() -> Resources {
    Resources {
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        fds: std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .count(),
    }
}

/// Waits until both counts are back at (or below) `baseline`: a task or socket left behind keeps
/// one above it for good, while ones still finishing (a closing socket, a returning task) drop
/// out within moments. Returns what was counted last.
async fn back_to(baseline: Resources, what: &str) -> Resources {
    let deadline = Instant::now() + HANG;
    loop {
        let now = resources();
        if now.tasks <= baseline.tasks && now.fds <= baseline.fds {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now:?} after the faults, baseline {baseline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service in this process, on the memory backends, with its own connect timeout and backoff.
async fn local_service(
    connect_timeout: Duration,
    backoff: BackoffPolicy,
) -> (WebSocketService, MemoryBus) {
    let bus = MemoryBus::new();
    let mut config = ServiceConfig {
        instance_id: "faults-upstream".into(),
        ..ServiceConfig::default()
    };
    config.connection.network = NetworkPolicy::allow_private();
    config.connection.connect_timeout = connect_timeout;
    config.connection.backoff = backoff;
    let service = WebSocketService::start(
        config,
        Arc::new(MemoryStateStore::new()),
        Arc::new(bus.clone()),
    )
    .await
    .expect("the service starts");
    (service, bus)
}

fn request(url: &str, auto_reconnect: bool) -> wsm::ConnectRequest {
    wsm::ConnectRequest {
        url: url.to_owned(),
        auto_reconnect,
        ..wsm::ConnectRequest::default()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A 100 MB frame.

/// The upstream sends 100 numbered frames, then announces a 100 MB binary frame and streams it;
/// after the reconnect it sends 100 more. A real `wsm serve` process with the default 16 MiB limit
/// refuses the frame from its header: its peak memory grows by far less than the frame, the
/// upstream could not even hand over the whole frame, and the connection closes with 1009 and
/// reconnects. Lost: exactly the refused frame.
#[test]
fn a_100_mb_frame_is_refused_unbuffered_and_the_connection_reconnects() {
    shared(async {
        const BEFORE: u64 = 100;
        const AFTER: u64 = 100;
        let (go, gate) = watch::channel(false);
        let streamed = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&streamed);
        let upstream = Hostile::start(move |mut s| {
            let mut gate = gate.clone();
            let streamed = Arc::clone(&counted);
            async move {
                if s.accept().await.is_err() {
                    return;
                }
                if s.index == 0 {
                    let _ = gate.wait_for(|go| *go).await;
                    for n in 1..=BEFORE {
                        if s.numbered(n).await.is_err() {
                            return;
                        }
                    }
                    s.stream_huge_frame(MB_100, &streamed).await;
                } else {
                    for n in BEFORE + 1..=BEFORE + AFTER {
                        if s.numbered(n).await.is_err() {
                            return;
                        }
                    }
                    s.hold().await;
                }
            }
        })
        .await;
        let wsm = WsmProcess::spawn(&["--reconnect-base-ms", "20"]);
        let mut client = wsm.client().await;
        let mut lifecycle = subscribe(&mut client, LIFECYCLE_TOPIC).await;
        let mut events = subscribe(&mut client, "faults.huge").await;
        let id = connect(&mut client, &upstream.url("/huge"), true).await;
        start_publish(&mut client, &id, "faults.huge").await;
        let peak_before = peak_rss(wsm.pid());
        go.send_replace(true);

        let got = frames(&mut events, (BEFORE + AFTER) as usize).await;
        for (i, frame) in got.iter().enumerate() {
            let n = i as u64 + 1;
            let epoch = if n <= BEFORE { 1 } else { 2 };
            assert_eq!(
                (frame.seq, frame.epoch, &frame.body),
                (n, epoch, &Body::Numbered(n)),
                "every frame before the big one and after the reconnect is published, in order"
            );
        }
        let events = lifecycle_until(&mut lifecycle, &id, "reconnecting").await;
        let why = &events.last().expect("a reconnecting event").reason;
        assert!(
            why.contains("at least 100000000 bytes")
                && why.contains("over the limit of 16777216 bytes")
                && why.contains("--max-message-bytes")
                && why.contains("closed with 1009"),
            "the reason names the size and the limit: {why}"
        );
        let connected = lifecycle_until(&mut lifecycle, &id, "connected").await;
        assert_eq!(connected.last().map(|e| e.epoch), Some(2));

        let peak_after = peak_rss(wsm.pid());
        let grew = peak_after.saturating_sub(peak_before);
        assert!(
            grew < 10 << 20,
            "wsm's peak memory grew by {grew} bytes ({peak_before} → {peak_after}): far less than the 100 MB frame"
        );
        let took = streamed.load(Ordering::SeqCst);
        eprintln!(
            "100 MB frame: wsm VmHWM {peak_before} → {peak_after} bytes; the upstream handed over {took} payload bytes"
        );
        assert!(
            took < MB_100 / 2,
            "wsm stopped reading at the header: the upstream handed over {took} of {MB_100} bytes"
        );
        assert_eq!(
            upstream.close_codes(),
            [1009],
            "closed as 'message too big'"
        );
        assert_eq!(upstream.accepted(), 2, "one reconnect");

        let sent = BEFORE + 1 + AFTER;
        let published = wsm.metric("wsm_frames_published_total").await as u64;
        assert_eq!(published, BEFORE + AFTER);
        assert_eq!(sent - published, 1, "lost: only the refused frame");
    });
}

/// Without auto-reconnect, the refused frame ends the connection: `disconnected` says why and
/// that nothing will reconnect, List shows it, and the frames before it were all published.
#[test]
fn a_frame_over_the_limit_without_auto_reconnect_ends_the_connection_with_a_clear_error() {
    shared(async {
        const BEFORE: u64 = 50;
        let (go, gate) = watch::channel(false);
        let streamed = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&streamed);
        let upstream = Hostile::start(move |mut s| {
            let mut gate = gate.clone();
            let streamed = Arc::clone(&counted);
            async move {
                if s.accept().await.is_err() || gate.wait_for(|go| *go).await.is_err() {
                    return;
                }
                for n in 1..=BEFORE {
                    if s.numbered(n).await.is_err() {
                        return;
                    }
                }
                s.stream_huge_frame(MB_100, &streamed).await;
            }
        })
        .await;
        let wsm = Wsm::start(&["--max-message-bytes", "65536"]).await;
        let mut client = wsm.client().await;
        let mut lifecycle = subscribe(&mut client, LIFECYCLE_TOPIC).await;
        let mut events = subscribe(&mut client, "faults.limit").await;
        let id = connect(&mut client, &upstream.url("/limit"), false).await;
        start_publish(&mut client, &id, "faults.limit").await;
        go.send_replace(true);

        let got = frames(&mut events, BEFORE as usize).await;
        let expected: Vec<Published> = (1..=BEFORE)
            .map(|n| Published {
                seq: n,
                epoch: 1,
                body: Body::Numbered(n),
            })
            .collect();
        assert_eq!(
            got, expected,
            "every frame before the refused one is published"
        );
        let events = lifecycle_until(&mut lifecycle, &id, "disconnected").await;
        assert_eq!(kinds(&events), ["connecting", "connected", "disconnected"]);
        let why = &events[2].reason;
        assert!(
            why.contains("at least 100000000 bytes, over the limit of 65536 bytes")
                && why.contains("--max-message-bytes")
                && why.ends_with("closed with 1009; auto_reconnect is off"),
            "the reason names the limit and what happens next: {why}"
        );
        let poll = Poll::new("List to show the connection disconnected");
        loop {
            let list = listed(&mut client).await;
            let status = list.iter().find(|c| c.id == id).map(|c| c.status.clone());
            if status.as_deref() == Some("disconnected") {
                break;
            }
            poll.tick().await;
        }
        upstream.wait_all_closed_by_client().await;
        assert_eq!(upstream.accepted(), 1, "no reconnect");
        assert_eq!(upstream.close_codes(), [1009]);
        let metrics = wsm.http_client().get("/metrics").await.body;
        let published = support::server::metric(&metrics, "wsm_frames_published_total") as u64;
        assert_eq!(published, BEFORE, "lost: only the refused frame");
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Invalid UTF-8 in a text frame.

/// A text frame that is not UTF-8 fails the connection (RFC 6455: close 1007), which reconnects.
/// Every valid frame, before and after, is published, a binary frame with the same bytes is
/// published as binary, and the invalid text never is. Lost: nothing valid.
#[test]
fn invalid_utf8_in_a_text_frame_closes_with_1007_reconnects_and_loses_nothing_valid() {
    shared(async {
        const INVALID: &[u8] = b"{\"n\":\xff\xfe}";
        let (go, gate) = watch::channel(false);
        let upstream = Hostile::start(move |mut s| {
            let mut gate = gate.clone();
            async move {
                if s.accept().await.is_err() {
                    return;
                }
                let sent = if s.index == 0 {
                    if gate.wait_for(|go| *go).await.is_err() {
                        return;
                    }
                    let mut sent = Ok(());
                    for n in 1..=25 {
                        sent = sent.and(s.numbered(n).await);
                    }
                    sent = sent.and(s.frame(0x2, INVALID).await);
                    for n in 26..=50 {
                        sent = sent.and(s.numbered(n).await);
                    }
                    // The bad frame, and nothing after it on this connection.
                    sent.and(s.frame(0x1, INVALID).await)
                } else {
                    let mut sent = Ok(());
                    for n in 51..=100 {
                        sent = sent.and(s.numbered(n).await);
                    }
                    sent
                };
                if sent.is_ok() {
                    s.hold().await;
                }
            }
        })
        .await;
        let wsm = Wsm::start(&["--reconnect-base-ms", "20"]).await;
        let mut client = wsm.client().await;
        let mut lifecycle = subscribe(&mut client, LIFECYCLE_TOPIC).await;
        let mut events = subscribe(&mut client, "faults.utf8").await;
        let id = connect(&mut client, &upstream.url("/utf8"), true).await;
        start_publish(&mut client, &id, "faults.utf8").await;
        go.send_replace(true);

        // 50 valid text frames and the binary one before, 50 after the reconnect.
        let got = frames(&mut events, 101).await;
        let mut expected = Vec::new();
        for n in 1..=25 {
            expected.push((1, Body::Numbered(n)));
        }
        expected.push((1, Body::Binary(INVALID.to_vec())));
        for n in 26..=50 {
            expected.push((1, Body::Numbered(n)));
        }
        for n in 51..=100 {
            expected.push((2, Body::Numbered(n)));
        }
        let expected: Vec<Published> = expected
            .into_iter()
            .enumerate()
            .map(|(i, (epoch, body))| Published {
                seq: i as u64 + 1,
                epoch,
                body,
            })
            .collect();
        assert_eq!(
            got, expected,
            "every valid frame, in order, seq without gaps"
        );

        let events = lifecycle_until(&mut lifecycle, &id, "reconnecting").await;
        let why = &events.last().expect("a reconnecting event").reason;
        assert!(
            why.contains("a text message that is not valid UTF-8")
                && why.contains("closed with 1007"),
            "the reason says what was wrong: {why}"
        );
        let connected = lifecycle_until(&mut lifecycle, &id, "connected").await;
        assert_eq!(connected.last().map(|e| e.epoch), Some(2));
        assert_eq!(
            upstream.close_codes(),
            [1007],
            "closed as 'invalid frame payload data'"
        );
        assert_eq!(upstream.accepted(), 2, "one reconnect");
        let metrics = wsm.http_client().get("/metrics").await.body;
        let published = support::server::metric(&metrics, "wsm_frames_published_total") as u64;
        assert_eq!(
            published, 101,
            "lost: nothing valid; the invalid frame is not published"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Slowloris handshakes.

/// A short backoff that gives up after `attempts`.
fn backoff(attempts: u32) -> BackoffPolicy {
    BackoffPolicy {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        max_attempts: attempts,
        jitter: 0.0,
    }
}

/// One Connect that succeeds and is disconnected, and one that is refused, so whatever the first
/// of each creates lazily is there before the baseline is counted.
async fn warm_up(service: &WebSocketService) {
    let upstream = Hostile::start(|mut s| async move {
        if s.accept().await.is_ok() {
            s.hold().await;
        }
    })
    .await;
    let record = service
        .connect(request(&upstream.url("/warm-up"), true))
        .await
        .expect("the warm-up upstream answers");
    service.disconnect(&record.id).await.expect("Disconnect");
    let refused = format!("ws://127.0.0.1:{}/warm-up", dead_port());
    service
        .connect(request(&refused, false))
        .await
        .expect_err("nothing listens");
    upstream.wait_all_closed_by_client().await;
    upstream.stop().await;
}

/// An upstream that accepts TCP and then sends its handshake response a byte at a time, never
/// finishing. Slowly (a byte every 250 ms): Connect fails at the connect timeout, naming the URL
/// (its token redacted) and the timeout. Quickly (a byte every 2 ms, under a long timeout): tungstenite's guard against
/// responses in tiny pieces refuses it first, and the error says so. Either way no record is left,
/// wsm closes the socket, and no task or file descriptor stays behind.
#[test]
fn a_dribbled_handshake_fails_connect_within_the_timeout_naming_the_url() {
    alone(async {
        let slow = Hostile::start(|s| s.dribble(Duration::from_millis(250))).await;
        let fast = Hostile::start(|s| s.dribble(Duration::from_millis(2))).await;
        let (short, short_bus) = local_service(Duration::from_secs(1), backoff(1)).await;
        let (long, _long_bus) = local_service(HANG, backoff(1)).await;
        warm_up(&short).await;
        warm_up(&long).await;
        let baseline = resources();

        let mut lifecycle = short_bus.subscribe(LIFECYCLE_TOPIC);
        let url = slow.url("/slow?token=t");
        let started = Instant::now();
        let err = short
            .connect(request(&url, true))
            .await
            .expect_err("a handshake that never completes");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "it waited for the whole timeout"
        );
        assert_eq!(wsm::api::status::grpc_code(&err), tonic::Code::Unavailable);
        // The token in the URL is a secret: errors and events show it redacted.
        let shown = url.replace("token=t", "token=REDACTED");
        assert_eq!(
            err.to_string(),
            format!("handshake with {shown} timed out after 1000 ms")
        );
        // The lifecycle event of the failed Connect names its own id; the connecting event comes first.
        let json = tokio::time::timeout(HANG, lifecycle.recv())
            .await
            .expect("a connecting event")
            .expect("no lag");
        let (id, connecting) = life(&json);
        assert_eq!(connecting.kind, "connecting");
        let events = bus_lifecycle_until(&mut lifecycle, &id, "error").await;
        assert_eq!(
            events.last().map(|e| e.reason.clone()),
            Some(err.to_string())
        );

        let url = fast.url("/fast");
        let err = long
            .connect(request(&url, false))
            .await
            .expect_err("a handshake in tiny pieces");
        assert_eq!(wsm::api::status::grpc_code(&err), tonic::Code::Unavailable);
        assert!(
            err.to_string().starts_with(&format!(
                "handshake with {url} failed: the upstream's handshake response came in too many small pieces"
            )),
            "{err}"
        );

        assert!(short.list(&[]).await.expect("List").is_empty(), "no record");
        assert!(long.list(&[]).await.expect("List").is_empty(), "no record");
        assert_eq!((slow.accepted(), fast.accepted()), (1, 1));
        slow.wait_all_closed_by_client().await;
        fast.wait_all_closed_by_client().await;
        let after = back_to(baseline, "tasks and fds after two dribbled handshakes").await;
        eprintln!("dribbled handshakes: baseline {baseline:?}, after {after:?}");
    });
}

/// Background reconnects meet the same upstreams: the first connection is a real WebSocket that
/// closes, and the three reconnects find a dribbling, a silent and again a dribbling handshake.
/// Each attempt ends at the connect timeout and says so; after the last the connection gives up
/// naming the cause. Every socket was closed by wsm, and its socket task and publisher are gone
/// even before Disconnect.
#[test]
fn reconnects_to_dribbling_and_silent_handshakes_each_end_at_the_connect_timeout() {
    alone(async {
        let upstream = Hostile::start(|mut s| async move {
            match s.index {
                0 => {
                    // A real handshake, then the upstream goes away.
                    let _ = s.accept().await;
                }
                2 => s.hold().await,
                _ => s.dribble(Duration::from_millis(250)).await,
            }
        })
        .await;
        let (service, bus) = local_service(Duration::from_secs(1), backoff(3)).await;
        warm_up(&service).await;
        let baseline = resources();

        let mut lifecycle = bus.subscribe(LIFECYCLE_TOPIC);
        let url = upstream.url("/reconnect");
        let record = service
            .connect(request(&url, true))
            .await
            .expect("the first handshake is answered");
        let events = bus_lifecycle_until(&mut lifecycle, &record.id, "disconnected").await;
        assert_eq!(
            kinds(&events),
            [
                "connecting",
                "connected",
                "reconnecting",
                "reconnecting",
                "reconnecting",
                "disconnected"
            ]
        );
        let timed_out = format!("handshake with {url} timed out after 1000 ms");
        assert_eq!(
            events[2..5].iter().map(|e| e.attempt).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(events[3].reason, timed_out, "the dribbling handshake");
        assert_eq!(events[4].reason, timed_out, "the silent handshake");
        assert_eq!(
            events[5].reason,
            format!("gave up reconnecting after 3 attempts: {timed_out}")
        );
        assert_eq!(
            upstream.accepted(),
            4,
            "the first connection and three attempts"
        );
        upstream.wait_all_closed_by_client().await;
        let listed = service.list(&[]).await.expect("List");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, wsm::model::Status::Disconnected);
        // Its socket task and publisher ended with it; the record stays until Disconnect.
        let ended = back_to(baseline, "tasks and fds once the connection gave up").await;
        service.disconnect(&record.id).await.expect("Disconnect");
        assert!(service.list(&[]).await.expect("List").is_empty());
        let after = back_to(baseline, "tasks and fds after Disconnect").await;
        eprintln!("reconnects to slow handshakes: baseline {baseline:?}, gave up {ended:?}, after Disconnect {after:?}");
    });
}

// ---------------------------------------------------------------------------------------------
// 4. A thousand connects to a refusing port.

/// Through the gRPC API of an in-process server: 1,000 Connects to a port nothing listens on (half
/// with auto-reconnect) fail at once, each naming the URL; then 250 connections with auto-reconnect
/// lose their upstream and retry against the now refusing port until at least 1,000 attempts have
/// failed, and are disconnected mid-retry. Tasks and file descriptors return to their baseline.
#[test]
fn a_thousand_refused_connects_leave_no_tasks_or_file_descriptors_behind() {
    alone(async {
        const FAILING: usize = 1000;
        const RETRYING: usize = 250;
        const WORKERS: usize = 10;
        let wsm = Wsm::start(&["--reconnect-base-ms", "10", "--reconnect-attempts", "0"]).await;
        let client = wsm.client().await;
        let service = wsm.running.service.clone();
        let refused = dead_port();

        // Warm-up: a refused Connect, and a connection that loses its upstream, retries and is
        // disconnected.
        {
            let mut client = client.clone();
            let err = client
                .connect(ConnectRequest {
                    url: format!("ws://127.0.0.1:{refused}/warm-up"),
                    ..ConnectRequest::default()
                })
                .await
                .expect_err("refused");
            assert_eq!(err.code(), tonic::Code::Unavailable);
            let upstream = Hostile::start(|mut s| async move {
                if s.accept().await.is_ok() {
                    s.hold().await;
                }
            })
            .await;
            let id = connect(&mut client, &upstream.url("/warm-up"), true).await;
            let reconnects = service.snapshot().reconnects;
            upstream.stop().await;
            let poll = Poll::new("the warm-up connection to retry");
            while service.snapshot().reconnects < reconnects + 3 {
                poll.tick().await;
            }
            client
                .disconnect(DisconnectRequest { id })
                .await
                .expect("Disconnect");
        }
        let baseline = resources();

        // 1,000 Connects that fail at once.
        let mut workers = JoinSet::new();
        for worker in 0..WORKERS {
            let mut client = client.clone();
            workers.spawn(async move {
                for i in (worker..FAILING).step_by(WORKERS) {
                    let url = format!("ws://127.0.0.1:{refused}/refused/{i}");
                    let err = client
                        .connect(ConnectRequest {
                            url: url.clone(),
                            auto_reconnect: i % 2 == 0,
                            ..ConnectRequest::default()
                        })
                        .await
                        .expect_err("nothing listens there");
                    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
                    assert!(
                        err.message().starts_with(&format!("handshake with {url} failed: could not connect to 127.0.0.1:{refused}: Connection refused")),
                        "{}",
                        err.message()
                    );
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done.expect("a worker");
        }
        assert!(
            listed(&mut client.clone()).await.is_empty(),
            "a failed Connect leaves no record"
        );

        // 250 connections that lose their upstream and retry against a refusing port.
        let upstream = Hostile::start(|mut s| async move {
            if s.accept().await.is_ok() {
                s.hold().await;
            }
        })
        .await;
        let url = upstream.url("/retrying");
        let mut ids = Vec::with_capacity(RETRYING);
        for _ in 0..RETRYING {
            ids.push(connect(&mut client.clone(), &url, true).await);
        }
        let reconnects = service.snapshot().reconnects;
        upstream.stop().await; // closes every connection and the listener: the port now refuses
        let poll = Poll::new("1,000 reconnect attempts against the refusing port");
        while service.snapshot().reconnects < reconnects + FAILING as u64 {
            poll.tick().await;
        }
        let retried = service.snapshot().reconnects - reconnects;
        let statuses: Vec<String> = listed(&mut client.clone())
            .await
            .into_iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(statuses.len(), RETRYING);
        assert!(
            statuses.iter().all(|s| s == "reconnecting"),
            "every connection is still retrying: {statuses:?}"
        );
        let mut workers = JoinSet::new();
        for chunk in ids.chunks(RETRYING / WORKERS) {
            let mut client = client.clone();
            let chunk = chunk.to_vec();
            workers.spawn(async move {
                for id in chunk {
                    client
                        .disconnect(DisconnectRequest { id })
                        .await
                        .expect("Disconnect while reconnecting");
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done.expect("a worker");
        }
        assert!(listed(&mut client.clone()).await.is_empty());
        let after = back_to(
            baseline,
            "tasks and fds after 1,000 refused Connects and 250 disconnected retries",
        )
        .await;
        eprintln!(
            "refused connects: {FAILING} Connects and {retried} reconnect attempts; baseline {baseline:?}, after {after:?}"
        );
    });
}
